"""The ``tabular`` kind's candidates: plain PyTorch networks, plus one LightningModule that trains any of them.

Every network maps raw feature rows ``(B, F)`` to one score per row ``(B,)``; standardisation is
a layer of the network, so the preprocessing used in training ships with the model.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from sklearn.metrics import average_precision_score
from torch import nn


class Standardize(nn.Module):
    """(x - mean) / std with statistics frozen from the training split."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        # built from numpy on the CPU as buffers, which move with the module (``.to(device)``)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))  # device: cpu on purpose — buffer
        std = np.where(std > 0, std, 1.0)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))  # device: cpu on purpose — buffer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


# --- shallow: one hidden layer ---------------------------------------------------------------


class ShallowNet(nn.Module):
    """A neural network in the textbook sense: one hidden layer. Returns logits (B,)."""

    def __init__(self, scaler: Standardize, hidden: int = 64) -> None:
        super().__init__()
        n_in = scaler.mean.numel()
        self.scaler = scaler
        self.body = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B,)
        return self.body(self.scaler(x)).squeeze(-1)


# --- deep: residual MLP ----------------------------------------------------------------------


class ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, 2 * width),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(2 * width, width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, W) -> (B, W)
        return x + self.net(x)


class DeepNet(nn.Module):
    """Deep learning on tabular rows: a stem, ``blocks`` pre-norm residual blocks, a head."""

    def __init__(self, scaler: Standardize, width: int = 128, blocks: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        self.scaler = scaler
        self.stem = nn.Linear(scaler.mean.numel(), width)
        self.blocks = nn.Sequential(*[ResidualBlock(width, dropout) for _ in range(blocks)])
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B,)
        return self.head(self.blocks(self.stem(self.scaler(x)))).squeeze(-1)


# --- autoencoder: unsupervised, scored by reconstruction error --------------------------------


