"""``deepflow new NAME --data FOLDER`` for images: a YOLO-format folder becomes a detection entry, with no code.

Reads the folder as the prepare stage will (``yolo.scan``: every image decoded and hashed, every
label line checked; ``prepare.assign``: the splits), then infers and prints everything: the layout,
the classes (from ``data.yaml`` or ``classes.txt``, else named by their ids; classes with no box in
train are left out), the splits, identical images in two splits, classes too rare to learn, the
network's input size and the training length the budget allows. Only when all that succeeds is
anything written (the steps every kind shares are in ``deepflow/newentry.py``): the folder copy,
the entry, ``reports/<name>/profile.md``, then the prepared splits (a ``<name>_prepare`` DVC stage,
or here).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from deepflow import newentry, settings
from deepflow.kinds.detection import prepare as prep
from deepflow.kinds.detection import yolo
from deepflow.newentry import EntryError, parse_budget, project_relative

STAGE_CODE = ("src/deepflow/kinds/detection/prepare.py", "src/deepflow/kinds/detection/yolo.py",
              "src/deepflow/kinds/detection/labels.py")  # what the prepare stage runs: a change re-runs it
SPLIT = {"val": 0.15, "test": 0.15, "seed": 0}
RARE_BOXES = 10  # a class with fewer training boxes than this is reported as too rare to learn
# The network's input: CPU-sized. The cap is set by training speed (it grows with the pixels);
# serving latency hardly tells 256 from 320 px (docstring of latency_ceiling).
MAX_IMG_SIZE, MIN_IMG_SIZE = 320, 64
# The promotion's latency ceiling (p95 ms, batch 1) up to CEILING_AT px: see latency_ceiling.
LATENCY_CEILING_MS, CEILING_AT = 800.0, 320
DEEP_IMAGES_PER_S_AT_160 = 60.0  # the slower candidate's training speed on a laptop CPU (docs: 64 img/s)
MAX_EPOCHS, MIN_EPOCHS = 100, 3
SHOWN = 12  # classes named in a printed line (the profile has them all)
SMALL_TRAIN = 100  # fewer training images: the promotion floor only asks that the model finds something


@dataclass
class NewResult:
    name: str
    entry: Path
    profile: Path
    source: Path
    prepared: Path
    classes: list[str]
    class_ids: dict[int, int]
    img_size: int
    split: str
    duplicates: list[dict] = field(default_factory=list)
    rare: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    dvc: bool = False


@dataclass
class Classes:
    names: list[str]  # the entry's classes, in prepared-id order
    ids: dict[int, int]  # source id -> index into names (every kept source id)
    unused: list[str]  # named by the dataset, no box anywhere
    not_in_train: list[str]  # boxes only in val/test: left out
    notes: list[str]


def choose_classes(scan: yolo.Scan, plan: prep.Plan) -> Classes:
    """The classes to learn: source ids with a box in train, named by the dataset (else ``class_<id>``)."""
    names = scan.layout.names

    def name(i: int) -> str:
        return names[i] if names and i < len(names) else f"class_{i}"

    used = sorted({c for i in scan.items for c in i.classes.tolist()})
    in_train = {c for i in plan.parts["train"] for c in i.classes.tolist()}
    kept = [c for c in used if c in in_train]
    if not kept:
        raise EntryError(f"{scan.layout.root}: no box in the train split's label files: a detection entry needs "
                         "labelled training images")
    out: list[str] = []
    ids: dict[int, int] = {}
    notes = []
    for c in kept:
        n = name(c)
        if n in out:
            notes.append(f"class ids {[k for k, v in ids.items() if out[v] == n][0]} and {c} share the name {n!r}: "
                         "learnt as one class")
        else:
            out.append(n)
        ids[c] = out.index(n)
    unused = [name(i) for i in range(len(names or [])) if i not in used and name(i) != f"class_{i}"]
    return Classes(out, ids, unused, [name(c) for c in used if c not in in_train], notes)


def choose_img_size(scan: yolo.Scan) -> tuple[int, str]:
    """A multiple of 32 near the median image's longer side, within [MIN_IMG_SIZE, MAX_IMG_SIZE]."""
    longer = float(np.median([max(i.width, i.height) for i in scan.items]))
    size = int(min(MAX_IMG_SIZE, max(MIN_IMG_SIZE, 32 * round(longer / 32))))
    why = f"median image's longer side {longer:.0f} px"
    if longer > MAX_IMG_SIZE:
        why += f", capped at {MAX_IMG_SIZE} for CPU training (--img-size to change)"
    return size, why


