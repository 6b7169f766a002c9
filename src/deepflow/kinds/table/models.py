"""The ``table`` kind's networks (plain ``nn.Module``) and the LightningModule that trains either.

Both networks read the preprocessor's two arrays, ``numeric`` (B, D) float32 and ``codes`` (B, C)
int64, and return (B, n_out): one logit (binary), one logit per class (multiclass) or one value
of the standardised target (regression).

* ``shallow``: one hidden layer. A categorical column enters as its one-hot, which for the first
  layer is a lookup of ``hidden`` weights per category (an embedding of width ``hidden``), so
  the network is exactly an MLP on the numeric block and the one-hot view.
* ``deep``: a residual MLP: per-column categorical embeddings of width
  ``min(max_embedding_dim, round(1.6 * K ** 0.56))`` (K levels, the "other" bucket included),
  a linear stem, pre-norm residual blocks, a normalised head.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch import nn

from deepflow.kinds.table import metrics


def embedding_dim(levels: int, max_dim: int) -> int:
    """Width of a categorical column's embedding: fastai's rule of thumb, capped."""
    return max(1, min(max_dim, round(1.6 * levels ** 0.56)))


class ShallowNet(nn.Module):
    """One hidden layer on the numeric block and the one-hot of every code column."""

    def __init__(self, n_numeric: int, cardinalities: list[int], hidden: int, n_out: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.numeric = nn.Linear(n_numeric, hidden)
        self.categories = nn.ModuleList(nn.Embedding(k, hidden) for k in cardinalities)
        self.out = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_out))

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:  # -> (B, n_out)
        h = self.numeric(numeric)
        for j, table in enumerate(self.categories):
            h = h + table(codes[:, j])
        return self.out(h)


class ResidualBlock(nn.Module):
    """x + MLP(LayerNorm(x)): the pre-norm block of residual MLPs for tabular data."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(2 * width, width), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, W) -> (B, W)
        return x + self.net(x)


class DeepNet(nn.Module):
    """Embeddings per categorical column, a stem, ``blocks`` residual blocks and a head."""

    def __init__(self, n_numeric: int, cardinalities: list[int], width: int, blocks: int, n_out: int,
                 dropout: float = 0.1, max_embedding_dim: int = 16) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(k, embedding_dim(k, max_embedding_dim)) for k in cardinalities)
        n_in = n_numeric + sum(e.embedding_dim for e in self.embeddings)
        self.stem = nn.Linear(n_in, width)
        self.blocks = nn.Sequential(*[ResidualBlock(width, dropout) for _ in range(blocks)])
        self.head = nn.Sequential(nn.LayerNorm(width), nn.GELU(), nn.Linear(width, n_out))

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:  # -> (B, n_out)
        parts = [numeric, *(e(codes[:, j]) for j, e in enumerate(self.embeddings))]
        return self.head(self.blocks(self.stem(torch.cat(parts, dim=1))))


def build_net(name: str, n_numeric: int, cardinalities: list[int], n_out: int, m) -> nn.Module:
    """Member name -> network, with the sizes of the entry's ``model:`` section ``m``."""
    if name == "shallow":
        return ShallowNet(n_numeric, cardinalities, m.shallow_hidden, n_out, m.dropout)
    if name == "deep":
        return DeepNet(n_numeric, cardinalities, m.deep_width, m.deep_blocks, n_out, m.dropout, m.max_embedding_dim)
    raise KeyError(f"unknown table network {name!r} (known: shallow, deep)")


def outputs(task: str, raw: torch.Tensor, target_scale: tuple[float, float] | None = None) -> np.ndarray:
    """Network outputs (B, n_out) -> the scorer's answer: binary P(classes[1]) (B,), multiclass
    probabilities (B, C), regression values in the target's units (B,)."""
    if task == "binary":
        return torch.sigmoid(raw[:, 0]).double().numpy()
    if task == "multiclass":
        return torch.softmax(raw.double(), dim=1).numpy()
    mean, std = target_scale or (0.0, 1.0)
    return raw[:, 0].double().numpy() * std + mean


class TableSystem(L.LightningModule):
    """The task's loss (BCE, cross-entropy, or MSE on the standardised target), AdamW, and the
    entry's primary metric on the validation split as ``val/<metric>`` (what early stopping and
    the best-epoch weights follow). Batches are ``(numeric, codes, y)``; the training loader's
    regression targets are standardised, the validation loader's are in the target's units."""

    def __init__(self, net: nn.Module, task: str, metric: str, lr: float = 2e-3, weight_decay: float = 1e-4,
                 target_scale: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.net, self.task, self.metric = net, task, metric
        self.lr, self.weight_decay, self.target_scale = lr, weight_decay, target_scale
        self.save_hyperparameters(ignore=["net"])
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.task == "binary":
            return nn.functional.binary_cross_entropy_with_logits(raw[:, 0], y)
        if self.task == "multiclass":
            return nn.functional.cross_entropy(raw, y)
        return nn.functional.mse_loss(raw[:, 0], y)

    def training_step(self, batch: tuple[torch.Tensor, ...], _: int) -> torch.Tensor:
        numeric, codes, y = batch
        loss = self.loss(self.net(numeric, codes), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], _: int) -> None:
        numeric, codes, y = batch
        self._val.append((self.net(numeric, codes).detach().float().cpu(), y.cpu()))

    def on_validation_epoch_end(self) -> None:
        raw = torch.cat([r for r, _ in self._val])
        y = torch.cat([t for _, t in self._val]).numpy()
        self._val.clear()
        value = metrics.value(self.task, self.metric, y, outputs(self.task, raw, self.target_scale))
        self.log(f"val/{self.metric}", float(value) if np.isfinite(value) else -1e9)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
