"""Every network member of every kind, fitted briefly on small data through the kind's own ``fit()``,
on the accelerator and precision asked for (``DEEPFLOW_ACCELERATOR``, ``DEEPFLOW_PRECISION``).

Shared by the GPU test layer (tests/test_gpu.py), the CPU bf16 fits (tests/test_device_guard.py) and
bench/gpu_fit.py. It needs only torch, Lightning, pandas, pyarrow, scikit-learn and the project:
no MLflow, Prefect, Great Expectations or DVC, and no network (the GPU image has none of them), so
the data is made here (fraud simulator, traffic generator, a made-up table) or read from the
shipped SMS file. Members that need a download (the text kind's frozen ``transfer`` encoder) are
left out; the classical baselines are too (they do not train on a device).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from deepflow import settings, training, usecase

# (entry, overrides) per kind: the built-in entries, on small data, a couple of epochs
ENTRIES: dict[str, list[str]] = {
    "fraud": ["train.epochs=2", "train.batch_size=512", "model.deep_width=32", "model.deep_blocks=2"],
    "nlp": ["train.epochs=2"],
    "traffic": ["train.epochs=2", "model.img_size=64", "coco.enabled=false"],
    "table": [],  # a made-up customers table (tests/tables.py): the table kind has no built-in entry
}
NEEDS_DOWNLOAD = {("text", "transfer")}  # its frozen encoder comes from the Hugging Face hub
NLP_TRAIN_ROWS = 1200  # of the SMS training split: two epochs stay short on a CPU
TRAFFIC_SIZES = {"n_train": 64, "n_val": 16, "n_test": 16, "width": 96, "height": 96, "seed": 3}


@dataclass
class Fitted:
    entry: str
    member: str
    accelerator: str
    precision: str
    fit_seconds: float  # the kind's whole fit(), its own preprocessing included
    train_seconds: float  # the Lightning fit alone (the kind's info)
    metric_name: str
    metric: float
    devices: list[str] = field(default_factory=list)  # the parameters' device at each epoch's end
    precisions: list[str] = field(default_factory=list)  # the trainer's precision at each epoch's end


@cache
def splits(entry: str, scale: int = 1) -> dict[str, pd.DataFrame]:
    """Small splits for ``entry`` (made in-process, cached for the session); ``scale`` multiplies
    the rows (customers, messages, frames) for a benchmark."""
    if entry == "fraud":
        from deepflow.usecases.fraud.prepare import SplitParams, add_features, split
        from deepflow.usecases.fraud.simulate import SimulationParams, simulate

        small = SimulationParams(n_customers=400 * scale, n_terminals=2000 * scale, n_days=60, seed=1,
                                 terminals_per_day=1, customers_per_day=1)  # scale 1: tests/conftest.py's SMALL
        return split(add_features(simulate(small)), SplitParams(train_start="2018-05-10"))
    if entry == "nlp":
        from deepflow.kinds.text.prepare import PrepareParams, prepare

        prepared = settings.PROJECT_ROOT / "data" / "prepared" / "nlp"
        if not (prepared / "test.parquet").is_file():  # not `dvc repro`-ed here: the DVC stage's own step
            prepared = Path(tempfile.mkdtemp(prefix="deepflow-nlp-"))
            prepare(settings.PROJECT_ROOT / "data" / "external" / "sms_spam" / "SMSSpamCollection", prepared,
                    PrepareParams())
        parts = {s: pd.read_parquet(prepared / f"{s}.parquet") for s in ("train", "val", "test")}
        return parts | {"train": parts["train"].head(NLP_TRAIN_ROWS * scale)}
    if entry == "traffic":
        from deepflow.usecases.traffic.generate import GenerateParams, generate

        sizes = {k: v * scale if k.startswith("n_") else v for k, v in TRAFFIC_SIZES.items()}
        return generate(GenerateParams(**sizes))
    if entry == "table":
        return _table(scale)[1]
    raise KeyError(f"no small data for entry {entry!r} (known: {', '.join(ENTRIES)})")


@cache
def _table(scale: int = 1):
    from tests.test_table_models import make

    return make("binary", n=900 * scale)


def use_case(entry: str, epochs: int | None = None):
    """``entry``'s use case with the small-run overrides (and ``epochs`` when given)."""
    if entry == "table":
        from deepflow.kinds.table.usecase import TableUseCase
        from tests.test_table_models import table_config

        uc = TableUseCase(usecase.Entry(name="customers", kind="table", path=Path("customers.yaml")),
                          table_config("binary"))  # as tests/test_table_models.py's make()
        uc.cfg.train.epochs = uc.cfg.train.patience = epochs or 2
        return uc
    return usecase.get(entry, ENTRIES[entry] + ([f"train.epochs={epochs}"] if epochs else []))


