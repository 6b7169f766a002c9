"""The one prepared-data format every detection source is converted to.

A prepared split is a parquet file with one row per image: ``image_id``, ``image`` (encoded
JPEG/PNG bytes), ``width``, ``height`` and ``labels`` (the image's YOLO label file as text:
``class cx cy w h`` per line, normalised to [0, 1], class ids indexing the entry's
``config.classes``).

Also the two checks every image and label line passes on its way in: :func:`decode` (the whole
image, or :class:`ImageError` saying why) and :func:`check_line` (one YOLO label line).
"""

from __future__ import annotations

import io

import numpy as np

OVERHANG = 0.01  # a label value may pass 0 or 1 by this much (labelling tools' rounding)


def parse_yolo(text: str) -> tuple[np.ndarray, np.ndarray]:
    """YOLO label text -> (class ids (N,) int64, boxes (N, 4) cx cy w h normalised)."""
    rows = [line.split() for line in text.splitlines() if line.strip()]
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 4))
    values = np.array(rows, dtype=np.float64)
    return values[:, 0].astype(np.int64), values[:, 1:5]


def check_line(line: str, n_names: int | None) -> tuple[int, tuple[float, float, float, float], bool] | str:
    """One line of a YOLO label file (``class cx cy w h``, or a polygon ``class x1 y1 x2 y2 x3 y3 ...``)
    -> (class id, its box's x1 y1 x2 y2 normalised, not clipped, whether it was a polygon), or what is
    wrong with it: not numbers, not finite, a class id that is not an integer in ``0..n_names - 1``
    (``n_names`` None: any), a wrong count of numbers, a negative or zero size, outside the frame
    (Ultralytics' rule: every value within [0, 1], here with an :data:`OVERHANG` tolerance)."""
    tokens, shown = line.split(), line.strip()[:60]
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        return f"{shown!r} is not numbers (expected: class cx cy w h)"
    cls, coords = values[0], values[1:]
    if not np.isfinite(values).all():
        return f"{shown!r} holds a value that is not a finite number"
    if cls != int(cls) or not 0 <= cls < 2**31:
        return f"class id {tokens[0]!r} is not a non-negative integer (up to 2**31 - 1)"
    if n_names is not None and cls >= n_names:
        return (f"class id {int(cls)} is outside names (ids 0..{n_names - 1}): fix the label or add the class "
                "to data.yaml / classes.txt")
    if len(coords) == 4:
        cx, cy, w, h = coords
        if w < 0 or h < 0:
            return f"the box ({shown}) has a negative width or height"
        x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    elif len(coords) >= 6 and len(coords) % 2 == 0:
        xs, ys = np.array(coords[0::2]), np.array(coords[1::2])
        x1, y1, x2, y2 = xs.min(), ys.min(), xs.max(), ys.max()
    else:
        return f"{len(tokens)} numbers on a line; a box is 5 (class cx cy w h), a polygon class + 3 or more x y pairs"
    if x2 <= x1 or y2 <= y1:
        return f"a box of zero size ({shown}): remove the line or fix the box"
    if min(coords) < -OVERHANG or max(coords) > 1 + OVERHANG or x1 >= 1 or y1 >= 1 or x2 <= 0 or y2 <= 0:
        hint = " (pixel coordinates?)" if max(coords) > 2 else ""
        return (f"the box ({shown}) is outside the frame{hint}: YOLO values are fractions of the image's width "
                "and height, 0 to 1")
    return int(cls), (float(x1), float(y1), float(x2), float(y2)), len(coords) > 4


def format_yolo(classes: np.ndarray, cxcywh: np.ndarray) -> str:
    rows = zip(classes, cxcywh, strict=True)
    return "".join(f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, (x, y, w, h) in rows)


def pixel_boxes(text: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(class ids (N,), boxes (N, 4) x1 y1 x2 y2 in image pixels) of one image's labels."""
    cls, b = parse_yolo(text)
    scale = np.array([width, height, width, height], dtype=np.float64)
    xyxy = np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], axis=1) * scale
    return cls, xyxy


class ImageError(ValueError):
    """Bytes that are not one whole image: ``why`` says what is wrong (callers add which file or item)."""

    def __init__(self, why: str) -> None:
        super().__init__(f"not a decodable image: {why}")
        self.why = why


def decode(data: bytes):
    """Encoded bytes -> RGB PIL image, fully decoded and checked; :class:`ImageError` when they are
    empty, not an image, truncated or corrupt. Every reader of images (the folder scan, the data
    contract, training, serving, batch scoring) goes through here.

    ``load()`` decodes every pixel, and with PIL's ``LOAD_TRUNCATED_IMAGES`` off (its default; deepflow
    never sets it) a file that ends early raises instead of being padded with grey. ``verify()`` first
    checks what ``load()`` does not: a PNG's chunk checksums and its end chunk (a PNG cut after its
    pixel data loads fine)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError("empty (0 bytes)")
    try:
        Image.open(io.BytesIO(data)).verify()
        image = Image.open(io.BytesIO(data))
        image.load()
        return image.convert("RGB")
    except UnidentifiedImageError:
        raise ImageError("not in an image format (JPEG, PNG, BMP, WebP, TIFF, ...)") from None
    except Exception as exc:  # PIL raises many types for bad bytes (OSError, SyntaxError, ValueError, ...)
        why = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ImageError(why) from exc

