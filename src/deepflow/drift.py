"""Drift: how far an incoming batch has moved from the data the champion was trained on.

Pure functions over frames; no Prefect, no MLflow (``deepflow.monitoring`` logs the report,
``flows/monitor.py`` decides about retraining). Imports stay light: scipy, the sentence encoder
and the detector are imported only by the detector of the kind that needs them.

* statistics: ``psi`` (population stability index over the reference's quantile bins), ``ks``
  (two-sample Kolmogorov-Smirnov), ``jensen_shannon`` (token or class distributions);
* ``DriftConfig``: every threshold, with the reason for its default in ``docs/monitoring.md``;
* ``detect(kind, reference, current, cfg, scorer=...)``: one ``Signal`` per measured quantity,
  gathered in a ``DriftReport``; the batch has drifted when at least ``min_drifted_share`` of the
  signals have. ``tabular`` is measured here; ``text`` in ``usecases/nlp/drift.py``; ``image`` in
  ``usecases/traffic/drift.py``;
* ``reference_frame(use_case)``: the champion's reference data (its prepared train split);
  ``load_batch(kind, path)``: an incoming batch file (or folder of images);
* ``make_batch(use_case, out_dir, rows=, drift=, seed=)``: a batch from the use case's own data
  generator, as drifted as asked (0: same distribution as the reference, 1: clearly shifted).

``python -m deepflow.drift make-batch nlp data/incoming/nlp --rows 300 --drift 1 --seed 1``
``python -m deepflow.drift report nlp data/incoming/nlp/<batch>.parquet [--champion]``
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

KINDS = ("tabular", "text", "image")
EPS = 1e-4  # floor on a bin's share in PSI: an empty bin costs a large but finite amount
TEXT, IMAGE, FILE = "text", "image", "file"  # the column names batch scoring uses


class DriftInputError(ValueError):
    """A batch (or reference) that cannot be measured: the message names the file and column."""


# --- statistics ------------------------------------------------------------------------------


def bin_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Inner edges of right-closed bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``.

    Up to ``bins`` distinct reference values: one bin per value (so binary and count columns get
    a bin each, not empty quantile bins); more: the reference's deciles (for ``bins=10``), with
    repeated quantiles merged, so a point mass (many zeros) is one bin rather than several empty
    ones. A constant reference gives one edge: the value itself.
    """
    ref = np.asarray(reference, dtype=np.float64)
    ref = ref[np.isfinite(ref)]
    if not len(ref):
        return np.zeros(0)
    values = np.unique(ref)
    if len(values) <= bins:
        return values[:-1] if len(values) > 1 else values
    return np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))


