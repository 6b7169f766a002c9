"""Scorers: fitted models behind one call, ``predict(frame) -> scores``.

A scorer is what MLflow stores (wrapped as a pyfunc) and what serving loads back; it carries its
own preprocessing, so training and serving cannot disagree on it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


class TorchScorer:
    """A plain ``nn.Module`` (B, F) -> (B,) in eval mode; ``sigmoid`` for logit outputs."""

    def __init__(self, net, features: list[str], output: str = "logit") -> None:
        self.net = net.eval()
        self.features = list(features)
        self.output = output  # "logit" -> probability, "score" -> as is (e.g. reconstruction error)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        import torch

        x = torch.from_numpy(frame[self.features].to_numpy(dtype=np.float32, copy=True))
        with torch.inference_mode():
            out = self.net(x)
            if self.output == "logit":
                out = torch.sigmoid(out)
        return out.numpy().astype(np.float64)


class SklearnScorer:
    """Any estimator with ``predict_proba`` (sklearn pipelines, XGBoost)."""

    def __init__(self, model, features: list[str]) -> None:
        self.model = model
        self.features = list(features)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(frame[self.features])[:, 1].astype(np.float64)
