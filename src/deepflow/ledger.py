"""The promotion ledger: an append-only record of every alias move, and the one way to move one.

Each move is an MLflow run in the ``deepflow-ledger`` experiment (tags only, never edited), so
the ledger lives wherever the registry lives (embedded SQLite, or a PostgreSQL-backed server)
and survives restarts with it. Moves of one use case are serialised by a lock (a file lock, or a
PostgreSQL advisory lock for several hosts); the alias is set and the entry written under that
lock, and a failed write puts the alias back.
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from filelock import FileLock

from deepflow import settings, tracking

EXPERIMENT = "deepflow-ledger"
LOCK_TIMEOUT_S = 600
ROLLBACK = "rollback:"  # reason prefix of rollback moves


@dataclass(frozen=True)
class Move:
    time: str
    use_case: str
    alias: str
    from_version: str | None
    to_version: str
    reason: str
    evidence: str  # URI of the decision (or rollback) record
    actor: str  # "pipeline:<flow run id>" or "cli:<user>"
    entry_id: str = ""


def actor_for_cli() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def lock(use_case: str) -> AbstractContextManager:
    """Serialise alias moves of one use case.

    ``DEEPFLOW_LOCK_URL=postgresql://...``: a PostgreSQL advisory lock, for promoters on several
    hosts (the team set-up). Otherwise a file lock in ``DEEPFLOW_LOCK_DIR`` (one host).
    """
    url = os.environ.get("DEEPFLOW_LOCK_URL", "")
    if url.startswith(("postgresql://", "postgres://")):
        return _advisory_lock(url, f"deepflow:{use_case}")
    settings.lock_dir().mkdir(parents=True, exist_ok=True)
    return FileLock(str(settings.lock_dir() / f"{use_case}.lock"), timeout=LOCK_TIMEOUT_S)


@contextmanager
def _advisory_lock(url: str, key: str) -> Iterator[None]:
    import psycopg2

    conn = psycopg2.connect(url, connect_timeout=10)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            while True:
                cur.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,))
                if cur.fetchone()[0]:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not take the PostgreSQL advisory lock {key!r} in {LOCK_TIMEOUT_S} s")
                time.sleep(0.05)
        yield
    finally:
        conn.close()  # closing the session releases its advisory locks


def move_alias(use_case: str, alias: str, to_version: str, *, reason: str, evidence: str,
               actor: str) -> Move:
    """Point ``use_case@alias`` at ``to_version`` and append the move to the ledger, atomically
    with respect to other deepflow processes sharing the lock directory."""
    with lock(use_case):
        current = tracking.version_by_alias(use_case, alias)
        before = str(current.version) if current else None
        tracking.set_alias(use_case, alias, str(to_version))
        move = Move(time=datetime.now(UTC).isoformat(timespec="milliseconds"), use_case=use_case,
                    alias=alias, from_version=before, to_version=str(to_version), reason=reason,
                    evidence=evidence, actor=actor)
        try:
            entry_id = _append(move)
        except BaseException:
            if before is None:
                tracking.delete_alias(use_case, alias)
            else:
                tracking.set_alias(use_case, alias, before)
            raise
    return Move(**{**asdict(move), "entry_id": entry_id})


def history(use_case: str, alias: str | None = None) -> list[Move]:
    """Every recorded move of ``use_case`` (optionally one alias), oldest first."""
    client = tracking.client()
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return []
    query = f"tags.`ledger.use_case` = '{use_case}'"
    if alias:
        query += f" and tags.`ledger.alias` = '{alias}'"
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], query, max_results=1000, page_token=token,
                                  order_by=["attributes.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token:
            break
    moves = [_from_tags(r.info.run_id, r.data.tags) for r in runs]
    return sorted(moves, key=lambda m: m.time)


def previous_champions(use_case: str) -> list[str]:
    """Champions before the current one, most recent last; a rollback pops the one it returns to."""
    stack: list[str] = []
    for m in history(use_case, "champion"):
        if stack and m.to_version == stack[-1] and m.reason.startswith(ROLLBACK):
            stack.pop()
        elif m.from_version:
            stack.append(m.from_version)
    return stack


def consistent(use_case: str, alias: str = tracking.CHAMPION) -> bool:
    """Does the alias point where the ledger's last move says it does?"""
    moves = history(use_case, alias)
    current = tracking.version_by_alias(use_case, alias)
    if not moves:
        return current is None
    return current is not None and str(current.version) == moves[-1].to_version


def _append(move: Move) -> str:
    tags = {f"ledger.{k}": ("" if v is None else str(v)) for k, v in asdict(move).items() if k != "entry_id"}
    run_id = tracking.start_run(EXPERIMENT, f"{move.use_case}@{move.alias}: "
                                f"{move.from_version or '-'} -> {move.to_version}", tags=tags)
    tracking.end_run(run_id)
    return run_id


def _from_tags(run_id: str, tags: dict[str, str]) -> Move:
    get = lambda k: tags.get(f"ledger.{k}", "")  # noqa: E731
    return Move(time=get("time"), use_case=get("use_case"), alias=get("alias"),
                from_version=get("from_version") or None, to_version=get("to_version"),
                reason=get("reason"), evidence=get("evidence"), actor=get("actor"), entry_id=run_id)