def bin_shares(values: np.ndarray, edges: np.ndarray, missing_bin: bool) -> np.ndarray:
    """Share of ``values`` per bin (``bin_edges``); non-finite values go to a last, missing bin."""
    x = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(x)
    counts = np.bincount(np.searchsorted(edges, x[finite], side="left"), minlength=len(edges) + 1)
    if missing_bin:
        counts = np.append(counts, (~finite).sum())
    return counts / max(len(x), 1)


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index ``sum((c - r) * ln(c / r))`` over the reference's bins.

    Shares below ``EPS`` are raised to ``EPS`` (an empty bin adds a large, finite term). Missing
    or infinite values form a bin of their own when either side has any, so a column that starts
    arriving empty drifts like any other. Identical samples give 0; the usual reading is < 0.1
    stable, 0.1-0.2 moderate, > 0.2 a significant shift.
    """
    return psi_test(reference, current, bins)[0]


def psi_test(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> tuple[float, float]:
    """(PSI, p-value of "no shift"). Between two samples of one distribution PSI is not 0 but
    about ``(1/n_r + 1/n_c) * chi2(B - 1)`` for B bins (Yurdakul, *Statistical properties of the
    population stability index*, 2018): 100 frames against 500 already average ~0.1 with ten
    bins. The p-value is Pearson's chi-square test of homogeneity on the same bin counts, the
    statistic PSI approximates, which stays sane where a small batch leaves a bin empty (there the
    ``EPS`` floor makes PSI itself jumpy)."""
    ref, cur = np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64)
    if not len(ref) or not len(cur):
        raise ValueError("psi needs at least one reference and one current value")
    edges = bin_edges(ref, bins)
    missing = bool((~np.isfinite(ref)).any() or (~np.isfinite(cur)).any())
    r_raw, c_raw = bin_shares(ref, edges, missing), bin_shares(cur, edges, missing)
    r, c = np.maximum(r_raw, EPS), np.maximum(c_raw, EPS)
    value = float(np.sum((c - r) * np.log(c / r)))
    return value, chi2_pvalue(r_raw * len(ref), c_raw * len(cur))


@dataclass(frozen=True)
class KS:
    statistic: float  # largest gap between the two empirical CDFs, in [0, 1]
    pvalue: float


def ks(reference: np.ndarray, current: np.ndarray) -> KS:
    """Two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``) on the finite values."""
    from scipy import stats

    ref, cur = (np.asarray(a, dtype=np.float64) for a in (reference, current))
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if not len(ref) or not len(cur):
        return KS(float("nan"), float("nan"))
    result = stats.ks_2samp(ref, cur)
    return KS(float(result.statistic), float(result.pvalue))


def jensen_shannon(p: Any, q: Any) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of two count or share vectors, aligned arrays
    or mappings ``key -> count`` (keys missing on one side count 0)."""
    if isinstance(p, dict) or isinstance(q, dict):
        keys = sorted(set(p) | set(q), key=str)
        p, q = [p.get(k, 0) for k in keys], [q.get(k, 0) for k in keys]
    a, b = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if a.sum() <= 0 or b.sum() <= 0:
        raise ValueError("jensen_shannon needs two non-empty distributions")
    a, b = a / a.sum(), b / b.sum()
    m = (a + b) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return max(0.0, 0.5 * kl(a) + 0.5 * kl(b))


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Half the L1 distance of two share vectors: the largest share any set of classes gains."""
    a, b = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    return float(0.5 * np.abs(a / a.sum() - b / b.sum()).sum())


def chi2_pvalue(counts_a: np.ndarray, counts_b: np.ndarray) -> float:
    """Chi-square test of homogeneity of two count vectors over the same categories."""
    from scipy import stats

    table = np.vstack([counts_a, counts_b]).astype(np.float64)
    table = table[:, table.sum(0) > 0]
    if table.shape[1] < 2 or (table.sum(1) == 0).any():
        return 1.0
    return float(stats.chi2_contingency(table)[1])


# --- config, signals, report -----------------------------------------------------------------


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
    # image
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


def subsample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` rows, chosen by a seeded permutation and kept in their original order."""
    if len(frame) <= n:
        return frame
    keep = np.sort(np.random.default_rng(seed).choice(len(frame), size=n, replace=False))
    return frame.iloc[keep]


def source_of(frame: pd.DataFrame, default: str) -> str:
    return str(frame.attrs.get("source", default))


