"""Single-row latency as the bake-off reports it and the promotion gate judges it: what scoring
one row costs, not what a busy machine makes of it.

A wall-clock p95 measured while another job runs is the other job's doing: real models whose
median is under 1 ms were measured at 73-1,281 ms p95 on a loaded 2-core machine, and two
identical models got different verdicts. So:

* the scorer runs on **one thread** (torch and the BLAS pools pinned with ``threadpoolctl``), as
  one serving request does, so its threads cannot spin against a competitor's;
* each call is timed by the **CPU time of the calling thread** (``time.thread_time``): a thread
  that is descheduled accumulates none, so load does not enter the figure; wall-clock times
  are kept beside it, for the record;
* calls run in several **rounds**, and each percentile is the minimum over rounds: a burst of
  load has to spoil every round to move it;
* scorers compared with each other (challenger and champion) are measured **interleaved**, round
  by round, in the same moment;
* the machine's state is recorded with the numbers (1-minute load average, usable CPUs), so a
  reader can see what the figures were measured under.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

ROUNDS = 5
PER_ROUND = 40  # calls per round: 200 in all, as before
WARMUP = 5


@contextmanager
def one_thread() -> Iterator[None]:
    """torch's intra-op pool and every BLAS/OpenMP pool limited to the calling thread, restored after."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


def measure(scorers: dict[str, tuple[Any, Any]], rounds: int = ROUNDS, per_round: int = PER_ROUND) -> dict[str, dict]:
    """``{name: figures}`` for ``{name: (scorer, one_row)}``, measured interleaved (module docstring).

    Figures, in ms: ``p50``/``p95`` of the calling thread's CPU time per call (the gate's
    numbers), ``wall_p50``/``wall_p95`` of the wall clock, each the minimum over ``rounds``; plus
    ``load_1m``, ``cpus`` and ``threads`` (the conditions).
    """
    cpu: dict[str, list[np.ndarray]] = {name: [] for name in scorers}
    wall: dict[str, list[np.ndarray]] = {name: [] for name in scorers}
    with one_thread():
        for scorer, row in scorers.values():
            for _ in range(WARMUP):
                scorer.predict(row)
        for _ in range(rounds):
            for name, (scorer, row) in scorers.items():
                c, w = np.empty(per_round), np.empty(per_round)
                for i in range(per_round):
                    w0, c0 = time.perf_counter(), time.thread_time()
                    scorer.predict(row)
                    c[i], w[i] = time.thread_time() - c0, time.perf_counter() - w0
                cpu[name].append(np.percentile(c, [50, 95]) * 1000)
                wall[name].append(np.percentile(w, [50, 95]) * 1000)
    conditions = {"load_1m": round(os.getloadavg()[0], 2), "cpus": len(os.sched_getaffinity(0)), "threads": 1}
    out = {}
    for name in scorers:
        (p50, p95), (w50, w95) = np.min(cpu[name], axis=0), np.min(wall[name], axis=0)
        out[name] = {"p50": float(p50), "p95": float(p95), "wall_p50": float(w50), "wall_p95": float(w95),
                     **conditions}
    return out


def single_row(scorer: Any, one_row: Any) -> dict[str, float]:
    """:func:`measure` of one scorer."""
    return measure({"scorer": (scorer, one_row)})["scorer"]


def note(figures: dict[str, float]) -> str:
    """How a figure was measured, for the gate's message."""
    return (f"CPU time on {figures['threads']} thread, best of {ROUNDS} rounds; wall p95 {figures['wall_p95']:.2f} ms "
            f"at load {figures['load_1m']:.2f} on {figures['cpus']} CPUs")
