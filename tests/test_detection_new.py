"""``deepflow new NAME --data FOLDER`` for YOLO folders: every layout found in the wild, the inferences
(classes, splits, image size, duplicates, rare classes) and the bad inputs that must stop it with
one line and nothing written. Small images generated here with PIL; no training."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepflow import usecase
from deepflow.kinds.detection import new, prepare, yolo
from deepflow.kinds.detection.labels import parse_yolo
from deepflow.newentry import EntryError

BOX = "0.5 0.5 0.4 0.4"


def image(seed: int, size: tuple[int, int] = (48, 40), fmt: str = "PNG") -> bytes:
    """A distinct small image (seeded noise and a coloured square) as PNG or JPEG bytes."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    pixels[size[1] // 4: size[1] // 2, size[0] // 4: size[0] // 2] = rng.integers(0, 255, 3)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


def put(root: Path, images: str, labels: str | None, n: int, classes=(0, 1), start: int = 0,
        lines: list[str] | None = None, fmt: str = "PNG", size=(48, 40)) -> None:
    """``n`` images under ``root/images`` with label files under ``root/labels`` (None: no labels)."""
    (root / images).mkdir(parents=True, exist_ok=True)
    if labels is not None:
        (root / labels).mkdir(parents=True, exist_ok=True)
    for k in range(n):
        stem = f"img{start + k:03d}"
        suffix = ".jpg" if fmt == "JPEG" else ".png"
        (root / images / f"{stem}{suffix}").write_bytes(image(start + k, size, fmt))
        if labels is not None:
            text = lines if lines is not None else [f"{classes[k % len(classes)]} {BOX}"]
            (root / labels / f"{stem}.txt").write_text("\n".join(text) + "\n")


@pytest.fixture
def places(tmp_path: Path, datasets: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv("DEEPFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DEEPFLOW_REPORTS_DIR", str(tmp_path / "reports"))
    return {"datasets": datasets, "data": tmp_path / "data", "reports": tmp_path / "reports", "tmp": tmp_path}


def make(places, folder: Path, name: str = "shapes", **kw) -> tuple[new.NewResult, str]:
    printed: list[str] = []
    result = new.create(name, folder, dvc=False, echo=printed.append, **kw)
    return result, "\n".join(printed)


def splits(result: new.NewResult) -> dict[str, pd.DataFrame]:
    return {s: pd.read_parquet(result.prepared / f"{s}.parquet") for s in prepare.SPLITS}


def nothing_written(places, name: str = "shapes") -> bool:
    return not (places["datasets"] / f"{name}.yaml").exists() and not places["data"].exists() \
        and not (places["reports"] / name).exists()


# --- layouts --------------------------------------------------------------------------------------


def test_roboflow_data_yaml_with_dotdot_paths_and_valid(places) -> None:
    root = places["tmp"] / "export"
    put(root, "train/images", "train/labels", 12, classes=(0, 1, 2))
    put(root, "valid/images", "valid/labels", 4, classes=(0, 1, 2), start=100)
    put(root, "test/images", "test/labels", 3, classes=(0, 1, 2), start=200, fmt="JPEG")
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\ntest: ../test/images\n"
                                    "nc: 3\nnames: ['cat', 'dog', 'fox']\nroboflow: {workspace: x}\n")
    result, printed = make(places, root)
    assert result.classes == ["cat", "dog", "fox"] and result.class_ids == {0: 0, 1: 1, 2: 2}
    assert result.counts == {"train": 12, "val": 4, "test": 3}
    assert "data.yaml" in printed and "the folder's own" in printed and "cat 4/2/1" in printed
    e = usecase.entry("shapes")
    cfg = usecase.resolve_config(e)
    assert e.kind == "detection" and cfg.classes == ["cat", "dog", "fox"] and cfg.class_ids == {}
    assert cfg.duplicates == "drop" and cfg.budget_s == 300.0 and cfg.candidates == ["shallow", "deep"]
    assert cfg.promotion.floor == 0.01 and cfg.promotion.max_latency_p95_ms == 800.0  # tiny: finds something
    assert "# test mAP@0.5" in e.path.read_text()
    parts = splits(result)
    assert list(parts["train"].columns) == ["image_id", "image", "width", "height", "labels"]
    assert {int(parse_yolo(t)[0][0]) for t in parts["train"]["labels"]} == {0, 1, 2}
    record = json.loads((result.prepared / "prepare.json").read_text())
    assert record["counts"] == result.counts and record["duplicates_dropped"] == []
    profile = result.profile.read_text()
    assert "## Boxes per class" in profile and "| cat | 0 | 4 | 2 | 1 |" in profile


