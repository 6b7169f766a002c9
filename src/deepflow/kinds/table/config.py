"""Typed defaults of the ``table`` kind, and the shape of the entry ``deepflow new`` writes.

An entry of kind ``table`` (``datasets/<name>.yaml``) is written by ``deepflow new`` from the
data itself and is meant to be read and edited: every inference is a key here. ``columns`` is
the profile *and* the data contract (null shares, ranges, category sets), one mapping per source
column in source order; changing a column's ``role`` changes the model's inputs (the entry's
identity), editing a bound only changes what validation accepts.

Prepared data (``python -m deepflow.kinds.table.prepare NAME``, a DVC stage) holds, per split,
the feature columns (roles ``numeric``, ``boolean``, ``categorical``, ``datetime``), the ``id``
columns, the target and ``_row_hash``; see ``prepare.py`` for the dtypes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from deepflow.promotion import PromotionConfig
from deepflow.validation import ContractConfig

Task = Literal["binary", "multiclass", "regression"]
Role = Literal["numeric", "boolean", "categorical", "datetime",  # features: the model reads these
               "id", "constant", "text", "leak", "drop"]  # not features (id is kept for the contract)
FEATURE_ROLES = ("numeric", "boolean", "categorical", "datetime")
MEMBERS = ("linear", "hgb", "shallow", "deep")  # the ladder, cheapest first


@dataclass
class ColumnSpec:
    """One source column: its role and its contract (bounds measured at ``new``, with tolerance)."""

    role: Role = "numeric"
    dtype: str = ""  # the dtype read from the source (informational)
    null_share_max: float = 0.0  # per split: share of missing values allowed
    min: float | None = None  # numeric/boolean: allowed range (None: unbounded on that side)
    max: float | None = None
    categories: list[str] = field(default_factory=list)  # categorical: the known values, most frequent first
    known_share_min: float = 1.0  # categorical: share of values that must be known categories
    unknown: Literal["other", "reject"] = "other"  # serving/batch: an unseen category -> "other" bucket or 422
    format: str = ""  # datetime: the strftime format of the source's text; "" = ISO 8601 / typed; "mixed": per value
    note: str = ""  # why this role (printed by `deepflow new`)


@dataclass
class ReadConfig:
    """How the source file is read (detected by ``deepflow new``; edit if a detection was wrong)."""

    format: Literal["csv", "parquet", "jsonl"] = "csv"
    delimiter: str = ","
    encoding: str = "utf-8"
    header: bool = True
    na_values: list[str] = field(default_factory=list)  # text read as missing (CSV: "NA", "null", ...; typed: none)
    quoting: bool = True  # CSV: standard quoting ("a, b" is one field); false: quotes are text (stray quotes)
    strip: bool = True  # text values stripped of surrounding spaces (false: kept, as the text kind reads labels)
    max_rows: int = 1_000_000  # larger files are sampled (seeded, uniform) to this many rows


@dataclass
class SplitConfig:
    val: float = 0.15
    test: float = 0.15
    seed: int = 0  # salt of the content hash (changing it reshuffles the split)


@dataclass
class TrainConfig:
    epochs: int = 60  # upper bound; early stopping and the time budget usually end training first
    batch_size: int = 0  # 0: chosen from the number of training rows
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 8  # epochs without a better validation metric before stopping
    seed: int = 42
    threads: int = 0  # torch intra-op threads and the BLAS/OpenMP pool of sklearn; 0 = one per free CPU (threads.py)
    devices: int = 1  # processes (CPU) or GPUs per node; > 1 trains with DDP in its own job (deepflow/distributed.py)
    nodes: int = 1  # hosts of a multi-node DDP job (torchrun on each; docs/team.md)


@dataclass
class ModelConfig:
    shallow_hidden: int = 128
    deep_width: int = 128
    deep_blocks: int = 3
    dropout: float = 0.1
    max_embedding_dim: int = 16
    linear_c: list[float] = field(default_factory=lambda: [0.1, 1.0, 10.0])  # chosen on the validation split
    hgb_max_iter: int = 500  # with early stopping on an internal 10 % holdout
    hgb_learning_rate: float = 0.1


@dataclass
class TableConfig:
    IDENTITY_KEYS: ClassVar[tuple[str, ...]] = ("target", "task", "classes", "columns", "source")

    source: str = ""  # the tracked source file (data/sources/<name>/...)
    read: ReadConfig = field(default_factory=ReadConfig)
    prepared_dir: str = ""  # train/val/test.parquet
    target: str = ""
    task: Task = "binary"
    classes: list[str] = field(default_factory=list)  # classification: class names; binary: [negative, positive]
    metric: str = ""  # primary metric; "" = by task: auprc (rare positives) or roc_auc, f1_macro, r2
    columns: dict[str, ColumnSpec] = field(default_factory=dict)  # source order
    time_column: str | None = None  # a datetime column: time-ordered split (else a content-hash split)
    split: SplitConfig = field(default_factory=SplitConfig)
    class_share: dict[str, list[float]] = field(default_factory=dict)  # contract: [min, max] share per class and split
    rows_min: int = 20  # contract: rows of the training split at least
    target_min: float | None = None  # regression contract: target range
    target_max: float | None = None
    drop_missing_target: bool = False  # rows without a target value: error (False) or left out (True)
    members: list[str] = field(default_factory=lambda: list(MEMBERS))
    budget_s: float = 300.0  # wall clock of a whole `deepflow run` (validation to promotion)
    threshold: float | None = None  # binary decision threshold; None = best F1 on the validation split
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    promotion: PromotionConfig = field(default_factory=PromotionConfig)
    contract: ContractConfig = field(default_factory=ContractConfig)  # checks against the data's history

    def features(self) -> list[str]:
        """The model's input columns, in source order."""
        return [name for name, spec in self.columns.items() if spec.role in FEATURE_ROLES]