def choose_training(n_train: int, n_val: int, img_size: int, budget_s: float, n_candidates: int) -> dict:
    """Epochs the budget allows the slower candidate (the budget still cuts a run that is slower),
    a batch that gives a small set several steps per epoch, and a patience of half the epochs: the
    one-cycle rate peaks at 15 % of the run and a small set's mAP often stays 0 until it anneals, so
    a shorter patience stopped runs at mAP 0 just past the peak (best weights are kept either way)."""
    rate = DEEP_IMAGES_PER_S_AT_160 * (160 / img_size) ** 2
    fit_s = max(budget_s * 0.85 - 30.0, 10.0) / n_candidates
    epochs = int(min(MAX_EPOCHS, max(MIN_EPOCHS, fit_s * rate / (n_train + n_val / 3))))
    batch = 16 if n_train < 400 else 32
    return {"epochs": epochs, "batch_size": batch, "patience": max(4, math.ceil(epochs / 2))}


def _per_class(parts: dict[str, list[yolo.Item]], ids: dict[int, int], names: list[str],
               drop: set[str]) -> dict[str, dict[str, int]]:
    out = {s: dict.fromkeys(names, 0) for s in prep.SPLITS}
    for s, items in parts.items():
        for item in items:
            if f"{s}/{item.image_id}" not in drop:
                for c in item.classes.tolist():
                    if c in ids:
                        out[s][names[ids[c]]] += 1
    return out


def latency_ceiling(img_size: int) -> float:
    """p95 ms at batch 1 (decode + network + NMS, worst case 100 detections): 800 ms up to a 320-px
    input, scaled with the pixels above it.

    Measured on a 2-core CPU (torch's 2 threads, a 640x480 JPEG, both candidates): quiet, p95 was
    18-41 ms at 160 px and 27-56 ms at 320 px (shallow-deep): decode, Python and NMS dominate, not
    the pixels. On the same machine kept busy by other processes (load ~3 on 2 cores, as a shared
    or CI machine is) p95 rose to 170-400 ms at 256-320 px. The ceiling keeps 2x over that busy
    p95, so the gate stops a model that is truly slow (a wider network, a larger input) rather than
    flipping with the machine's load."""
    return round(LATENCY_CEILING_MS * max(1.0, (img_size / CEILING_AT) ** 2), 1)


def _classes(n: int) -> str:
    return f"{n} class" if n == 1 else f"{n} classes"


def _more(names: list[str]) -> str:
    return f", ... ({len(names) - SHOWN} more in the profile)" if len(names) > SHOWN else ""