def test_data_yaml_with_dict_names_path_and_no_test(places) -> None:
    root = places["tmp"] / "ultra"
    put(root, "train/images", "train/labels", 16, classes=(3, 7))
    put(root, "valid/images", "valid/labels", 10, classes=(3, 7), start=100)
    (root / "data.yaml").write_text("path: .\ntrain: train/images\nval: valid/images\n"
                                    "names:\n  0: person\n  3: car\n  7: truck\n")
    result, printed = make(places, root)
    assert result.classes == ["car", "truck"] and result.class_ids == {3: 0, 7: 1}
    assert result.counts["train"] == 16 and result.counts["val"] + result.counts["test"] == 10
    assert "no test split in the folder" in printed and "cut from val" in printed
    assert "left out 1 class with no box anywhere: person" in printed  # ids the dataset does not name: not listed
    assert usecase.get("shapes").cfg.class_ids == {3: 0, 7: 1}


def test_absolute_path_in_data_yaml_reads_the_folder_itself(places) -> None:
    root = places["tmp"] / "abs"
    put(root, "train/images", "train/labels", 8)
    put(root, "val/images", "val/labels", 4, start=50)
    (root / "data.yaml").write_text("path: /somewhere/else\ntrain: train/images\nval: val/images\nnames: [a, b]\n")
    result, printed = make(places, root)
    assert "path /somewhere/else ignored" in printed and result.counts["train"] == 8, printed


def test_images_split_folders_with_classes_txt(places) -> None:
    root = places["tmp"] / "nested"
    put(root, "images/train", "labels/train", 14)
    put(root, "images/val", "labels/val", 6, start=100)
    (root / "classes.txt").write_text("red\nblue\n")
    result, printed = make(places, root)
    assert result.classes == ["red", "blue"] and "images/<split>" in printed and "classes.txt" in printed
    assert sum(result.counts.values()) == 20 and "no test split" in printed


def test_split_folders_without_data_yaml(places) -> None:
    root = places["tmp"] / "plain"
    put(root, "train/images", "train/labels", 10)
    put(root, "val/images", "val/labels", 4, start=100)
    put(root, "test/images", "test/labels", 4, start=200)
    result, printed = make(places, root)
    assert result.counts == {"train": 10, "val": 4, "test": 4} and "<split>/images" in printed
    assert result.classes == ["class_0", "class_1"] and "rename them in the entry's `classes`" in printed


def test_flat_pool_is_split_by_content_and_ids_name_the_classes(places) -> None:
    root = places["tmp"] / "flat"
    put(root, "images", "labels", 30, classes=(0, 2, 5))
    (root / "images/readme.gif").write_bytes(b"GIF89a")  # not an image suffix we read: counted as skipped
    put(root, "images", "labels", 1, classes=(9,), start=90)  # a class in one image: it must be in train
    result, printed = make(places, root)
    assert result.classes == ["class_0", "class_2", "class_5", "class_9"]
    assert result.class_ids == {0: 0, 2: 1, 5: 2, 9: 3}
    assert "content hash" in printed and "skipped files that are not images: .gif 1" in printed
    parts = splits(result)
    assert sum(len(p) for p in parts.values()) == 31 and all(len(p) for p in parts.values())
    assert {int(c) for t in parts["train"]["labels"] for c in parse_yolo(t)[0]} == {0, 1, 2, 3}
    again = prepare.prepare(usecase.get("shapes").cfg, places["tmp"] / "again")  # the stage: same splits
    assert again["counts"] == result.counts
    assert pd.read_parquet(places["tmp"] / "again/test.parquet")["image_id"].tolist() == list(parts["test"]["image_id"])