def require_columns(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    if missing := [c for c in columns if c not in frame.columns]:
        shown = ", ".join(missing[:8]) + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
        raise DriftInputError(f"{source_of(frame, what)}: missing column(s) {shown}")


# --- detection -------------------------------------------------------------------------------


def detect(kind: str, reference: pd.DataFrame, current: pd.DataFrame, cfg: DriftConfig | None = None,
           scorer: Any = None, *, use_case: str | None = None, features: list[str] | None = None,
           threshold: float | None = None) -> DriftReport:
    """Measure ``current`` against ``reference`` for a scorer ``kind`` (``batch.Model.kind``).

    ``scorer`` (the champion) adds prediction drift: its outputs on both samples compared.
    ``features``: tabular columns (default: the scorer's ``features``). ``threshold``: image
    detections counted at or above it (default ``cfg.detection_threshold``).
    """
    cfg = cfg or DriftConfig()
    use_case = use_case or str(reference.attrs.get("use_case", ""))
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    if current.empty:
        raise DriftInputError(f"{source_of(current, 'current batch')}: no rows to measure")
    if reference.empty:
        raise DriftInputError(f"{source_of(reference, 'reference')}: no reference rows")
    if kind == "tabular":
        return detect_tabular(reference, current, cfg, scorer, use_case=use_case, features=features)
    if kind == "text":
        from deepflow.kinds.text.drift import detect_text

        return detect_text(reference, current, cfg, scorer, use_case=use_case)
    from deepflow.kinds.detection.drift import detect_image

    return detect_image(reference, current, cfg, scorer, use_case=use_case, threshold=threshold)


def detect_tabular(reference: pd.DataFrame, current: pd.DataFrame, cfg: DriftConfig, scorer: Any = None, *,
                   use_case: str = "", features: list[str] | None = None) -> DriftReport:
    """One PSI/KS signal per feature, plus ``prediction`` (the scorer's scores) when a scorer is given."""
    features = list(features or getattr(scorer, "features", []) or [])
    if not features:
        raise ValueError("tabular drift needs the feature columns (features=... or a scorer with .features)")
    require_columns(reference, features, "reference")
    require_columns(current, features, "current batch")
    ref = subsample(reference, cfg.max_reference, cfg.seed)
    cur = subsample(current, cfg.max_current, cfg.seed + 1)
    notes = []
    if len(cur) < len(current):
        notes.append(f"current batch subsampled to {len(cur):,} of {len(current):,} rows")
    ref_x, cur_x = _numeric(ref, features, "reference"), _numeric(cur, features, "current batch")
    signals, samples = [], {}
    for col in features:
        signals.append(numeric_signal(col, ref_x[col].to_numpy(), cur_x[col].to_numpy(), cfg))
        samples[col] = (ref_x[col].to_numpy()[:5000], cur_x[col].to_numpy()[:5000])
    if scorer is not None:
        _prediction_signal(scorer, ref, cur, features, cfg, signals, samples, notes)
    return summarise(use_case, "tabular", len(ref), len(cur), signals, cfg, notes, samples)


def _prediction_signal(scorer: Any, ref: pd.DataFrame, cur: pd.DataFrame, features: list[str], cfg: DriftConfig,
                       signals: list[Signal], samples: dict, notes: list[str]) -> None:
    """The scorer's scores on both samples (rows with every model input numeric) as a numeric signal."""
    inputs = list(getattr(scorer, "features", None) or features)  # the model's own columns
    if missing := [c for c in inputs if c not in ref.columns or c not in cur.columns]:
        notes.append(f"prediction drift not measured: the model needs column(s) {', '.join(missing[:5])}")
        return
    ref_x, cur_x = _numeric(ref, inputs, "reference"), _numeric(cur, inputs, "current batch")
    ok_r, ok_c = np.isfinite(ref_x.to_numpy()).all(1), np.isfinite(cur_x.to_numpy()).all(1)
    if (~ok_c).any():
        notes.append(f"{(~ok_c).sum():,} current rows with a missing or non-numeric model input were not scored")
    if not ok_c.any() or not ok_r.any():
        return
    s_ref = np.asarray(scorer.predict(ref_x[ok_r]), dtype=np.float64).reshape(-1)
    s_cur = np.asarray(scorer.predict(cur_x[ok_c]), dtype=np.float64).reshape(-1)
    signals.append(numeric_signal("prediction", s_ref, s_cur, cfg))
    signals[-1].detail += f"; mean score {s_ref.mean():.4f} -> {s_cur.mean():.4f}"
    samples["prediction"] = (s_ref[:5000], s_cur[:5000])


def _numeric(frame: pd.DataFrame, features: list[str], what: str) -> pd.DataFrame:
    """Feature columns as float64; unparsable values become NaN (they land in PSI's missing bin)."""
    out = {}
    for col in features:
        values = frame[col]
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            out[col] = values.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            parsed = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            if values.notna().any() and not np.isfinite(parsed).any():
                raise DriftInputError(f"{source_of(frame, what)}: column {col} holds no numbers "
                                      f"(e.g. {str(values.dropna().iloc[0])[:40]!r})")
            out[col] = parsed
    return pd.DataFrame(out, index=frame.index)


# --- reference and incoming batches ----------------------------------------------------------

REFERENCE_ROWS = {"fraud": 50_000, "paysim": 50_000}  # others: the whole train split (a few thousand)


def reference_frame(use_case: str, max_rows: int | None = None, seed: int = 0,
                    overrides: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """The champion's reference data: the use case's prepared train split (the data it was fit
    on), deterministically subsampled to ``max_rows`` (default: 50,000 rows for tabular use cases,
    everything otherwise). ``overrides``: config ``key=value`` (e.g. ``prepared_dir=...``).
    ``attrs`` carry the use case name and the source path."""
    from deepflow import usecase

    directory = usecase.project_path(use_case_config(use_case, overrides).prepared_dir)
    train = usecase.read_splits(use_case, directory, ("train",))["train"]
    limit = max_rows if max_rows is not None else REFERENCE_ROWS.get(use_case)
    frame = subsample(train, limit, seed).reset_index(drop=True) if limit else train.reset_index(drop=True)
    frame.attrs.update(use_case=use_case, source=str(directory / "train.parquet"))
    return frame


def use_case_config(use_case: str, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """The entry's resolved config without importing its model code (torch, Lightning: seconds)."""
    from deepflow import usecase

    return usecase.resolve_config(usecase.entry(use_case), overrides)


TABLE_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv", ".txt": "lines"}


def load_batch(kind: str, path: str | Path, features: list[str] | None = None) -> pd.DataFrame:
    """An incoming batch as a frame, checked enough that ``detect`` can measure it.

    * tabular: CSV or parquet; with ``features``, every one must be a column;
    * text: CSV, TSV or parquet with a ``text`` column, or ``.txt`` (one message per line); the
      file must be UTF-8; rows without text are dropped (counted in ``attrs["dropped"]``);
    * image: a folder of image files or a parquet table with an ``image`` column of encoded
      bytes (the generator's shards); undecodable images are dropped and named in ``attrs``.

    Raises ``DriftInputError`` naming the file (and column) when nothing usable is there.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    path = Path(path)
    if not path.exists():
        raise DriftInputError(f"{path}: no such file or folder")
    if path.is_dir():
        if kind != "image":
            raise DriftInputError(f"{path}: a folder is a batch of images; {kind} batches are files")
        frame = _image_folder(path)
    else:
        frame = _read_table(path, kind)
    frame.attrs.setdefault("source", str(path))
    if kind == "tabular":
        if features:
            require_columns(frame, list(features), str(path))
    elif kind == "text":
        frame = _clean_text(frame, path)
    else:
        frame = _clean_images(frame, path)
    return frame


def _read_table(path: Path, kind: str) -> pd.DataFrame:
    fmt = TABLE_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DriftInputError(f"{path}: unsupported extension {path.suffix!r} (use {', '.join(TABLE_SUFFIXES)})")
    if path.stat().st_size == 0:
        raise DriftInputError(f"{path}: empty file")
    if fmt == "parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a broken file
            raise DriftInputError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})") from exc
    else:
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise DriftInputError(f"{path}: not valid UTF-8 at byte {e.start} (line {line})") from e
        if fmt == "lines":
            frame = pd.DataFrame({TEXT: [line for line in text.splitlines() if line.strip()]})
        else:
            import io

            strings = kind == "text"  # messages stay strings ("NA" is a message, not a missing value)
            try:
                frame = pd.read_csv(io.StringIO(text), sep="\t" if fmt == "tsv" else ",",
                                    dtype=str if strings else None, keep_default_na=not strings,
                                    quoting=3 if fmt == "tsv" else 0)
            except pd.errors.EmptyDataError as exc:
                raise DriftInputError(f"{path}: empty file (no header)") from exc
            except pd.errors.ParserError as exc:
                raise DriftInputError(f"{path}: not a readable {fmt.upper()} file ({exc})") from exc
    if frame.empty:
        raise DriftInputError(f"{path}: no rows")
    return frame


def _clean_text(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    from deepflow.batch import validate_text

    require_columns(frame, [TEXT], str(path))
    clean, rejects = validate_text(frame)
    if clean.empty:
        raise DriftInputError(f"{path}: column text holds no non-empty strings")
    clean = clean.reset_index(drop=True)
    clean.attrs.update(source=str(path), dropped=len(rejects))
    return clean


def _image_folder(folder: Path) -> pd.DataFrame:
    from deepflow.batch import image_files

    files = image_files(folder)
    if not files:
        raise DriftInputError(f"{folder}: no files in the folder")
    return pd.DataFrame({FILE: [str(f.relative_to(folder)) for f in files], IMAGE: [f.read_bytes() for f in files]})


def _clean_images(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    from deepflow.batch import validate_image

    require_columns(frame, [IMAGE], str(path))
    clean, rejects = validate_image(frame)
    if clean.empty:
        raise DriftInputError(f"{path}: no decodable image ({'; '.join(rejects['reason'].head(3))})")
    clean = clean.reset_index(drop=True)
    clean.attrs.update(source=str(path), dropped=len(rejects), rejected=list(rejects["reason"].head(10)))
    return clean


# --- drifted batches -------------------------------------------------------------------------

GENERATORS = {
    "fraud": "deepflow.usecases.fraud.incoming",
    "nlp": "deepflow.kinds.text.drift",
    "traffic": "deepflow.kinds.detection.drift",
}


def make_batch(use_case: str, out_dir: str | Path, *, rows: int, drift: float, seed: int = 0, **options: Any) -> Path:
    """Write one incoming batch of ``use_case`` to ``out_dir`` and return its path.

    ``drift`` in [0, 1]: 0 draws from the reference's distribution (a fresh seed, no shift); 1 is
    clearly shifted; in between mixes or scales the shift (see each use case's ``drift.py``).
    ``options`` go to the use case's generator (e.g. base simulator or generator params).
    """
    import importlib

    if use_case not in GENERATORS:
        raise ValueError(f"no drifted-batch generator for {use_case!r} (have: {', '.join(GENERATORS)})")
    if not 0 <= drift <= 1:
        raise ValueError(f"drift must be in [0, 1], got {drift}")
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    module = importlib.import_module(GENERATORS[use_case])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return module.make_batch(out, rows=rows, drift=float(drift), seed=int(seed), **options)


def batch_name(use_case: str, rows: int, drift: float, seed: int, suffix: str = ".parquet") -> str:
    return f"{use_case}-n{rows}-drift{drift:.2f}-seed{seed}{suffix}"


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Atomically: a reader polling the inbox never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


# --- command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepflow.drift", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make-batch", help="write a (drifted) incoming batch from a use case's generator")
    make.add_argument("use_case", choices=list(GENERATORS))
    make.add_argument("out_dir", type=Path)
    make.add_argument("--rows", type=int, required=True)
    make.add_argument("--drift", type=float, default=0.0, help="0 = reference distribution, 1 = clearly shifted")
    make.add_argument("--seed", type=int, default=0)
    rep = sub.add_parser("report", help="measure a batch against a use case's reference; print the report")
    rep.add_argument("use_case")
    rep.add_argument("batch", type=Path)
    rep.add_argument("--champion", action="store_true", help="add prediction drift from the registered @champion")
    rep.add_argument("--kind", choices=KINDS, help="default: tabular/text/image from the use case")
    args = parser.parse_args(argv)
    if args.command == "make-batch":
        print(make_batch(args.use_case, args.out_dir, rows=args.rows, drift=args.drift, seed=args.seed))
        return 0
    from deepflow import settings

    settings.apply_env_defaults()
    scorer, threshold = None, None
    kind = args.kind or {"nlp": "text", "traffic": "image"}.get(args.use_case, "tabular")
    if args.champion:
        from deepflow import batch

        model = batch.load_model(args.use_case)
        scorer, threshold, kind = model.scorer, model.threshold, model.kind
    features = list(use_case_config(args.use_case).features) if kind == "tabular" else None
    report = detect(kind, reference_frame(args.use_case), load_batch(kind, args.batch, features),
                    scorer=scorer, features=features, threshold=threshold)
    print(report.markdown())
    return 1 if report.drifted else 0


if __name__ == "__main__":
    raise SystemExit(main())
