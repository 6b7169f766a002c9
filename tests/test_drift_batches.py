"""New batches per entry (``deepflow.drift.make_batch``): the kinds' generic generators for entries
without an ``incoming:``, the dispatch to an entry's own generator, ``deepflow incoming`` for an
entry that has none (paysim), the reference size from ``monitor.reference_rows``, and the drift
modules naming no built-in entry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from deepflow import config, drift, settings
from deepflow.drift import DriftConfig
from tests.entries import TOPICS_CONFIG, write_entry

CALLS: list[dict] = []


def recording_generator(name: str, out_dir: Path, *, rows: int, drift: float, seed: int, note: str = "") -> Path:
    """An entry's own ``incoming:`` generator for the dispatch test: records its call."""
    CALLS.append({"name": name, "out_dir": out_dir, "rows": rows, "drift": drift, "seed": seed, "note": note})
    path = out_dir / "recorded.csv"
    path.write_text("x\n1\n")
    return path


def _write_splits(folder: Path, splits: dict[str, pd.DataFrame]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in splits.items():
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    return folder


# --- tabular ---------------------------------------------------------------------------------

FEATURES = ["x", "amount", "flag", "count"]


def _table(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"id": np.arange(n), "x": rng.normal(size=n), "amount": rng.lognormal(3, 1, size=n),
                         "flag": (rng.random(n) < 0.3).astype(np.int8), "count": rng.poisson(4, size=n),
                         "label": (rng.random(n) < 0.1).astype(np.int8)})


@pytest.fixture
def loans(datasets: Path, tmp_path: Path) -> str:
    """A tabular entry with no ``incoming:``: iid train/val/test, 300 reference rows."""
    prepared = _write_splits(tmp_path / "loans", {"train": _table(4000, 1), "val": _table(500, 2),
                                                  "test": _table(2000, 3)})
    write_entry(datasets, "loans", "tabular", {"prepared_dir": str(prepared), "features": FEATURES},
                monitor={"reference_rows": 3000})
    return "loans"


def test_tabular_generic_batch_is_flagged_only_when_drifted(loans, tmp_path) -> None:
    reference = drift.reference_frame(loans)
    assert len(reference) == 3000 and reference.attrs["use_case"] == loans  # monitor.reference_rows
    assert len(drift.reference_frame(loans, max_rows=100)) == 100
    calm_path = drift.make_batch(loans, tmp_path / "inbox", rows=1000, drift=0.0, seed=5)
    assert calm_path == tmp_path / "inbox" / "loans-n1000-drift0.00-seed5.parquet"
    calm = drift.load_batch("tabular", calm_path, FEATURES)
    assert len(calm) == 1000 and "label" not in calm.columns  # labels arrive late
    assert set(calm["id"]) <= set(range(2000))  # rows of the test split
    report = drift.detect("tabular", reference, calm, DriftConfig(), features=FEATURES)
    assert not report.drifted, report.markdown()

    shifted = drift.load_batch("tabular", drift.make_batch(loans, tmp_path, rows=1000, drift=1.0, seed=5), FEATURES)
    report = drift.detect("tabular", reference, shifted, DriftConfig(), features=FEATURES)
    assert report.drifted and all(s.drifted for s in report.signals), report.markdown()
    again = pd.read_parquet(drift.make_batch(loans, tmp_path / "again", rows=1000, drift=1.0, seed=5))
    pd.testing.assert_frame_equal(again, pd.read_parquet(tmp_path / "loans-n1000-drift1.00-seed5.parquet"))


def test_tabular_generic_batch_falls_back_to_val_then_train(datasets, tmp_path) -> None:
    prepared = _write_splits(tmp_path / "only-train", {"train": _table(300, 1)})
    write_entry(datasets, "thin", "tabular", {"prepared_dir": str(prepared), "features": FEATURES})
    assert len(drift.reference_frame("thin")) == 300  # no reference_rows: the whole train split
    batch = pd.read_parquet(drift.make_batch("thin", tmp_path, rows=50, drift=0.5, seed=0))
    assert len(batch) == 50
    write_entry(datasets, "empty", "tabular", {"prepared_dir": str(tmp_path / "nothing"), "features": FEATURES})
    with pytest.raises(FileNotFoundError, match="empty: no prepared test/val/train split"):
        drift.make_batch("empty", tmp_path, rows=5, drift=0.0, seed=0)


# --- text ------------------------------------------------------------------------------------


def test_text_generic_batch_is_flagged_only_when_drifted(datasets, tmp_path) -> None:
    from tests.nlp_toy import toy_frame

    frame = toy_frame(n_per_class=500)
    prepared = _write_splits(tmp_path / "topics", {"train": frame.iloc[:1000], "test": frame.iloc[1000:]})
    write_entry(datasets, "topics", "text", {**TOPICS_CONFIG, "prepared_dir": str(prepared)})
    reference, cfg = drift.reference_frame("topics"), DriftConfig(embedding_sample=0)
    calm = drift.load_batch("text", drift.make_batch("topics", tmp_path, rows=200, drift=0.0, seed=1))
    assert set(calm["origin"]) == {"reference"} and set(calm["text"]) <= set(frame["text"].iloc[1000:])
    assert not drift.detect("text", reference, calm, cfg).drifted
    shifted = drift.load_batch("text", drift.make_batch("topics", tmp_path, rows=200, drift=1.0, seed=1))
    assert (shifted["origin"] == "shifted").all()
    report = drift.detect("text", reference, shifted, cfg)
    by_name = {s.name: s for s in report.signals}
    assert report.drifted and by_name["oov_rate"].drifted and by_name["token_js"].drifted, report.markdown()
    half = pd.read_parquet(drift.make_batch("topics", tmp_path, rows=100, drift=0.5, seed=1))
    assert (half["origin"] == "shifted").sum() == 50


