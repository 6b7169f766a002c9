"""Which kind of entry a user's data makes, for ``deepflow new NAME --data PATH`` without ``--kind``."""

from __future__ import annotations

import shutil
from pathlib import Path

from deepflow.newentry import EntryError

GUESS_BYTES = 1 << 20  # a text file's kind is guessed from its first MiB
_ARCHIVES = (".zip", ".tar", ".gz", ".tgz", ".7z", ".rar")


def guess_kind(path: Path) -> tuple[str, Path, str]:
    """Which kind of entry ``path`` makes, the path the kind reads, and why (printed).

    A folder (or its ``data.yaml``) holds images with YOLO labels: ``detection``. A file is
    ``text`` when it has a long free-text column and little else besides a label (see
    ``kinds/text/infer.looks_like_text``), else ``table``. ``--kind`` skips the guess."""
    if not path.exists():
        raise EntryError(f"{path}: no such file or folder")
    if path.is_dir():
        return "detection", path, "a folder: images with YOLO labels (--kind to say otherwise)"
    if path.name in ("data.yaml", "data.yml"):
        return "detection", path.parent, f"{path.name}: a YOLO dataset's description; its folder is read"
    if path.suffix.lower() in _ARCHIVES:
        raise EntryError(f"{path}: an archive; unpack it first and pass the file or folder inside")
    from deepflow.kinds.text.infer import looks_like_text
    from deepflow.kinds.text.new import read_source

    head = path
    if path.suffix.lower() != ".parquet" and path.stat().st_size > GUESS_BYTES:
        import tempfile

        with path.open("rb") as f:
            data = f.read(GUESS_BYTES)
        cut = data.rfind(b"\n")
        tmp = Path(tempfile.mkdtemp(prefix="deepflow-guess-")) / path.name
        tmp.write_bytes(data[: cut + 1] if cut > 0 else data)
        head = tmp
    try:
        frame = read_source(head, max_rows=5000)[0]
    except EntryError:
        frame = None  # the file's kind reads it again and says what is wrong
    finally:
        if head is not path:
            shutil.rmtree(head.parent, ignore_errors=True)
    if frame is not None:
        is_text, why = looks_like_text(frame)
        if is_text:
            return "text", path, f"{why} (--kind table to treat it as a table)"
    return "table", path, "a table of columns (--kind text for a text classification file)"
