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
x3 y3 ...``, segmentation exports), read as its bounding box. No label file means no boxes. Every
problem a user can fix raises :class:`deepflow.newentry.EntryError`, naming the file and line.
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

from deepflow.kinds.detection.labels import decode, format_yolo
from deepflow.newentry import EntryError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")
NAMES_FILES = ("classes.txt", "obj.names")
SPLIT_DIRS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
YAML_KEYS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
# Ultralytics' rule: every value (cx, cy, w, h; a polygon's points) within [0, 1], here with a 1 %
# tolerance; else the box is outside the frame (an error). A box within the rule whose edge passes the
# frame's (an object cut by the edge) is clipped to it, and counted unless by rounding only.
OVERHANG = 0.01
ROUNDING = 1e-4


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


def read_labels(path: Path, n_names: int | None, width: int, height: int,
                counts: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """One label file -> (source class ids (N,), boxes (N, 4) cx cy w h); EntryError naming file and line.
    Polygons become their bounding box and slight overhangs are clipped (both counted in ``counts``)."""
    data = path.read_bytes()
    # some Windows tools save text as UTF-16 (with a byte-order mark): read it as such
    utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff")
    text = data.decode("utf-16", errors="replace") if utf16 else data.decode("utf-8-sig", errors="replace")
    classes, boxes = [], []
    for number, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"{path}:{number}"
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            raise EntryError(f"{where}: {line.strip()[:60]!r} is not numbers (expected: class cx cy w h)") from None
        cls, coords = values[0], values[1:]
        if cls != int(cls) or cls < 0:
            raise EntryError(f"{where}: class id {tokens[0]!r} is not a non-negative integer")
        if n_names is not None and cls >= n_names:
            raise EntryError(f"{where}: class id {int(cls)} is outside names (ids 0..{n_names - 1}): fix the label "
                             "or add the class to data.yaml / classes.txt")
        if len(coords) == 4:
            cx, cy, w, h = coords
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        elif len(coords) >= 6 and len(coords) % 2 == 0:
            xs, ys = np.array(coords[0::2]), np.array(coords[1::2])
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max(), ys.max()
            counts["polygons"] = counts.get("polygons", 0) + 1
        else:
            raise EntryError(f"{where}: {len(tokens)} numbers on a line; a box is 5 (class cx cy w h), a polygon "
                             "class + 3 or more x y pairs")
        if not np.isfinite([x1, y1, x2, y2]).all() or x2 <= x1 or y2 <= y1:
            raise EntryError(f"{where}: a box of zero size ({line.strip()[:60]}): remove the line or fix the box")
        if min(coords) < -OVERHANG or max(coords) > 1 + OVERHANG or x1 >= 1 or y1 >= 1 or x2 <= 0 or y2 <= 0:
            hint = " (pixel coordinates?)" if max(coords) > 2 else ""
            raise EntryError(f"{where}: the box ({line.strip()[:60]}) is outside the frame{hint}: YOLO values are "
                             "fractions of the image's width and height, 0 to 1")
        if min(x1, y1) < -ROUNDING or max(x2, y2) > 1 + ROUNDING:
            counts["clipped"] = counts.get("clipped", 0) + 1
        x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, 1.0), min(y2, 1.0)
        if (x2 - x1) * width < 1 or (y2 - y1) * height < 1:
            raise EntryError(f"{where}: the box ({line.strip()[:60]}) is under 1 pixel wide or high in the "
                             f"{width}x{height} image: remove the line or fix the box")
        classes.append(int(cls))
        boxes.append(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1))
    return np.array(classes, dtype=np.int64), np.array(boxes, dtype=np.float64).reshape(-1, 4)


def pixel_hash(data: bytes) -> str:
    """The decoded pixels' hash: the data contract's (``expectations.py``), so both find the same duplicates."""
    return hashlib.sha256(np.asarray(decode(data)).tobytes()).hexdigest()[:20]


def _item(path: Path, split: str | None, layout: Layout, counts: dict[str, int], image_id: str) -> Item:
    from PIL import Image

    data = path.read_bytes()
    try:
        digest = pixel_hash(data)
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if image.getexif().get(0x0112, 1) != 1:
            counts["rotated"] = counts.get("rotated", 0) + 1
    except Exception as exc:  # PIL raises many types for bad bytes
        raise EntryError(f"{path}: not a decodable image ({type(exc).__name__}): remove or replace it") from None
    label = label_path(path, layout.root)
    if label.is_file():
        n_names = len(layout.names) if layout.names else None
        cls, boxes = read_labels(label, n_names, width, height, counts)
    else:
        label, cls, boxes = None, np.zeros(0, np.int64), np.zeros((0, 4))
        counts["no_label"] = counts.get("no_label", 0) + 1
    return Item(split, path, image_id, label, width, height, digest, cls, boxes)


def scan(root: Path | str) -> Scan:
    """Every image of the folder, decoded and hashed, with its boxes; EntryError on the first problem
    a user must fix (see the module docstring), or when there are no images or no labels at all."""
    layout = find_layout(Path(root))
    counts: dict[str, int] = {}
    skipped: dict[str, int] = {}
    items: list[Item] = []
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
        items += [_item(p, split, layout, counts, i) for p, i in zip(paths, stems, strict=True)]
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
    ``classes``, whose position is the prepared class id; other source classes are dropped."""
    root = Path(root)
    if unknown := sorted(set(class_map.values()) - set(classes)):
        raise ValueError(f"class_map targets unknown classes {unknown} (known: {', '.join(classes)})")
    to_ours = {int(src): classes.index(dst) for src, dst in class_map.items()}
    images_dir = root / "images" / split if split else root / "images"
    layout = Layout(root=root, how="images/ + labels/")
    paths = image_files(images_dir, root, {}) if images_dir.is_dir() else []
    if not paths:
        raise FileNotFoundError(f"no images under {images_dir}")
    rows = []
    for path in paths:
        item = _item(path, split, layout, {}, path.stem)
        keep = np.array([c in to_ours for c in item.classes], dtype=bool)
        ours = np.array([to_ours[c] for c in item.classes[keep]], dtype=np.int64)
        rows.append({"image_id": item.image_id, "image": path.read_bytes(), "width": item.width,
                     "height": item.height, "labels": format_yolo(ours, item.boxes[keep]),
                     "dropped": int((~keep).sum())})
    return pd.DataFrame(rows)
