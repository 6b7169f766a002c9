"""What one ML problem provides, and the registry of use cases the pipeline knows.

A use case object exposes: ``cfg`` (typed config), ``primary_metric``, ``load_splits()``,
``validation_inputs(splits)``, ``members()``, ``registrable(kind)``, ``fit(...)``,
``evaluate(scores, frame)``, ``threshold(...)``, ``figures(...)`` and ``input_example(frame)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepflow import config
from deepflow.settings import PROJECT_ROOT

USECASES_DIR = Path(__file__).parent / "usecases"


@dataclass(frozen=True)
class Entry:
    module: str  # defines the use case class
    cls: str
    config_path: Path
    default: bool  # part of `deepflow run` with no arguments


REGISTRY: dict[str, Entry] = {
    "fraud": Entry("deepflow.usecases.fraud.usecase", "FraudUseCase",
                   USECASES_DIR / "fraud" / "config.yaml", default=True),
    # A second, real transaction schema through the same code, by config alone. Not a benchmark:
    # PaySim's balance columns all but give the label away.
    "paysim": Entry("deepflow.usecases.fraud.usecase", "FraudUseCase",
                    USECASES_DIR / "fraud" / "paysim.yaml", default=False),
    "nlp": Entry("deepflow.usecases.nlp.usecase", "NlpUseCase", USECASES_DIR / "nlp" / "config.yaml", default=True),
    "traffic": Entry("deepflow.usecases.traffic.usecase", "TrafficUseCase",
                     USECASES_DIR / "traffic" / "config.yaml", default=True),
}


class UnknownUseCase(KeyError):
    def __str__(self) -> str:
        return f"unknown use case {self.args[0]!r} (known: {', '.join(REGISTRY)})"


def default_names() -> list[str]:
    return [name for name, e in REGISTRY.items() if e.default]


def get(name: str, overrides: Sequence[str] = ()) -> Any:
    """Build a use case with its resolved config; raises UnknownUseCase or ConfigError."""
    cls = use_case_class(name)
    return cls(name, config.load(cls.config_cls, REGISTRY[name].config_path, overrides))


def use_case_class(name: str) -> Any:
    if name not in REGISTRY:
        raise UnknownUseCase(name)
    entry = REGISTRY[name]
    return getattr(importlib.import_module(entry.module), entry.cls)


def project_path(path: str | Path) -> Path:
    """A config path: absolute as given, else relative to the project root."""
    path = Path(path)
    return path if path.is_absolute() else PROJECT_ROOT / path


def read_splits(name: str, directory: Path, splits: Sequence[str] = ("train", "val", "test")):
    """The prepared ``<split>.parquet`` files of a use case, or a FileNotFoundError saying what to run."""
    import pandas as pd

    missing = [s for s in splits if not (directory / f"{s}.parquet").exists()]
    if missing:
        raise FileNotFoundError(f"{name}: no prepared data for {missing} in {directory} (run `dvc repro` first)")
    return {s: pd.read_parquet(directory / f"{s}.parquet") for s in splits}