@dataclass
class Inference:
    """What ``new`` read and decided: printed, written to the entry and the profile."""

    scan: yolo.Scan
    plan: prep.Plan
    classes: Classes
    img_size: int
    img_reason: str
    duplicates: list[dict]
    duplicate_mode: str
    boxes: dict[str, dict[str, int]]  # split -> class -> boxes (after the duplicates are dropped)
    images: dict[str, int]
    rare: list[str]
    train: dict
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        s, lay = self.scan, self.scan.layout
        named = f"from {lay.names_from}" if lay.names_from else "named by their ids (no data.yaml or classes.txt)"
        shown = self.classes.names[:SHOWN]
        more = _more(self.classes.names)
        out = [f"read      {lay.root.name}/: {lay.how}; {len(s.items):,} images",
               f"classes   {len(self.classes.names)} {named}: {', '.join(shown)}{more}",
               "split     " + ", ".join(f"{k} {v:,}" for k, v in self.images.items()) + f" images: {self.plan.how}",
               "boxes     " + ", ".join(f"{c} " + "/".join(str(self.boxes[sp][c]) for sp in prep.SPLITS)
                                       for c in shown) + f"{more} (train/val/test)",
               f"img size  {self.img_size} ({self.img_reason})",
               f"training  up to {self.train['epochs']} epochs, batch {self.train['batch_size']} (the budget stops "
               "a run that is slower)"]
        if self.duplicates:
            what = ("dropped by prepare (duplicates: drop; --duplicates fail to keep them for the contract to fail)"
                    if self.duplicate_mode == "drop" else "kept: the data contract will fail until they are removed")
            shown = ", ".join(f"{d['image']} = {d['same_as']}" for d in self.duplicates[:3])
            n = len(self.duplicates)
            out.append(f"duplicates {n} image{'s' if n > 1 else ''} identical to one in an earlier split, {what}: "
                       f"{shown}"
                       + (", ..." if len(self.duplicates) > 3 else ""))
        else:
            out.append("duplicates none across splits")
        if self.rare:
            out.append(f"rare      {_classes(len(self.rare))} with under {RARE_BOXES} training boxes, too few to learn "
                       f"well: {', '.join(self.rare[:SHOWN])}{_more(self.rare)}")
        return out + [f"note      {n}" for n in self.notes]

    def notes_from_scan(self) -> None:
        c, s = self.scan.counts, self.scan
        lay, cl = s.layout, self.classes
        self.notes += lay.notes + self.plan.notes + cl.notes
        if not lay.names_from:
            self.notes.append("the classes are named by their ids: rename them in the entry's `classes` (same order)")
        if cl.unused:
            self.notes.append(f"left out {_classes(len(cl.unused))} with no box anywhere: {', '.join(cl.unused[:10])}"
                              + (", ..." if len(cl.unused) > 10 else ""))
        if cl.not_in_train:
            self.notes.append(f"left out {_classes(len(cl.not_in_train))} with no box in train (their val/test boxes "
                              f"are dropped): {', '.join(cl.not_in_train)}")
        for key, text in (("polygons", "polygon labels read as their bounding boxes"),
                          ("clipped", "boxes past the frame's edge clipped to it"),
                          ("no_label", "images without a label file: no boxes"),
                          ("orphans", "label files without an image: not used"),
                          ("rotated", "JPEGs with an EXIF rotation: read unrotated, as stored; check their boxes")):
            if c.get(key):
                self.notes.append(f"{c[key]:,} {text}")
        if s.skipped:
            skipped = ", ".join(f"{k} {v}" for k, v in s.skipped.items())
            self.notes.append(f"skipped files that are not images: {skipped}")

    def profile(self, name: str, origin: str) -> str:
        lay, cl = self.scan.layout, self.classes
        sizes = np.array([(i.width, i.height) for i in self.scan.items])
        md = [f"# {name}: data profile", "", f"Generated by `deepflow new` {origin}.", "",
              *(f"- {line}" for line in self.lines()), "",
              "## Images per split", "", "| split | images | boxes | images without boxes |", "|---|---:|---:|---:|"]
        drop = {d["image"] for d in self.duplicates} if self.duplicate_mode == "drop" else set()
        for s in prep.SPLITS:
            kept = [i for i in self.plan.parts[s] if f"{s}/{i.image_id}" not in drop]
            md.append(f"| {s} | {len(kept):,} | {sum(self.boxes[s].values()):,} | "
                      f"{sum(1 for i in kept if not len(i.classes)):,} |")
        md += ["", "## Boxes per class", "", "| class | source id | train | val | test | |",
               "|---|---:|---:|---:|---:|---|"]
        for k, n in enumerate(cl.names):
            src = ", ".join(str(i) for i, v in cl.ids.items() if v == k)
            flag = "too rare to learn" if n in self.rare else ""
            md.append(f"| {n} | {src} | " + " | ".join(f"{self.boxes[s][n]:,}" for s in prep.SPLITS) + f" | {flag} |")
        md += ["", "## Image sizes", "",
               f"- width {sizes[:, 0].min()}–{sizes[:, 0].max()} px (median {np.median(sizes[:, 0]):.0f}), height "
               f"{sizes[:, 1].min()}–{sizes[:, 1].max()} px (median {np.median(sizes[:, 1]):.0f})",
               f"- network input {self.img_size} px, letterboxed ({self.img_reason})", "",
               "## Identical images in two splits", ""]
        md += ([f"- `{d['image']}` = `{d['same_as']}` ({d['path']})" for d in self.duplicates]
               or ["- none"])
        md += ["", "## Left out, skipped and rare", ""]
        md += [f"- {n}" for n in self.notes] or ["- nothing"]
        if self.rare:
            md.append(f"- too rare to learn (< {RARE_BOXES} training boxes): {', '.join(self.rare)}")
        if lay.names and cl.unused:
            md.append(f"- classes named by the dataset with no box: {', '.join(cl.unused)}")
        return "\n".join(md) + "\n"

    def to_entry(self, name: str, source: str, prepared: str, budget_s: float) -> dict:
        n_train = self.images["train"]
        cfg: dict = {"prepared_dir": prepared, "source": source, "classes": list(self.classes.names)}
        identity = list(self.classes.ids) == list(range(len(self.classes.names))) and \
            all(k == v for k, v in self.classes.ids.items())
        if not identity:
            cfg["class_ids"] = dict(self.classes.ids)
        cfg |= {"duplicates": self.duplicate_mode, "split": dict(SPLIT), "budget_s": float(budget_s),
                "candidates": ["shallow", "deep"], "train": dict(self.train), "model": {"img_size": self.img_size}}
        most = max((len(i.classes) for i in self.scan.items), default=0)
        if most > 40:  # the contract's default bound and the network's default max detections
            cfg["max_boxes_per_image"] = int(math.ceil(most * 1.5))
            cfg["model"]["max_det"] = max(100, cfg["max_boxes_per_image"])
        cfg["promotion"] = {"floor": 0.01 if n_train < SMALL_TRAIN else 0.05, "margin": 0.0,
                            "max_latency_p95_ms": latency_ceiling(self.img_size), "max_size_mb": 20.0}
        return {"kind": "detection",
                "description": f"object detection: {', '.join(self.classes.names[:8])}"
                               + (", ..." if len(self.classes.names) > 8 else "") + f" ({self.scan.layout.root.name})",
                "default": False, "schedule": None,
                "monitor": {"min_rows": int(min(50, max(10, self.images["test"])))}, "config": cfg}


