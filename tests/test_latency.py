"""The latency the gate judges does not depend on how busy the machine is (issue 19, item 3).

The figures are CPU time of the calling thread, on one pinned thread, best of several rounds,
challenger and champion interleaved (``deepflow.latency``).
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from deepflow import latency, promotion


class Sleeper:
    """Costs almost no CPU but 15 ms of wall time: what a descheduled call looks like."""

    def predict(self, row):
        time.sleep(0.015)
        return np.zeros(1)


class Recorder:
    def __init__(self, name: str, calls: list) -> None:
        self.name, self.calls = name, calls

    def predict(self, row):
        from threadpoolctl import threadpool_info

        self.calls.append((self.name, torch.get_num_threads(), {p["num_threads"] for p in threadpool_info()}))
        return np.zeros(1)


class Matmul:
    """A small real model's work: a few dense layers on one row."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                                       torch.nn.ReLU(), torch.nn.Linear(1024, 1))  # ~0.3 ms a row on one core

    @torch.no_grad()
    def predict(self, row):
        return self.net(row).numpy()


def test_time_the_call_spends_descheduled_does_not_count() -> None:
    figures = latency.single_row(Sleeper(), None)
    assert figures["wall_p50"] >= 15 and figures["wall_p95"] >= 15
    assert figures["p95"] < 2.0  # what the call costs: a busy machine's waits are not in it
    verdict = promotion.decide(promotion.Policy(max_latency_p95_ms=5.0), promotion.Evidence(
        metric="m", challenger_version="1", challenger={"m": 1.0}, latency_p95_ms=figures["p95"], size_mb=1.0,
        latency_note=latency.note(figures)))
    (check,) = [c for c in verdict.checks if c.name == "latency"]
    assert verdict.promote and "wall p95" in check.detail and "load" in check.detail


def test_scorers_run_on_one_thread_interleaved_and_threads_are_restored() -> None:
    before = torch.get_num_threads()
    calls: list = []
    figures = latency.measure({"challenger": (Recorder("a", calls), None), "champion": (Recorder("b", calls), None)},
                              rounds=3, per_round=4)
    assert set(figures) == {"challenger", "champion"} and figures["challenger"]["threads"] == 1
    assert {threads for _, threads, _ in calls} == {1} and all(pools <= {1} for _, _, pools in calls)
    timed = [name for name, _, _ in calls[2 * latency.WARMUP:]]
    assert timed == (["a"] * 4 + ["b"] * 4) * 3  # round by round, not one after the other
    assert torch.get_num_threads() == before


@pytest.mark.slow
def test_two_busy_processes_do_not_change_the_verdict() -> None:
    """A real load: two processes spinning on the 2 cores while the gate measures a small network."""
    model, row = Matmul(), torch.randn(1, 64)
    quiet = latency.single_row(model, row)
    ceiling = 3 * quiet["p95"]  # a gate this model passes on a quiet machine
    spin = "import time\nend = time.time() + 60\nwhile time.time() < end: pass"
    busy = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(2)]
    try:
        time.sleep(1.0)
        loaded = latency.single_row(model, row)
    finally:
        for p in busy:
            p.kill()
            p.wait(timeout=10)
    assert loaded["p95"] <= ceiling, (quiet, loaded)
    print(f"quiet {quiet}\nloaded {loaded}")
