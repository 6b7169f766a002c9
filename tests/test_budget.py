"""The wall-clock budget: the pure skip rule, the clock's bookkeeping, the reports, and (slow) the
flow end to end: a budget that runs out skips members and still registers what was trained, and
a real run ends within its budget."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from deepflow import bakeoff, budget, report


def test_no_budget_means_no_limit() -> None:
    plan = budget.plan("deep", budget_s=None, elapsed_s=10_000)
    assert not plan.skipped and plan.time_limit_s is None


def test_a_member_gets_what_is_left_after_the_reserve_and_its_after_fit_cost() -> None:
    plan = budget.plan("hgb", budget_s=300, elapsed_s=100, after_fit_s=8)
    assert plan.time_limit_s == pytest.approx(300 - 100 - 30 - 8)  # reserve: 10 % of 300
    assert budget.reserve_s(300, 8) == 30 and budget.reserve_s(60, 2) == 10 and budget.reserve_s(60, 20) == 40


def test_a_member_that_cannot_fit_is_skipped_with_the_reason() -> None:
    plan = budget.plan("deep", budget_s=60, elapsed_s=40, after_fit_s=6)
    assert plan.skipped and plan.time_limit_s is None
    assert "20 s of 60 s left" in plan.reason and "at least 5 s" in plan.reason
    assert not budget.plan("deep", budget_s=60, elapsed_s=39, after_fit_s=5, min_fit_s=1).skipped  # 60-39-10-5 = 6


def test_the_clock_learns_the_after_fit_cost_and_remembers_skips() -> None:
    now = [0.0]
    clock = budget.Budget(100.0, started=0.0, clock=lambda: now[0])
    first = clock.plan("linear")
    assert first.time_limit_s == pytest.approx(100 - 20 - 10)  # before any measurement: 10 s after a fit
    now[0] = 12.0
    clock.record("linear", first.time_limit_s, {"training": 4.0, "evaluation": 2.0, "tracking": 2.0})
    assert clock.after_fit_s == pytest.approx(5.0)  # 4 s measured, a quarter more
    assert clock.plan("hgb").time_limit_s == pytest.approx(100 - 12 - 10 - 5)
    now[0] = 81.0  # 100 - 81 - 10 - 5 = 4 s to fit: under 5
    assert clock.plan("deep").skipped
    summary = clock.summary()
    assert summary["budget_s"] == 100 and summary["spent_s"] == 81 and summary["reserve_s"] == 10
    assert [s["member"] for s in summary["skipped"]] == ["deep"]
    assert summary["members"] == [{"member": "linear", "time_limit_s": 70.0, "training_s": 4.0, "after_fit_s": 4.0}]


def member(name: str, kind: str = "candidate") -> dict:
    return {"member": name, "kind": kind, "run_id": name, "test": {"auprc": 0.5, "roc_auc": 0.8},
            "interval": [0.4, 0.6], "latency_ms": {"p50": 1.0, "p95": 2.0}, "parameters": 10, "size_mb": 0.1,
            "timings": {"training": 3.0}, "val": {"auprc": 0.5}, "stopped_by": "time limit"}


def test_reports_show_what_was_skipped_and_how_the_time_went(tmp_path: Path) -> None:
    skipped = [{"member": "deep", "reason": "budget: 3 s of 60 s left"}]
    summary = {"use_case": "churn", "primary": "auprc", "run_id": "r", "data_version": "d", "budget_s": 60.0,
               "skipped": skipped, "registered": {"run_id": "shallow", "version": "1", "member": "shallow"},
               "promotion": {"challenger": "1", "champion": "1", "promoted": True, "reasons": ["first version"]},
               "members": [member("linear", "baseline"), member("shallow")],
               "timings": {"training": 6.0, "wall": 55.0},
               "budget": {"budget_s": 60.0, "reserve_s": 10.0, "spent_s": 50.0, "skipped": skipped,
                          "members": [{"member": "linear", "time_limit_s": 30.0, "training_s": 3.0, "after_fit_s": 2.0},
                                      {"member": "shallow", "time_limit_s": 21.4, "training_s": 3.0,
                                       "after_fit_s": 2.5}]}}
    text = report.markdown(summary)
    assert "Budget: 60 s, run took 55.0 s." in text and "- skipped `deep`: budget: 3 s of 60 s left" in text
    assert report.champion_line(summary).endswith("Skipped (budget 60 s): deep.")
    md = bakeoff.markdown(summary, {"linear": "classical", "shallow": "shallow"})
    assert "## Time" in md and "| shallow | 21 | 3.0 | 2.5 | time limit |" in md
    assert "`deep` skipped: budget: 3 s of 60 s left" in md
    assert "## Time" not in bakeoff.markdown({**summary, "budget": {"budget_s": None}}, {})


# --- the flow, end to end (slow) ----------------------------------------------------------------


@pytest.fixture
def table_entry(datasets: Path, tmp_path: Path) -> str:
    """Entry ``customers`` (kind table, binary) over hand-prepared splits."""
    from tests.test_table_models import ROLES, make

    uc, splits = make("binary", n=700)
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    for name, frame in splits.items():
        frame.to_parquet(prepared / f"{name}.parquet", index=False)
    columns = {c: {"role": r} for c, r in ROLES.items()}
    columns["monthly_charges"]["null_share_max"] = 0.2
    columns["region"]["categories"] = ["north", "south", "east", "west"]
    columns["contract"]["categories"] = ["monthly", "yearly"]
    config = {"prepared_dir": str(prepared), "target": "churned", "task": "binary", "classes": ["no", "yes"],
              "metric": "auprc", "columns": columns, "train": {"epochs": 3, "patience": 3},
              "model": {"hgb_max_iter": 30, "deep_width": 32, "deep_blocks": 2},
              "promotion": {"resamples": 200, "max_latency_p95_ms": None}}
    (datasets / "customers.yaml").write_text(yaml.safe_dump({"kind": "table", "config": config}, sort_keys=False))
    return "customers"


@pytest.mark.slow
def test_a_budget_that_runs_out_skips_members_and_still_registers(store, table_entry, monkeypatch) -> None:
    from flows.pipeline import train_pipeline

    calls = []

    def scripted(self: budget.Budget) -> float:  # the first member starts at once, then time is up
        calls.append(1)
        return 0.0 if len(calls) == 1 else float(self.budget_s) - 1

    monkeypatch.setattr(budget.Budget, "elapsed", scripted)
    summary = train_pipeline(table_entry, ["budget_s=60"])
    assert [m["member"] for m in summary["members"]] == ["linear"]
    assert [s["member"] for s in summary["skipped"]] == ["hgb", "shallow", "deep"]
    assert all("budget" in s["reason"] for s in summary["skipped"]) and summary["budget_s"] == 60
    assert summary["registered"]["member"] == "linear" and summary["promotion"]["promoted"]
    assert summary["members"][0]["time_limit_s"] == pytest.approx(60 - 20 - 10)
    assert "`hgb` skipped" in Path(summary["bakeoff"]["md"]).read_text()


@pytest.mark.slow
def test_a_real_run_ends_within_its_budget(store, table_entry) -> None:
    from flows.pipeline import train_pipeline

    started = time.perf_counter()
    summary = train_pipeline(table_entry, ["budget_s=60", "train.epochs=100000", "train.patience=100000"])
    assert time.perf_counter() - started <= 60
    assert summary["registered"]["version"] == "1" and summary["members"]
    trained = {m["member"] for m in summary["members"]} | {s["member"] for s in summary["skipped"]}
    assert trained == {"linear", "hgb", "shallow", "deep"}
    nets = [m for m in summary["members"] if m["member"] in ("shallow", "deep")]
    assert all(m["stopped_by"] == "time limit" for m in nets)  # 100,000 epochs never fit: the clock stopped them
