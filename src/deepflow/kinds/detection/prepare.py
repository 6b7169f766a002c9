"""The ``detection`` entries' prepare stage: the user's YOLO folder -> prepared, split parquet files.

``python -m deepflow.kinds.detection.prepare NAME`` is the DVC stage ``deepflow new`` writes
(``<name>_prepare``: depends on the tracked folder copy and the entry file, outputs the prepared folder).

1. read ``config.source`` with ``yolo.scan`` exactly as ``new`` did (every image decoded and
   hashed, every label line checked);
2. split (:func:`assign`): the folder's own splits when it has them (a missing val or test split
   is cut from train, or test from val when val is large enough, by a salted hash of the image's
   pixels), else a content-hash split of the pool (``config.split``), identical images always in
   one split; in that case a class with no box in train gets the image that holds it moved there;
3. map class ids: ``config.class_ids`` (source id -> index into ``config.classes``; empty: the
   same ids); boxes of other classes are dropped (counted);
4. duplicates: the same pixels in two splits -- with ``duplicates: drop`` the later copies (split
   order train, val, test) are left out and listed; with ``fail`` they stay for the contract to fail.

Writes ``train.parquet``, ``val.parquet``, ``test.parquet`` (``labels.py``'s format) and
``prepare.json`` (counts, duplicates dropped, boxes dropped, files skipped).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from deepflow.kinds.detection import yolo
from deepflow.kinds.detection.labels import format_yolo
from deepflow.newentry import EntryError

SPLITS = ("train", "val", "test")


@dataclass
class Plan:
    """The splits of a scanned folder, before the class mapping and the duplicate check."""

    parts: dict[str, list[yolo.Item]]
    how: str  # said to the user
    notes: list[str] = field(default_factory=list)


def _rank(item: yolo.Item, seed: int) -> str:
    return hashlib.sha1(f"{seed}:{item.content_hash}".encode()).hexdigest()


def _cut(items: list[yolo.Item], n: int, seed: int) -> tuple[list[yolo.Item], list[yolo.Item]]:
    """(the ``n``-ish images of lowest salted pixel hash, the rest); identical images stay together."""
    order = sorted({_rank(i, seed) for i in items})
    if n <= 0 or not order:
        return [], list(items)
    taken, count = set(), 0
    by_rank: dict[str, int] = {}
    for i in items:
        by_rank[_rank(i, seed)] = by_rank.get(_rank(i, seed), 0) + 1
    for r in order:
        if count >= n:
            break
        taken.add(r)
        count += by_rank[r]
    return [i for i in items if _rank(i, seed) in taken], [i for i in items if _rank(i, seed) not in taken]


def assign(scan: yolo.Scan, val: float, test: float, seed: int) -> Plan:
    """Split ``scan``'s images (see the module docstring); deterministic for a given folder and config."""
    given: dict[str | None, list[yolo.Item]] = {}
    for item in scan.items:
        given.setdefault(item.split, []).append(item)
    total = len(scan.items)
    if None in given:
        return _pool_split(given[None], val, test, seed, scan.layout.names or [])
    if "train" not in given:
        raise EntryError(f"{scan.layout.root}: the folder has {' and '.join(s for s in given)} splits but no train "
                         "split: add one, or put all images in one images/ folder to be split by content")
    parts = {s: list(given.get(s, [])) for s in SPLITS}
    notes, how = [], f"the folder's own ({', '.join(s for s in SPLITS if s in given)})"
    if not parts["val"]:
        parts["val"], parts["train"] = _cut(parts["train"], max(1, round(val * total)), seed)
        notes.append(f"no val split in the folder: {len(parts['val'])} images cut from train by content hash")
    if not parts["test"]:
        n_test = max(1, round(test * total))
        source = "val" if len(parts["val"]) >= 2 * n_test else "train"
        parts["test"], parts[source] = _cut(parts[source], n_test, seed + 1)
        notes.append(f"no test split in the folder: {len(parts['test'])} images cut from {source} by content hash")
    for s in SPLITS:
        if not parts[s]:
            raise EntryError(f"{scan.layout.root}: the {s} split would be empty ({len(parts['train'])} train, "
                             f"{len(parts['val'])} val images): add images")
    return Plan(parts, how, notes)


def _pool_split(items: list[yolo.Item], val: float, test: float, seed: int, names: list[str]) -> Plan:
    n = len({i.content_hash for i in items})
    if n < 3:
        raise EntryError(f"{n} distinct images: too few for train, val and test splits (add images)")
    n_val, n_test = max(1, round(val * len(items))), max(1, round(test * len(items)))
    test_part, rest = _cut(items, n_test, seed)
    val_part, train = _cut(rest, n_val, seed + 1)
    parts = {"train": train, "val": val_part, "test": test_part}
    notes = []
    train_classes = {c for i in train for c in i.classes.tolist()}
    for cls in sorted({c for i in items for c in i.classes.tolist()} - train_classes):
        for s in ("val", "test"):
            holders = sorted((i for i in parts[s] if cls in i.classes), key=lambda i: _rank(i, seed))
            if holders and len({i.content_hash for i in parts[s]}) > 1:
                moved = [i for i in parts[s] if i.content_hash == holders[0].content_hash]
                parts[s] = [i for i in parts[s] if i.content_hash != holders[0].content_hash]
                parts["train"] += moved
                name = names[cls] if cls < len(names) else f"class_{cls}"
                notes.append(f"{name} had no box in train: moved {moved[0].image_id} from {s} to train")
                break
    if not parts["train"]:
        raise EntryError(f"{len(items)} images: too few for train, val and test splits (add images)")
    how = (f"content hash (the folder has no splits of its own): {1 - val - test:.0%} train, {val:.0%} val, "
           f"{test:.0%} test, identical images in one split")
    return Plan(parts, how, notes)