def infer(data: Path, img_size: int | None, duplicates: str, budget_s: float) -> Inference:
    """Read and decide everything; raises EntryError (nothing written) on the first problem."""
    scan = yolo.scan(data)
    plan = prep.assign(scan, SPLIT["val"], SPLIT["test"], SPLIT["seed"])
    classes = choose_classes(scan, plan)
    copies = prep.duplicates(plan.parts)
    drop = {d["image"] for d in copies} if duplicates == "drop" else set()
    images = {s: sum(1 for i in plan.parts[s] if f"{s}/{i.image_id}" not in drop) for s in prep.SPLITS}
    if empty := [s for s, n in images.items() if n == 0]:
        raise EntryError(f"the {empty[0]} split holds only copies of images in earlier splits ({len(copies)} "
                         "duplicates): add images of its own")
    boxes = _per_class(plan.parts, classes.ids, classes.names, drop)
    rare = [c for c in classes.names if boxes["train"][c] < RARE_BOXES]
    if img_size is None:
        size, why = choose_img_size(scan)
    else:
        if img_size < 32 or img_size % 32:
            raise EntryError(f"--img-size {img_size}: give a multiple of 32 (e.g. 160, 320, 640)")
        size, why = img_size, "--img-size"
    train = choose_training(images["train"], images["val"], size, budget_s, 2)
    inf = Inference(scan, plan, classes, size, why, copies, duplicates, boxes, images, rare, train)
    inf.notes_from_scan()
    if not sum(boxes["test"].values()):
        inf.notes.append("the test split has no box of a learnt class: its mAP says nothing; add labelled test images")
    return inf


