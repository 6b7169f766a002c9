"""Bad images and labels, whatever the path they come in by: a YOLO folder given to ``deepflow new``
(or re-read by the prepare stage, or the traffic entry's real-data sample), the prepared splits the
contract checks before training, an image sent to ``POST /v1/<name>/predict`` or ``deepflow score``.

Each bad input is an error that names the file (and line) or the item, and loses nothing: no entry
written, no model version registered, no alias moved. A folder with many bad files is one line that
lists the first problems and counts them all. (Issue 19, the image part; the cases are listed in
docs/reliability.md.) Tiny images made here with PIL; the one full run is marked slow.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFile
from typer.testing import CliRunner

from deepflow import tracking, usecase, validation
from deepflow.kinds.detection import new, prepare, yolo
from deepflow.kinds.detection.labels import ImageError, decode
from deepflow.newentry import EntryError

BOX = "0.5 0.5 0.4 0.4"


def encoded(seed: int, fmt: str = "PNG", size: tuple[int, int] = (48, 40)) -> bytes:
    """A distinct small image (seeded noise) as PNG or JPEG bytes."""
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


def folder(root: Path, n: int = 8, names: list[str] | None = ("a", "b")) -> Path:
    """``n`` PNGs in ``root/images`` with one box each in ``root/labels`` (classes 0 and 1), and a
    ``data.yaml`` naming the classes (``names`` None: no data.yaml)."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for k in range(n):
        (root / f"images/img{k:03d}.png").write_bytes(encoded(k))
        (root / f"labels/img{k:03d}.txt").write_text(f"{k % 2} {BOX}\n")
    if names is not None:
        (root / "data.yaml").write_text(f"names: {list(names)}\n")
    return root


def scan_error(root: Path) -> str:
    with pytest.raises(EntryError) as caught:
        yolo.scan(root)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# --- images: every pixel decoded, or an error naming the file ------------------------------------


