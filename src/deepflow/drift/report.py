"""What a drift check reports: thresholds (``DriftConfig``), one ``Signal`` per measured quantity,
and the ``DriftReport`` that gathers them (markdown, JSON-able dict, figures).

The batch has drifted when at least ``min_drifted_share`` of its signals have (``summarise``).
``numeric_signal`` is the PSI/KS signal every kind uses for a numeric quantity.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from deepflow.drift.statistics import ks, psi_test


@dataclass
class DriftConfig:
    """Thresholds and sample sizes; ``docs/monitoring.md`` says why each default is what it is."""

    # every kind
    min_drifted_share: float = 0.25  # the batch drifts when at least this share of signals do
    psi_bins: int = 10
    psi_threshold: float = 0.2  # the industry's "significant shift" line
    pvalue: float = 0.01  # significance level of every test (KS, chi-square, permutation)
    ks_min_statistic: float = 0.1  # KS flags only gaps >= this: big samples make tiny gaps significant
    max_reference: int = 50_000  # reference rows used (deterministic subsample)
    max_current: int = 100_000  # current rows used
    seed: int = 0
    # text
    max_texts: int = 2_000  # texts per side for length and vocabulary statistics
    embedding_sample: int = 300  # texts per side embedded with MiniLM; 0 skips the embedding signal
    scored_texts: int = 300  # texts per side scored by the champion (predicted label shares)
    embedding_shift: float = 0.15  # mean-embedding distance in units of the reference's spread
    permutations: int = 200  # permutation test of the embedding shift
    null_draws: int = 5  # held-out reference batches that measure the vocabulary statistics' noise
    oov_margin: float = 0.05  # OOV rate above the reference's own held-out OOV rate
    js_margin: float = 0.05  # token JS divergence above the reference's own held-out JS
    label_share_shift: float = 0.1  # total variation of predicted label shares
    # detection
    max_frames: int = 500  # frames per side for the per-frame image statistics
    scored_frames: int = 150  # reference frames run through the champion detector
    detection_threshold: float = 0.25  # detections counted at or above this score (unless given)
    class_share_shift: float = 0.1  # total variation of detected class shares

    def __post_init__(self) -> None:
        if not 0 < self.min_drifted_share <= 1:
            raise ValueError(f"min_drifted_share must be in (0, 1], got {self.min_drifted_share}")
        if self.psi_bins < 2:
            raise ValueError(f"psi_bins must be >= 2, got {self.psi_bins}")


@dataclass
class Signal:
    name: str  # what was measured: a feature, "prediction", "oov_rate", "brightness", ...
    statistic: str  # how: "psi", "oov", "js", "embedding", "tvd", ...
    value: float
    threshold: float
    drifted: bool
    detail: str = ""

    @property
    def severity(self) -> float:
        """``value / threshold``: above 1 is past the line (ranks signals of different scales)."""
        if not math.isfinite(self.value):
            return math.inf
        return self.value / self.threshold if self.threshold > 0 else (math.inf if self.value > 0 else 0.0)


@dataclass
class DriftReport:
    use_case: str
    kind: str
    n_reference: int
    n_current: int
    signals: list[Signal]
    drifted: bool
    score: float  # share of signals that drifted, in [0, 1]
    notes: list[str] = field(default_factory=list)
    min_drifted_share: float = 0.25
    # (reference, current) values behind numeric signals, for figures; not serialised
    samples: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False, compare=False)

    def ranked(self) -> list[Signal]:
        """Drifted first, then by severity."""
        return sorted(self.signals, key=lambda s: (not s.drifted, -s.severity, s.name))

    def to_dict(self) -> dict[str, Any]:
        return {"use_case": self.use_case, "kind": self.kind, "n_reference": self.n_reference,
                "n_current": self.n_current, "drifted": self.drifted, "score": self.score,
                "min_drifted_share": self.min_drifted_share, "notes": list(self.notes),
                "signals": [asdict(s) | {"severity": _finite(s.severity)} for s in self.ranked()]}

    def verdict(self) -> str:
        n = sum(s.drifted for s in self.signals)
        word = "DRIFT" if self.drifted else "no drift"
        return (f"{word}: {n} of {len(self.signals)} signals drifted ({self.score:.0%}; the batch drifts "
                f"at {self.min_drifted_share:.0%})")

    def markdown(self) -> str:
        lines = [f"**Verdict: {self.verdict()}**", "",
                 f"{self.use_case or self.kind} ({self.kind}): {self.n_current:,} current vs "
                 f"{self.n_reference:,} reference rows.", "",
                 "| | signal | statistic | value | threshold | detail |", "|---|---|---|---:|---:|---|"]
        for s in self.ranked():
            detail = s.detail.replace("|", "\\|")
            lines.append(f"| {'**drifted**' if s.drifted else 'ok'} | {s.name} | {s.statistic} | "
                         f"{_fmt(s.value)} | {_fmt(s.threshold)} | {detail} |")
        if self.notes:
            lines += ["", "Notes:", "", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"

    def figures(self, top: int = 6) -> dict[str, Any]:
        """``drift/signals.png`` (severity per signal) and ``drift/distributions.png`` (reference vs
        current histograms of the ``top`` most severe signals that have samples)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figs: dict[str, Any] = {}
        ranked = self.ranked()
        if ranked:
            fig, ax = plt.subplots(figsize=(6, 0.3 * len(ranked) + 1.2))
            sev = [min(s.severity, 10.0) for s in ranked][::-1]
            ax.barh([s.name for s in ranked][::-1], sev,
                    color=["tab:red" if s.drifted else "tab:grey" for s in ranked][::-1])
            ax.axvline(1.0, color="black", lw=1, ls="--")
            ax.set(xlabel="value / threshold (capped at 10)", title=f"{self.use_case or self.kind}: {self.verdict()}")
            ax.title.set_fontsize(9)
            fig.tight_layout()
            figs["drift/signals.png"] = fig
        shown = [s for s in ranked if s.name in self.samples][:top]
        if shown:
            cols = min(3, len(shown))
            rows = math.ceil(len(shown) / cols)
            fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
            for ax in axes.ravel()[len(shown):]:
                ax.axis("off")
            for ax, s in zip(axes.ravel(), shown, strict=False):
                ref, cur = (a[np.isfinite(a)] for a in self.samples[s.name])
                both = np.concatenate([ref, cur])
                lo, hi = np.quantile(both, [0.005, 0.995]) if len(both) else (0.0, 1.0)
                edges = np.linspace(lo, hi if hi > lo else lo + 1, 31)
                ax.hist(np.clip(ref, lo, hi), bins=edges, density=True, alpha=0.5, label="reference")
                ax.hist(np.clip(cur, lo, hi), bins=edges, density=True, alpha=0.5, label="current")
                ax.set_title(f"{s.name}: {s.statistic} {_fmt(s.value)}", fontsize=8)
                ax.tick_params(labelsize=7)
            axes.ravel()[0].legend(fontsize=7)
            fig.tight_layout()
            figs["drift/distributions.png"] = fig
        return figs


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:,.0f}"


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def numeric_signal(name: str, reference: np.ndarray, current: np.ndarray, cfg: DriftConfig) -> Signal:
    """PSI over the reference's bins, or KS: drifted when PSI reaches ``psi_threshold`` and is
    beyond sampling noise (``psi_test`` p-value below ``pvalue``), or when KS is significant with a
    gap of at least ``ks_min_statistic`` (KS sees a shift inside a wide bin that PSI averages away)."""
    value, p_psi = psi_test(reference, current, cfg.psi_bins)
    test = ks(reference, current)
    by_psi = bool(value >= cfg.psi_threshold and p_psi < cfg.pvalue)
    by_ks = bool(test.pvalue < cfg.pvalue and test.statistic >= cfg.ks_min_statistic)
    detail = f"PSI p={p_psi:.1e}; KS D={test.statistic:.3f} (p={test.pvalue:.1e})"
    miss_r, miss_c = (float(np.mean(~np.isfinite(np.asarray(a, dtype=np.float64)))) for a in (reference, current))
    if miss_r or miss_c:
        detail += f"; missing {miss_r:.1%} -> {miss_c:.1%}"
    if not np.isfinite(np.asarray(current, dtype=np.float64)).any():
        by_ks, detail = True, f"no finite values in the current batch; {detail}"
    return Signal(name, "psi", value, cfg.psi_threshold, by_psi or by_ks, detail)


def summarise(use_case: str, kind: str, n_reference: int, n_current: int, signals: list[Signal],
              cfg: DriftConfig, notes: list[str] | None = None,
              samples: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> DriftReport:
    """The report of a list of signals: the score is the share that drifted."""
    n = sum(s.drifted for s in signals)
    score = n / len(signals) if signals else 0.0
    return DriftReport(use_case, kind, n_reference, n_current, signals, bool(n and score >= cfg.min_drifted_share),
                       score, list(notes or []), cfg.min_drifted_share, dict(samples or {}))
