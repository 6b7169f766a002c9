"""Typed defaults of the ``tabular`` kind: one row per example, numeric features, a binary label.

An entry's ``config:`` (``datasets/<name>.yaml``) and ``key=value`` override them. ``label`` and
``features`` are the entry's identity: they come from the entry file only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from deepflow.promotion import PromotionConfig
from deepflow.validation import ContractConfig


@dataclass
class TrainConfig:
    epochs: int = 12
    batch_size: int = 1024
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 4  # epochs without a better val/auprc before stopping
    seed: int = 42
    threads: int = 0  # torch intra-op threads; 0 = one per free CPU, chosen per fit (deepflow/threads.py)
    devices: int = 1  # processes (CPU) or GPUs per node; > 1 trains with DDP in its own job (deepflow/distributed.py)
    nodes: int = 1  # hosts of a multi-node DDP job (torchrun on each; docs/team.md)


@dataclass
class ModelConfig:
    shallow_hidden: int = 64
    deep_width: int = 128
    deep_blocks: int = 4
    dropout: float = 0.1
    ae_hidden: int = 32
    ae_latent: int = 8
    xgb_trees: int = 300
    xgb_depth: int = 6
    seq_length: int = 5  # previous rows of the entity the sequence model reads (<= prepared history)
    seq_hidden: int = 32
    seq_cell: str = "gru"  # gru | lstm
    seq_attention: bool = True
    seq_blocks: int = 2  # residual blocks on the current row's features
    ffn_hidden: int = 500  # the handbook's feed-forward network (prequential protocol)
    ffn_layers: int = 1
    ffn_dropout: float = 0.2


@dataclass
class SearchConfig:
    """Optuna search of the Lightning candidates on the validation folds."""

    budget_s: dict[str, float] = field(default_factory=lambda: {"ffn": 180.0, "sequence": 480.0})
    max_trials: int = 50  # finished trials per model's study, all workers together; the budget usually ends it first
    max_epochs: int = 30  # upper end of the epochs searched
    seed: int = 42  # TPE sampler
    pruning: bool = True  # median pruner on the running mean AP over the folds
    # The Optuna study's database (SQLAlchemy URL; docs/team.md): "" = $DEEPFLOW_OPTUNA_STORAGE, else
    # optuna.db beside the embedded MLflow store; "memory" = a private study nobody joins or resumes.
    storage: str = ""


@dataclass
class PrequentialConfig:
    """The handbook's prequential protocol (chapter 5.2): ``n_folds`` folds of ``train_days`` of
    training, ``delay_days`` of label delay, ``assessment_days`` of assessment, each fold shifted
    back by ``assessment_days``. The dates are the training start of the latest fold."""

    transactions: str = ""  # raw time-stamped rows (the entry names its source)
    cache_dir: str = ".cache/prequential"  # the fold table (features + history index), keyed by source
    n_folds: int = 4
    train_days: int = 7
    delay_days: int = 7
    assessment_days: int = 7
    val_start: str = "2018-07-11"
    test_start: str = "2018-08-15"
    models: list[str] = field(default_factory=lambda: [
        "logistic_regression", "random_forest", "xgboost", "ffn", "sequence"])
    book_sequence: bool = True  # also the handbook's LSTM: history from inside the split only
    unsupervised: bool = True  # autoencoder vs isolation forest; reconstruction error as a feature
    ae_epochs: int = 10
    grids: dict[str, dict[str, list[Any]]] = field(default_factory=lambda: {
        "logistic_regression": {"C": [0.1, 1, 10, 100]},
        "random_forest": {"max_depth": [5, 10, 20, 50], "n_estimators": [25, 50, 100]},
        # 4096 histogram bins: close to the exact splits XGBoost 1.x (the handbook's) made on data this
        # size; the default 256 bins cannot split amounts finely enough and lose ~0.04 AP here.
        "xgboost": {"max_depth": [3, 6, 9], "n_estimators": [25, 50, 100], "learning_rate": [0.1, 0.3],
                    "max_bin": [4096]},
    })
    search: SearchConfig = field(default_factory=SearchConfig)
    threads: int = 2  # torch intra-op threads and sklearn/xgboost jobs


@dataclass
class TabularConfig:
    IDENTITY_KEYS: ClassVar[tuple[str, ...]] = ("label", "features", "class_names")

    prepared_dir: str = ""  # the folder of train/val/test.parquet
    label: str = "label"  # 0/1 column
    class_names: list[str] = field(default_factory=lambda: ["negative", "positive"])  # label 0, 1
    id_column: str | None = None  # unique per row, when set
    time_column: str | None = None  # a datetime column, for per-day metrics
    entity_column: str | None = None  # the entity a row belongs to, for entity precision@k (needs time_column)
    features: list[str] = field(default_factory=list)
    nonnegative: list[str] = field(default_factory=list)  # data contract: values >= 0
    unit_interval: list[str] = field(default_factory=list)  # data contract: values in [0, 1]
    positive_rate_min: float = 0.001  # data contract: share of label 1 per split
    positive_rate_max: float = 0.5
    candidates: list[str] = field(default_factory=lambda: ["shallow", "deep"])
    baselines: list[str] = field(default_factory=lambda: ["logistic_regression", "xgboost"])
    register_baselines: bool = False  # baselines are references; only candidates are registered
    top_k: int = 100
    threshold: float | None = None  # decision threshold; None = best F1 on the validation split
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    promotion: PromotionConfig = field(  # ROC-AUC may drop by at most 0.01
        default_factory=lambda: PromotionConfig(noninferiority={"roc_auc": 0.01}))
    contract: ContractConfig = field(default_factory=ContractConfig)  # checks against the data's history
    protocol: Literal["single", "prequential"] = "single"  # prequential: the benchmark flow, no registration
    prequential: PrequentialConfig = field(default_factory=PrequentialConfig)
