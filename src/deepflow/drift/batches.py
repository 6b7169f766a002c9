"""The two sides of a drift check: the champion's reference data and incoming batches.

* ``reference_frame(entry)``: the entry's prepared train split (the data its models are fit on),
  subsampled to the entry's ``monitor.reference_rows`` when it sets one;
* ``load_batch(kind, path, entry=)``: an incoming batch file (or folder), read and checked by the
  kind's drift part (given the entry, as that entry reads its files, where the kind says how);
  errors name the file and the column;
* ``make_batch(entry, out_dir, rows=, drift=, seed=)``: a new batch, drifted on request, from the
  entry's own ``incoming:`` generator when it names one, else from its kind's generic generator;
* helpers the kinds' parts share: ``read_table``, ``subsample``, ``require_columns``,
  ``batch_name``, ``write_parquet``, ``sample_split``.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepflow import kinds

TABLE_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv", ".txt": "lines"}
LINES_COLUMN = "text"  # a ``.txt`` batch is one value per line, in this column


class DriftInputError(ValueError):
    """A batch (or reference) that cannot be measured: the message names the file and column."""


# --- frames ----------------------------------------------------------------------------------


def subsample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` rows, chosen by a seeded permutation and kept in their original order."""
    if len(frame) <= n:
        return frame
    keep = np.sort(np.random.default_rng(seed).choice(len(frame), size=n, replace=False))
    return frame.iloc[keep]


def source_of(frame: pd.DataFrame, default: str) -> str:
    return str(frame.attrs.get("source", default))


def require_columns(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    """Raise ``DriftInputError`` naming the frame's source and the missing columns."""
    if missing := [c for c in columns if c not in frame.columns]:
        shown = ", ".join(missing[:8]) + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
        raise DriftInputError(f"{source_of(frame, what)}: missing column(s) {shown}")


def feature_frames(kind: str, reference: pd.DataFrame, current: pd.DataFrame, cfg: Any, scorer: Any,
                   features: list[str] | None) -> tuple[list[str], pd.DataFrame, pd.DataFrame]:
    """(features, reference, current) for a kind whose drift reads feature columns: ``features``
    default to the scorer's; both frames must carry them; each is subsampled (seeded) to the
    config's ``max_reference`` / ``max_current`` rows."""
    features = list(features or getattr(scorer, "features", None) or [])
    if not features:
        raise ValueError(f"{kind} drift needs the feature columns (features=... or a scorer with .features)")
    require_columns(reference, features, "reference")
    require_columns(current, features, "current batch")
    return (features, subsample(reference, cfg.max_reference, cfg.seed),
            subsample(current, cfg.max_current, cfg.seed + 1))


# --- reference -------------------------------------------------------------------------------


def entry_config(name: str, overrides: Sequence[str] = ()) -> Any:
    """The entry's resolved config without importing its model code (torch, Lightning: seconds)."""
    from deepflow import usecase

    return usecase.resolve_config(usecase.entry(name), overrides)


def entry_features(name: str, overrides: Sequence[str] = ()) -> list[str] | None:
    """The feature columns an entry's config names (an attribute or, where a kind derives them
    from its column roles, a method); None for kinds whose configs name none."""
    features = getattr(entry_config(name, overrides), "features", None)
    features = features() if callable(features) else features
    return list(features) if features else None


def reference_rows(name: str) -> int | None:
    """The entry's ``monitor.reference_rows``: how many train rows the reference keeps (None: all)."""
    from deepflow import usecase

    return usecase.entry(name).monitor.get("reference_rows")  # checked when the file was read


def reference_frame(name: str, max_rows: int | None = None, seed: int = 0,
                    overrides: Sequence[str] = ()) -> pd.DataFrame:
    """The champion's reference data: entry ``name``'s prepared train split (the data it was fit
    on), deterministically subsampled to ``max_rows`` (default: the entry's
    ``monitor.reference_rows``; the whole split when it sets none). ``overrides``: config
    ``key=value`` (e.g. ``prepared_dir=...``). ``attrs`` carry the entry name and the source path."""
    from deepflow import usecase

    directory = usecase.project_path(entry_config(name, overrides).prepared_dir)
    train = usecase.read_splits(name, directory, ("train",))["train"]
    limit = max_rows if max_rows is not None else reference_rows(name)
    frame = subsample(train, limit, seed).reset_index(drop=True) if limit else train.reset_index(drop=True)
    frame.attrs.update(use_case=name, source=str(directory / "train.parquet"))
    return frame


# --- incoming batches ------------------------------------------------------------------------


def load_batch(kind: str, path: str | Path, features: list[str] | None = None,
               entry: str | None = None) -> pd.DataFrame:
    """An incoming batch of a ``kind`` entry as a frame, checked enough that ``detect`` can measure it.

    The kind's drift part reads it (``load_batch(path, features)``; see each kind's formats), or,
    given the ``entry`` and where the part has one, ``read_batch(entry, path, features)`` (a kind
    that reads batches as its entry's source was read: ``table``). Raises ``DriftInputError``
    naming the file (and column) when nothing usable is there, ``ValueError`` for an unknown kind.
    """
    part = kinds.part(kind, "drift")
    path = Path(path)
    if not path.exists():
        raise DriftInputError(f"{path}: no such file or folder")
    if entry and hasattr(part, "read_batch"):
        frame = part.read_batch(entry, path, features)
    else:
        frame = part.load_batch(path, features)
    frame.attrs.setdefault("source", str(path))
    return frame


def read_table(path: Path, *, strings: bool = False) -> pd.DataFrame:
    """A batch table: CSV, TSV, parquet, or ``.txt`` (one ``text`` value per line).

    ``strings``: CSV/TSV cells stay strings ("NA" is a message, not a missing value). Text files
    must be UTF-8. Raises ``DriftInputError`` naming the file for a folder, an unknown extension,
    an empty or unreadable file, or one without rows.
    """
    if path.is_dir():
        raise DriftInputError(f"{path}: a folder; batches of this kind are files ({', '.join(TABLE_SUFFIXES)})")
    fmt = TABLE_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DriftInputError(f"{path}: unsupported extension {path.suffix!r} (use {', '.join(TABLE_SUFFIXES)})")
    if path.stat().st_size == 0:
        raise DriftInputError(f"{path}: empty file")
    if fmt == "parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a broken file
            raise DriftInputError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})") from exc
    else:
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise DriftInputError(f"{path}: not valid UTF-8 at byte {e.start} (line {line})") from e
        if fmt == "lines":
            frame = pd.DataFrame({LINES_COLUMN: [line for line in text.splitlines() if line.strip()]})
        else:
            try:
                frame = pd.read_csv(io.StringIO(text), sep="\t" if fmt == "tsv" else ",",
                                    dtype=str if strings else None, keep_default_na=not strings,
                                    quoting=3 if fmt == "tsv" else 0)
            except pd.errors.EmptyDataError as exc:
                raise DriftInputError(f"{path}: empty file (no header)") from exc
            except pd.errors.ParserError as exc:
                raise DriftInputError(f"{path}: not a readable {fmt.upper()} file ({exc})") from exc
    if frame.empty:
        raise DriftInputError(f"{path}: no rows")
    return frame