def networks(entry: str) -> list[str]:
    """The members of ``entry`` that train on a device: its candidates (networks), downloads aside."""
    uc = use_case(entry)
    return [m for m, kind in uc.members() if kind == "candidate" and (uc.kind, m) not in NEEDS_DOWNLOAD]


def members() -> list[tuple[str, str]]:
    """(entry, member) for every network member of every kind (the table kind's only where pytest
    is installed: its made-up data comes from tests/test_table_models.py, which imports pytest)."""
    try:
        import tests.test_table_models  # noqa: F401
        entries = list(ENTRIES)
    except ImportError:
        entries = [e for e in ENTRIES if e != "table"]
    return [(e, m) for e in entries for m in networks(e)]


def primary(uc, scores, frame: pd.DataFrame) -> tuple[str, float]:
    """(name, value) of the entry's primary test metric. Detection without faster-coco-eval (the
    GPU image has none): the numpy twin of COCOeval (``metrics.Matched``, equal by construction)."""
    import importlib.util

    if uc.kind == "detection" and importlib.util.find_spec("faster_coco_eval") is None:
        from deepflow.kinds.detection.metrics import Matched

        return uc.primary_metric, Matched(frame, scores, uc.cfg.classes).map50()
    return uc.primary_metric, float(uc.evaluate(scores, frame)[uc.primary_metric])


@contextlib.contextmanager
def environment(**values: str):
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def watch_devices(devices: list[str], precisions: list[str]):
    """Record the parameters' device and the trainer's precision at every training epoch's end
    (wraps ``training.EpochProgress.on_train_epoch_end``, which every fit has)."""
    original = training.EpochProgress.on_train_epoch_end

    def spy(self, trainer, module):
        devices.append(str(next(module.parameters()).device))
        precisions.append(str(trainer.precision))
        return original(self, trainer, module)

    training.EpochProgress.on_train_epoch_end = spy
    try:
        yield
    finally:
        training.EpochProgress.on_train_epoch_end = original


def fit(entry: str, member: str, accelerator: str, precision: str = "32-true", *, scale: int = 1,
        epochs: int | None = None) -> Fitted:
    """Fit ``member`` of ``entry`` through its kind's ``fit()`` on ``accelerator``/``precision``, then
    score the test split (the scorer is back on the CPU, as the pipeline leaves it)."""
    uc, parts = use_case(entry, epochs), splits(entry, scale)
    devices: list[str] = []
    precisions: list[str] = []
    with environment(DEEPFLOW_ACCELERATOR=accelerator, DEEPFLOW_PRECISION=precision), \
            watch_devices(devices, precisions):
        started = time.perf_counter()
        scorer, info = uc.fit(member, "candidate", parts)
        seconds = time.perf_counter() - started
    name, value = primary(uc, scorer.predict(parts["test"]), parts["test"])
    train_seconds = float(info.get("train_seconds", info.get("fit_seconds", seconds)))
    return Fitted(entry, member, accelerator, precision, seconds, train_seconds, name, value, devices, precisions)


def finite(value: float) -> bool:
    return isinstance(value, float | int | np.floating) and math.isfinite(float(value))
