"""Text drift (``deepflow.drift.detect(kind="text")``) and drifted incoming SMS batches.

Signals, each against the champion's reference texts (the prepared train split):

* ``length_chars``, ``length_tokens``: PSI over the reference's deciles, confirmed by KS;
* ``oov_rate``: share of the batch's tokens never seen in the reference. Tokens are the model
  tokeniser's words and digit shapes plus every other symbol (emoji, URL punctuation) as a token
  of its own. A same-distribution batch also meets rare words, so the threshold is the OOV rate
  of held-out reference batches of the same size (vocabulary from the rest) plus ``oov_margin``;
* ``token_js``: Jensen-Shannon divergence of token frequencies, thresholded the same way (a
  small batch is far from any big sample's frequencies; what matters is the excess over that);
* ``embedding``: the shift of the mean all-MiniLM-L6-v2 embedding (frozen, offline), measured
  in units of the reference's own spread: ``sqrt((|mu_r - mu_c|^2 - noise) / tr(S_r))`` where
  ``tr(S_r)`` is the reference's mean squared distance to its mean and ``noise`` the squared
  distance two same-distribution samples of these sizes have on average
  (``tr(S_r)/n_r + tr(S_c)/n_c``). Unlike a bare p-value it does not grow with the sample size;
  a permutation test (``permutations`` label shuffles of the pooled embeddings) supplies the
  significance. At most ``embedding_sample`` texts per side (~1 ms per text to embed on an idle
  core; 0 turns the signal off); the reference's embeddings are cached per exact texts
  (``embed_cached``);
* ``predicted_labels`` (with a scorer): total variation between the champion's predicted label
  shares on at most ``scored_texts`` texts per side, confirmed by a chi-square test.

The batch generator resamples the prepared test split and mixes in a new-domain stream (today's
smishing: parcel fees, bank alerts, crypto groups, "hi mum" scams, with URLs and emojis, and chatty
ham with emojis) in proportion ``drift``.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepflow.drift import (
    TEXT,
    DriftConfig,
    DriftReport,
    Signal,
    batch_name,
    chi2_pvalue,
    jensen_shannon,
    numeric_signal,
    require_columns,
    subsample,
    summarise,
    total_variation,
    write_parquet,
)

_TOKEN = re.compile(r"[^\W\d_]+|\d+|[^\w\s]")  # text.tokenize's words and digits, plus any symbol
_JOINERS = re.compile("[\ufe0e\ufe0f\u200d]")  # emoji variation selectors and joiners: not tokens


def tokens(text: str) -> list[str]:
    """Lower-cased words, digit shapes (``<num>``, ``<longnum>``) as ``text.tokenize``, and each
    symbol (``!``, ``£``, an emoji, ``/`` of a URL) as its own token."""
    found = _TOKEN.findall(_JOINERS.sub("", text.lower()))
    return [("<longnum>" if len(t) > 4 else "<num>") if t.isdigit() else t for t in found]


def _texts(frame: pd.DataFrame, what: str) -> list[str]:
    require_columns(frame, [TEXT], what)
    values = frame[TEXT]
    ok = values.map(lambda v: isinstance(v, str) and bool(v.strip()))
    return values[ok].tolist()


def vocabulary_stats(ref_tokens: list[list[str]], cur_tokens: list[list[str]]) -> tuple[float, float]:
    """(OOV rate of the current tokens w.r.t. the reference vocabulary, JS of token frequencies)."""
    vocab = Counter(t for toks in ref_tokens for t in toks)
    cur = Counter(t for toks in cur_tokens for t in toks)
    total = sum(cur.values())
    oov = sum(n for t, n in cur.items() if t not in vocab) / total if total else 0.0
    return oov, jensen_shannon(dict(vocab), dict(cur)) if total and vocab else 0.0


def vocabulary_noise(ref_tokens: list[list[str]], n: int, draws: int, seed: int) -> tuple[float, float]:
    """Mean (OOV, JS) of ``draws`` held-out reference batches of ``n`` texts against the rest."""
    rng = np.random.default_rng(seed)
    n = max(1, min(n, len(ref_tokens) // 2))
    values = []
    for _ in range(draws):
        held = rng.permutation(len(ref_tokens))
        out, rest = held[:n], held[n:]
        values.append(vocabulary_stats([ref_tokens[i] for i in rest], [ref_tokens[i] for i in out]))
    return float(np.mean([v[0] for v in values])), float(np.mean([v[1] for v in values]))


def embedding_shift(ref: np.ndarray, cur: np.ndarray, permutations: int, seed: int) -> tuple[float, float, float]:
    """(shift in units of the reference's spread, permutation p-value, raw |mu_r - mu_c|^2) of two
    embedding samples (N, D). See the module docstring."""
    n_r, n_c = len(ref), len(cur)
    mu_r, mu_c = ref.mean(0), cur.mean(0)
    raw = float(np.sum((mu_r - mu_c) ** 2))
    spread_r = float(np.sum((ref - mu_r) ** 2) / max(n_r - 1, 1))  # tr(S_r), unbiased
    spread_c = float(np.sum((cur - mu_c) ** 2) / max(n_c - 1, 1))
    excess = raw - spread_r / n_r - spread_c / n_c
    shift = float(np.sqrt(max(excess, 0.0) / spread_r)) if spread_r > 0 else float(raw > 0)
    pooled = np.concatenate([ref, cur]).astype(np.float64)
    total = pooled.sum(0)
    rng = np.random.default_rng(seed)
    # (P, N) 0/1 masks of which rows play "current" in each shuffle; the means follow by a matmul
    masks = np.zeros((permutations, len(pooled)))
    for p in range(permutations):
        masks[p, rng.choice(len(pooled), size=n_c, replace=False)] = 1.0
    sums_c = masks @ pooled  # (P, D)
    null = np.sum(((total - sums_c) / n_r - sums_c / n_c) ** 2, axis=1)
    pvalue = float((1 + np.sum(null >= raw)) / (permutations + 1))
    return shift, pvalue, raw


def label_shares(scorer: Any, texts: list[str], embedded: tuple[list[str], np.ndarray] | None = None) -> np.ndarray:
    """Counts of the scorer's arg-max label over ``texts``, in ``scorer.labels`` order.

    A transfer champion (a ``TextScorer`` over the same frozen MiniLM) gets the embeddings the
    embedding signal already computed for these texts, instead of encoding them a second time.
    """
    from deepflow.kinds.text.encoder import SentenceEncoder

    featurizer = getattr(scorer, "featurizer", None)
    if embedded is not None and embedded[0] == texts and isinstance(featurizer, SentenceEncoder):
        import torch

        net = getattr(scorer, "net", None)
        if isinstance(net, torch.nn.Module):
            with torch.inference_mode():
                logits = net(torch.from_numpy(np.ascontiguousarray(embedded[1])))
            return np.bincount(logits.argmax(1).numpy(), minlength=len(scorer.labels))
    proba = np.asarray(scorer.predict(pd.DataFrame({TEXT: texts})))
    return np.bincount(proba.argmax(1), minlength=len(scorer.labels))


def detect_text(reference: pd.DataFrame, current: pd.DataFrame, cfg: DriftConfig, scorer: Any = None, *,
                use_case: str = "") -> DriftReport:
    ref_all, cur_all = _texts(reference, "reference"), _texts(current, "current batch")
    if not cur_all:
        from deepflow.drift import DriftInputError, source_of

        raise DriftInputError(f"{source_of(current, 'current batch')}: column text holds no non-empty strings")
    ref = subsample(pd.DataFrame({TEXT: ref_all}), cfg.max_texts, cfg.seed)[TEXT].tolist()
    cur = subsample(pd.DataFrame({TEXT: cur_all}), cfg.max_texts, cfg.seed + 1)[TEXT].tolist()
    notes = []
    if dropped := current.attrs.get("dropped"):
        notes.append(f"{dropped:,} rows without text were dropped while loading")
    if len(cur) < len(cur_all):
        notes.append(f"current batch subsampled to {len(cur):,} of {len(cur_all):,} texts")
    ref_tok, cur_tok = [tokens(t) for t in ref], [tokens(t) for t in cur]
    signals, samples = [], {}
    for name, r, c in (("length_chars", [len(t) for t in ref], [len(t) for t in cur]),
                       ("length_tokens", [len(t) for t in ref_tok], [len(t) for t in cur_tok])):
        r, c = np.asarray(r, dtype=np.float64), np.asarray(c, dtype=np.float64)
        signals.append(numeric_signal(name, r, c, cfg))
        signals[-1].detail += f"; median {np.median(r):.0f} -> {np.median(c):.0f}"
        samples[name] = (r, c)

    oov, js = vocabulary_stats(ref_tok, cur_tok)
    oov_noise, js_noise = vocabulary_noise(ref_tok, len(cur_tok), cfg.null_draws, cfg.seed)
    seen = {t for toks in ref_tok for t in toks}
    unseen = Counter(t for toks in cur_tok for t in toks if t not in seen)
    top = ", ".join(t for t, _ in unseen.most_common(8))
    signals.append(Signal("oov_rate", "oov", oov, oov_noise + cfg.oov_margin, oov >= oov_noise + cfg.oov_margin,
                          f"held-out reference batches: {oov_noise:.3f}; most frequent new tokens: {top}"))
    signals.append(Signal("token_js", "js", js, js_noise + cfg.js_margin, js >= js_noise + cfg.js_margin,
                          f"held-out reference batches: {js_noise:.3f}"))

    embedded: dict[str, tuple[list[str], np.ndarray]] = {}
    if cfg.embedding_sample > 0:
        ref_e = subsample(pd.DataFrame({TEXT: ref}), cfg.embedding_sample, cfg.seed + 2)[TEXT].tolist()
        cur_e = subsample(pd.DataFrame({TEXT: cur}), cfg.embedding_sample, cfg.seed + 3)[TEXT].tolist()
        signal, embedded["ref"], embedded["cur"] = _embedding_signal(ref_e, cur_e, cfg)
        signals.append(signal)
    else:
        notes.append("embedding shift not measured (embedding_sample=0)")

    if scorer is not None:
        ref_s = subsample(pd.DataFrame({TEXT: ref}), cfg.scored_texts, cfg.seed + 2)[TEXT].tolist()
        cur_s = subsample(pd.DataFrame({TEXT: cur}), cfg.scored_texts, cfg.seed + 3)[TEXT].tolist()
        a, b = label_shares(scorer, ref_s, embedded.get("ref")), label_shares(scorer, cur_s, embedded.get("cur"))
        tvd, p = total_variation(a, b), chi2_pvalue(a, b)
        shares = ", ".join(f"{lab} {x / a.sum():.1%} -> {y / b.sum():.1%}"
                           for lab, x, y in zip(scorer.labels, a, b, strict=True))
        signals.append(Signal("predicted_labels", "tvd", tvd, cfg.label_share_shift,
                              bool(tvd >= cfg.label_share_shift and p < cfg.pvalue), f"{shares} (chi2 p={p:.1e})"))
    return summarise(use_case, "text", len(ref), len(cur), signals, cfg, notes, samples)


def _embedding_signal(ref: list[str], cur: list[str], cfg: DriftConfig
                      ) -> tuple[Signal, tuple[list[str], np.ndarray], tuple[list[str], np.ndarray]]:
    """(the signal, (texts, embeddings) of each side)."""
    from deepflow import settings
    from deepflow.kinds.text.encoder import SentenceEncoder

    encoder = SentenceEncoder()
    e_ref = encoder.embed_cached(ref, settings.cache_dir() / "embeddings")
    e_cur = encoder.embed(cur)
    shift, p, raw = embedding_shift(e_ref, e_cur, cfg.permutations, cfg.seed)
    signal = Signal("embedding", "embedding", shift, cfg.embedding_shift,
                    bool(shift >= cfg.embedding_shift and p < cfg.pvalue),
                    f"MiniLM mean shift |dmu|^2={raw:.4f} on {len(ref)} vs {len(cur)} texts; permutation p={p:.3f}")
    return signal, (ref, e_ref), (cur, e_cur)


# --- drifted batches -------------------------------------------------------------------------

EMOJI = ["📦", "🚚", "⚠️", "🔒", "🚀", "💰", "👉", "😭", "❤️", "🎉", "😂", "🙏", "✅", "🔥", "💼", "📅"]
SCAMS = [
    "{e} {carrier}: your parcel {code} is on hold. Pay the £{fee} redelivery fee within 24h at "
    "https://{domain}/track/{code} {e2}",
    "{bank} ALERT {e}: a payment of £{amount} to {merchant} was flagged. Not you? Secure your account now: "
    "https://{domain}/verify?id={code}",
    "{e}{e} {coin} is about to explode! Our VIP signal group made members {pct}% this week. Join free {e2} "
    "https://t.me/{handle}",
    "Hi Mum, it's me {e} I dropped my phone, this is my new number. Can you WhatsApp me when you see this? "
    "I need help paying a bill today {e2}",
    "Hello! We are hiring remote product reviewers {e} Earn £{amount}/day from your phone, no experience needed. "
    "Message {name} on WhatsApp: +44{digits}",
    "Your {service} subscription has expired {e} Update your billing details within 24 hours to avoid losing "
    "access: https://{domain}/billing/{code}",
]
CHATS = [
    "omg {e}{e} did you see {name}'s story?? brb, on the bus now",
    "Meeting moved to {hour}:30 {e} link is in the Teams chat, see you there",
    "Happy birthday {name}!!! {e}{e2} hope you have the best day, drinks on Friday?",
    "Just landed {e} uber to the hotel then dinner, call you after {hour}",
    "Can you send me the photos from the weekend? {e} the group chat ones didn't load",
]
FILL = {
    "carrier": ["DPD", "Evri", "Royal Mail", "DHL", "Yodel"], "bank": ["Barclays", "HSBC", "Monzo", "Lloyds"],
    "merchant": ["Amazon", "Apple Pay", "PayPal", "Currys"], "coin": ["$PEPE", "Solana", "XRP", "a new memecoin"],
    "service": ["Netflix", "Disney+", "Spotify", "iCloud"], "name": ["Sophie", "Jake", "Priya", "Tom", "Aisha"],
    "domain": ["parcel-redeliver.info", "secure-verify.co", "acct-help.net", "billing-update.app"],
}


def campaign_text(rng: random.Random) -> str:
    """One message of the new domain: 70 % scams, 30 % chatty ham, with emojis and URLs."""
    template = rng.choice(SCAMS if rng.random() < 0.7 else CHATS)
    values = {k: rng.choice(v) for k, v in FILL.items()}
    values.update(e=rng.choice(EMOJI), e2=rng.choice(EMOJI), fee=f"{rng.randint(1, 3)}.{rng.randint(10, 99)}",
                  amount=rng.randint(80, 950), pct=rng.randint(40, 900), hour=rng.randint(1, 11),
                  code="".join(rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", k=8)),
                  handle=f"vip_{rng.choice(['signals', 'pumps', 'gains'])}{rng.randint(1, 99)}",
                  digits="".join(rng.choices("0123456789", k=10)))
    return template.format(**values)


def make_batch(out_dir: Path, *, rows: int, drift: float, seed: int, source: pd.DataFrame | Path | None = None) -> Path:
    """Write ``nlp-n<rows>-drift<d>-seed<s>.parquet`` (columns ``text``, ``origin``): ``1 - drift``
    of the rows resampled from ``source`` (default: the prepared test split), the rest new-domain."""
    if source is None:
        from deepflow import usecase
        from deepflow.drift import use_case_config

        source = usecase.project_path(use_case_config("nlp").prepared_dir) / "test.parquet"
    frame = pd.read_parquet(source) if isinstance(source, str | Path) else source
    pool = _texts(frame, str(source) if isinstance(source, str | Path) else "source")
    rng = random.Random(seed)
    n_new = round(rows * drift)
    old = rng.sample(pool, rows - n_new) if rows - n_new <= len(pool) else rng.choices(pool, k=rows - n_new)
    new = [campaign_text(rng) for _ in range(n_new)]
    texts = old + new
    origin = ["reference"] * len(old) + ["campaign"] * len(new)
    order = list(range(rows))
    rng.shuffle(order)
    out = pd.DataFrame({TEXT: [texts[i] for i in order], "origin": [origin[i] for i in order]})
    return write_parquet(out, out_dir / batch_name("nlp", rows, drift, seed))
