"""Operations config and the pure decisions behind scheduled and drift-triggered retraining.

No Prefect here (``flows/deployments.py`` and ``flows/monitor.py`` are the doors): this module
says *what* should happen — which deployments exist and when they fire, which late runs a
catch-up skips, whether a drift report triggers a retraining, which incoming batches are new —
so every rule is testable in microseconds.

What is per dataset lives in its entry (``datasets/<name>.yaml``): ``schedule:`` (when its pipeline
runs; null: never on its own) and ``monitor:`` (``min_rows``, ``reference_rows``). What is global
lives here: dataclass defaults <- ``operations.yaml`` beside this file (or ``DEEPFLOW_OPS_CONFIG``)
<- ``key=value`` overrides, like the entries' configs. Its ``pipelines.<entry>`` and
``monitor.min_rows.<entry>`` override what the entries say (a test, a team's own timetable).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from deepflow import config, settings

if TYPE_CHECKING:
    from deepflow.usecase import Entry

DEFAULT_PATH = Path(__file__).with_name("operations.yaml")
PIPELINE_FLOW = "train-pipeline"  # flow names: deployments are addressed as "<flow>/<deployment>"
MONITOR_FLOW = "monitor"
MONITOR_DEPLOYMENT = "incoming"
SELF_CHECK_FLOW = "self-check"  # nightly `deepflow reproduce --quick` of every champion
SELF_CHECK_DEPLOYMENT = "reproduce"
DRIFT_TAG = "trigger:drift"  # on every retraining run a monitor started
STATE_FILE = ".processed.json"  # per inbox: which batches the monitor has dealt with


@dataclass
class Schedule:
    cron: str | None = None  # e.g. "0 2 * * *" (nightly at 02:00 in ``timezone``)
    interval_seconds: int | None = None  # instead of cron (tests use a few seconds)
    enabled: bool = True  # False: the deployment exists (manual/API/drift runs) but never fires alone
    overrides: list[str] = field(default_factory=list)  # default ``overrides`` parameter of the runs


@dataclass
class MonitorConfig:
    schedule: Schedule = field(default_factory=lambda: Schedule(cron="15 * * * *"))
    incoming_dir: str = "data/incoming"  # one folder per entry: data/incoming/<entry>/
    use_cases: list[str] | None = None  # the entries the monitor looks at; None: every entry
    cooldown_minutes: float = 360.0  # after a drift-triggered retraining, no other for this long
    min_rows: dict[str, int] = field(default_factory=dict)  # per entry; default: its monitor.min_rows
    drift: dict[str, dict[str, Any]] = field(default_factory=dict)  # DriftConfig overrides per entry


@dataclass
class SelfCheckConfig:
    """The nightly self-check: ``deepflow reproduce NAME@champion --quick`` for each entry
    (flows/self_check.py); a champion that does not reproduce fails the flow run."""

    schedule: Schedule = field(default_factory=lambda: Schedule(cron="30 4 * * *"))
    use_cases: list[str] | None = None  # None: every entry (those without a champion are skipped)


@dataclass
class OpsConfig:
    """As loaded: ``pipelines`` holds every entry that gets a pipeline deployment with its resolved
    schedule, ``monitor.use_cases`` the monitored entries and ``monitor.min_rows`` every entry's
    threshold (see ``resolve``)."""

    timezone: str = "UTC"
    # What a schedule does about runs it missed while no runner/worker was up:
    # "latest" runs only the most recent one and cancels the rest; "all" runs every one.
    catch_up: Literal["latest", "all"] = "latest"
    pipelines: dict[str, Schedule] = field(default_factory=dict)  # per entry, over its own schedule
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    self_check: SelfCheckConfig = field(default_factory=SelfCheckConfig)


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> OpsConfig:
    """The resolved operations config; raises ``config.ConfigError`` naming a bad key, an unknown
    entry or a bad ``schedule:``/``monitor:`` in an entry file."""
    from deepflow import usecase

    path = Path(path or os.environ.get("DEEPFLOW_OPS_CONFIG") or DEFAULT_PATH)
    if not path.exists():
        raise config.ConfigError(f"operations config {path} does not exist")
    return resolve(config.load(OpsConfig, path, overrides), usecase.entries(usecase.warn_broken))


def entry_schedule(e: Entry) -> Schedule | None:
    """An entry's own ``schedule:`` (checked when its file was read); None when it is null."""
    if e.schedule is None:
        return None
    return Schedule(cron=e.schedule.get("cron"), interval_seconds=e.schedule.get("interval_s"))


def entry_min_rows(e: Entry) -> int:
    """An entry's ``monitor.min_rows`` (0 when it sets none)."""
    return int(e.monitor.get("min_rows") or 0)


