"""A few rows through all of a HistGradientBoosting model's trees at once (numpy, no per-tree call).

scikit-learn predicts tree by tree: one compiled call (and one OpenMP region) per tree, so a
single row through 500 iterations costs milliseconds of call overhead. :class:`PackedTrees`
lays every tree's nodes end to end and walks all trees together, one vectorised step per depth
level, with scikit-learn's exact routing rules (``_predictor.pyx``): a missing value follows
``missing_go_to_left``; a categorical value goes left when its bit is set in the split's bitset,
right when it is a known category, and is otherwise (unknown or negative) treated as missing;
categorical columns are first ordinal-encoded as scikit-learn's own preprocessor does.
The scorer uses it for small batches only (memory is rows x trees) and scikit-learn otherwise;
both give the same raw scores up to float summation order.
"""

from __future__ import annotations

import numpy as np


def _bits(rows: list[np.ndarray]) -> np.ndarray:
    """Bitset rows (k, 8) uint32 stacked; one all-zero row when there are none."""
    stacked = np.concatenate([r.reshape(-1, 8) for r in rows]) if rows else np.zeros((0, 8), np.uint32)
    return stacked if len(stacked) else np.zeros((1, 8), np.uint32)


class PackedTrees:
    """Every tree of a fitted ``HistGradientBoosting*`` (default loss) as flat node arrays."""

    def __init__(self, model) -> None:
        predictors = model._predictors  # [iteration][tree of the iteration]
        self.k = len(predictors[0])
        nodes, roots, klass, bitsets = [], [], [], []
        base = bit_base = 0
        for iteration in predictors:
            for k, tree in enumerate(iteration):
                n = tree.nodes
                cat = n["is_categorical"].astype(bool)
                nodes.append((n, base, np.where(cat, n["bitset_idx"].astype(np.intp) + bit_base, 0)))
                roots.append(base)
                klass.append(k)
                bitsets.append(tree.raw_left_cat_bitsets)
                base += len(n)
                bit_base += len(tree.raw_left_cat_bitsets)
        flat = np.concatenate([n for n, _, _ in nodes])  # a fitted model has at least one iteration
        offset = np.concatenate([np.full(len(n), b, np.intp) for n, b, _ in nodes])
        self.bitset = np.concatenate([idx for _, _, idx in nodes])
        self.leaf, self.value = flat["is_leaf"].astype(bool), flat["value"].astype(np.float64)
        self.feature, self.threshold = flat["feature_idx"].astype(np.intp), flat["num_threshold"]
        self.missing_left = flat["missing_go_to_left"].astype(bool)
        self.categorical = flat["is_categorical"].astype(bool)
        self.left = flat["left"].astype(np.intp) + offset
        self.right = flat["right"].astype(np.intp) + offset
        self.depth = int(flat["depth"].max())
        self.roots, self.klass = np.asarray(roots, np.intp), np.asarray(klass, np.intp)
        self.left_bits = _bits(bitsets)
        known, f_idx = model._bin_mapper.make_known_categories_bitsets()
        self.known_bits, self.known_row = _bits([known]), np.asarray(f_idx, np.intp)
        self.baseline = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(1, -1)
        # With categorical features scikit-learn ordinal-encodes them (unknown -> missing) and puts
        # them first: the trees index that layout.
        pre = model._preprocessor
        if pre is None:
            self.order, self.categories = None, []
        else:
            cat = np.asarray(model.is_categorical_, bool)
            self.order = np.r_[np.flatnonzero(cat), np.flatnonzero(~cat)]
            self.categories = [np.asarray(c, np.float64) for c in pre.named_transformers_["encoder"].categories_]

    def layout(self, x: np.ndarray) -> np.ndarray:
        """The model's input columns as its trees read them (see ``__init__``)."""
        x = np.asarray(x, dtype=np.float64)
        if self.order is None:
            return x
        x = x[:, self.order]
        for j, known in enumerate(self.categories):
            if not len(known):
                x[:, j] = np.nan
                continue
            at = np.searchsorted(known, x[:, j]).clip(0, len(known) - 1)
            x[:, j] = np.where(known[at] == x[:, j], at, np.nan)  # unknown (and NaN) -> missing
        return x

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Raw scores (N, trees per iteration): the baseline plus every tree's leaf value."""
        x = self.layout(x)
        node = np.broadcast_to(self.roots, (len(x), len(self.roots))).copy()
        rows = np.arange(len(x))[:, None]
        for _ in range(self.depth):
            leaf = self.leaf[node]
            if leaf.all():
                break
            feature = self.feature[node]
            value = x[rows, feature]
            missing = np.isnan(value)
            left = value <= self.threshold[node]
            cat = self.categorical[node]
            if cat.any():
                code = np.clip(np.nan_to_num(value, nan=0.0), 0, 255).astype(np.intp)
                word, bit = code >> 5, (code & 31).astype(np.uint32)
                in_left = (self.left_bits[self.bitset[node], word] >> bit) & 1
                known = (self.known_bits[self.known_row[feature], word] >> bit) & 1
                unknown = (value < 0) | ((in_left == 0) & (known == 0))
                left = np.where(cat, np.where(unknown, self.missing_left[node], in_left == 1), left)
            left = np.where(missing, self.missing_left[node], left)
            node = np.where(leaf, node, np.where(left, self.left[node], self.right[node]))
        values = self.value[node]
        sums = np.stack([values[:, self.klass == k].sum(1) for k in range(self.k)], axis=1)
        return self.baseline + sums

    def predict(self, x: np.ndarray, task: str) -> np.ndarray:
        """As the model's ``predict`` (regression) or ``predict_proba`` (classification) would."""
        raw = self.raw(x)
        if task == "regression":
            return raw[:, 0]
        if raw.shape[1] == 1:  # binary: one tree per iteration, the positive class's log-odds
            p = 1 / (1 + np.exp(-raw[:, 0]))
            return np.stack([1 - p, p], axis=1)
        e = np.exp(raw - raw.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