def test_side_by_side_labels_polygons_and_missing_label_files(places) -> None:
    root = places["tmp"] / "seg"
    put(root, ".", ".", 12, lines=["0 0.1 0.1 0.6 0.2 0.5 0.7 0.2 0.6"])  # a polygon
    put(root, ".", None, 3, start=50)  # no label files: no boxes
    result, printed = make(places, root)
    assert "12 polygon labels read as their bounding boxes" in printed
    assert "3 images without a label file" in printed
    parts = splits(result)
    boxes = [parse_yolo(t)[1] for p in parts.values() for t in p["labels"] if t]
    assert np.allclose(boxes[0], [[0.35, 0.4, 0.5, 0.6]])


def test_a_box_cut_by_the_frame_edge_is_clipped_and_counted(places) -> None:
    root = places["tmp"] / "edge"
    put(root, "images", "labels", 10)
    (root / "labels/img001.txt").write_text("0 0.95 0.5 0.2 0.2\n1 0.5 0.5 0.2 1.0000001\n")
    result, printed = make(places, root)
    assert "1 boxes past the frame's edge clipped to it" in printed  # the second is rounding: clipped silently
    boxes = [parse_yolo(t)[1] for p in splits(result).values() for t in p["labels"]]
    assert any(np.allclose(b[0], [0.925, 0.5, 0.15, 0.2]) for b in boxes if len(b) == 2)


def test_a_zip_top_folder_is_entered(places) -> None:
    root = places["tmp"] / "unzipped"
    put(root / "MyData", "images", "labels", 12)
    result, printed = make(places, root)
    assert "read the folder inside: MyData/" in printed and sum(result.counts.values()) == 12


def test_class_only_outside_train_is_left_out_and_rare_classes_reported(places) -> None:
    root = places["tmp"] / "rare"
    put(root, "train/images", "train/labels", 30, classes=(0, 0, 0, 1))
    put(root, "val/images", "val/labels", 6, classes=(0, 1, 2), start=100)
    put(root, "test/images", "test/labels", 4, start=200)
    (root / "data.yaml").write_text("train: train/images\nval: val/images\ntest: test/images\nnames: [a, b, c]\n")
    result, printed = make(places, root)
    assert result.classes == ["a", "b"] and "left out 1 class with no box in train" in printed
    assert "rare      1 class with under 10 training boxes" in printed and result.rare == ["b"]
    assert "too rare to learn" in result.profile.read_text()
    record = json.loads((result.prepared / "prepare.json").read_text())
    assert record["boxes_dropped"] == 2


def test_image_size_is_chosen_from_the_data() -> None:
    def scan(*sizes):
        items = [yolo.Item(None, Path("x"), "x", None, w, h, "h", np.zeros(0, np.int64), np.zeros((0, 4)))
                 for w, h in sizes]
        return yolo.Scan(yolo.Layout(Path("."), ""), items)

    assert new.choose_img_size(scan((1280, 720), (640, 480), (1920, 1080)))[0] == 320  # capped for CPU
    assert new.choose_img_size(scan((100, 90), (96, 96), (110, 60)))[0] == 96
    assert new.choose_img_size(scan((20, 20), (30, 30), (40, 40)))[0] == 64  # at least 64
    assert new.choose_img_size(scan(*[(200, 150)] * 3))[0] == 192
    assert new.choose_training(40, 10, 96, 300, 2)["epochs"] == new.MAX_EPOCHS  # tiny: the cap
    assert new.choose_training(20000, 4000, 320, 300, 2)["epochs"] == new.MIN_EPOCHS  # big: the budget cuts