def resolve(ops: OpsConfig, entries: dict[str, Entry]) -> OpsConfig:
    """Fill ``ops`` in from the entries, in place, and return it.

    * ``pipelines``: an entry gets a deployment when its ``schedule:`` is set or ``ops.pipelines``
      names it (with no timing on either side, the deployment runs only when asked: API, UI,
      drift). An ops ``cron``/``interval_seconds`` replaces the entry's timing (none: the entry's
      stays); ``enabled`` and ``overrides`` come from ops;
    * ``monitor.use_cases``: None becomes every entry;
    * ``monitor.min_rows``: per entry, the ops value, else the entry's ``monitor.min_rows``.
    """
    named = {"pipelines": list(ops.pipelines), "monitor.use_cases": list(ops.monitor.use_cases or []),
             "monitor.min_rows": list(ops.monitor.min_rows), "monitor.drift": list(ops.monitor.drift),
             "self_check.use_cases": list(ops.self_check.use_cases or [])}
    for key, names in named.items():
        for name in names:
            if name not in entries:
                raise config.ConfigError(f"operations config {key}: unknown dataset entry {name!r} "
                                         f"(known: {', '.join(entries)})")
    for name, sched in [*ops.pipelines.items(), ("monitor", ops.monitor.schedule),
                        ("self_check", ops.self_check.schedule)]:
        if sched.cron and sched.interval_seconds:
            raise config.ConfigError(f"schedule of {name}: set cron or interval_seconds, not both")
    pipelines: dict[str, Schedule] = {}
    for name, e in entries.items():
        own, override = entry_schedule(e), ops.pipelines.get(name)
        if own is None and override is None:
            continue
        sched = Schedule(cron=own.cron, interval_seconds=own.interval_seconds) if own else Schedule()
        if override is not None:
            if override.cron or override.interval_seconds:
                sched.cron, sched.interval_seconds = override.cron, override.interval_seconds
            sched.enabled, sched.overrides = override.enabled, list(override.overrides)
        pipelines[name] = sched
    ops.pipelines = pipelines
    ops.monitor.use_cases = list(entries) if ops.monitor.use_cases is None else ops.monitor.use_cases
    ops.self_check.use_cases = list(entries) if ops.self_check.use_cases is None else ops.self_check.use_cases
    ops.monitor.min_rows = {name: ops.monitor.min_rows.get(name, entry_min_rows(e)) for name, e in entries.items()}
    return ops


# --- catch-up --------------------------------------------------------------------------------


def superseded(due: list[tuple[str, datetime]], now: datetime, policy: str) -> list[str]:
    """Ids of missed runs to skip. ``due``: (run id, expected start) of runs still waiting.

    Only runs already due count as missed; with ``latest`` all but the most recent are skipped.
    """
    if policy == "all":
        return []
    late = sorted((t, run_id) for run_id, t in due if t <= now)
    return [run_id for _, run_id in late[:-1]]


# --- drift-triggered retraining ----------------------------------------------------------------


@dataclass(frozen=True)
class RetrainDecision:
    trigger: bool
    reason: str
    final: bool = True  # False: leave the batches in the inbox and decide again with more data


def decide_retraining(*, drifted: bool, rows: int, min_rows: int, in_flight: list[str],
                      last_triggered: datetime | None, now: datetime, cooldown: timedelta,
                      deployment_exists: bool = True) -> RetrainDecision:
    """Whether a monitor's drift report starts a retraining; the first failing rule says why."""
    if rows < min_rows:
        return RetrainDecision(False, f"waiting for more data: {rows} new rows < min_rows {min_rows}", final=False)
    if not drifted:
        return RetrainDecision(False, "no drift above the thresholds")
    if in_flight:
        return RetrainDecision(False, f"drift, but a retraining is already in flight ({', '.join(in_flight)})")
    if last_triggered is not None and now - last_triggered < cooldown:
        wait = cooldown - (now - last_triggered)
        return RetrainDecision(False, f"drift, but in cooldown: last drift retraining at "
                                      f"{last_triggered:%Y-%m-%d %H:%M:%S} UTC, next allowed in "
                                      f"{wait.total_seconds() / 60:.0f} min")
    if not deployment_exists:
        return RetrainDecision(False, "drift, but no retraining deployment to trigger "
                                      "(start `deepflow schedule` or `deepflow deploy`)", final=False)
    return RetrainDecision(True, "drift above the thresholds: retraining triggered")


# --- inbox -----------------------------------------------------------------------------------


def inbox(ops: OpsConfig, use_case: str) -> Path:
    """``<incoming_dir>/<entry>/``: where new batches of an entry arrive."""
    from deepflow import usecase

    return usecase.project_path(ops.monitor.incoming_dir) / use_case


def batch_id(path: Path) -> str:
    """Content hash of a batch file or folder: a renamed copy is the same batch."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        digest.update(f.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def processed(folder: Path) -> dict[str, dict]:
    state = folder / STATE_FILE
    return json.loads(state.read_text()) if state.exists() else {}


def pending_batches(folder: Path) -> list[Path]:
    """Files and sub-folders of the inbox the monitor has not dealt with yet, oldest first."""
    if not folder.is_dir():
        return []
    done = processed(folder)
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return sorted((p for p in entries if batch_id(p) not in done), key=lambda p: (p.stat().st_mtime, p.name))


def mark_processed(folder: Path, batches: list[Path], outcome: dict) -> None:
    """Record batches as dealt with (atomically: a crash leaves the old state, never half of one)."""
    state = processed(folder)
    for b in batches:
        state[batch_id(b)] = {"name": b.name, "at": datetime.now(UTC).isoformat(timespec="seconds"),
                              **outcome}
    tmp = folder / f"{STATE_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True, default=str))
    tmp.replace(folder / STATE_FILE)


def monitor_reports_dir(use_case: str) -> Path:
    return settings.reports_dir() / "monitor" / use_case