# --- new batches -----------------------------------------------------------------------------


def make_batch(name: str, out_dir: str | Path, *, rows: int, drift: float, seed: int = 0, **options: Any) -> Path:
    """Write one incoming batch of entry ``name`` to ``out_dir`` and return its path.

    ``drift`` in [0, 1]: 0 draws from the reference's distribution (a fresh seed, no shift); 1 is
    clearly shifted; in between scales or mixes the shift. The generator is the entry's
    ``incoming:`` ("module:function", called as ``function(name, out_dir, rows=, drift=, seed=, **options)``)
    when it names one, else its kind's generic one (``make_batch(name, out_dir, rows=, drift=,
    seed=, **options)`` in the kind's drift part, which resamples the prepared test split).
    ``options`` go to the generator (e.g. simulator params, or ``overrides`` of the entry's config).
    """
    from deepflow import usecase

    if not 0 <= drift <= 1:
        raise ValueError(f"drift must be in [0, 1], got {drift}")
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    e = usecase.entry(name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if e.incoming:
        generator = incoming_generator(e.incoming, e.path)
        return Path(generator(e.name, out, rows=int(rows), drift=float(drift), seed=int(seed), **options))
    part = kinds.part(e.kind, "drift")
    return Path(part.make_batch(e.name, out, rows=int(rows), drift=float(drift), seed=int(seed), **options))


def incoming_generator(spec: str, source: Path | str = "entry") -> Any:
    """The function an entry's ``incoming: "module:function"`` names; a ConfigError names the entry."""
    from deepflow import config

    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise config.ConfigError(f"{source}: incoming must be 'module:function', got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise config.ConfigError(f"{source}: incoming {spec!r} cannot be loaded ({type(exc).__name__}: {exc})") \
            from exc
    if not callable(fn):
        raise config.ConfigError(f"{source}: incoming {spec!r} is not a function")
    return fn


def sample_split(name: str, overrides: Sequence[str] = (), splits: Sequence[str] = ("test", "val", "train")
                 ) -> tuple[pd.DataFrame, Path]:
    """(frame, path) of the first prepared split of entry ``name`` that exists, in ``splits`` order:
    what the generic generators resample (data the champion did not train on, when there is any).
    Raises FileNotFoundError saying what to run."""
    from deepflow import usecase

    directory = usecase.project_path(entry_config(name, overrides).prepared_dir)
    for split in splits:
        path = directory / f"{split}.parquet"
        if path.exists():
            return pd.read_parquet(path), path
    raise FileNotFoundError(f"{name}: no prepared {'/'.join(splits)} split in {directory} to draw a batch from "
                            "(run `make data` first)")


def batch_name(name: str, rows: int, drift: float, seed: int, suffix: str = ".parquet") -> str:
    return f"{name}-n{rows}-drift{drift:.2f}-seed{seed}{suffix}"


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Atomically: a reader polling the inbox never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path
