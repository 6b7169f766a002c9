"""Typed defaults of the ``text`` kind; an entry's ``config:`` and ``key=value`` override them.

Any labelled text data is an entry (``datasets/<name>.yaml``, ``kind: text``): ``prepared_dir``
holds the output of ``python -m deepflow.kinds.text.prepare``; ``labels`` (the entry's identity)
and ``positive`` (or ``null`` for macro-F1 over all classes) come from the entry file. An entry
written by ``deepflow new`` also records its ``source`` file, how it is read (``read``), which
columns hold the text and the label, and the run's wall-clock ``budget_s``; ``python -m
deepflow.kinds.text.prepare NAME`` prepares it from those alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from deepflow.kinds.table.config import ReadConfig
from deepflow.promotion import PromotionConfig
from deepflow.validation import ContractConfig


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
    max_len: int = 64  # tokens kept per message (short messages: most are shorter)
    devices: int = 1  # processes (CPU) or GPUs per node; > 1 trains with DDP in its own job (deepflow/distributed.py)
    nodes: int = 1  # hosts of a multi-node DDP job (torchrun on each; docs/team.md)


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
    """Made-With-ML-style behavioural tests, reported as ``test/behaviour_pass_rate``. Invariance
    (typos, casing, punctuation) applies to any text; the directional phrases and the minimum
    functionality examples belong to an entry (its ``datasets/<name>.yaml``, under ``behaviour``)."""

    enabled: bool = False
    target: str | None = None  # the class the directional phrases should push towards
    sample: int = 60  # test messages perturbed for invariance / directional tests
    phrases: list[str] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)  # label -> texts it must get right


@dataclass
class SplitConfig:
    val: float = 0.15
    test: float = 0.15
    seed: int = 0  # salt of the content hash (changing it reshuffles the split)


@dataclass
class TextConfig:
    prepared_dir: str = ""
    IDENTITY_KEYS: ClassVar[tuple[str, ...]] = ("labels",)

    source: str = ""  # entries from `deepflow new`: the tracked source file (data/sources/<name>/...)
    read: ReadConfig = field(default_factory=ReadConfig)  # how the source is read (detected by `deepflow new`)
    loose_rows: bool = False  # source lines with unquoted delimiters: the extras belong to the text (text/loose.py)
    text_column: str = ""  # the source's text column
    label_column: str = ""  # the source's label column
    fold_labels: bool = False  # labels that differ only in case or surrounding spaces are one class
    split: SplitConfig = field(default_factory=SplitConfig)
    budget_s: float | None = None  # wall clock of a whole `deepflow run`; None: no budget

    labels: list[str] = field(default_factory=list)  # class ids in this order
    positive: str | None = None  # test/f1 is this class's F1; None = macro F1
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
        floor=0.5, noninferiority={"mcc": 0.02}, max_latency_p95_ms=50.0, max_size_mb=150.0))
    contract: ContractConfig = field(default_factory=ContractConfig)  # checks against the data's history