def _truncated_jpeg(root: Path) -> str:
    (root / "images/img003.png").unlink()
    data = encoded(3, "JPEG", (200, 160))
    (root / "images/img003.jpg").write_bytes(data[: len(data) * 2 // 3])  # a copy cut short
    return r"images/img003\.jpg: not a decodable image: image file is truncated"


def _truncated_png(root: Path) -> str:  # the pixel data whole, the end chunk missing: load() alone took it
    (root / "images/img003.png").write_bytes(encoded(3)[:-12])
    return r"images/img003\.png: not a decodable image: truncated PNG file"


def _corrupt_png(root: Path) -> str:  # one flipped byte in the pixel data: its checksum fails
    data = bytearray(encoded(3))
    data[len(data) // 2] ^= 0xFF
    (root / "images/img003.png").write_bytes(bytes(data))
    return r"images/img003\.png: not a decodable image: "


def _zero_bytes(root: Path) -> str:
    (root / "images/img003.png").write_bytes(b"")
    return r"images/img003\.png: not a decodable image: empty \(0 bytes\)"


def _not_an_image(root: Path) -> str:
    (root / "images/img003.png").unlink()
    (root / "images/img003.jpg").write_text("<html>404 Not Found</html>")  # a failed download, saved as .jpg
    return r"images/img003\.jpg: not a decodable image: not in an image format"


# --- label lines: every line checked, file and line named -----------------------------------------


def _centre_outside(root: Path) -> str:
    (root / "labels/img001.txt").write_text(f"0 {BOX}\n0 1.8 0.5 0.1 0.1\n")
    return r"labels/img001\.txt:2: the box \(0 1\.8 0\.5 0\.1 0\.1\) is outside the frame"


def _negative_width(root: Path) -> str:
    (root / "labels/img001.txt").write_text("1 0.5 0.5 -0.2 0.3\n")
    return r"labels/img001\.txt:1: the box \(1 0\.5 0\.5 -0\.2 0\.3\) has a negative width or height"


def _too_few_fields(root: Path) -> str:
    (root / "labels/img002.txt").write_text("0 0.5 0.5 0.2\n")
    return r"labels/img002\.txt:1: 4 numbers on a line; a box is 5"


def _too_many_fields(root: Path) -> str:  # 6 numbers: not a box, and not a polygon (an odd count of coordinates)
    (root / "labels/img002.txt").write_text("0 0.5 0.5 0.2 0.2 0.9\n")
    return r"labels/img002\.txt:1: 6 numbers on a line"


def _not_numbers(root: Path) -> str:
    (root / "labels/img002.txt").write_text("car 0.5 0.5 0.2 0.2\n")
    return r"labels/img002\.txt:1: 'car 0\.5 0\.5 0\.2 0\.2' is not numbers"


def _not_finite(root: Path) -> str:
    (root / "labels/img002.txt").write_text("0 nan 0.5 0.2 0.2\n")
    return r"labels/img002\.txt:1: '0 nan 0\.5 0\.2 0\.2' holds a value that is not a finite number"


def _unknown_class(root: Path) -> str:  # data.yaml names 2 classes
    (root / "labels/img004.txt").write_text(f"0 {BOX}\n99 {BOX}\n")
    return r"labels/img004\.txt:2: class id 99 is outside names \(ids 0\.\.1\)"


def _fractional_class(root: Path) -> str:
    (root / "labels/img004.txt").write_text(f"1.5 {BOX}\n")
    return r"labels/img004\.txt:1: class id '1\.5' is not a non-negative integer"


def _huge_class_id(root: Path) -> str:  # no names to compare with: before, an OverflowError from numpy
    (root / "data.yaml").unlink()
    (root / "labels/img004.txt").write_text(f"1e30 {BOX}\n")
    return r"labels/img004\.txt:1: class id '1e30' is not a non-negative integer"


def _zero_size(root: Path) -> str:
    (root / "labels/img005.txt").write_text("1 0.5 0.5 0.0 0.3\n")
    return r"labels/img005\.txt:1: a box of zero size"


def _under_a_pixel(root: Path) -> str:  # 0.01 of a 48-px wide image
    (root / "labels/img005.txt").write_text("1 0.5 0.5 0.01 0.3\n")
    return r"labels/img005\.txt:1: the box \(1 0\.5 0\.5 0\.01 0\.3\) is under 1 pixel wide or high in the 48x40 image"


def _huge_line(root: Path) -> str:  # a binary file saved as a label: one line of 200,000 characters
    (root / "labels/img006.txt").write_text("0 " + "x" * 200_000 + "\n")
    return r"labels/img006\.txt:1: '0 x{58}' is not numbers"


# --- the folder itself ------------------------------------------------------------------------------


def _empty_folder(root: Path) -> str:
    for p in [*(root / "images").iterdir(), *(root / "labels").iterdir()]:
        p.unlink()
    return r"no images \(\.jpg, \.png, \.\.\.\) in it or in an images/ folder"


def _split_folder_missing(root: Path) -> str:
    (root / "data.yaml").write_text("train: images\nval: valid/images\nnames: [a, b]\n")
    return r"data\.yaml: val: valid/images is not in the folder"


def _no_label_files(root: Path) -> str:
    for p in (root / "labels").iterdir():
        p.unlink()
    return r"8 images but no label files"


CASES = [_truncated_jpeg, _truncated_png, _corrupt_png, _zero_bytes, _not_an_image, _centre_outside, _negative_width,
         _too_few_fields, _too_many_fields, _not_numbers, _not_finite, _unknown_class, _fractional_class,
         _huge_class_id, _zero_size, _under_a_pixel, _huge_line, _empty_folder, _split_folder_missing,
         _no_label_files]


@pytest.mark.parametrize("spoil", CASES, ids=[c.__name__.strip("_") for c in CASES])
def test_a_bad_file_is_an_error_naming_it(tmp_path: Path, spoil) -> None:
    root = folder(tmp_path / "set")
    expected = spoil(root)
    message = scan_error(root)
    assert re.search(expected, message), message
    assert len(message) < 700, f"{len(message)} characters"


def test_the_same_bad_files_stop_new_with_nothing_written(tmp_path: Path, datasets: Path, monkeypatch) -> None:
    monkeypatch.setenv("DEEPFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DEEPFLOW_REPORTS_DIR", str(tmp_path / "reports"))
    for spoil in (_truncated_jpeg, _centre_outside, _unknown_class):
        root = folder(tmp_path / spoil.__name__)
        spoil(root)
        with pytest.raises(EntryError, match=re.escape(str(root))):
            new.create("shapes", root, dvc=False, echo=lambda line: None)
        assert not (datasets / "shapes.yaml").exists() and not (tmp_path / "data").exists()
        assert not (tmp_path / "reports").exists()


def test_deepflow_new_on_a_bad_folder_exits_2_with_the_files_named(tmp_path: Path, datasets: Path,
                                                                    monkeypatch) -> None:
    from deepflow.cli import app

    monkeypatch.setenv("DEEPFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DEEPFLOW_REPORTS_DIR", str(tmp_path / "reports"))
    root = folder(tmp_path / "set", n=12)
    _truncated_jpeg(root)
    _unknown_class(root)
    result = CliRunner().invoke(app, ["new", "shapes", "--data", str(root), "--no-dvc"])
    output = " ".join(result.output.split())  # the console may wrap the line
    assert result.exit_code == 2, result.output
    assert "2 problems in its images and labels" in output and "Traceback" not in output
    assert "img003.jpg: not a decodable image: image file is truncated" in output
    assert "img004.txt:2: class id 99 is outside names" in output
    assert not (datasets / "shapes.yaml").exists() and not (tmp_path / "data").exists()


# --- many bad files: every one counted, the first few listed, one line -------------------------------


def test_a_folder_of_bad_files_is_one_line_with_the_first_problems_and_the_count(tmp_path: Path) -> None:
    root = folder(tmp_path / "set", n=60)
    for k in range(0, 60, 2):  # 30 images cut short, 30 label files each with two bad lines
        (root / f"images/img{k:03d}.png").write_bytes(encoded(k)[:100])
        (root / f"labels/img{k + 1:03d}.txt").write_text(f"7 {BOX}\n0 {BOX}\n0 2.5 0.5 0.1 0.1\n")
    message = scan_error(root)
    assert message.startswith(f"{root}: 90 problems in its images and labels, the first {yolo.SHOWN_PROBLEMS}: ")
    assert message.endswith(f"; ... and {90 - yolo.SHOWN_PROBLEMS} more")
    assert "img000.png: not a decodable image" in message  # files in order, each line of a file in order
    assert "img001.txt:1: class id 7 is outside names" in message and "img001.txt:3: the box" in message
    assert len(message) < 1_500


def test_the_prepare_stage_refuses_a_source_that_went_bad_and_keeps_the_splits(tmp_path: Path, datasets: Path,
                                                                             monkeypatch, capsys) -> None:
    """The DVC stage re-reads the folder copy: a file broken since ``new`` stops it (exit 2, the file
    named) before anything is written, so the prepared splits of the last good read stay as they were."""
    monkeypatch.setenv("DEEPFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DEEPFLOW_REPORTS_DIR", str(tmp_path / "reports"))
    result = new.create("shapes", folder(tmp_path / "set", n=12), dvc=False, echo=lambda line: None)
    before = {p.name: p.read_bytes() for p in result.prepared.iterdir()}
    copy = result.source / "images/img005.png"
    copy.write_bytes(copy.read_bytes()[:-12])
    with pytest.raises(SystemExit) as exited:
        prepare.main(["shapes"])
    assert exited.value.code == 2
    assert f"{copy}: not a decodable image: truncated PNG file" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in result.prepared.iterdir()} == before


# --- inputs that stay valid ---------------------------------------------------------------------------


def test_background_images_orphan_labels_and_a_png_named_jpg_are_read(tmp_path: Path) -> None:
    """An image without a label file (or with an empty one) is a background image: no boxes, counted.
    A label file without an image is counted and not used. A PNG saved as .jpg is read by its bytes."""
    root = folder(tmp_path / "set")
    (root / "labels/img002.txt").unlink()
    (root / "labels/img003.txt").write_text("\n\n")
    (root / "labels/lost.txt").write_text(f"0 {BOX}\n")
    (root / "images/img004.png").rename(root / "images/img004.jpg")
    found = yolo.scan(root)
    assert len(found.items) == 8 and found.counts["no_label"] == 1 and found.counts["orphans"] == 1
    boxes = {i.image_id: len(i.boxes) for i in found.items}
    assert boxes["img002"] == boxes["img003"] == 0 and boxes["img004"] == 1


def test_the_same_pixels_twice_stay_in_one_split(tmp_path: Path) -> None:
    """Copies of an image (other names, other files) are one image to the split: never in train and
    test both. (Copies across a folder's own splits: test_detection_new, dropped and listed.)"""
    root = folder(tmp_path / "set", n=20)
    for k in (1, 2, 3):
        (root / f"images/copy{k}.png").write_bytes((root / "images/img000.png").read_bytes())
    Image.open(root / "images/img007.png").save(root / "images/again.bmp")  # same pixels, another format
    plan = prepare.assign(yolo.scan(root), 0.15, 0.15, 0)
    where = {i.image_id: s for s, items in plan.parts.items() for i in items}
    assert where["copy1"] == where["copy2"] == where["copy3"] == where["img000"]
    assert where["again"] == where["img007"] and prepare.duplicates(plan.parts) == []


def test_decoding_is_strict_everywhere() -> None:
    """PIL's switch that pads a truncated image with grey stays off, and the error says why."""
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert decode(encoded(1)).size == (48, 40)
    with pytest.raises(ImageError, match="not a decodable image: image file is truncated"):
        decode(encoded(1, "JPEG", (200, 160))[:-300])


# --- the traffic entry's real-data sample (yolo.load) -------------------------------------------------


def test_load_checks_like_scan_and_an_unnamed_class_is_an_error_not_a_dropped_box(tmp_path: Path) -> None:
    root = folder(tmp_path / "sample")
    table = yolo.load(root, {0: "car"}, ["car", "bus"])
    assert table["dropped"].tolist() == [0, 1] * 4  # class 1 (b) is named but not mapped: dropped, counted
    (root / "labels/img003.txt").write_text(f"99 {BOX}\n")
    (root / "images/img005.png").write_bytes(encoded(5)[:-12])
    with pytest.raises(EntryError) as caught:
        yolo.load(root, {0: "car"}, ["car", "bus"])
    message = str(caught.value)
    assert "2 problems" in message and "img003.txt:1: class id 99 is outside names" in message
    assert "img005.png: not a decodable image" in message
    with pytest.raises(ValueError, match=r"source ids \[5\] that the folder's names do not have"):
        yolo.load(root, {5: "car"}, ["car", "bus"])


# --- the prepared splits: the contract names the rows, nothing is registered --------------------------


@pytest.fixture
def entry(datasets: Path, tmp_path: Path, monkeypatch) -> new.NewResult:
    monkeypatch.setenv("DEEPFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DEEPFLOW_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("DEEPFLOW_LOCK_DIR", str(tmp_path / "locks"))
    return new.create("shapes", folder(tmp_path / "set", n=16), dvc=False, echo=lambda line: None)


def spoil_prepared(prepared: Path) -> None:
    """What a hand edit or another tool can leave in the prepared train split: a truncated image, a
    box centred outside the frame, a class id outside the entry's classes, a NaN coordinate."""
    path = prepared / "train.parquet"
    train = pd.read_parquet(path)
    train.at[0, "image"] = bytes(train.at[0, "image"])[:-12]
    train.at[1, "labels"] = "0 1.8 0.5 0.1 0.1\n"
    train.at[2, "labels"] = f"99 {BOX}\n"
    train.at[3, "labels"] = "0 nan 0.5 0.2 0.2\n"
    train.to_parquet(path, index=False)


def test_the_contract_names_the_bad_prepared_rows(entry: new.NewResult) -> None:
    """The entry's own contract (what ``deepflow validate`` and ``run`` check) over the spoiled splits:
    each of the four rows is named, and only they (the rest, as ``new`` wrote it, passes)."""
    train = pd.read_parquet(entry.prepared / "train.parquet")["image_id"].tolist()
    spoil_prepared(entry.prepared)
    uc = usecase.get("shapes")
    report = validation.validate("shapes.data", *uc.validation_inputs(uc.load_splits()))
    text = "\n".join(f.line() for f in report.failures)
    assert "'decodes'" in text and f"train/{train[0]}" in text
    assert "'left'" in text and f"train/{train[1]}" in text  # centre 1.8: its left edge 1.75
    assert "unknown class id 99" in text and f"train/{train[2]}" in text
    assert "not NaN" in text and f"train/{train[3]}" in text
    assert {r for f in report.failures for r in f.rows} == {f"train/{i}" for i in train[:4]}


@pytest.mark.slow
def test_deepflow_run_on_bad_prepared_images_fails_before_training(store: Path, entry: new.NewResult) -> None:
    """The real command: ``deepflow run`` stops at the contract (exit 1, the rows and the report named),
    before training: no new model version, @champion where it was, no @challenger; the entry's data
    is left as it was for the user to fix."""
    from deepflow import ledger
    from deepflow.cli import app

    run_id = tracking.start_run("shapes", "earlier")  # a champion from earlier, good data
    champion = str(tracking.register("shapes", f"runs:/{run_id}/model", run_id, {}))
    ledger.move_alias("shapes", tracking.CHAMPION, champion, reason="test", evidence="test", actor="test")
    first = pd.read_parquet(entry.prepared / "train.parquet")["image_id"].iloc[0]
    spoil_prepared(entry.prepared)
    kept = (entry.prepared / "train.parquet").read_bytes()
    result = CliRunner().invoke(app, ["run", "shapes", "--set", "train.epochs=1"])
    assert result.exit_code == 1, result.output
    output = " ".join(result.output.split())  # the console may wrap the line
    assert "validation of 'shapes.data' failed" in output and "'decodes'" in output and f"train/{first}" in output
    assert "report:" in output and "Traceback" not in output
    versions = tracking.client().search_model_versions("name='shapes'")
    assert [str(v.version) for v in versions] == [champion]  # no new version
    assert str(tracking.version_by_alias("shapes", tracking.CHAMPION).version) == champion
    assert tracking.version_by_alias("shapes", tracking.CHALLENGER) is None
    assert (entry.prepared / "train.parquet").read_bytes() == kept
    assert usecase.entry("shapes").path.exists()


# --- serving and batch scoring: a bad image is the client's error, named --------------------------


def test_a_bad_upload_is_a_400_naming_it_never_a_500(store: Path) -> None:
    from fastapi.testclient import TestClient

    from deepflow.serving import ServeConfig, create_app

    cut = encoded(1, "JPEG", (200, 160))[:-300]
    with TestClient(create_app(ServeConfig(reload_interval=0)), raise_server_exceptions=False) as client:
        for name, data, why in (("cam1.jpg", cut, "image file is truncated"),
                                ("cam2.png", encoded(2)[:-12], "truncated PNG file"),
                                ("empty.png", b"", "empty (0 bytes)"),
                                ("notes.jpg", b"plain text", "not in an image format")):
            reply = client.post("/v1/traffic/predict", files={"image": (name, data, "image/jpeg")})
            assert reply.status_code == 400, reply.text
            detail = reply.json()["detail"]
            assert detail.startswith(f"image '{name}': not a decodable image: {why}"), detail
        # a whole image gets past the check: no champion in this store, so 503 (not 500)
        assert client.post("/v1/traffic/predict", files={"image": ("ok.png", encoded(3))}).status_code == 503


def test_batch_scoring_rejects_bad_images_by_file_or_row() -> None:
    from deepflow.kinds.detection.batch import validate_image

    frame = pd.DataFrame({"file": ["a.png", "b.jpg", "c.png", "d.png", "e.png"],
                          "image": [encoded(1), encoded(2, "JPEG", (200, 160))[:-300], encoded(3)[:-12], b"",
                                    encoded(4)]})
    clean, rejects = validate_image(frame)
    assert clean["file"].tolist() == ["a.png", "e.png"]
    reasons = dict(zip(rejects["row"], rejects["reason"], strict=True))
    assert reasons[1].startswith("image: not a decodable image (b.jpg): image file is truncated")
    assert reasons[2] == "image: not a decodable image (c.png): truncated PNG file"
    assert reasons[3] == "image: no image bytes (d.png)"
    clean, rejects = validate_image(frame.drop(columns="file"))  # a table of bytes: the row names it
    assert rejects["row"].tolist() == [1, 2, 3] and "truncated" in rejects["reason"].iloc[0]
