"""Real data: any YOLO-format dataset (``images/``, ``labels/``, class names) -> a prepared split.

Layout: ``<root>/images[/<split>]/<name>.{jpg,jpeg,png}`` with labels in the mirrored
``<root>/labels[/<split>]/<name>.txt`` (``class cx cy w h`` per line, normalised; no file means no
boxes). Class names come from ``data.yaml`` (``names:``) or ``classes.txt`` when present. A
mapping (source class id -> deepflow class name) says which classes to keep; the rest are dropped.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from deepflow.kinds.detection.labels import CLASSES, format_yolo, parse_yolo

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def class_names(root: Path) -> list[str] | None:
    """The dataset's own class names, if it ships them (``data.yaml`` or ``classes.txt``)."""
    if (root / "data.yaml").exists():
        names = (yaml.safe_load((root / "data.yaml").read_text()) or {}).get("names")
        if isinstance(names, dict):  # {0: person, 1: bicycle, ...}
            return [names[k] for k in sorted(names)]
        return list(names) if names else None
    if (root / "classes.txt").exists():
        return [n.strip() for n in (root / "classes.txt").read_text().splitlines() if n.strip()]
    return None


def map_by_name(names: list[str], aliases: dict[str, str] | None = None) -> dict[int, str]:
    """Source ids whose name (or alias, e.g. person -> pedestrian) is a deepflow class."""
    aliases = {"person": "pedestrian", "motorbike": "motorcycle", **(aliases or {})}
    mapped = {i: aliases.get(n.lower(), n.lower()) for i, n in enumerate(names)}
    return {i: n for i, n in mapped.items() if n in CLASSES}


def load(root: Path | str, class_map: dict[int, str] | None = None, split: str | None = None) -> pd.DataFrame:
    """A YOLO dataset as a prepared split (see ``labels.py``), plus ``dropped`` (boxes of unmapped
    classes) per image. Without ``class_map``, classes are mapped by name from the dataset's names."""
    root = Path(root)
    if class_map is None:
        names = class_names(root)
        if names is None:
            raise ValueError(f"{root}: no data.yaml or classes.txt; pass a class_map (source id -> class)")
        class_map = map_by_name(names)
    if unknown := sorted(set(class_map.values()) - set(CLASSES)):
        raise ValueError(f"class_map targets unknown classes {unknown} (known: {', '.join(CLASSES)})")
    to_ours = {src: CLASSES.index(dst) for src, dst in class_map.items()}
    images_dir = root / "images" / split if split else root / "images"
    labels_dir = root / "labels" / split if split else root / "labels"
    paths = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no images under {images_dir}")
    rows = []
    for path in paths:
        data = path.read_bytes()
        width, height = Image.open(io.BytesIO(data)).size
        label_path = labels_dir / f"{path.stem}.txt"
        cls, boxes = parse_yolo(label_path.read_text() if label_path.exists() else "")
        keep = np.array([c in to_ours for c in cls], dtype=bool)
        ours = np.array([to_ours[c] for c in cls[keep]], dtype=np.int64)
        rows.append({"image_id": path.stem, "image": data, "width": width, "height": height,
                     "labels": format_yolo(ours, boxes[keep]), "dropped": int((~keep).sum())})
    return pd.DataFrame(rows)