def test_img_size_override_and_chosen_size(places) -> None:
    root = places["tmp"] / "sizes"
    put(root, "images", "labels", 10, size=(130, 100))
    result, printed = make(places, root)
    assert result.img_size == 128 and "median image's longer side 130 px" in printed
    result, _ = make(places, root, name="other", img_size=224)
    assert usecase.get("other").cfg.model.img_size == 224
    with pytest.raises(EntryError, match="multiple of 32"):
        make(places, root, name="third", img_size=100)


@pytest.mark.parametrize("mode", ["drop", "fail"])
def test_identical_images_in_two_splits(places, mode: str) -> None:
    root = places["tmp"] / "dups"
    put(root, "train/images", "train/labels", 10)
    put(root, "val/images", "val/labels", 4, start=100)
    put(root, "test/images", "test/labels", 4, start=200)
    for k in range(2):  # two train images re-exported into val and test under other names
        (root / f"val/images/copy{k}.png").write_bytes((root / f"train/images/img00{k}.png").read_bytes())
        (root / f"val/labels/copy{k}.txt").write_text(f"0 {BOX}\n")
    Image.open(root / "train/images/img003.png").save(root / "test/images/again.jpg", quality=100)
    Image.open(root / "train/images/img003.png").save(root / "test/images/again.png")  # same pixels, other file
    result, printed = make(places, root, duplicates=mode)
    assert "duplicates 3 images identical to one in an earlier split" in printed
    assert "val/copy0 = train/img000" in printed
    parts = splits(result)
    record = json.loads((result.prepared / "prepare.json").read_text())
    if mode == "drop":
        assert "dropped by prepare" in printed and len(record["duplicates_dropped"]) == 3
        assert result.counts == {"train": 10, "val": 4, "test": 5} and "copy0" not in set(parts["val"]["image_id"])
        assert "`test/again.png` = `train/img003`" in result.profile.read_text()
    else:
        assert "the data contract will fail" in printed and len(record["duplicates_kept"]) == 3
        assert result.counts == {"train": 10, "val": 6, "test": 6}
        assert usecase.get("shapes").cfg.duplicates == "fail"


# --- bad input: one line, nothing written ---------------------------------------------------------


def _no_images(root: Path) -> None:
    (root / "images").mkdir(parents=True)
    (root / "images/notes.md").write_text("hello")


def _no_labels(root: Path) -> None:
    put(root, "images", None, 5)


def _four_numbers(root: Path) -> None:
    put(root, "images", "labels", 5)
    (root / "labels/img002.txt").write_text(f"0 {BOX}\n1 0.5 0.5 0.2\n")


def _outside_names(root: Path) -> None:
    put(root, "train/images", "train/labels", 5)
    put(root, "val/images", "val/labels", 3, start=10)
    (root / "data.yaml").write_text("train: train/images\nval: val/images\nnames: [a, b]\n")
    (root / "val/labels/img011.txt").write_text(f"0 {BOX}\n\n2 {BOX}\n")


def _undecodable(root: Path) -> None:
    put(root, "images", "labels", 5)
    (root / "images/img003.png").write_bytes(image(3)[:60])


def _empty_split(root: Path) -> None:
    put(root, "train/images", "train/labels", 5)
    (root / "valid/images").mkdir(parents=True)
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnames: [a, b]\n")


def _outside_frame(root: Path) -> None:
    put(root, "images", "labels", 5)
    (root / "labels/img001.txt").write_text("0 1.3 0.5 0.2 0.2\n")


def _pixels(root: Path) -> None:
    put(root, "images", "labels", 5)
    (root / "labels/img001.txt").write_text("0 24 20 10 10\n")


def _zero_size(root: Path) -> None:
    put(root, "images", "labels", 5)
    (root / "labels/img004.txt").write_text("1 0.5 0.5 0.0 0.3\n")


