"""Typed defaults for the fraud use case; ``config.yaml`` and ``key=value`` override them."""

from __future__ import annotations

from dataclasses import dataclass, field

from deepflow.promotion import PromotionConfig
from deepflow.usecases.fraud.prepare import FEATURES, WINDOWS


@dataclass
class TrainConfig:
    epochs: int = 12
    batch_size: int = 1024
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 4  # epochs without a better val/auprc before stopping
    seed: int = 42
    threads: int = 0  # torch intra-op threads; 0 = torch's default


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


@dataclass
class FraudConfig:
    prepared_dir: str = "data/prepared/fraud"
    dvc_stage: str = "fraud_prepare"
    label: str = "TX_FRAUD"
    id_column: str = "TRANSACTION_ID"
    time_column: str = "TX_DATETIME"
    entity_column: str = "CUSTOMER_ID"  # the card, for card precision@k
    features: list[str] = field(default_factory=lambda: list(FEATURES))
    nonnegative: list[str] = field(
        default_factory=lambda: ["TX_AMOUNT"]
        + [f"{e}_NB_TX_{w}DAY_WINDOW" for e in ("CUSTOMER_ID", "TERMINAL_ID") for w in WINDOWS]
    )
    unit_interval: list[str] = field(
        default_factory=lambda: [f"TERMINAL_ID_RISK_{w}DAY_WINDOW" for w in WINDOWS]
        + ["TX_DURING_WEEKEND", "TX_DURING_NIGHT"]
    )
    fraud_rate_min: float = 0.001
    fraud_rate_max: float = 0.05
    candidates: list[str] = field(default_factory=lambda: ["shallow", "deep", "autoencoder"])
    baselines: list[str] = field(default_factory=lambda: ["logistic_regression", "xgboost"])
    register_baselines: bool = False  # baselines are references; only candidates are registered
    top_k: int = 100
    threshold: float | None = None  # decision threshold; None = best F1 on the validation split
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    promotion: PromotionConfig = field(  # ROC-AUC may drop by at most 0.01
        default_factory=lambda: PromotionConfig(noninferiority={"roc_auc": 0.01}))
