"""Reading a YOLO-format folder as it comes out of labelling tools and dataset sites.

Layouts (found in this order; see :func:`find_layout`):

* ``data.yaml`` (Ultralytics, Roboflow): ``names`` (a list or ``{id: name}``), optional ``nc`` and
  ``path``, and ``train``/``val``/``test`` (a folder, a list of folders or a ``.txt`` list of
  images; ``../train/images``, ``train/images`` and ``valid/images`` alike). Paths never leave the
  folder: an absolute ``path:`` (the exporting machine's) is ignored and the folder's own copy read.
* split folders: ``train|valid|val|test/images`` (+ ``.../labels``), or ``images/train|val|test``
  (+ ``labels/...``);
* one pool: ``images/`` + ``labels/``, or images with their ``.txt`` files side by side.

An image's label file is Ultralytics' rule: the last ``images`` folder of its path replaced by
``labels``, the suffix by ``.txt`` (no ``images`` folder: the ``.txt`` beside it). Class names come
from ``data.yaml``, else ``classes.txt`` (or ``obj.names``), else none (ids only).

A label line is ``class cx cy w h`` (normalised to the frame), or a polygon (``class x1 y1 x2 y2
x3 y3 ...``, segmentation exports), read as its bounding box. No label file means no boxes (a
background image); a label file without an image is counted and not used.

Every image is decoded in full (``labels.decode``: a truncated JPEG or PNG is an error) and every label
line checked: numbers only, 5 of them (or a polygon's class + 3 or more x y pairs), a class id that is
a non-negative integer within the folder's names (``data.yaml`` / ``classes.txt``, when it has them),
centre and size within [0, 1] (``labels.check_line``), width and height above zero and at least a
pixel. The whole folder is read before the verdict: :class:`deepflow.newentry.EntryError` lists the
first :data:`SHOWN_PROBLEMS` problems (``path: what``, ``path:line: what``) and counts them all.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from deepflow.kinds.detection.labels import ImageError, check_line, decode, format_yolo
from deepflow.newentry import EntryError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")
NAMES_FILES = ("classes.txt", "obj.names")
SPLIT_DIRS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
YAML_KEYS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
# A box within labels.check_line's rule whose edge passes the frame's (an object cut by the edge) is
# clipped to it, and counted unless by rounding only.
ROUNDING = 1e-4
SHOWN_PROBLEMS = 5  # problems listed in the error (all are counted): a folder of bad files is one line


@dataclass
class Layout:
    """Where a folder's images are: per split (``"train"``, ``"val"``, ``"test"``) or one pool (``None``)."""

    root: Path
    how: str  # said to the user: which layout was recognised
    names: list[str] | None = None  # class names by source id (None: the folder names none)
    names_from: str = ""
    dirs: dict[str | None, list[Path]] = field(default_factory=dict)  # split -> image folders or .txt lists
    notes: list[str] = field(default_factory=list)


@dataclass
class Item:
    """One image and its boxes (source class ids; cx cy w h normalised)."""

    split: str | None
    path: Path
    image_id: str
    label: Path | None
    width: int
    height: int
    content_hash: str
    classes: np.ndarray
    boxes: np.ndarray


@dataclass
class Scan:
    layout: Layout
    items: list[Item]
    counts: dict[str, int] = field(default_factory=dict)  # polygons, clipped, no_label, skipped, orphans, rotated
    skipped: dict[str, int] = field(default_factory=dict)  # suffix -> files that are not images


@dataclass
class Problems:
    """What is wrong with a folder's files, gathered while reading all of them: the first
    :data:`SHOWN_PROBLEMS` kept word for word, every one counted."""

    shown: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.shown) < SHOWN_PROBLEMS:
            self.shown.append(text)

    def check(self, root: Path) -> None:
        """Raise EntryError when there were problems: one alone as it is, several listed and counted."""
        if self.count == 1:
            raise EntryError(self.shown[0])
        if self.count:
            more = f"; ... and {self.count - len(self.shown):,} more" if self.count > len(self.shown) else ""
            raise EntryError(f"{root}: {self.count:,} problems in its images and labels, the first "
                             f"{len(self.shown)}: {'; '.join(self.shown)}{more}")


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _names(value, nc, where: str) -> list[str] | None:
    if isinstance(value, dict):
        try:
            ids = {int(k): str(v) for k, v in value.items()}
        except (TypeError, ValueError):
            raise EntryError(f"{where}: names: the keys must be class ids (0, 1, ...), got {list(value)[:5]}") from None
        names = [ids.get(i, f"class_{i}") for i in range(max(ids) + 1)] if ids else []
    elif isinstance(value, list | tuple):
        names = [str(v) for v in value]
    elif value is None:
        names = None
    else:
        raise EntryError(f"{where}: names must be a list or a mapping of class id -> name, got {value!r}")
    if nc is not None:
        if not isinstance(nc, int) or nc < 1:
            raise EntryError(f"{where}: nc must be a positive integer, got {nc!r}")
        if names is None:
            names = [f"class_{i}" for i in range(nc)]
        elif len(names) != nc:
            raise EntryError(f"{where}: nc is {nc} but names lists {len(names)} classes: make them agree")
    return names or None