def _with_comments(text: str) -> str:
    """The entry's YAML with a comment on the promotion floor and the training length."""
    notes = {"  floor: ": "  # test mAP@0.5 to reach; modest (a small dataset cannot be held to more; raise it as "
                          "data grows), but a model that finds nothing is never champion",
             "  epochs: ": "  # sized to the budget (budget_s); the budget stops a slower run anyway",
             "  img_size: ": "  # a multiple of 32; larger sees small objects better, trains slower",
             "  max_latency_p95_ms: ": "  # batch 1 with decode + NMS; measured on 2 CPU cores: ~55 ms quiet, ~400 ms "
                                     "busy at 320 px: 2x that, scaled with the pixels above 320"}
    out = []
    for line in text.splitlines():
        hit = next((c for k, c in notes.items() if line.lstrip(" ").startswith(k.strip() + " ")
                    and line.startswith(" ")), None)
        out.append(line + hit if hit else line)
    return "\n".join(out) + "\n"


def create(name: str, data: str | Path, *, img_size: int | None = None, duplicates: str = "drop",
           budget: str | float = "5m", dvc: bool = True, force: bool = False, command: str | None = None,
           echo: Callable[[str], None] = print) -> NewResult:
    """Read and check the folder, infer (nothing written if that fails), then write the folder copy,
    the entry, the profile and the prepared splits; ``echo`` gets every printed line."""
    from deepflow import usecase

    entry_path = newentry.check_name(name, force)
    budget_s = parse_budget(budget)
    if duplicates not in ("drop", "fail"):
        raise EntryError(f"--duplicates {duplicates!r}: use drop (leave out later copies, listed) or fail")
    data = Path(data)
    if data.is_file() and data.name in yolo.YAML_NAMES:
        data = data.parent
    if not data.exists():
        raise EntryError(f"{data}: no such folder")
    inf = infer(data, img_size, duplicates, budget_s)
    for line in inf.lines():
        echo(line)

    source = newentry.copy_source(data, name)
    prepared = settings.data_dir() / "prepared" / name
    profile_path = settings.reports_dir() / name / "profile.md"
    command = command or f"deepflow new {name} --data {data}"
    mapping = inf.to_entry(name, project_relative(source), project_relative(prepared), budget_s)
    about = [f"from the YOLO folder {data.name} ({len(inf.scan.items):,} images). Meant to be reviewed and edited:",
             "`classes` are the names served (rename freely, keep the order: index = class id); `class_ids` maps the",
             "folder's class ids to them; `duplicates: drop` leaves out images identical to one in an earlier split.",
             f"The profile: {project_relative(profile_path)}. Then: deepflow run {name}"]
    entry_path.parent.mkdir(parents=True, exist_ok=True)
    entry_path.write_text(_with_comments(newentry.entry_text(mapping, command, about)))
    try:
        cfg = usecase.resolve_config(usecase.read_entry(entry_path))
    except Exception:
        entry_path.unlink()
        raise
    profile_path.parent.mkdir(parents=True, exist_ok=True)
    profile_path.write_text(inf.profile(name, f"from {data}, {datetime.now(UTC):%Y-%m-%d %H:%M UTC}"))
    echo(f"wrote     {project_relative(entry_path)} (the entry: review it) and {project_relative(profile_path)}")

    def prepare_here() -> None:  # the copy holds the same bytes: point the scan at it rather than read it again
        for item in inf.scan.items:
            item.path = source / item.path.relative_to(data)
        prep.prepare(cfg, prepared, scan=inf.scan)

    used_dvc, counts = newentry.finish(name, entry_path, source, prepared, dvc_wanted=dvc,
                                       module="deepflow.kinds.detection.prepare", stage_code=STAGE_CODE,
                                       prepare_here=prepare_here, echo=echo)
    return NewResult(name=name, entry=entry_path, profile=profile_path, source=source, prepared=prepared,
                     classes=list(inf.classes.names), class_ids=dict(inf.classes.ids), img_size=inf.img_size,
                     split=inf.plan.how, duplicates=inf.duplicates, rare=inf.rare, counts=counts, dvc=used_dvc)