def _missing_split_folder(root: Path) -> None:
    put(root, "train/images", "train/labels", 5)
    (root / "data.yaml").write_text("train: train/images\nval: valid/images\nnames: [a, b]\n")


@pytest.mark.parametrize(("build", "message"), [
    (_no_images, r"no images \(\.jpg, \.png, \.\.\.\)"),
    (_no_labels, r"5 images but no label files"),
    (_four_numbers, r"img002\.txt:2: 4 numbers on a line"),
    (_outside_names, r"img011\.txt:3: class id 2 is outside names \(ids 0\.\.1\)"),
    (_undecodable, r"img003\.png: not a decodable image"),
    (_empty_split, r"the val split \(valid/images\) has no images"),
    (_outside_frame, r"img001\.txt:1: the box \(0 1\.3 0\.5 0\.2 0\.2\) is outside the frame: YOLO values"),
    (_pixels, r"img001\.txt:1: .* outside the frame \(pixel coordinates\?"),
    (_zero_size, r"img004\.txt:1: a box of zero size"),
    (_missing_split_folder, r"val: valid/images is not in the folder"),
])
def test_bad_input_is_one_line_and_writes_nothing(places, build, message: str) -> None:
    root = places["tmp"] / "bad"
    build(root)
    with pytest.raises(EntryError, match=message) as info:
        make(places, root)
    assert "\n" not in str(info.value)
    assert nothing_written(places)


def test_a_file_or_a_missing_folder_is_refused(places) -> None:
    (places["tmp"] / "x.png").write_bytes(image(1))
    with pytest.raises(EntryError, match="not a folder"):
        make(places, places["tmp"] / "x.png")
    with pytest.raises(EntryError, match="no such folder"):
        make(places, places["tmp"] / "nowhere")
    with pytest.raises(EntryError, match="--duplicates 'keep'"):
        make(places, places["tmp"], duplicates="keep")
    assert nothing_written(places)


def test_label_files_in_utf16_crlf_with_blank_lines_and_uppercase_suffixes_are_read(places) -> None:
    """Windows tools: a UTF-16 label file (with its byte-order mark), CRLF and trailing blank lines,
    an ``.JPG`` image: all read as the plain files they mean."""
    root = places["tmp"] / "windows"
    put(root, "images", "labels", 12)
    (root / "labels/img000.txt").write_bytes(f"1 {BOX}\r\n".encode("utf-16"))
    (root / "labels/img001.txt").write_bytes(f"0 {BOX}\r\n1 {BOX}\r\n\r\n\r\n".encode())
    (root / "images/img002.png").unlink()
    (root / "images/IMG002.JPG").write_bytes(image(2, fmt="JPEG"))
    (root / "labels/IMG002.txt").write_text(f"1 {BOX}\n")
    result, _ = make(places, root)
    labels = {r.image_id: r.labels for p in splits(result).values() for r in p.itertuples()}
    assert labels["img000"].split()[0] == "1" and len(labels["img001"].splitlines()) == 2
    assert labels["IMG002"].startswith("1 ")


def test_the_latency_ceiling_keeps_headroom_over_a_busy_machine() -> None:
    """Measured p95 at batch 1 on a busy 2-core CPU: up to ~400 ms at 256-320 px (new.latency_ceiling)."""
    busy_p95_ms = 400.0
    for size in (64, 160, 224, 256, 320):
        assert new.latency_ceiling(size) >= 2 * busy_p95_ms
    assert new.latency_ceiling(640) == pytest.approx(4 * new.latency_ceiling(320))  # larger inputs: more time
    assert new.MAX_IMG_SIZE <= new.CEILING_AT


def test_patience_lets_the_one_cycle_schedule_anneal() -> None:
    """A small set's mAP often stays 0 until the rate anneals: early stopping waits half the run."""
    for budget_s in (60.0, 300.0, 3600.0):
        t = new.choose_training(40, 10, 192, budget_s, 2)
        assert t["patience"] >= t["epochs"] / 2 and t["patience"] >= 4