class AutoEncoder(nn.Module):
    """Trained on negative (label 0) rows only; the score is the reconstruction error (B,)."""

    def __init__(self, scaler: Standardize, hidden: int = 32, latent: int = 8) -> None:
        super().__init__()
        n_in = scaler.mean.numel()
        self.scaler = scaler
        self.encoder = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, n_in))

    def reconstruction(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.scaler(x)  # (B, F)
        return z, self.decoder(self.encoder(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B,)
        z, recon = self.reconstruction(x)
        return ((recon - z) ** 2).mean(-1)


# --- ffn: the handbook's feed-forward network (chapter 7) --------------------------------------


class FeedForwardNet(nn.Module):
    """``layers`` hidden layers of ``hidden`` ReLU units with dropout, as the handbook's FFN."""

    def __init__(self, scaler: Standardize, hidden: int = 500, layers: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        self.scaler = scaler
        parts: list[nn.Module] = []
        width = scaler.mean.numel()
        for _ in range(layers):
            parts += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        self.body = nn.Sequential(*parts, nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B,)
        return self.body(self.scaler(x)).squeeze(-1)


# --- sequence: the entity's recent rows, recurrent + attention ----------------------------------


class SequenceNet(nn.Module):
    """A GRU (or LSTM) over the entity's previous rows, attended from the current one.

    Input rows are flat: the current row's ``F`` features, then ``length`` steps of
    ``F + 1`` values (``sequences.columns``: most recent first, ``HOURS_AGO`` last, all zeros
    for a missing step). Output: one logit per row (B,).
    """

    def __init__(self, scaler: Standardize, step_scaler: Standardize, length: int, hidden: int = 64,
                 cell: str = "gru", attention: bool = True, dropout: float = 0.1, blocks: int = 0) -> None:
        super().__init__()
        self.n_features, self.length = scaler.mean.numel(), length
        self.step_size = step_scaler.mean.numel()  # F + 1
        self.scaler, self.step_scaler = scaler, step_scaler
        # the current row: a stem and ``blocks`` residual blocks (the ``deep`` candidate's trunk)
        self.current = nn.Sequential(nn.Linear(self.n_features, hidden), nn.ReLU(),
                                     *[ResidualBlock(hidden, dropout) for _ in range(blocks)])
        self.step_in = nn.Linear(self.step_size + 1, hidden)  # + the "present" flag
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.rnn = rnn(hidden, hidden, batch_first=True)
        self.attention = attention
        self.query = nn.Linear(hidden, hidden, bias=False)
        self.head = nn.Sequential(nn.Linear((3 if attention else 2) * hidden, hidden), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(hidden, 1))

    def split_steps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flat rows -> current (B, F), steps oldest first (B, L, F + 1), present (B, L)."""
        b = x.shape[0]
        steps = x[:, self.n_features:].reshape(b, self.length, self.step_size).flip(1)
        present = steps[..., -1] > 0  # HOURS_AGO > 0 only for a real previous row
        hours = torch.log1p(steps[..., -1:].clamp(min=0))
        steps = torch.cat([steps[..., :-1], hours], dim=-1)
        return x[:, : self.n_features], steps, present

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F + L * (F + 1)) -> (B,)
        current, steps, present = self.split_steps(x)
        mask = present.unsqueeze(-1).float()  # (B, L, 1)
        steps = torch.cat([self.step_scaler(steps) * mask, mask], dim=-1)  # padding stays zero
        states, _ = self.rnn(self.step_in(steps))  # (B, L, H); padding comes first, oldest to newest
        q = self.current(self.scaler(current))  # (B, H)
        parts = [q, states[:, -1]]  # the state after the most recent row
        if self.attention:
            scores = (states @ self.query(q).unsqueeze(-1)).squeeze(-1) / states.shape[-1] ** 0.5  # (B, L)
            weights = torch.softmax(scores.masked_fill(~present, -1e9), dim=-1) * present  # none: all 0
            parts.append((weights.unsqueeze(-1) * states).sum(1))  # (B, H)
        return self.head(torch.cat(parts, dim=-1)).squeeze(-1)


def sequence_scalers(x: np.ndarray, n_features: int, length: int) -> tuple[Standardize, Standardize]:
    """Standardisation of the current features and of the present steps (log1p of HOURS_AGO),
    from flat training rows (R, F + L * (F + 1))."""
    current = x[:, :n_features]
    steps = x[:, n_features:].reshape(len(x), length, n_features + 1).reshape(-1, n_features + 1)
    steps = steps[steps[:, -1] > 0].astype(np.float64)
    if len(steps) == 0:  # no history at all: identity scaling
        steps = np.zeros((1, n_features + 1))
    steps[:, -1] = np.log1p(steps[:, -1])
    return (Standardize(current.mean(0), current.std(0)), Standardize(steps.mean(0), steps.std(0)))


# --- the Lightning system --------------------------------------------------------------------


class TabularSystem(L.LightningModule):
    """Loss, optimiser and ``val/auprc`` for any tabular network.

    ``objective="bce"`` trains a classifier on logits; ``"reconstruction"`` trains an
    autoencoder on negative (label 0) rows (the loader must hold only those) and still validates on AP.
    """

    def __init__(self, net: nn.Module, objective: str = "bce", lr: float = 1e-3,
                 weight_decay: float = 1e-4) -> None:
        super().__init__()
        self.net = net
        self.objective = objective
        self.lr, self.weight_decay = lr, weight_decay
        self.save_hyperparameters(ignore=["net"])
        self._val_scores: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.objective == "reconstruction":
            z, recon = self.net.reconstruction(x)
            return nn.functional.mse_loss(recon, z)
        return nn.functional.binary_cross_entropy_with_logits(self.net(x), y)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        loss = self.loss(*batch)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch  # to the CPU once per batch, as float32 (bf16 has no numpy twin)
        self._val_scores.append(self.net(x).detach().float().cpu())
        self._val_labels.append(y.cpu())

    def on_validation_epoch_end(self) -> None:
        scores = torch.cat(self._val_scores).numpy()
        labels = torch.cat(self._val_labels).numpy()
        self._val_scores.clear()
        self._val_labels.clear()
        auprc = average_precision_score(labels, scores) if labels.min() != labels.max() else 0.0
        self.log("val/auprc", float(auprc))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def build_net(name: str, scaler: Standardize, m, step_scaler: Standardize | None = None) -> tuple[nn.Module, str]:
    """Candidate name -> (network, objective). ``sequence`` also needs the step scaler."""
    if name == "sequence":
        if step_scaler is None:
            raise ValueError("the sequence network needs a step scaler (models.sequence_scalers)")
        return SequenceNet(scaler, step_scaler, m.seq_length, m.seq_hidden, m.seq_cell, m.seq_attention,
                           m.dropout, m.seq_blocks), "bce"
    if name == "ffn":
        return FeedForwardNet(scaler, m.ffn_hidden, m.ffn_layers, m.ffn_dropout), "bce"
    if name == "shallow":
        return ShallowNet(scaler, m.shallow_hidden), "bce"
    if name == "deep":
        return DeepNet(scaler, m.deep_width, m.deep_blocks, m.dropout), "bce"
    if name == "autoencoder":
        return AutoEncoder(scaler, m.ae_hidden, m.ae_latent), "reconstruction"
    raise KeyError(f"unknown tabular candidate {name!r} (known: shallow, deep, autoencoder, sequence, ffn)")