def _yaml_dirs(root: Path, data: dict, where: str, notes: list[str]) -> dict[str | None, list[Path]]:
    base = data.get("path")
    bases = [root]
    if isinstance(base, str) and base.strip():
        if Path(base).is_absolute():
            notes.append(f"{where}: path {base} ignored (the folder's own copy is read)")
        else:
            bases.insert(0, root / base)
    dirs: dict[str | None, list[Path]] = {}
    for split, keys in YAML_KEYS.items():
        key = next((k for k in keys if data.get(k)), None)
        if key is None:
            continue
        found = []
        for given in data[key] if isinstance(data[key], list) else [data[key]]:
            given = str(given)
            stripped = re.sub(r"^(\.\./|\./)+", "", given)
            tries = [b / g for b in bases for g in dict.fromkeys((given, stripped))]
            hit = next((p for p in tries if p.exists() and _inside(p, root)), None)
            if hit is None:
                if split == "test":
                    notes.append(f"{where}: {key}: {given} is not in the folder: no test split of its own")
                    break
                raise EntryError(f"{where}: {key}: {given} is not in the folder {root} (looked for "
                                 f"{', '.join(_rel(p, root) for p in tries)}): fix the path or add the folder")
            found.append(hit)
        if found:
            dirs[split] = found
    return dirs


def _split_folders(root: Path) -> tuple[str, dict[str | None, list[Path]]]:
    """``<split>/images`` (or ``<split>/`` holding images), else ``images/<split>``."""
    for pattern, where in (("{s}/images", lambda s: root / s / "images"),
                           ("images/{s}", lambda s: root / "images" / s)):
        dirs = {}
        for split, names in SPLIT_DIRS.items():
            for n in names:
                d = where(n)
                if d.is_dir():
                    dirs[split] = [d]
                    break
        if dirs:
            return pattern.replace("{s}", "<split>"), dirs
    dirs = {}
    for split, names in SPLIT_DIRS.items():
        d = next((root / n for n in names if (root / n).is_dir()
                  and any(p.suffix.lower() in IMAGE_SUFFIXES for p in (root / n).iterdir())), None)
        if d is not None:
            dirs[split] = [d]
    return ("<split>/ (images and labels side by side)" if dirs else ""), dirs


