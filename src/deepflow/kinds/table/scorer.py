"""The ``table`` kind's scorer: raw rows in, the task's answer out, for every member of the ladder.

:class:`TableScorer` is what MLflow stores (pickled inside the pyfunc) and what serving, batch
scoring and drift load back. It carries the fitted :class:`~deepflow.kinds.table.features.Preprocessor`,
so training and serving cannot disagree on imputation, scaling, encodings or date parts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from deepflow.kinds.table.features import Preprocessor

FAMILIES = ("net", "linear", "hgb")  # how a member's model reads the preprocessed arrays
FEW_ROWS = 64  # up to this many rows: networks on one thread (waking a pool costs more), trees packed


class TableScorer:
    """A fitted member of the ladder behind one call.

    Attributes (the contract serving, batch and drift rely on):

    * ``task``: ``"binary"`` | ``"multiclass"`` | ``"regression"``
    * ``classes``: class names (binary: ``[negative, positive]``; regression: ``[]``)
    * ``features``: the raw input columns, in source order
    * ``columns``: ``{feature: {"role", "categories" (categorical: the known ones), "unknown",
      "format" (datetime: the strftime format of the source's text, "" = ISO 8601)}}``
    * ``member``: the ladder member (``linear``, ``hgb``, ``shallow``, ``deep``)
    * ``preprocessor``, ``model``, ``family`` (``net``, ``linear`` or ``hgb``), ``target_scale``
      (regression networks: the training target's mean and standard deviation), ``packed``
      (``hgb``: the trees as flat arrays for batches of up to FEW_ROWS rows, see trees.py)

    :meth:`predict` answers binary (N,) P(classes[1]), multiclass (N, C) probabilities in
    ``classes`` order, regression (N,) values in the target's units.
    """

    def __init__(self, preprocessor: Preprocessor, model: Any, *, member: str, family: str, task: str,
                 classes: list[str], target_scale: tuple[float, float] | None = None) -> None:
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
        self.preprocessor, self.model, self.member, self.family = preprocessor, model, member, family
        self.task, self.classes, self.target_scale = task, list(classes), target_scale
        if family == "net":
            self.model.eval()
        self.packed = None
        if family == "hgb":
            from deepflow.kinds.table.trees import PackedTrees

            try:
                self.packed = PackedTrees(model)
            except (AttributeError, KeyError, IndexError, ValueError):  # another scikit-learn's layout
                self.packed = None  # its own predict then, for every batch

    @property
    def features(self) -> list[str]:
        return list(self.preprocessor.features)

    @property
    def columns(self) -> dict[str, dict[str, Any]]:
        return self.preprocessor.describe()

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """The task's answer for the raw rows of ``frame`` (see the class docstring)."""
        return self.predict_encoded(*self.encode(frame))

    def encode(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The preprocessed (numeric, codes) this member reads (trees: without clipping)."""
        return self.preprocessor.transform(frame, clip=self.family != "hgb")

    def predict_encoded(self, numeric: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """The same answer from already preprocessed arrays (the linear member's search of strengths reuses them)."""
        if len(numeric) == 0:
            return np.zeros((0, len(self.classes)) if self.task == "multiclass" else 0)
        if self.family == "net":
            import torch

            from deepflow.kinds.table.models import outputs

            threads = torch.get_num_threads()
            if len(numeric) <= FEW_ROWS:
                torch.set_num_threads(1)
            try:
                with torch.inference_mode():
                    raw = self.model(torch.from_numpy(np.ascontiguousarray(numeric)), torch.from_numpy(codes))
            finally:
                torch.set_num_threads(threads)
            return outputs(self.task, raw, self.target_scale)
        x = (self.preprocessor.onehot(numeric, codes) if self.family == "linear"
             else np.concatenate([numeric, codes.astype(np.float32)], axis=1))
        small = self.packed is not None and len(x) <= FEW_ROWS
        if self.task == "regression":
            return np.asarray(self.packed.predict(x, self.task) if small else self.model.predict(x), dtype=np.float64)
        proba = np.zeros((len(numeric), len(self.classes)))
        known = self.packed.predict(x, self.task) if small else self.model.predict_proba(x)
        proba[:, self.model.classes_] = known  # a class absent from train stays 0
        return proba[:, 1] if self.task == "binary" else proba

    def __repr__(self) -> str:
        return f"TableScorer({self.member}, {self.task}, {len(self.features)} features)"
