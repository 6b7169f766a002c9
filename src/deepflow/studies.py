"""Hyperparameter studies that several worker processes share (Optuna on an SQLAlchemy database).

A study lives in an RDB storage: by default an SQLite file beside the embedded MLflow store
(``settings.optuna_storage``), for a team the PostgreSQL server (``DEEPFLOW_OPTUNA_STORAGE`` or an
entry's config key). Its name is a hash of what makes its trials comparable, so a second process
with the same identity joins it and a search started again continues it. Every running trial
sends a heartbeat; a trial whose worker stopped sending one for ``GRACE_S`` (or whose process on
this host is gone) is marked FAIL, and so is the MLflow run that recorded it.

Each worker writes a ``worker:<host>:<pid>:<start>`` study attribute (state, last seen), so one
that is done can wait for the trials the others still run, and all of them report the same study.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

from deepflow import config, processes, settings

log = logging.getLogger(__name__)

HEARTBEAT_S = 20  # a running trial's worker writes a heartbeat this often
GRACE_S = 90  # ... and its trial is failed once none came for this long
CREATE_ATTEMPTS = 5  # opening a storage whose tables another process is creating right now
CREATE_RACE = ("already exists", "duplicate key", "UniqueViolation", "UNIQUE constraint failed", "database is locked")
ENV = "DEEPFLOW_OPTUNA_STORAGE"
MEMORY = "memory"  # a private in-memory study: no sharing, no resuming (the search before issue 16)
WORKER_HOOK = "deepflow.worker"  # study attribute: the "module:function" an extra worker runs


class StorageError(config.ConfigError):
    """A study storage that cannot be opened; the message names the setting it came from."""


def resolve(configured: str = "", key: str = "") -> tuple[str, str]:
    """The storage URL and the setting that chose it: ``configured`` (an entry's config key or a
    command-line option, named ``key``) over ``DEEPFLOW_OPTUNA_STORAGE`` over the embedded SQLite."""
    import os

    if configured.strip():
        return configured.strip(), key or "the configured storage"
    if os.environ.get(ENV, "").strip():
        return os.environ[ENV].strip(), ENV
    return settings.optuna_storage(), f"the default ({ENV} unset)"


def shown(url: str) -> str:
    """``url`` without its password, for logs and tags."""
    if url == MEMORY:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: nothing to hide that the error does not already say
        return url


def open_storage(configured: str = "", key: str = "", heartbeat_s: int = HEARTBEAT_S,
                 grace_s: int = GRACE_S) -> Any:
    """An Optuna storage for ``resolve(configured, key)``: RDB with heartbeats, or in memory for
    ``memory``. StorageError (naming the setting) when the URL is malformed, its driver is
    missing or its database does not answer."""
    import optuna

    url, setting = resolve(configured, key)
    if url == MEMORY:
        return optuna.storages.InMemoryStorage()
    engine: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        from pathlib import Path

        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": 60}}  # two local workers wait for each other's writes
    elif url.startswith(("postgresql", "postgres")):
        engine = {"connect_args": {"connect_timeout": 10}}  # a silent host fails within seconds
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.x
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_s,
                                                  grace_period=grace_s, heartbeat_stale_trial_callback=_stale)
        except Exception as exc:
            reason = " ".join(str(exc).split())[:300]
            # Workers opening an empty database at once race to create Optuna's tables and its
            # version row; the losers see them exist on the next try.
            if attempt < CREATE_ATTEMPTS and any(word in reason for word in CREATE_RACE):
                log.info("study storage %s: another process was creating its tables (%s); again", shown(url),
                         type(exc).__name__)
                time.sleep(0.5 * attempt)
                continue
            raise StorageError(f"{setting}={shown(url)!r}: cannot open the study storage ({type(exc).__name__}: "
                               f"{reason}); expected an SQLAlchemy URL such as sqlite:///PATH/optuna.db or "
                               f"postgresql://USER@HOST:5432/DB, or {MEMORY!r}") from None
    raise AssertionError("unreachable: the last attempt returns or raises")


def study_name(identity: dict[str, Any], prefix: str) -> str:
    """``<prefix>.<12 hex digits>``: equal for equal identities (JSON with sorted keys)."""
    blob = json.dumps(identity, sort_keys=True, default=str).encode()
    return f"{prefix}.{hashlib.sha256(blob).hexdigest()[:12]}"


def worker_key(me: dict[str, str] | None = None) -> str:
    me = me or processes.identity()
    return f"worker:{me['host']}:{me['pid']}:{me['start']}"


def open_study(storage: Any, name: str, sampler: Callable[[bool], Any], pruner: Any,
               first: dict[str, Any] | None = None, attrs: dict[str, Any] | None = None,
               create: bool = True) -> tuple[Any, bool]:
    """Create study ``name`` (maximising), or join it when it exists. Only its creator enqueues
    ``first`` and writes ``attrs``, so both happen once per study. ``sampler(created)`` builds
    the sampler. With ``create=False`` a missing study is a LookupError. Returns (study, created)."""
    import optuna

    created = False
    if create:
        try:
            study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                        sampler=sampler(True), pruner=pruner)
            created = True
        except optuna.exceptions.DuplicatedStudyError:  # it exists: join it
            pass
    if not created:
        try:
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler(False), pruner=pruner)
        except KeyError:
            raise LookupError(f"no study {name!r} in the storage") from None
    if created:
        for key, value in (attrs or {}).items():
            study.set_user_attr(key, value)
        if first is not None:
            study.enqueue_trial(first)
    return study, created


def seen(study: Any, state: str = "running", **extra: Any) -> None:
    """This worker's sign of life (and ``state``: running | done) in the study's attributes."""
    study.set_user_attr(worker_key(), {"owner": processes.identity(), "state": state, "seen": time.time(), **extra})


def fail_stale(study: Any) -> list[int]:
    """Mark FAIL the running trials whose heartbeat stopped (Optuna) or whose worker process on
    this host is gone (at once, without waiting for the grace period); their numbers."""
    import optuna
    from optuna.trial import TrialState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    failed = []
    me = processes.identity()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get("deepflow.owner")
        if owner and processes.gone(owner, me):
            try:
                if study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                    failed.append(trial.number)
                    _stale(study, trial)
            except optuna.exceptions.UpdateFinishedTrialError:  # another worker got there first
                pass
    return failed


def _stale(study: Any, trial: Any) -> None:
    """A trial whose worker is gone: its MLflow run (if it got one) is FAILED too."""
    run_id = trial.user_attrs.get("deepflow.run_id")
    log.warning("study %s: trial %s failed, its worker stopped (run %s)", study.study_name, trial.number, run_id)
    if run_id:
        from deepflow import tracking

        try:
            tracking.set_tags(run_id, {"deepflow.trial_state": "failed", "deepflow.failure": "its worker stopped"})
        except Exception as exc:  # the storage is what matters; the run is cleaned by fail_stale_runs
            log.info("could not tag run %s: %s", run_id, str(exc)[:300])
        tracking.end_failed_run(run_id)


def others_busy(study: Any) -> bool:
    """Whether another worker may still add trials: a running trial, or a worker marked running
    that was seen within GRACE_S and whose process is not verifiably gone."""
    from optuna.trial import TrialState

    fail_stale(study)
    if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        return True
    me, now = processes.identity(), time.time()
    for key, value in study.user_attrs.items():
        if (key.startswith("worker:") and key != worker_key(me) and isinstance(value, dict)
                and value.get("state") == "running" and now - float(value.get("seen", 0)) < GRACE_S
                and not processes.gone(value.get("owner") or {}, me)):
            return True
    return False


def wait_for_others(study: Any, limit_s: float, poll_s: float = 1.0) -> float:
    """Wait (at most ``limit_s``) until no other worker can add a trial; the seconds waited."""
    t0 = time.monotonic()
    while others_busy(study) and time.monotonic() - t0 < limit_s:
        time.sleep(poll_s)
    return time.monotonic() - t0


def find(storage: Any, match: dict[str, Any], name: str | None = None, wait_s: float = 0.0) -> Any:
    """The newest study whose attributes include ``match`` (or the one called ``name``), waiting up
    to ``wait_s`` for one to appear; LookupError when there is none."""
    import optuna

    deadline = time.monotonic() + wait_s
    while True:
        found = [s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
                 if (s.study_name == name if name else all(s.user_attrs.get(k) == v for k, v in match.items()))
                 and WORKER_HOOK in s.user_attrs]
        if found:
            return max(found, key=lambda s: (s.datetime_start is not None, s.datetime_start, s._study_id))
        if time.monotonic() >= deadline:
            what = f"study {name!r}" if name else "study for " + ", ".join(f"{k}={v}" for k, v in match.items())
            raise LookupError(f"no {what} in the storage")
        time.sleep(1.0)


def hook(summary: Any) -> Callable[..., Any]:
    """The function the study's creator recorded for extra workers (``module:function``)."""
    target = str(summary.user_attrs[WORKER_HOOK])
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)
