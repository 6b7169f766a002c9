"""Text networks (plain ``nn.Module``: token ids or sentence embeddings in, class logits out)
and ``TextSystem``, the LightningModule that trains any of them.

- ``FastTextNet`` (shallow): the mean of word, bigram and subword embeddings, one linear layer.
- ``BiGRUNet`` (deep): 2-layer bidirectional GRU; max pooling and additive attention over time.
- ``EmbeddingHead`` (transfer): a small MLP on frozen all-MiniLM-L6-v2 sentence embeddings.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch import nn

from deepflow.kinds.text.metrics import f1


def _trim(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop all-padding columns; return (ids, mask)."""
    mask = ids != 0
    width = max(int(mask.sum(1).max()), 1)
    return ids[:, :width], mask[:, :width]


class FastTextNet(nn.Module):
    """Bag of embeddings (Joulin et al. 2016): the mean embedding of a message's features (words,
    hashed bigrams and character n-grams, see ``text.HashedBag``), then one linear layer."""

    def __init__(self, n_features: int, classes: int, dim: int = 64) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(n_features, dim, mode="mean", padding_idx=0)
        self.out = nn.Linear(dim, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(ids))


class BiGRUNet(nn.Module):
    def __init__(self, vocab_size: int, classes: int, dim: int = 96, hidden: int = 64, layers: int = 2,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.gru = nn.GRU(dim, hidden, num_layers=layers, batch_first=True, bidirectional=True,
                          dropout=dropout if layers > 1 else 0.0)
        self.attn = nn.Linear(2 * hidden, 1)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(4 * hidden, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids, mask = _trim(ids)
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(ids), lengths, batch_first=True, enforce_sorted=False)
        states, _ = self.gru(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=ids.shape[1])
        pad = ~mask.unsqueeze(-1)
        pooled = states.masked_fill(pad, float("-inf")).amax(1)
        weights = torch.softmax(self.attn(states).masked_fill(pad, float("-inf")), dim=1)
        attended = (weights * states).sum(1)
        return self.out(self.drop(torch.cat([pooled, attended], 1)))


class EmbeddingHead(nn.Module):
    def __init__(self, dim: int, classes: int, hidden: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TextSystem(L.LightningModule):
    """Cross-entropy, AdamW and ``val/f1`` (positive-class F1, or macro F1 without one)."""

    def __init__(self, net: nn.Module, positive: int | None, lr: float = 2e-3, weight_decay: float = 1e-4) -> None:
        super().__init__()
        self.net, self.positive = net, positive
        self.lr, self.weight_decay = lr, weight_decay
        self.save_hyperparameters(ignore=["net"])
        self._preds: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch  # to the CPU once per batch: the epoch's end is numpy
        self._preds.append(self.net(x).argmax(1).detach().cpu())
        self._labels.append(y.cpu())

    def on_validation_epoch_end(self) -> None:
        preds, labels = (torch.cat(t).numpy() for t in (self._preds, self._labels))
        self._preds.clear()
        self._labels.clear()
        self.log("val/f1", float(f1(labels, preds, self.positive, int(max(labels.max(), preds.max())) + 1)))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def softmax(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.float(), dim=1).cpu().numpy().astype(np.float64)
