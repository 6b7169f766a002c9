"""Dataset entries and the one contract a use case fulfils.

An **entry** is one dataset with its own identity: ``datasets/<name>.yaml`` (committed,
reviewable) names its ``kind`` (``tabular``, ``text`` or ``detection``) and holds the kind's
config. The entry owns its registered model and MLflow experiment (both called ``<name>``), its
data contract, serving route ``/v1/<name>/...``, drift reference, schedule and report folder.
Entries are discovered from the folder, never listed in code: adding a dataset of an existing
kind is one new file.

A **use case** is an entry built into the object the pipeline drives: the kind's class
(``deepflow.kinds.<kind>.usecase``) over the entry's resolved config. :class:`UseCase` is the
contract; its optional hooks have defaults here, so a kind implements only what it needs.
"""

from __future__ import annotations

import abc
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from deepflow import config, kinds, settings
from deepflow.settings import PROJECT_ROOT

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from deepflow import stats

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")  # a model name, an experiment, a URL segment


def _yaml_loader() -> type:
    """libyaml's safe loader when PyYAML has it (about 10x faster on entry files; see
    bench/entries.py), else the pure-Python one: the same documents, the same errors."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)
ENTRY_KEYS = ("kind", "description", "default", "incoming", "schedule", "monitor", "config")
SCHEDULE_KEYS = ("cron", "interval_s")
MONITOR_KEYS = ("min_rows", "reference_rows")
# Names the platform itself uses for experiments and report folders: an entry may not take them.
RESERVED = ("deepflow-ledger", "logs", "monitor", "screenshots")


class UnknownUseCase(KeyError):
    def __str__(self) -> str:
        name, folder = self.args[0], settings.datasets_dir()
        known = ", ".join(entries(on_error=lambda _path, _exc: None)) or "none"
        hint = f"; rename {name}.yml to {name}.yaml" if (folder / f"{name}.yml").is_file() else ""
        return f"unknown dataset entry {name!r} (known: {known}; entries live in {folder}{hint})"


@dataclass(frozen=True)
class Entry:
    """One ``datasets/<name>.yaml``: the dataset's identity and the kind's config for it."""

    name: str
    kind: str
    path: Path
    description: str = ""
    default: bool = False  # part of `deepflow run` with no names
    incoming: str | None = None  # "module:function" making new batches for `deepflow incoming`
    schedule: dict[str, Any] | None = None  # {"cron": ...} or {"interval_s": ...}; None: not scheduled
    monitor: dict[str, Any] = field(default_factory=dict)  # e.g. {"min_rows": 200, "reference_rows": 50000}
    config: dict[str, Any] = field(default_factory=dict)


def read_entry(path: Path) -> Entry:
    """Parse one entry file; a ConfigError names the file and the key."""
    import yaml

    name = path.stem
    if not NAME.match(name):
        raise config.ConfigError(f"{path}: entry name {name!r} must be lower-case letters, digits, '-' or '_' "
                                 "(it names the model, the experiment and the URL)")
    if name in RESERVED or name.endswith("-monitoring"):
        raise config.ConfigError(f"{path}: entry name {name!r} is taken by deepflow itself "
                                 f"({', '.join(RESERVED)} and *-monitoring are reserved)")
    try:
        data = yaml.load(path.read_text(), Loader=_yaml_loader()) or {}
    except yaml.YAMLError as exc:
        raise config.ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise config.ConfigError(f"{path}: top level must be a mapping")
    if unknown := sorted(set(data) - set(ENTRY_KEYS)):
        raise config.ConfigError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(ENTRY_KEYS)})")
    kind = data.get("kind")
    if kind not in kinds.names():
        raise config.ConfigError(f"{path}: kind must be one of {', '.join(kinds.names())}, got {kind!r}")
    for key, tp in (("config", dict), ("monitor", dict), ("schedule", dict | None), ("default", bool),
                    ("description", str), ("incoming", str | None)):
        if key in data and not isinstance(data[key], tp):
            raise config.ConfigError(f"{path}: {key!r} has the wrong type ({type(data[key]).__name__})")
    _check_schedule_and_monitor(path, data.get("schedule"), data.get("monitor") or {})
    if (incoming := data.get("incoming")) is not None and ":" not in incoming:
        raise config.ConfigError(f"{path}: incoming must be 'module:function', got {incoming!r}")
    return Entry(name=name, kind=kind, path=path, description=data.get("description", ""),
                 default=data.get("default", False), incoming=data.get("incoming"),
                 schedule=data.get("schedule"), monitor=data.get("monitor") or {}, config=data.get("config") or {})


def _count(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_schedule_and_monitor(path: Path, schedule: dict | None, monitor: dict) -> None:
    """``schedule:`` is null, ``{cron: "..."}`` or ``{interval_s: N}``; ``monitor:`` has counts."""
    for key, given, known in (("schedule", schedule or {}, SCHEDULE_KEYS), ("monitor", monitor, MONITOR_KEYS)):
        if unknown := sorted(set(given) - set(known)):
            raise config.ConfigError(f"{path}: {key}: unknown key {unknown[0]!r} (known: {', '.join(known)}"
                                     + ("; null: not scheduled)" if key == "schedule" else ")"))
    if schedule is not None:
        cron, interval = schedule.get("cron"), schedule.get("interval_s")
        if (cron is None) == (interval is None):
            raise config.ConfigError(f"{path}: schedule needs cron or interval_s, exactly one")
        if cron is not None and not (isinstance(cron, str) and cron.strip()):
            raise config.ConfigError(f"{path}: schedule.cron must be a cron string, got {cron!r}")
        if interval is not None and not _count(interval, 1):
            raise config.ConfigError(f"{path}: schedule.interval_s must be a positive integer, got {interval!r}")
    for key, minimum in (("min_rows", 0), ("reference_rows", 1)):
        if key in monitor and monitor[key] is not None and not _count(monitor[key], minimum):
            kind = "a non-negative" if minimum == 0 else "a positive"
            raise config.ConfigError(f"{path}: monitor.{key} must be {kind} integer, got {monitor[key]!r}")


def entries(on_error: Callable[[Path, config.ConfigError], None] | None = None) -> dict[str, Entry]:
    """Every entry in the datasets folder, by name (read fresh: a new file shows up at once).

    A broken file raises its ConfigError, unless ``on_error`` is given: then its kind's config is
    resolved too (a typo inside ``config:`` counts as broken), ``on_error`` is told about the file
    and the error, and the entry is left out: serving, the schedule and the flows' parameter list
    keep the good entries; the broken one still fails loudly where it is used.
    """
    folder = settings.datasets_dir()
    found: dict[str, Entry] = {}
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        try:
            found[path.stem] = e = read_entry(path)
            if on_error is not None:
                resolve_config(e)
        except config.ConfigError as exc:
            found.pop(path.stem, None)
            if on_error is None:
                raise
            on_error(path, exc)
    return found


def warn_broken(path: Path, error: config.ConfigError) -> None:
    """``on_error`` for :func:`entries` that logs the broken entry file and goes on."""
    import logging

    logging.getLogger("deepflow.entries").error("skipping broken entry %s: %s", path, error)


def entry(name: str) -> Entry:
    path = settings.datasets_dir() / f"{name}.yaml"
    if not NAME.match(name) or not path.is_file():
        raise UnknownUseCase(name)
    return read_entry(path)


def default_names() -> list[str]:
    """The entries `deepflow run` trains with no names given (a broken file raises, naming it)."""
    return [name for name, e in entries().items() if e.default]


def resolve_config(e: Entry, overrides: Sequence[str] = ()) -> Any:
    """The kind's typed config: defaults <- the entry's ``config:`` <- ``key=value`` overrides.

    Keys that make up the dataset's identity (its schema: label set, features, classes, ...)
    come from the entry file only: a model of entry A is never trained on another schema.
    """
    cls = kinds.config_class(e.kind)
    identity = cls.IDENTITY_KEYS  # every kind's config declares its schema keys
    for item in overrides:
        key = item.partition("=")[0].strip().split(".")[0]
        if key in identity:
            raise config.ConfigError(
                f"{key!r} is part of entry {e.name!r}'s identity (its models depend on it): edit {e.path} "
                f"to change it, or add a new entry datasets/<name>.yaml for other data (docs/datasets.md)")
    return config.load_mapping(cls, e.config, overrides, source=str(e.path))


def get(name: str, overrides: Sequence[str] = ()) -> UseCase:
    """Build the use case of entry ``name`` with its resolved config; raises UnknownUseCase or ConfigError."""
    e = entry(name)
    return kinds.usecase_class(e.kind)(e, resolve_config(e, overrides))


def project_path(path: str | Path) -> Path:
    """A config path: absolute as given, else relative to the project root."""
    path = Path(path)
    return path if path.is_absolute() else PROJECT_ROOT / path


def read_splits(name: str, directory: Path, splits: Sequence[str] = ("train", "val", "test")):
    """The prepared ``<split>.parquet`` files of an entry, or a FileNotFoundError saying what to run."""
    import pandas as pd

    missing = [s for s in splits if not (directory / f"{s}.parquet").exists()]
    if missing:
        raise FileNotFoundError(f"{name}: no prepared data for {missing} in {directory} (run `make data` first)")
    return {s: pd.read_parquet(directory / f"{s}.parquet") for s in splits}


def schema_hash(schema: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(schema, sort_keys=True, default=str).encode()).hexdigest()[:12]


# --- the contract ------------------------------------------------------------------------------


class Scorer(Protocol):
    """A fitted model with its own preprocessing: raw rows in, scores out."""

    def predict(self, frame: pd.DataFrame) -> np.ndarray: ...


LogFn = Callable[[dict[str, float], int], None]


class UseCase(abc.ABC):
    """What one entry provides to the pipeline, serving, batch scoring and monitoring.

    ``kind`` picks the serving, batch and drift parts (``deepflow.kinds.<kind>``); the rest of the
    platform calls only the methods below.
    """

    kind: ClassVar[str]
    primary_metric: ClassVar[str]  # the one metric gates, checkpoints and the registry rank by
    summary_metrics: tuple[str, ...]  # the CLI's table (a class constant, or a property of the config)
    families: ClassVar[dict[str, str]]  # member -> shallow | deep | classical | ...

    def __init__(self, entry: Entry, cfg: Any) -> None:
        self.entry, self.name, self.cfg = entry, entry.name, cfg

    # --- data ---------------------------------------------------------------------------------

    @property
    def prepared_dir(self) -> Path:
        return project_path(self.cfg.prepared_dir)

    @abc.abstractmethod
    def load_splits(self) -> dict[str, pd.DataFrame]:
        """The prepared train/val/test splits."""

    @abc.abstractmethod
    def validation_inputs(self, splits: dict[str, pd.DataFrame]) -> tuple[dict, dict]:
        """(frames, suites) for ``validation.validate``: the data contract."""

    @abc.abstractmethod
    def schema(self) -> dict[str, Any]:
        """What a model of this entry expects and answers (features, label set, classes): two
        versions with different schemas are never compared or promoted over each other."""

    # --- members ------------------------------------------------------------------------------

    @abc.abstractmethod
    def members(self) -> list[tuple[str, str]]:
        """(member, "candidate" | "baseline") in training order."""

    def registrable(self, kind: str) -> bool:
        return kind == "candidate" or bool(getattr(self.cfg, "register_baselines", False))

    @abc.abstractmethod
    def fit(self, name: str, kind: str, splits: dict[str, pd.DataFrame], log: LogFn | None = None,
            fast_dev_run: bool = False, time_limit_s: float | None = None) -> tuple[Scorer, dict[str, Any]]:
        """Train one member; (scorer, info) where info has ``epochs_run`` and ``parameters`` when known.

        ``time_limit_s``: the wall clock the fit may take (the run's budget, what is left of it);
        networks stop training when it is reached (``training.fit``'s ``time_limit_s``) and keep
        their best weights so far; a model that cannot be interrupted may ignore it."""

    # --- evaluation ---------------------------------------------------------------------------

    @abc.abstractmethod
    def evaluate(self, scores: np.ndarray, frame: pd.DataFrame) -> dict[str, float]: ...

    @abc.abstractmethod
    def primary_interval(self, scores: np.ndarray, frame: pd.DataFrame) -> stats.Interval: ...

    @abc.abstractmethod
    def primary_gain(self, challenger: np.ndarray, champion: np.ndarray, frame: pd.DataFrame) -> stats.Interval:
        """Paired bootstrap interval of (challenger - champion) on the primary metric."""

    @abc.abstractmethod
    def threshold(self, val_scores: np.ndarray, val: pd.DataFrame) -> float: ...

    @abc.abstractmethod
    def figures(self, member: str, scores: np.ndarray, frame: pd.DataFrame, threshold: float) -> dict[str, Any]: ...

    @abc.abstractmethod
    def input_example(self, frame: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
        """A few raw input rows, in the columns ``columns`` (a scorer's own) when given."""

    # --- reproduction (deepflow reproduce) ----------------------------------------------------

    # How far a rebuild may land from the recorded test metrics (absolute) when it cannot be bit for
    # bit: other hardware, thread count or packages, or a time limit that let the clock shape the
    # model. On the recorded machine and environment a rebuild must be exact. Kinds override it.
    reproduce_tolerance: ClassVar[float] = 0.01

    @staticmethod
    def compare_predictions(registered: Any, rebuilt: Any) -> dict[str, Any]:
        """How a rebuilt model's test predictions differ from the registered model's: a dict with at
        least ``identical`` (bool) and ``detail`` (one line). The default compares score arrays."""
        from deepflow.reproduce.compare import scores

        return scores(registered, rebuilt)

    # --- optional hooks -----------------------------------------------------------------------

    def explanation_background(self, scorer: Scorer, train: pd.DataFrame) -> pd.DataFrame | None:
        """Training rows stored with the model (``deepflow.explain``): what "an input left out"
        means when one prediction is explained per input field. None (the default): the kind
        explains without one (a text against the empty text; a detector by its boxes)."""
        return None

    def extra_metrics(self, scorer: Scorer) -> dict[str, float]:
        """Model-level checks beyond the test split (``test/x`` joins the gated metrics)."""
        return {}

    def reports(self, member: str, scorer: Scorer, scores: np.ndarray,
                frame: pd.DataFrame) -> dict[str, Any]:
        """Artifacts of one member: path -> markdown text, or a matplotlib figure (e.g. the plot
        of a report). Markdown under ``card/`` is appended to the model card when the member is
        registered."""
        return {}
