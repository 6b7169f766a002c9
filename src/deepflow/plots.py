"""Figures logged with every model run (matplotlib, Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix, precision_recall_curve


def pr_curve(y: np.ndarray, scores: np.ndarray, title: str) -> Figure:
    precision, recall, _ = precision_recall_curve(y, scores)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.step(recall, precision, where="post")
    ax.axhline(float(np.mean(y)), ls="--", c="grey", label=f"prevalence {np.mean(y):.4f}")
    ax.set(xlabel="recall", ylabel="precision", title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def confusion(y: np.ndarray, predicted: np.ndarray, labels: list[str], title: str) -> Figure:
    cm = confusion_matrix(y, predicted, labels=list(range(len(labels))))
    fig, ax = plt.subplots(figsize=(4, 3.5))
    ax.imshow(cm, cmap="Blues")
    for (i, j), n in np.ndenumerate(cm):
        ax.text(j, i, f"{n:,}", ha="center", va="center",
                color="white" if n > cm.max() / 2 else "black")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels,
           yticklabels=labels, xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return fig


def best_f1_threshold(y: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, thresholds = precision_recall_curve(y, scores)
    f1 = 2 * precision[:-1] * recall[:-1] / np.clip(precision[:-1] + recall[:-1], 1e-12, None)
    return float(thresholds[int(np.argmax(f1))]) if len(thresholds) else 0.5


def importance(ranking, permutation, metric: str, unit: str, title: str, top: int = 20) -> Figure:
    """Global importance side by side: mean |contribution| (a pandas Series, largest first) and, when
    given, the permutation drop of ``metric`` (a frame with feature, importance, std)."""
    shown = list(ranking.head(top).index)[::-1]
    panels = 2 if permutation is not None and len(permutation) else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 0.3 * len(shown) + 1.4), squeeze=False)
    left = axes[0][0]
    left.barh(shown, [float(ranking[f]) for f in shown], color="tab:blue")
    left.set(xlabel=f"mean |contribution| to the {unit}", title="Shapley values (test rows)")
    if panels == 2:
        right = axes[0][1]
        table = permutation.set_index("feature")
        right.barh(shown, [float(table.loc[f, "importance"]) for f in shown],
                   xerr=[float(table.loc[f, "std"]) for f in shown], color="tab:orange")
        right.axvline(0, color="grey", lw=0.8)
        right.set(xlabel=f"drop of {metric} when shuffled", title="permutation importance")
        right.set_yticklabels([])
    fig.suptitle(title)
    fig.tight_layout()
    return fig