def duplicates(parts: dict[str, list[yolo.Item]]) -> list[dict]:
    """Images whose pixels are already in an earlier split (order train, val, test): the later copies."""
    first: dict[str, str] = {}
    found = []
    for s in SPLITS:
        for item in parts[s]:
            seen = first.get(item.content_hash)
            if seen is not None and not seen.startswith(f"{s}/"):
                found.append({"split": s, "image": f"{s}/{item.image_id}", "same_as": seen,
                              "path": str(item.path)})
            first.setdefault(item.content_hash, f"{s}/{item.image_id}")
    return found


def class_index(classes: list[str], class_ids: dict[int, int]) -> dict[int, int]:
    """Source class id -> prepared id (an index into ``classes``); empty ``class_ids``: the same ids."""
    mapping = {int(k): int(v) for k, v in class_ids.items()} if class_ids else {i: i for i in range(len(classes))}
    if bad := [k for k, v in mapping.items() if not 0 <= v < len(classes)]:
        raise EntryError(f"class_ids: source id {bad[0]} maps to {mapping[bad[0]]}, outside classes "
                         f"(0..{len(classes) - 1})")
    return mapping


def frames(parts: dict[str, list[yolo.Item]], mapping: dict[int, int],
           drop: set[str]) -> tuple[dict[str, pd.DataFrame], int]:
    """The prepared splits (``labels.py``'s rows), leaving out the ``drop`` images (``split/image_id``);
    and the number of boxes of classes outside ``mapping`` that were left out."""
    out, dropped_boxes = {}, 0
    for s in SPLITS:
        rows = []
        for item in parts[s]:
            if f"{s}/{item.image_id}" in drop:
                continue
            keep = np.array([c in mapping for c in item.classes.tolist()], dtype=bool)
            dropped_boxes += int((~keep).sum())
            ours = np.array([mapping[c] for c in item.classes[keep].tolist()], dtype=np.int64)
            rows.append({"image_id": item.image_id, "image": item.path.read_bytes(), "width": item.width,
                         "height": item.height, "labels": format_yolo(ours, item.boxes[keep])})
        out[s] = pd.DataFrame(rows, columns=["image_id", "image", "width", "height", "labels"])
    return out, dropped_boxes


def prepare(cfg, out_dir: Path, scan: yolo.Scan | None = None) -> dict:
    """Scan ``cfg.source`` (or take ``scan``: what ``new`` just read), split, map, drop duplicates as
    ``cfg.duplicates`` says; write the splits and ``prepare.json`` into ``out_dir``. Returns its content."""
    from deepflow.usecase import project_path

    scan = scan or yolo.scan(project_path(cfg.source))
    s = cfg.split
    plan = assign(scan, s.val, s.test, s.seed)
    copies = duplicates(plan.parts)
    drop = {d["image"] for d in copies} if cfg.duplicates == "drop" else set()
    splits, dropped_boxes = frames(plan.parts, class_index(list(cfg.classes), dict(cfg.class_ids)), drop)
    for name, frame in splits.items():
        if frame.empty:
            raise EntryError(f"the {name} split is empty once the duplicates of earlier splits are dropped "
                             f"({len(copies)} copies): add images of its own")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in splits.items():
        frame.to_parquet(out_dir / f"{name}.parquet", index=False)
    record = {"source": str(cfg.source), "split": plan.how, "notes": plan.notes,
              "counts": {name: len(frame) for name, frame in splits.items()},
              "duplicates": cfg.duplicates,
              "duplicates_dropped" if cfg.duplicates == "drop" else "duplicates_kept":
                  [{k: d[k] for k in ("image", "same_as")} for d in copies],
              "boxes_dropped": dropped_boxes, "images_without_labels": scan.counts.get("no_label", 0),
              "files_skipped": scan.skipped, "label_files_without_image": scan.counts.get("orphans", 0),
              "polygons_as_boxes": scan.counts.get("polygons", 0), "boxes_clipped": scan.counts.get("clipped", 0)}
    (out_dir / "prepare.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> None:
    from deepflow import config, newentry, usecase

    parser = argparse.ArgumentParser(description="read, check and split a detection entry's YOLO folder")
    parser.add_argument("name", help="the entry: datasets/<name>.yaml of kind detection")
    parser.add_argument("--out", type=Path, default=None, help="the splits' folder (default: config.prepared_dir)")
    args = parser.parse_args(argv)
    try:
        cfg = newentry.stage_config(args.name, "detection")
        out = args.out or usecase.project_path(cfg.prepared_dir)
        record = prepare(cfg, out)
    except (usecase.UnknownUseCase, config.ConfigError, EntryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for note in record["notes"]:
        print(note)
    if dropped := record.get("duplicates_dropped"):
        print(f"dropped {len(dropped)} images identical to one in an earlier split (listed in {out / 'prepare.json'})")
    print(f"{args.name}: " + ", ".join(f"{k} {v:,}" for k, v in record["counts"].items()) + f" images -> {out}")


if __name__ == "__main__":
    main()
