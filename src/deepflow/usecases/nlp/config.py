"""Typed defaults for the NLP use case; ``config.yaml`` and ``key=value`` override them.

Any ``text,label`` dataset goes through by config alone: point ``prepared_dir`` at the output of
``python -m deepflow.usecases.nlp.prepare`` and set ``labels`` (and ``positive``, or ``null`` for
macro-F1 over all classes). ``behaviour`` holds the spam-specific behavioural tests; turn it
off (``behaviour.enabled=false``) for other data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deepflow.promotion import PromotionConfig


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: dict[str, float] = field(default_factory=lambda: {"shallow": 0.01, "deep": 0.003, "transfer": 0.001})
    weight_decay: float = 1e-4
    patience: int = 8  # epochs without a better val/f1 before stopping
    seed: int = 42
    # torch intra-op threads. 1: the GRU's many tiny per-step ops gain nothing from a second
    # thread, and with other busy processes on the cores two threads stall each other badly.
    threads: int = 1
    max_len: int = 64  # tokens kept per message (SMS: 99 % are shorter)


@dataclass
class ModelConfig:
    min_freq: int = 2  # vocabulary: tokens seen at least this often in train
    max_vocab: int = 20000
    fasttext_dim: int = 64
    fasttext_buckets: int = 50000  # hashed word bigrams and character n-grams
    char_ngram_min: int = 3
    char_ngram_max: int = 5
    gru_dim: int = 96
    gru_hidden: int = 64
    gru_layers: int = 2
    dropout: float = 0.2
    head_hidden: int = 128
    tfidf_c: list[float] = field(default_factory=lambda: [1.0, 10.0, 100.0])  # chosen on val/f1


@dataclass
class BehaviourConfig:
    """Made-With-ML-style behavioural tests, reported as ``test/behaviour_pass_rate``."""

    enabled: bool = True
    target: str = "spam"  # the class the directional phrases should push towards
    sample: int = 60  # test messages perturbed for invariance / directional tests
    phrases: list[str] = field(default_factory=lambda: [
        "Call now to claim your FREE prize!", "Txt WIN to 80086 for a chance to win £1000 cash",
        "URGENT! Your mobile number has been awarded a bonus", "Reply STOP to opt out. 150p/msg",
    ])
    examples: dict[str, list[str]] = field(default_factory=lambda: {
        "ham": [
            "Are we still meeting for lunch tomorrow?", "I'll be home in 10 minutes",
            "Can you pick up some milk on your way back", "Happy birthday! Hope you have a great day",
            "Sorry I missed your call, I was in a meeting", "Ok see you at the station at 7",
        ],
        "spam": [
            "WINNER!! You have been selected to receive a £900 prize. Call 09061701461 to claim",
            "FREE entry into our £250 weekly competition just text WIN to 80086 now",
            "Congratulations! You've won a free holiday. Reply YES to claim your prize",
            "URGENT! Your mobile has won a £2000 bonus. Call 09050000301 now to collect",
            "You have 1 new voicemail. Please call 08719181513 to claim your cash reward",
            "Get a FREE camera phone today! Text CAMERA to 83332. T&Cs apply 150p/msg",
        ],
    })


@dataclass
class NlpConfig:
    prepared_dir: str = "data/prepared/nlp"
    dvc_stage: str = "nlp_prepare"
    labels: list[str] = field(default_factory=lambda: ["ham", "spam"])  # class ids in this order
    positive: str | None = "spam"  # test/f1 is this class's F1; None = macro F1
    min_chars: int = 1
    max_chars: int = 1000
    min_class_share: float = 0.05  # per split
    max_class_share: float = 0.95
    candidates: list[str] = field(default_factory=lambda: ["shallow", "deep", "transfer"])
    baselines: list[str] = field(default_factory=lambda: ["tfidf_lr"])
    register_baselines: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    behaviour: BehaviourConfig = field(default_factory=BehaviourConfig)
    promotion: PromotionConfig = field(default_factory=lambda: PromotionConfig(
        floor=0.80, noninferiority={"mcc": 0.02, "behaviour_pass_rate": 0.02}, max_latency_p95_ms=50.0,
        max_size_mb=150.0))
