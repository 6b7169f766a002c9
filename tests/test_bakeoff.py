"""The bake-off verdict follows the numbers, and the report files are written."""

from deepflow import bakeoff
from deepflow.stats import Interval

FAMILIES = {"shallow": "shallow", "deep": "deep"}


def member(name, kind, ap, interval, p50, params):
    return {"member": name, "kind": kind, "run_id": name, "test": {"auprc": ap, "roc_auc": 0.9},
            "interval": interval, "latency_ms": {"p50": p50, "p95": 2 * p50}, "parameters": params,
            "size_mb": 0.1, "timings": {"training": 1.0}}


def summary(deep_ap=0.70):
    return {"use_case": "fraud", "primary": "auprc", "run_id": "r", "data_version": "d",
            "registered": {"run_id": "deep", "version": "1"}, "promotion": None,
            "members": [member("shallow", "candidate", 0.60, [0.55, 0.65], 1.0, 1000),
                        member("deep", "candidate", deep_ap, [0.66, 0.75], 2.0, 100000),
                        member("xgboost", "baseline", 0.62, [0.57, 0.67], 4.0, None)]}


def test_paired_interval_decides_the_claim() -> None:
    assert "depth pays here" in bakeoff.verdict(summary(), FAMILIES, Interval(0.1, 0.05, 0.15, 0.95, 100))
    assert "not a clear win" in bakeoff.verdict(summary(), FAMILIES, Interval(0.1, -0.01, 0.2, 0.95, 100))
    assert "costs quality" in bakeoff.verdict(summary(0.5), FAMILIES, Interval(-0.1, -0.2, -0.05, 0.95, 100))


def test_without_paired_interval_marginal_intervals_are_used() -> None:
    text = bakeoff.verdict(summary(), FAMILIES)
    assert "depth pays here" in text and "100x the parameters" in text and "2.0x" in text
    assert "best neural model beats it by +0.0800" in text


def test_report_files(tmp_path) -> None:
    paths = bakeoff.write(summary(), FAMILIES, tmp_path, Interval(0.1, 0.05, 0.15, 0.95, 100))
    md = (tmp_path / "report.md").read_text()
    assert "| deep | deep | 0.7000 [0.6600, 0.7500]" in md and "## Verdict" in md
    assert "<table>" in (tmp_path / "report.html").read_text()
    assert (tmp_path / "quality_vs_latency.png").stat().st_size > 1000 and set(paths) == {"md", "html", "png"}


def test_a_point_outside_its_interval_still_plots(tmp_path) -> None:
    """Detection's test mAP (COCO evaluator) can sit outside the interval of the numpy twin the
    bootstrap resamples (one test image): the report is still written."""
    s = summary()
    s["members"][0]["interval"] = [0.0, 0.0]  # point 0.60 above both ends
    s["members"][1]["interval"] = [0.8, 0.9]  # point 0.70 below both ends
    paths = bakeoff.write(s, FAMILIES, tmp_path)
    assert (tmp_path / "quality_vs_latency.png").stat().st_size > 1000 and "png" in paths
