"""The ``text`` kind's use case, wired for the pipeline: classification of short messages (any
``text,label`` data, by the entry's config alone).

Candidates: ``shallow`` (fastText-style bag of embeddings), ``deep`` (2-layer BiGRU with max and
attention pooling), ``transfer`` (frozen all-MiniLM-L6-v2 + a small head); reference baseline
``tfidf_lr`` (word + character TF-IDF, logistic regression). Decisions are the arg-max class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from deepflow import importance, plots, settings, stats, training, usecase
from deepflow.config import ConfigError
from deepflow.kinds.text import behaviour
from deepflow.kinds.text.config import TextConfig
from deepflow.kinds.text.encoder import SentenceEncoder
from deepflow.kinds.text.metrics import bootstrap_f1, paired_bootstrap_f1, text_metrics
from deepflow.kinds.text.models import BiGRUNet, EmbeddingHead, FastTextNet, TextSystem, softmax
from deepflow.kinds.text.prepare import SPLITS, normalise
from deepflow.kinds.text.text import HashedBag, TokenIds, Vocabulary

CANDIDATES = ("shallow", "deep", "transfer")
BASELINES = ("tfidf_lr",)
EXPLAINED_PER_CLASS = 15  # test texts per predicted class explained for the model card (cost: docs/explain.md)
SHARE = {"shallow": 1.0, "deep": 2.0, "transfer": 2.0, "tfidf_lr": 1.0}  # of a run's fit time, between members


def _normalised(frame: pd.DataFrame) -> list[str]:
    """The ``text`` column as the training texts were cleaned (``prepare.normalise``: HTML entities,
    Unicode NFC, whitespace), so a served or batch-scored text meets the model as training texts did."""
    return [normalise(t) for t in frame["text"].astype(str)]


class TextScorer:
    """Raw strings in (a ``text`` column), class probabilities (N, C) out.

    Carries its own preprocessing, the featuriser: built on the training split's vocabulary
    (``HashedBag``, ``TokenIds``) or the frozen sentence encoder.
    """

    def __init__(self, net: torch.nn.Module, labels: list[str], featurizer) -> None:
        self.net, self.labels, self.featurizer = net.eval(), list(labels), featurizer

    @property
    def frozen_mb(self) -> float:
        return getattr(self.featurizer, "frozen_mb", 0.0)

    @property
    def requirements(self) -> tuple[str, ...]:
        return getattr(self.featurizer, "requirements", ())

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        x = self.featurizer.encode(_normalised(frame))
        with torch.inference_mode():
            return softmax(self.net(x))


class TfidfScorer:
    """The sklearn reference: the fitted pipeline takes raw strings."""

    def __init__(self, pipeline, labels: list[str]) -> None:
        self.pipeline, self.labels = pipeline, list(labels)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.pipeline.predict_proba(_normalised(frame)).astype(np.float64)


class TextUseCase(usecase.UseCase):
    kind = "text"
    primary_metric = "f1"
    summary_metrics = ("f1", "mcc", "pr_auc", "accuracy", "behaviour_pass_rate")  # the CLI's table
    families = {"shallow": "shallow", "deep": "deep", "transfer": "transfer", "tfidf_lr": "classical"}
    reproduce_tolerance = 0.02  # F1 on other hardware (GPU vs CPU measured 0.013 apart, docs/reproduce.md)

    def __init__(self, entry: usecase.Entry, cfg: TextConfig) -> None:
        super().__init__(entry, cfg)
        if len(cfg.labels) < 2:
            raise ConfigError(f"{entry.path}: config.labels must name at least two classes, got {cfg.labels}")
        if not cfg.prepared_dir:
            raise ConfigError(f"{entry.path}: config.prepared_dir is not set")
        for key, names, known in (("candidates", cfg.candidates, CANDIDATES), ("baselines", cfg.baselines, BASELINES)):
            if unknown := [n for n in names if n not in known]:
                raise ConfigError(f"{key}: unknown {unknown[0]!r} (known: {', '.join(known)})")
        if cfg.positive is not None and cfg.positive not in cfg.labels:
            raise ConfigError(f"positive: {cfg.positive!r} is not one of labels {cfg.labels}")
        b = cfg.behaviour
        if b.enabled and b.target is not None and b.target not in cfg.labels:
            raise ConfigError(f"behaviour.target: {b.target!r} is not one of labels {cfg.labels}")
        if b.enabled and b.phrases and b.target is None:
            raise ConfigError("behaviour.phrases need behaviour.target: the class they should push towards")
        if unknown := [k for k in b.examples if k not in cfg.labels]:
            raise ConfigError(f"behaviour.examples: {unknown[0]!r} is not one of labels {cfg.labels}")
        self._behaviour: dict[int, behaviour.BehaviourResult] = {}

    @property
    def positive(self) -> int | None:
        return None if self.cfg.positive is None else self.cfg.labels.index(self.cfg.positive)

    # --- data ---------------------------------------------------------------------------------

    def schema(self) -> dict:
        return {"kind": self.kind, "labels": list(self.cfg.labels)}

    def load_splits(self) -> dict[str, pd.DataFrame]:
        return usecase.read_splits(self.name, self.prepared_dir, SPLITS)

    def validation_inputs(self, splits: dict[str, pd.DataFrame]) -> tuple[dict, dict]:
        from deepflow.kinds.text import expectations

        return expectations.frames(splits), expectations.suites(self.cfg)

    def members(self) -> list[tuple[str, str]]:
        """Candidates, then the reference baselines; within a budget (``budget_s``) the baselines
        first: they are cheap, and the reference a champion is compared with must be measured."""
        candidates = [(c, "candidate") for c in self.cfg.candidates]
        baselines = [(b, "baseline") for b in self.cfg.baselines]
        return baselines + candidates if getattr(self.cfg, "budget_s", None) else candidates + baselines

    def y(self, frame: pd.DataFrame) -> np.ndarray:
        ids = frame["label"].map({label: i for i, label in enumerate(self.cfg.labels)})
        if ids.isna().any():
            raise ValueError(f"labels outside {self.cfg.labels}: {sorted(set(frame['label'][ids.isna()]))[:5]}")
        return ids.to_numpy(dtype=np.int64)

    # --- training -----------------------------------------------------------------------------

    def fit(self, name: str, kind: str, splits: dict[str, pd.DataFrame], log=None, fast_dev_run: bool = False,
            time_limit_s: float | None = None):
        """Train one member; returns (scorer, info). Within ``time_limit_s``: the networks stop
        early; the transfer member embeds a share of the training texts when embedding them all
        would take most of it; the TF-IDF baseline tries no further C when the next fit would
        not end in time."""
        cfg, m = self.cfg, self.cfg.model
        training.seed_everything(cfg.train.seed, cfg.train.threads)
        time_limit_s = self._share(name, time_limit_s)
        train, val = splits["train"], splits["val"]
        if kind == "baseline":
            return self._fit_tfidf(train, val, time_limit_s)
        n_classes = len(cfg.labels)
        if name == "transfer":
            cache = settings.cache_dir() / "embeddings"  # the frozen encoder's output, per data version
            featurizer = SentenceEncoder(cache)
            train = self._embeddable(featurizer, train, val, cache, time_limit_s)
            x_train, x_val = (torch.from_numpy(featurizer.embed_cached(f["text"].tolist(), cache))
                              for f in (train, val))
            net = EmbeddingHead(featurizer.dim, n_classes, m.head_hidden, m.dropout)
        else:
            vocab = Vocabulary.build(train["text"], m.min_freq, m.max_vocab)  # training split only
            if name == "shallow":
                featurizer = HashedBag(vocab, m.fasttext_buckets, (m.char_ngram_min, m.char_ngram_max))
                net = FastTextNet(featurizer.size, n_classes, m.fasttext_dim)
            else:
                featurizer = TokenIds(vocab, cfg.train.max_len)
                net = BiGRUNet(len(vocab), n_classes, m.gru_dim, m.gru_hidden, m.gru_layers, m.dropout)
            x_train, x_val = (featurizer.encode(f["text"].tolist()) for f in (train, val))
        lr = cfg.train.lr.get(name)
        if lr is None:
            raise ConfigError(f"train.lr: no learning rate for {name!r} (have: {sorted(cfg.train.lr)})")
        system = TextSystem(net, self.positive, lr=lr, weight_decay=cfg.train.weight_decay)
        y_train, y_val = torch.tensor(self.y(train)), torch.tensor(self.y(val))
        result = training.fit(
            system,
            training.batches(x_train, y_train, batch_size=cfg.train.batch_size, shuffle=True, seed=cfg.train.seed),
            training.batches(x_val, y_val, batch_size=512, shuffle=False),
            max_epochs=cfg.train.epochs, monitor="val/f1", patience=cfg.train.patience, log=log,
            fast_dev_run=fast_dev_run, time_limit_s=time_limit_s,
            devices=cfg.train.devices, nodes=cfg.train.nodes,
        )
        info = {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "steps": result.steps,
                "train_rows": len(train), "time_limit_s": time_limit_s or 0.0,
                "fit_seconds": result.seconds, "messages_per_s": len(train) * result.epochs_run / result.seconds,
                "parameters": sum(p.numel() for p in net.parameters())}
        return TextScorer(net, cfg.labels, featurizer), info

    def _share(self, name: str, time_limit_s: float | None) -> float | None:
        """This member's part of ``time_limit_s`` (what the run has left to fit): the members still
        to come are weighed by :data:`SHARE`; time a member leaves unused goes to the later ones."""
        names = [n for n, _ in self.members()]
        if time_limit_s is None or name not in names:
            return time_limit_s
        rest = names[names.index(name):]
        return time_limit_s * SHARE.get(name, 1.0) / sum(SHARE.get(n, 1.0) for n in rest)

    @staticmethod
    def _embeddable(encoder: SentenceEncoder, train: pd.DataFrame, val: pd.DataFrame, cache,
                    time_limit_s: float | None, share: float = 0.6) -> pd.DataFrame:
        """The training texts the transfer member embeds: all of them, unless (not cached, and)
        embedding them and the validation texts would take more than ``share`` of the time limit
        (measured on 64 texts); then the first ones of the split (its order is a content hash)."""
        import time

        texts = [train["text"].tolist(), val["text"].tolist()]
        if time_limit_s is None or all(encoder.is_cached(t, cache) for t in texts):
            return train
        encoder.embed(train["text"].head(2).tolist())  # loads the encoder: not part of the rate
        started = time.perf_counter()
        encoder.embed(train["text"].head(64).tolist())
        per_text = (time.perf_counter() - started) / min(64, len(train))
        fits = int(share * time_limit_s / per_text) - len(val)
        return train if fits >= len(train) else train.head(max(fits, min(len(train), 200)))

    def _fit_tfidf(self, train: pd.DataFrame, val: pd.DataFrame, time_limit_s: float | None = None):
        """Word (1-2) + character (2-5) TF-IDF, logistic regression; C chosen on val/f1 (the values
        of ``model.tfidf_c`` in order, as long as the next fit, timed as the slowest so far, ends
        within ``time_limit_s``)."""
        import time

        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline, make_union

        started, best, slowest, tried = time.perf_counter(), None, 0.0, 0
        for c in self.cfg.model.tfidf_c:
            elapsed = time.perf_counter() - started
            if best is not None and time_limit_s is not None and elapsed + slowest > time_limit_s:
                break
            tried += 1
            pipeline = make_pipeline(
                make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
                           TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)),
                LogisticRegression(C=c, max_iter=2000),
            )
            pipeline.fit(train["text"].tolist(), self.y(train))
            scorer = TfidfScorer(pipeline, self.cfg.labels)
            score = text_metrics(self.y(val), scorer.predict(val), self.positive)["f1"]
            if best is None or score > best[0]:
                best = (score, c, scorer)
            slowest = max(slowest, time.perf_counter() - started - elapsed)
        seconds = time.perf_counter() - started
        return best[2], {"C": best[1], "fit_seconds": seconds, "C_tried": tried,
                         "messages_per_s": len(train) * tried / seconds}

    # --- evaluation ---------------------------------------------------------------------------

    def evaluate(self, scores: np.ndarray, frame: pd.DataFrame) -> dict[str, float]:
        return text_metrics(self.y(frame), scores, self.positive)

    def primary_interval(self, scores: np.ndarray, frame: pd.DataFrame) -> stats.Interval:
        p = self.cfg.promotion
        return bootstrap_f1(self.y(frame), scores, self.positive, resamples=p.resamples,
                            confidence=p.confidence, seed=p.seed)

    def primary_gain(self, challenger: np.ndarray, champion: np.ndarray, frame: pd.DataFrame) -> stats.Interval:
        p = self.cfg.promotion
        return paired_bootstrap_f1(self.y(frame), challenger, champion, self.positive, resamples=p.resamples,
                                   confidence=p.confidence, seed=p.seed)

    def threshold(self, val_scores: np.ndarray, val: pd.DataFrame) -> float:
        return 0.5  # decisions are the arg-max class (for two classes: probability >= 0.5)

    def extra_metrics(self, scorer) -> dict[str, float]:
        """Behavioural tests on the test split (``test/behaviour_*``), when enabled."""
        b = self.cfg.behaviour
        if not b.enabled:
            return {}
        test = self.load_splits()["test"]
        sample = test["text"].head(b.sample).tolist()
        ham = [] if b.target is None else test.loc[test["label"] != b.target, "text"].head(b.sample).tolist()
        result = behaviour.run(lambda texts: scorer.predict(pd.DataFrame({"text": texts})), self.cfg.labels,
                               b, sample, ham)
        self._behaviour[id(scorer)] = result
        return result.metrics()

    def figures(self, member: str, scores: np.ndarray, frame: pd.DataFrame, threshold: float):
        y = self.y(frame)
        figs = {"plots/confusion_matrix.png": plots.confusion(y, scores.argmax(1), self.cfg.labels,
                                                              f"{self.name} {member}: test")}
        if self.positive is not None:
            figs["plots/pr_curve.png"] = plots.pr_curve(y == self.positive, scores[:, self.positive],
                                                        f"{self.name} {member}: test PR curve ({self.cfg.positive})")
        return figs

    def reports(self, member: str, scorer, scores: np.ndarray, frame: pd.DataFrame) -> dict[str, str]:
        """Markdown artifacts: the misclassified test messages, and the failed behavioural cases."""
        y, preds = self.y(frame), scores.argmax(1)
        wrong = np.flatnonzero(preds != y)
        lines = [f"# {self.name} {member}: {len(wrong)} of {len(y)} test messages misclassified", "",
                 "| true | predicted | p(predicted) | text |", "|---|---|---|---|"]
        for i in wrong[np.argsort(-scores[wrong, preds[wrong]])]:  # most confident mistakes first
            text = frame["text"].iloc[i].replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {self.cfg.labels[y[i]]} | {self.cfg.labels[preds[i]]} | "
                         f"{scores[i, preds[i]]:.3f} | {text} |")
        out = {"reports/misclassified.md": "\n".join(lines) + "\n"}
        if (result := self._behaviour.get(id(scorer))) is not None:
            out["reports/behaviour.md"] = result.failures_markdown()
        return out | self.word_importance(member, scorer, scores, frame)

    def word_importance(self, member: str, scorer, scores: np.ndarray, frame: pd.DataFrame,
                   per_class: int = EXPLAINED_PER_CLASS) -> dict:
        """The model card's "what the model relies on": word contributions over a seeded sample of
        test texts, up to ``per_class`` per predicted class (``deepflow.importance.global_tokens``)."""
        rng = np.random.default_rng(self.cfg.train.seed)
        predicted = scores.argmax(1)
        take = np.sort(np.concatenate([rng.permutation(np.flatnonzero(predicted == k))[:per_class]
                                       for k in range(scores.shape[1])]).astype(int))
        texts = frame["text"].iloc[take].astype(str).tolist()
        table = importance.global_tokens(lambda t: scorer.predict(pd.DataFrame({"text": t})), texts, self.cfg.labels)
        return importance.token_reports(member, self.name, table, len(texts))

    def input_example(self, frame: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
        return frame[["text"]].head(5).reset_index(drop=True)
