"""Text drift (``deepflow.drift.detect(kind="text")``), text batches and the generic text generator.

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

Batches are CSV, TSV or parquet files with a ``text`` column, or ``.txt`` (one message per line).

``make_batch`` is what a text entry without its own ``incoming:`` generator gets: texts resampled
from the prepared test split, a ``drift`` share of them replaced by texts of made-up words
(seeded syllables no real vocabulary shares), each as many words as the text it replaces: new
tokens, the same token counts. Entries with a domain of their own name a richer generator.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepflow.drift.batches import (
    DriftInputError,
    batch_name,
    read_table,
    require_columns,
    sample_split,
    source_of,
    subsample,
    write_parquet,
)
from deepflow.drift.report import DriftConfig, DriftReport, Signal, numeric_signal, summarise
from deepflow.drift.statistics import chi2_pvalue, jensen_shannon, total_variation

TEXT = "text"  # the column batch scoring and serving read
_TOKEN = re.compile(r"[^\W\d_]+|\d+|[^\w\s]")  # text.tokenize's words and digits, plus any symbol
_JOINERS = re.compile("[\ufe0e\ufe0f\u200d]")  # emoji variation selectors and joiners: not tokens


def tokens(text: str) -> list[str]:
    """Lower-cased words, digit shapes (``<num>``, ``<longnum>``) as ``text.tokenize``, and each
    symbol (``!``, ``£``, an emoji, ``/`` of a URL) as its own token."""
    found = _TOKEN.findall(_JOINERS.sub("", text.lower()))
    return [("<longnum>" if len(t) > 4 else "<num>") if t.isdigit() else t for t in found]


def texts_of(frame: pd.DataFrame, what: str) -> list[str]:
    """The non-empty strings of the ``text`` column (a DriftInputError names ``what`` without one)."""
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


def detect(reference: pd.DataFrame, current: pd.DataFrame, cfg: DriftConfig, scorer: Any = None, *,
           use_case: str = "", features: list[str] | None = None, threshold: float | None = None) -> DriftReport:
    """The signals of the module docstring; ``features`` and ``threshold`` are not used by this kind."""
    ref_all, cur_all = texts_of(reference, "reference"), texts_of(current, "current batch")
    if not cur_all:
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


# --- batches ---------------------------------------------------------------------------------


def load_batch(path: Path, features: list[str] | None = None) -> pd.DataFrame:
    """A CSV, TSV or parquet batch with a ``text`` column, or ``.txt`` (one message per line),
    UTF-8; rows without text are dropped (counted in ``attrs["dropped"]``). ``features``: unused."""
    from deepflow.kinds.text.batch import validate_text

    frame = read_table(path, strings=True)
    require_columns(frame, [TEXT], str(path))
    clean, rejects = validate_text(frame)
    if clean.empty:
        raise DriftInputError(f"{path}: column text holds no non-empty strings")
    clean = clean.reset_index(drop=True)
    clean.attrs.update(source=str(path), dropped=len(rejects))
    return clean


def read_batch(entry: str, path: Path, features: list[str] | None = None) -> pd.DataFrame:
    """An incoming batch of an entry made by ``deepflow new``: a file like its source is read as the
    source was (``batch.read_like_source``); anything else as :func:`load_batch` reads it."""
    from deepflow.batch import BatchError
    from deepflow.kinds.text.batch import read_like_source, validate_text

    try:
        read = read_like_source(entry, path)
    except BatchError as exc:
        raise DriftInputError(str(exc)) from None
    if read is None:
        return load_batch(path, features)
    frame, column = read
    clean, rejects = validate_text(frame.rename(columns={column: TEXT}))
    if clean.empty:
        raise DriftInputError(f"{path}: column {column} holds no non-empty strings")
    clean = clean.reset_index(drop=True)
    clean.attrs.update(source=str(path), dropped=len(rejects))
    return clean


_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "zh", "kv", "thr")
_NUCLEI = ("a", "e", "i", "o", "u", "ae", "oi", "uu")
_CODAS = ("", "", "x", "q", "rk", "nd", "sh")


def made_up_word(rng: random.Random) -> str:
    """A pronounceable word of 2-4 syllables that ends in a rare coda or runs long: next to no real
    vocabulary (or model tokeniser) has it, so it measures as a new token."""
    syllables = "".join(rng.choice(_ONSETS) + rng.choice(_NUCLEI) for _ in range(rng.randint(2, 4)))
    return syllables + rng.choice(_CODAS)


def shifted_text(text: str, rng: random.Random) -> str:
    """A text of made-up words, as many as ``text`` has tokens (at least one)."""
    return " ".join(made_up_word(rng) for _ in range(max(1, len(tokens(text)))))


def make_batch(name: str, out_dir: Path, *, rows: int, drift: float, seed: int,
               overrides: Sequence[str] = ()) -> Path:
    """Write ``<name>-n<rows>-drift<d>-seed<s>.parquet`` (columns ``text``, ``origin``): texts of
    entry ``name``'s prepared test split (val, then train, when it has none) drawn with
    replacement, ``round(rows * drift)`` of them replaced by ``shifted_text`` (origin ``shifted``).
    ``overrides``: the entry's config ``key=value`` (e.g. ``prepared_dir=...``)."""
    frame, path = sample_split(name, overrides)
    pool = texts_of(frame, str(path))
    if not pool:
        raise DriftInputError(f"{path}: column text holds no non-empty strings to draw a batch from")
    rng = random.Random(seed)
    texts = rng.choices(pool, k=rows)
    shifted = set(rng.sample(range(rows), round(rows * drift)))
    out = pd.DataFrame({TEXT: [shifted_text(t, rng) if i in shifted else t for i, t in enumerate(texts)],
                        "origin": ["shifted" if i in shifted else "reference" for i in range(rows)]})
    return write_parquet(out, out_dir / batch_name(name, rows, drift, seed))