def find_layout(root: Path) -> Layout:
    """Which layout ``root`` has (see the module docstring); EntryError when it holds no images."""
    root = Path(root)
    if not root.is_dir():
        raise EntryError(f"{root}: not a folder (a YOLO dataset is a folder of images and labels)")
    inner = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]
    plain = [p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")]
    if len(inner) == 1 and not any(p.name in YAML_NAMES or p.suffix.lower() in IMAGE_SUFFIXES for p in plain) \
            and inner[0].name not in ("images", *(n for ns in SPLIT_DIRS.values() for n in ns)):
        layout = find_layout(inner[0])  # a zip's single top folder
        layout.notes.insert(0, f"read the folder inside: {inner[0].name}/")
        return layout
    notes: list[str] = []
    names, names_from, dirs, how = None, "", {}, ""
    yaml_path = next((root / n for n in YAML_NAMES if (root / n).is_file()), None)
    if yaml_path is not None:
        try:
            data = yaml.safe_load(yaml_path.read_text(encoding="utf-8-sig")) or {}
        except yaml.YAMLError as exc:
            raise EntryError(f"{yaml_path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise EntryError(f"{yaml_path}: expected a mapping with names: and train:/val: paths")
        names = _names(data.get("names"), data.get("nc"), str(yaml_path))
        names_from = yaml_path.name if names else ""
        dirs = _yaml_dirs(root, data, yaml_path.name, notes)
        how = f"{yaml_path.name} ({', '.join(f'{s}: {_rel(d[0], root)}' for s, d in dirs.items())})" if dirs else ""
    if not dirs:
        how, dirs = _split_folders(root)
    if not dirs:
        if (root / "images").is_dir():
            how, dirs = "images/ + labels/ (one pool)", {None: [root / "images"]}
        else:
            how, dirs = "images and labels side by side (one pool)", {None: [root]}
    if names is None:
        label_dirs = [root, root / "labels", *(d.parent / "labels" for ds in dirs.values() for d in ds)]
        for d in label_dirs:
            hit = next((d / n for n in NAMES_FILES if (d / n).is_file()), None)
            if hit is not None:
                lines = hit.read_text(encoding="utf-8-sig", errors="replace").splitlines()
                names, names_from = [n.strip() for n in lines if n.strip()] or None, _rel(hit, root)
                break
    return Layout(root=root, how=how, names=names, names_from=names_from if names else "", dirs=dirs, notes=notes)


def label_path(image: Path, root: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder -> ``labels``, suffix -> ``.txt``."""
    parts = list(image.relative_to(root).parts) if _inside(image, root) else list(image.parts)
    at = max((i for i, p in enumerate(parts[:-1]) if p == "images"), default=None)
    if at is None:
        return image.with_suffix(".txt")
    parts[at] = "labels"
    return (root.joinpath(*parts) if _inside(image, root) else Path(*parts)).with_suffix(".txt")


def image_files(source: Path, root: Path, skipped: dict[str, int]) -> list[Path]:
    """Images in a folder (recursively, sorted) or listed in a ``.txt`` file; other files counted in ``skipped``."""
    if source.is_file():
        lines = [line.strip() for line in source.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        found = [p for line in lines for p in (source.parent / line, root / re.sub(r"^\./", "", line)) if p.is_file()]
        return sorted(dict.fromkeys(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES))
    out = []
    for p in sorted(source.rglob("*")):
        if not p.is_file() or p.name.startswith(".") or "labels" in p.relative_to(source).parts:
            continue
        if p.suffix.lower() in IMAGE_SUFFIXES:
            out.append(p)
        elif p.suffix.lower() not in (".txt", ".yaml", ".yml", ".names", ".cache", ".md", ".csv", ".json"):
            skipped[p.suffix.lower() or p.name] = skipped.get(p.suffix.lower() or p.name, 0) + 1
    return out


def read_labels(path: Path, n_names: int | None, width: int, height: int, counts: dict[str, int],
                problems: Problems) -> tuple[np.ndarray, np.ndarray]:
    """One label file -> (source class ids (N,), boxes (N, 4) cx cy w h) of its good lines; each bad
    line is added to ``problems`` as ``path:line: what``. Polygons become their bounding box and slight
    overhangs are clipped (both counted in ``counts``)."""
    data = path.read_bytes()
    # some Windows tools save text as UTF-16 (with a byte-order mark): read it as such
    utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff")
    text = data.decode("utf-16", errors="replace") if utf16 else data.decode("utf-8-sig", errors="replace")
    classes, boxes = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        found = check_line(line, n_names)
        if isinstance(found, str):
            problems.add(f"{path}:{number}: {found}")
            continue
        cls, (x1, y1, x2, y2), polygon = found
        if polygon:
            counts["polygons"] = counts.get("polygons", 0) + 1
        if min(x1, y1) < -ROUNDING or max(x2, y2) > 1 + ROUNDING:
            counts["clipped"] = counts.get("clipped", 0) + 1
        x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, 1.0), min(y2, 1.0)
        if (x2 - x1) * width < 1 or (y2 - y1) * height < 1:
            problems.add(f"{path}:{number}: the box ({line.strip()[:60]}) is under 1 pixel wide or high in the "
                         f"{width}x{height} image: remove the line or fix the box")
            continue
        classes.append(cls)
        boxes.append(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1))
    return np.array(classes, dtype=np.int64), np.array(boxes, dtype=np.float64).reshape(-1, 4)


def pixel_hash(data: bytes) -> str:
    """The decoded pixels' hash: the data contract's (``expectations.py``), so both find the same duplicates."""
    return hashlib.sha256(np.asarray(decode(data)).tobytes()).hexdigest()[:20]


def _item(path: Path, split: str | None, layout: Layout, counts: dict[str, int], image_id: str,
          problems: Problems) -> Item | None:
    """The image at ``path`` with its boxes; None (its problems added) when it does not decode."""
    from PIL import Image

    data = path.read_bytes()
    try:
        digest = pixel_hash(data)  # decodes every pixel (labels.decode)
    except ImageError as exc:
        problems.add(f"{path}: {exc}: remove or replace it")
        return None
    image = Image.open(io.BytesIO(data))
    width, height = image.size
    if image.getexif().get(0x0112, 1) != 1:
        counts["rotated"] = counts.get("rotated", 0) + 1
    label = label_path(path, layout.root)
    if label.is_file():
        n_names = len(layout.names) if layout.names else None
        cls, boxes = read_labels(label, n_names, width, height, counts, problems)
    else:
        label, cls, boxes = None, np.zeros(0, np.int64), np.zeros((0, 4))
        counts["no_label"] = counts.get("no_label", 0) + 1
    return Item(split, path, image_id, label, width, height, digest, cls, boxes)


def scan(root: Path | str) -> Scan:
    """Every image of the folder, decoded and hashed, with its boxes; EntryError listing the problems
    a user must fix (see the module docstring), or when there are no images or no labels at all."""
    layout = find_layout(Path(root))
    counts: dict[str, int] = {}
    skipped: dict[str, int] = {}
    items, problems = [], Problems()
    for split, sources in layout.dirs.items():
        paths = list(dict.fromkeys(p for s in sources for p in image_files(s, layout.root, skipped)))
        if not paths:
            where = ", ".join(_rel(s, layout.root) for s in sources)
            if split is None:
                raise EntryError(f"{layout.root}: no images (.jpg, .png, ...) in it or in an images/ folder")
            raise EntryError(f"the {split} split ({where}) has no images: add some, or point data.yaml elsewhere")
        stems = [next((p.relative_to(s).with_suffix("").as_posix() for s in sources if s.is_dir() and _inside(p, s)),
                      p.stem) for p in paths]
        if len(set(stems)) != len(stems):  # a.jpg and a.png: the suffix tells them apart
            stems = [next((p.relative_to(s).as_posix() for s in sources if s.is_dir() and _inside(p, s)),
                          _rel(p, layout.root)) for p in paths]
        items += [_item(p, split, layout, counts, i, problems) for p, i in zip(paths, stems, strict=True)]
    problems.check(layout.root)  # raised if an image did not decode: no None in items from here
    if not any(i.label for i in items):
        raise EntryError(f"{layout.root}: {len(items)} images but no label files (expected <name>.txt in a labels/ "
                         "folder mirroring images/, or beside each image): a detection entry needs boxes")
    labelled = {i.label.resolve() for i in items if i.label}
    label_dirs = {label_path(p / "x", layout.root).parent for ds in layout.dirs.values() for p in ds if p.is_dir()}
    orphans = [p for d in label_dirs if d.is_dir() and d != layout.root for p in d.rglob("*.txt")
               if p.resolve() not in labelled and p.name not in NAMES_FILES]
    if orphans:
        counts["orphans"] = len(orphans)
    return Scan(layout, items, counts, skipped)


def load(root: Path | str, class_map: dict[int, str], classes: list[str], split: str | None = None) -> pd.DataFrame:
    """A YOLO folder (``images[/<split>]`` + ``labels[/<split>]``) as a prepared split (``labels.py``),
    plus ``dropped`` (boxes of unmapped classes) per image. ``class_map``: source id -> a name in
    ``classes``, whose position is the prepared class id; the folder's other classes are dropped.
    Checked as :func:`scan` checks (EntryError listing the problems): a class id outside the folder's
    names (``data.yaml`` / ``classes.txt``) is an error, not a dropped box."""
    root = Path(root)
    if unknown := sorted(set(class_map.values()) - set(classes)):
        raise ValueError(f"class_map targets unknown classes {unknown} (known: {', '.join(classes)})")
    to_ours = {int(src): classes.index(dst) for src, dst in class_map.items()}
    images_dir = root / "images" / split if split else root / "images"
    names = find_layout(root).names if root.is_dir() else None
    if names and (outside := sorted(k for k in to_ours if not 0 <= k < len(names))):
        raise ValueError(f"class_map maps source ids {outside} that the folder's names do not have "
                         f"(ids 0..{len(names) - 1})")
    layout = Layout(root=root, how="images/ + labels/", names=names)
    paths = image_files(images_dir, root, {}) if images_dir.is_dir() else []
    if not paths:
        raise FileNotFoundError(f"no images under {images_dir}")
    problems = Problems()
    items = [_item(path, split, layout, {}, path.stem, problems) for path in paths]
    problems.check(root)
    rows = []
    for path, item in zip(paths, items, strict=True):
        keep = np.array([c in to_ours for c in item.classes], dtype=bool)
        ours = np.array([to_ours[c] for c in item.classes[keep]], dtype=np.int64)
        rows.append({"image_id": item.image_id, "image": path.read_bytes(), "width": item.width,
                     "height": item.height, "labels": format_yolo(ours, item.boxes[keep]),
                     "dropped": int((~keep).sum())})
    return pd.DataFrame(rows)
