"""Figures logged with every detection model: detections on test frames, PR curves, counts per frame."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from deepflow.kinds.detection.labels import decode
from deepflow.kinds.detection.metrics import Matched, ground_truth


def colours(classes: Sequence[str]) -> dict[str, tuple]:
    """One colour per class: tab10 up to ten classes, tab20 cycling beyond."""
    palette = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20").colors
    return {name: palette[k % len(palette)] for k, name in enumerate(classes)}


def detection_grid(frame: pd.DataFrame, dets: pd.DataFrame, threshold: float, title: str, classes: Sequence[str],
                   n: int = 12, cols: int = 4) -> Figure:
    """The first ``n`` frames: true boxes dashed white, detections >= threshold coloured by class."""
    colour = colours(classes)
    n = min(n, len(frame))
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    truth = ground_truth(frame.head(n))
    shown = dets[dets["score"] >= threshold]
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(decode(bytes(frame["image"].iloc[i])))
        for x1, y1, x2, y2 in truth[i][1]:
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec="white", ls="--", lw=0.8))
        mine = shown[shown["image"] == i]
        columns = (mine[c] for c in ("x1", "y1", "x2", "y2", "class", "score"))
        for x1, y1, x2, y2, name, score in zip(*columns, strict=True):
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=colour[name], lw=1.2))
            ax.text(x1, y1, f"{name[:4]} {score:.2f}", color=colour[name], fontsize=6, va="bottom")
    fig.suptitle(f"{title} (dashed: truth; score >= {threshold:.2f})")
    fig.tight_layout()
    return fig


def pr_curves(matched: Matched, title: str) -> Figure:
    """Precision-recall per class at IoU 0.5 (COCO's interpolated envelope)."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ap = matched.ap()[:, 0]
    colour = colours(matched.classes)
    for k, name in enumerate(matched.classes):
        if np.isnan(ap[k]):
            continue
        recall, precision, _ = matched.pr_curve(k)
        envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
        ax.plot(np.r_[0, recall], np.r_[1, envelope], color=colour[name], label=f"{name} AP50 {ap[k]:.3f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.legend(loc="lower left", fontsize=8 if len(matched.classes) <= 10 else 6)
    fig.tight_layout()
    return fig


def counts_per_frame(frame: pd.DataFrame, dets: pd.DataFrame, threshold: float, title: str,
                     classes: Sequence[str]) -> tuple[Figure, dict]:
    """Counts: mean objects per frame by class, true vs counted at ``threshold``.

    Returns the figure and per-class mean absolute count error per frame.
    """
    classes = list(classes)
    truth = Matched(frame, dets.head(0), classes).gt_counts  # (N, K)
    kept = dets[dets["score"] >= threshold]
    counted = np.zeros_like(truth)
    idx = kept["class"].map({n: k for k, n in enumerate(classes)}).to_numpy(dtype=np.int64)
    np.add.at(counted, (kept["image"].to_numpy(dtype=np.int64), idx), 1)
    mae = {name: float(np.abs(counted[:, k] - truth[:, k]).mean()) for k, name in enumerate(classes)}
    fig, ax = plt.subplots(figsize=(min(max(6, 0.6 * len(classes)), 24), 3.8))
    x = np.arange(len(classes))
    ax.bar(x - 0.2, truth.mean(0), 0.4, label="true", color="grey")
    ax.bar(x + 0.2, counted.mean(0), 0.4, label=f"counted (score >= {threshold:.2f})",
           color=list(colours(classes).values()))
    for k, name in enumerate(classes):
        ax.text(k, max(truth[:, k].mean(), counted[:, k].mean()), f"MAE {mae[name]:.2f}", ha="center",
                va="bottom", fontsize=7)
    ax.set(xticks=x, ylabel="objects per frame (mean)", title=title)
    ax.set_xticklabels(classes, rotation=0 if len(classes) <= 8 else 60, ha="center" if len(classes) <= 8 else "right")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, mae


def confidence_report(member: str, found: pd.DataFrame, tp50: np.ndarray, threshold: float,
                      classes: list[str]) -> dict[str, str]:
    """Per class, over the test detections at or above ``threshold``: how many, the share that matched
    a true box (IoU >= 0.5), the median score of right and of wrong ones, the mean objectness, and how
    often the runner-up class scored at least half the winner (the class was a close call)."""
    keep = found["score"].to_numpy() >= threshold
    rows, said = [], []
    for c in classes:
        mask = keep & (found["class"].to_numpy() == c)
        n = int(mask.sum())
        if not n:
            rows.append(f"| {c} | 0 | – | – | – | – | – |")
            continue
        right = tp50[mask]
        score = found["score"].to_numpy()[mask]
        close = [sorted(d.values())[-2] >= 0.5 * max(d.values()) if len(d) > 1 else False
                 for d in found["class_scores"][mask]]
        med = lambda a: f"{np.median(a):.3f}" if len(a) else "–"  # noqa: E731
        rows.append(f"| {c} | {n} | {right.mean():.0%} | {med(score[right])} | {med(score[~right])} | "
                    f"{found['objectness'].to_numpy()[mask].mean():.3f} | {np.mean(close):.0%} |")
        said.append((c, float(right.mean()), n))
    best = sorted(said, key=lambda t: -t[1])
    sentence = (f"`{member}`'s boxes are its explanation: of its test detections at score >= {threshold:g}, "
                + ", ".join(f"{c} {share:.0%} right ({n})" for c, share, n in best) + " (IoU >= 0.5)."
                if best else f"`{member}` made no test detection at score >= {threshold:g}.")
    lines = ["## What the model relies on", "", sentence, "",
             "A detector's answer is its boxes; `?explain=true` adds to each box its objectness and its score under "
             "every class (docs/explain.md). Over the test detections at or above the threshold, per class: the "
             "share that matched a true box, the median score of right and wrong ones (confidence that separates "
             "them is useful), the mean objectness, and how often the runner-up class scored at least half the "
             "winner's score.", "",
             "| class | detections | right | median score, right | median score, wrong | mean objectness | "
             "close call |", "|---|---|---|---|---|---|---|", *rows, ""]
    from deepflow.importance import RELIES_ON

    return {"card/importance.md": "\n".join(lines), RELIES_ON: sentence}
