"""Tokeniser, vocabulary and featurisers, built from the training split only and shipped inside
the model (a featuriser is the model's preprocessing: ``encode(texts) -> tensor``).

Words are lower-cased; digit runs become shape tokens (``<num>`` for up to 4 digits,
``<longnum>`` for phone numbers and codes) so that "call 09061701461" and "call 08712402050"
look the same; currency signs and ``!``/``?`` are kept as tokens of their own.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Iterable

import torch

PAD, UNK = "<pad>", "<unk>"
_TOKEN = re.compile(r"[^\W\d_]+|\d+|[£$€!?]")


def tokenize(text: str) -> list[str]:
    return [("<longnum>" if len(t) > 4 else "<num>") if t.isdigit() else t for t in _TOKEN.findall(text.lower())]


class Vocabulary:
    """Token <-> id; id 0 pads, id 1 is any token unseen (or too rare) in training."""

    def __init__(self, tokens: list[str]) -> None:
        self.itos = [PAD, UNK, *tokens]
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int = 2, max_size: int = 20000) -> Vocabulary:
        counts = Counter(t for text in texts for t in tokenize(text))
        ranked = sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
        return cls(ranked[:max_size])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, texts: Iterable[str], max_len: int) -> torch.Tensor:
        """(N, max_len) int64 ids, right-padded with 0; an empty text keeps one ``<unk>``."""
        texts = list(texts)
        out = torch.zeros((len(texts), max_len), dtype=torch.int64)
        for row, text in enumerate(texts):
            ids = [self.stoi.get(t, 1) for t in tokenize(text)][:max_len] or [1]
            out[row, : len(ids)] = torch.tensor(ids)
        return out


class TokenIds:
    """Featuriser for sequence models: (N, max_len) word ids."""

    def __init__(self, vocab: Vocabulary, max_len: int) -> None:
        self.vocab, self.max_len = vocab, max_len

    def encode(self, texts: Iterable[str]) -> torch.Tensor:
        return self.vocab.encode(texts, self.max_len)


class HashedBag:
    """Featuriser for fastText-style models: the ids of a message's words, plus hashed word
    bigrams and hashed character n-grams of each word (subwords: "fr33", "txt" and "text" share
    some), in ``buckets`` slots after the vocabulary. (N, max_features) ids, 0-padded."""

    def __init__(self, vocab: Vocabulary, buckets: int = 50000, char_ngrams: tuple[int, int] = (3, 5),
                 max_features: int = 768) -> None:
        self.vocab, self.buckets, self.char_ngrams, self.max_features = vocab, buckets, char_ngrams, max_features

    def _hash(self, feature: str) -> int:
        return len(self.vocab) + zlib.crc32(feature.encode()) % self.buckets  # stable across processes

    def features(self, text: str) -> list[int]:
        tokens = tokenize(text)
        ids = [self.vocab.stoi.get(t, 1) for t in tokens] or [1]
        ids += [self._hash(f"{a} {b}") for a, b in zip(tokens, tokens[1:], strict=False)]
        lo, hi = self.char_ngrams
        for t in tokens:
            padded = f"<{t}>"
            ids += [self._hash(padded[i:i + n]) for n in range(lo, hi + 1) for i in range(len(padded) - n + 1)]
        return ids[: self.max_features]

    def encode(self, texts: Iterable[str]) -> torch.Tensor:
        rows = [self.features(t) for t in texts]
        out = torch.zeros((len(rows), max((len(r) for r in rows), default=1)), dtype=torch.int64)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return out

    @property
    def size(self) -> int:
        return len(self.vocab) + self.buckets
