"""How many torch intra-op threads a fit gets: chosen from the CPUs this process may use and from
how busy other processes keep them right now, once per member, at the start of its fit.

Why: torch's intra-op threads work in lock-step. With as many threads as cores and one other busy
process on a 2-core machine, one thread is starved and the other waits for it at every operation
(a built-in detector trained 3.6x slower, 727 s instead of ~200 s; a BiGRU 770 s instead of 20 s).
One thread per *free* core avoids that wait.

- **available**: ``len(os.sched_getaffinity(0))``, lowered by a cgroup CPU quota (v2 ``cpu.max``,
  v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``, rounded up) of this process's cgroup or an ancestor.
- **busy elsewhere**: CPUs kept busy by other processes on this process's CPUs, sampled directly
  from ``/proc/stat`` over :data:`WINDOW_S` minus this process's own CPU time in the window. The
  1-minute load average would lag a competitor that started seconds ago; it is only the fallback
  where ``/proc`` is missing.
- **the rule** (:func:`choose`): a configured count N > 0 is used exactly (a recorded count is
  replayed as it was); else ``DEEPFLOW_THREADS`` if set; else auto: the free CPUs,
  ``round(CPUs in the affinity set - busy elsewhere)``, at least 1 and at most *available*.

:func:`use` (called by ``training.seed_everything`` at the start of every fit) applies the choice to
torch; :func:`in_use` gives it back to the step that records it on the member's MLflow run
(``train.threads_*`` params) and in the birth certificate; ``deepflow reproduce`` sets
``DEEPFLOW_THREADS`` to the recorded count.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

ENV = "DEEPFLOW_THREADS"
WINDOW_S = 0.25  # long enough for ~25 jiffies per CPU at 100 Hz, short enough to go unnoticed per fit
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Choice:
    threads: int  # what torch.set_num_threads got
    available: int  # CPUs this process may use (affinity, cgroup quota)
    busy_elsewhere: float | None  # CPUs other processes kept busy (None: not measured, count was given)
    source: str  # "configured" (train.threads), "env" (DEEPFLOW_THREADS) or "auto"

    def params(self) -> dict[str, str | int]:
        """The choice as MLflow params of the member's run."""
        busy = "not measured" if self.busy_elsewhere is None else f"{self.busy_elsewhere:.2f}"
        return {"train.threads_used": self.threads, "train.threads_source": self.source,
                "train.threads_available": self.available, "train.threads_busy_elsewhere": busy}


def affinity() -> int:
    """CPUs this process may be scheduled on (the container's or taskset's CPU set)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cgroup_quota(root: Path = CGROUP_ROOT, membership: Path = Path("/proc/self/cgroup")) -> float | None:
    """The smallest CPU quota (in CPUs, e.g. 1.5) of this process's cgroup and its ancestors, v2 or
    v1; None when there is none ("max", -1) or no cgroup file system is readable."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        lines = []
    quotas: list[float] = []
    for line in lines:  # "0::/path" (v2) or "4:cpu,cpuacct:/path" (v1)
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            quotas += [q for d in _dirs(root, path) if (q := _v2(d / "cpu.max")) is not None]
        elif "cpu" in controllers.split(","):
            for mount in (root / controllers, root / "cpu", root / "cpu,cpuacct"):
                quotas += [q for d in _dirs(mount, path) if (q := _v1(d)) is not None]
    if not lines:
        quotas += [q for q in (_v2(root / "cpu.max"), _v1(root / "cpu")) if q is not None]
    return min(quotas) if quotas else None


def _dirs(mount: Path, path: str) -> list[Path]:
    """The cgroup's folder under ``mount`` and its ancestors up to the mount (a namespaced
    container sees "/": the mount itself)."""
    here = mount / path.strip("/")
    if not here.is_dir():
        return [mount]
    return [here, *[p for p in here.parents if p == mount or mount in p.parents]]


def _v2(cpu_max: Path) -> float | None:
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def available() -> int:
    """CPUs this process may use: its affinity set, lowered by a cgroup quota (rounded up)."""
    quota = cgroup_quota()
    cpus = affinity()
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def _cpu_jiffies(stat: Path, cpus: set[int]) -> tuple[int, int] | None:
    """(busy, total) jiffies summed over ``cpus`` from /proc/stat's per-CPU lines."""
    busy = total = 0
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, *values = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        # user nice system idle iowait irq softirq steal (guest time is already inside user)
        ticks = [int(v) for v in values[:8]] + [0] * (8 - len(values[:8]))
        busy += sum(ticks) - ticks[3] - ticks[4]
        total += sum(ticks)
    return (busy, total) if total else None


def busy_elsewhere(window_s: float = WINDOW_S, stat: Path = Path("/proc/stat")) -> float:
    """CPUs (of this process's affinity set) that other processes kept busy during a ``window_s``
    sample: their busy time minus this process's own CPU time, over the wall time. Without /proc:
    the 1-minute load average (which lags a competitor that started seconds ago)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    before, own_before, wall_before = _cpu_jiffies(stat, cpus), time.process_time(), time.monotonic()
    if before is None:
        return min(float(len(cpus)), os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0.0
    time.sleep(window_s)
    after, own, wall = _cpu_jiffies(stat, cpus), time.process_time() - own_before, time.monotonic() - wall_before
    if after is None:
        return 0.0
    return others(after[0] - before[0], os.sysconf("SC_CLK_TCK"), own, wall, len(cpus))


def others(busy_jiffies: int, tick: int, own_s: float, wall_s: float, cpus: int) -> float:
    """CPUs busy with other processes: busy CPU seconds of the window less this process's own,
    per wall second, within [0, ``cpus``]."""
    return round(min(float(cpus), max(0.0, (busy_jiffies / tick - own_s) / wall_s)), 2)


def configured_env() -> int:
    """``DEEPFLOW_THREADS`` as a count (0 when unset or empty)."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return 0
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{ENV}={raw!r}: expected a thread count >= 1 (or unset: chosen from the machine)")
    return int(raw)


def rule(cpus: int, available: int, busy_elsewhere: float) -> int:
    """Auto: one thread per free CPU, at least 1, at most ``available``."""
    return max(1, min(available, math.floor(cpus - busy_elsewhere + 0.5)))


def choose(configured: int) -> Choice:
    """The thread count of a fit whose config says ``configured`` (0: auto); see the module doc."""
    cpus = available()
    if configured > 0:
        return Choice(configured, cpus, None, "configured")
    if from_env := configured_env():
        return Choice(from_env, cpus, None, "env")
    busy = busy_elsewhere()
    return Choice(rule(affinity(), cpus, busy), cpus, busy, "auto")


_in_use: Choice | None = None  # the last fit's choice (torch's thread count is process-wide too)


def use(configured: int) -> Choice:
    """:func:`choose` and apply it: ``torch.set_num_threads``."""
    global _in_use
    import torch

    _in_use = choose(configured)
    torch.set_num_threads(_in_use.threads)
    return _in_use


def in_use() -> Choice:
    """The last :func:`use` in this process (what a member's run records); torch's current count,
    source "unchosen", when none was made or torch's count was changed since."""
    import torch

    if _in_use is None or _in_use.threads != torch.get_num_threads():
        return Choice(torch.get_num_threads(), available(), None, "unchosen")
    return _in_use
