"""Bring your own images, as a user would, with no Python: a YOLO folder (data.yaml, train/valid,
one image re-exported into valid) -> `deepflow new` -> `deepflow run` -> a served prediction whose
boxes carry the dataset's class names."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from deepflow import tracking, usecase
from deepflow.cli import app
from deepflow.settings import PROJECT_ROOT

runner = CliRunner()
NAMES = ["square", "disc", "triangle"]
COLOURS = [(220, 40, 40), (40, 80, 220), (40, 170, 60)]
FAST = ["--set", "train.epochs=12", "--set", "candidates=shallow", "--set", "promotion.resamples=200",
        "--set", "promotion.max_latency_p95_ms=null"]  # a p95 on a shared CI machine is noise


def deepflow(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, f"deepflow {' '.join(args)} -> {result.exit_code}\n{result.output}"
    return result.output


def scene(rng: np.random.Generator, size: int = 64) -> tuple[bytes, list[str]]:
    """A plain background with 1-2 shapes (one class each); PNG bytes and YOLO label lines."""
    shade = int(rng.integers(150, 250))
    image = Image.new("RGB", (size, size), (shade, shade, shade))
    draw, lines = ImageDraw.Draw(image), []
    for _ in range(int(rng.integers(1, 3))):
        k, side = int(rng.integers(0, 3)), int(rng.integers(16, 28))
        x, y = (int(v) for v in rng.integers(0, size - side, 2))
        box = (x, y, x + side, y + side)
        if k == 0:
            draw.rectangle(box, fill=COLOURS[k])
        elif k == 1:
            draw.ellipse(box, fill=COLOURS[k])
        else:
            draw.polygon([(x, y + side), (x + side // 2, y), (x + side, y + side)], fill=COLOURS[k])
        lines.append(f"{k} {(x + side / 2) / size:.6f} {(y + side / 2) / size:.6f} {side / size:.6f} {side / size:.6f}")
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue(), lines


def yolo_folder(root: Path, n: int = 60) -> Path:
    rng = np.random.default_rng(3)
    for k in range(n):
        split = "train" if k < 42 else "valid"
        data, lines = scene(rng)
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "labels").mkdir(parents=True, exist_ok=True)
        (root / split / "images" / f"s{k:03d}.png").write_bytes(data)
        (root / split / "labels" / f"s{k:03d}.txt").write_text("\n".join(lines) + "\n")
    # an export's duplicate: a training image again in valid, under another name
    (root / "valid/images/again.png").write_bytes((root / "train/images/s000.png").read_bytes())
    (root / "valid/labels/again.txt").write_text((root / "train/labels/s000.txt").read_text())
    (root / "data.yaml").write_text(f"train: ../train/images\nval: ../valid/images\nnc: 3\nnames: {NAMES}\n")
    return root


@pytest.fixture
def project(store, datasets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DEEPFLOW_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


@pytest.mark.slow
def test_yolo_folder_to_served_prediction(project: Path) -> None:
    folder = yolo_folder(project / "upload" / "shapes")
    printed = deepflow("new", "shapes", "--data", str(folder), "--no-dvc", "--budget", "150s")
    assert "kind      detection" in printed and "classes   3 from data.yaml: square, disc, triangle" in printed
    assert "duplicates 1 image identical to one in an earlier split" in printed and "val/again = train/s000" in printed
    assert "img size  64" in printed and "no test split in the folder" in printed
    uc = usecase.get("shapes")
    assert uc.cfg.classes == NAMES and uc.cfg.model.img_size == 64
    record = json.loads((uc.prepared_dir / "prepare.json").read_text())
    assert [d["image"] for d in record["duplicates_dropped"]] == ["val/again"]

    ran = deepflow("run", "shapes", *FAST)
    champion = tracking.version_by_alias("shapes", tracking.CHAMPION)
    assert champion is not None and str(champion.version) == "1", ran

    import mlflow

    frame = uc.load_splits()["test"]
    found = mlflow.pyfunc.load_model("models:/shapes@champion").predict(frame[["image"]].head(4))
    assert len(found) and set(found["class"]) <= set(NAMES)

    from deepflow.serving import ServeConfig, create_app

    with TestClient(create_app(ServeConfig(reload_interval=0))) as client:
        image = bytes(frame["image"].iloc[0])
        reply = client.post("/v1/shapes/predict", files={"image": ("scene.png", image, "image/png")})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert (body["width"], body["height"]) == (64, 64)
        assert {d["class"] for d in body["detections"]} <= set(NAMES) and set(body["counts"]) <= set(NAMES)
        why = client.post("/v1/shapes/predict?explain=true", files={"image": ("scene.png", image, "image/png")})
        assert why.status_code == 200, why.text
        for d in why.json()["detections"]:
            assert set(d["class_scores"]) == set(NAMES) and d["class_scores"][d["class"]] == pytest.approx(d["score"])


@pytest.mark.slow
def test_shipped_sample_as_an_entry_through_dvc(tmp_path: Path) -> None:
    """The 20-image COCO sample (its data.yaml names COCO's 80 classes; 32 have boxes) in a throw-away DVC
    project: the folder copy is tracked and the splits come from the ``<name>_prepare`` stage."""
    project = tmp_path / "project"
    project.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPFLOW_")}
    env.update(DEEPFLOW_ROOT=str(project), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    bin_dir = Path(sys.executable).parent
    for cmd in (["git", "init", "-q"], [str(bin_dir / "dvc"), "init", "-q"]):
        subprocess.run(cmd, cwd=project, env=env, check=True)
    sample = PROJECT_ROOT / "data/external/coco_traffic_sample"
    done = subprocess.run([str(bin_dir / "deepflow"), "new", "coco", "--data", str(sample)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "classes   32 from data.yaml: person, car, motorcycle" in done.stdout and "img size  320" in done.stdout
    assert "stage     coco_prepare in dvc.yaml" in done.stdout
    stage = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]["coco_prepare"]
    assert stage["cmd"] == "python -m deepflow.kinds.detection.prepare coco"
    assert stage["deps"][:2] == ["data/sources/coco/coco_traffic_sample", "datasets/coco.yaml"]
    config = yaml.safe_load((project / "datasets/coco.yaml").read_text())["config"]
    assert config["classes"][:3] == ["person", "car", "motorcycle"] and config["class_ids"][2] == 1
    record = json.loads((project / "data/prepared/coco/prepare.json").read_text())
    assert sum(record["counts"].values()) == 20
    train = pd.read_parquet(project / "data/prepared/coco/train.parquet")
    ids = {int(line.split()[0]) for text in train["labels"] for line in text.splitlines()}
    assert ids == set(range(len(config["classes"])))  # every class learnt from train