# --- detection -------------------------------------------------------------------------------


def test_detection_generic_batch_is_flagged_only_when_drifted(datasets, tmp_path) -> None:
    from deepflow.usecases.traffic.generate import GenerateParams, frame_row

    p = GenerateParams(width=96, height=96, seed=5)
    splits = {s: pd.DataFrame([frame_row(p, s, i) for i in range(n)]) for s, n in (("train", 120), ("test", 60))}
    write_entry(datasets, "cameras", "detection", {"prepared_dir": str(_write_splits(tmp_path / "cam", splits))})
    reference = drift.reference_frame("cameras")
    calm = drift.load_batch("detection", drift.make_batch("cameras", tmp_path, rows=60, drift=0.0, seed=2))
    assert (calm["shift"] == "").all() and set(calm["image"]) <= set(splits["test"]["image"])
    assert not drift.detect("detection", reference, calm).drifted
    shifted = drift.load_batch("detection", drift.make_batch("cameras", tmp_path, rows=60, drift=1.0, seed=2))
    assert shifted["shift"].str.len().gt(0).mean() > 0.5 and "labels" in shifted.columns
    report = drift.detect("detection", reference, shifted)
    assert report.drifted and report.kind == "detection", report.markdown()


# --- dispatch --------------------------------------------------------------------------------


def test_an_entrys_own_incoming_generator_is_used(datasets, tmp_path) -> None:
    write_entry(datasets, "custom", "tabular", {"prepared_dir": str(tmp_path / "none")},
                incoming="tests.test_drift_batches:recording_generator")
    CALLS.clear()
    path = drift.make_batch("custom", tmp_path / "in", rows=7, drift=0.25, seed=3, note="hi")
    assert path == tmp_path / "in" / "recorded.csv"
    assert CALLS == [{"name": "custom", "out_dir": tmp_path / "in", "rows": 7, "drift": 0.25, "seed": 3, "note": "hi"}]
    for spec, message in (("no_colon", "must be 'module:function'"),
                          ("tests.test_drift_batches:missing", "cannot be loaded"),
                          ("tests.test_drift_batches:CALLS", "is not a function")):
        write_entry(datasets, "custom", "tabular", {}, incoming=spec)
        with pytest.raises(config.ConfigError, match=rf"custom\.yaml: incoming .*{message}"):
            drift.make_batch("custom", tmp_path, rows=1, drift=0.0, seed=0)


def test_deepflow_incoming_works_for_an_entry_without_a_generator(datasets, tmp_path) -> None:
    """The defect of issue 13: `deepflow incoming paysim` said "no generator"."""
    from typer.testing import CliRunner

    from deepflow.cli import app
    from deepflow.usecases.fraud.paysim import prepare

    raw = pd.read_csv(settings.PROJECT_ROOT / "data/external/paysim/paysim_sample.csv")
    prepared = _write_splits(tmp_path / "paysim", prepare(raw, **settings.stage_params("paysim.prepare")))
    entry = yaml.safe_load((datasets / "paysim.yaml").read_text())
    assert entry.get("incoming") is None
    entry["config"]["prepared_dir"] = str(prepared)
    (datasets / "paysim.yaml").write_text(yaml.safe_dump(entry))

    runner = CliRunner()
    result = runner.invoke(app, ["incoming", "paysim", "--rows", "2000", "--drift", "1", "--seed", "2",
                                 "--set", f"monitor.incoming_dir={tmp_path / 'incoming'}"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "incoming" / "paysim" / "paysim-n2000-drift1.00-seed2.parquet"
    assert str(path) in result.output.replace("\n", "")
    features = list(entry["config"]["features"])
    batch = drift.load_batch("tabular", path, features)
    assert len(batch) == 2000 and "TX_FRAUD" not in batch.columns
    assert drift.detect("tabular", drift.reference_frame("paysim"), batch, features=features).drifted

    empty = tmp_path / "no-data"
    entry["config"]["prepared_dir"] = str(empty)
    (datasets / "paysim.yaml").write_text(yaml.safe_dump(entry))
    result = runner.invoke(app, ["incoming", "paysim", "--set", f"monitor.incoming_dir={tmp_path / 'incoming'}"])
    assert result.exit_code == 1 and "make data" in result.output


# --- the drift modules name no built-in entry ------------------------------------------------


def test_drift_modules_name_no_builtin_entry_and_import_no_usecase() -> None:
    from tests.test_architecture import builtin_names

    pkg = settings.PROJECT_ROOT / "src" / "deepflow"
    files = [*sorted((pkg / "drift").glob("*.py")), *sorted((pkg / "kinds").glob("*/drift.py"))]
    assert len(files) >= 8
    named = [f"{p.name}:{i}: {names}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
             if (names := builtin_names(line))]
    assert not named
    assert not [p for p in files if "deepflow.usecases" in p.read_text()]
    assert not [p for p in files if len(p.read_text().splitlines()) > 400]
