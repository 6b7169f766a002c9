"""The promotion ledger: an append-only record of every alias move, and the one way to move one.

Each move is an MLflow run in the ``deepflow-ledger`` experiment, so the ledger lives wherever the
registry lives (embedded SQLite, or a PostgreSQL-backed server) and survives restarts with it.
Moves of one use case are serialised by a lock (a file lock, or a PostgreSQL advisory lock for
several hosts). Under that lock a move is written ahead: the entry is appended as ``pending``, the
registry alias is set, and the entry is marked ``done`` (or ``failed``, with the error, when the
registry call raised and the alias did not move). An entry's fields are never edited; only its
status goes from pending to done or failed, once. A process that dies in between leaves a pending
entry: readers settle it from the registry (done if the alias points at it) and the next move of
that alias writes the verdict down. A move to the version the alias already has is refused and
not recorded.
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

from filelock import FileLock

from deepflow import settings, tracking
from deepflow.problems import clip

EXPERIMENT = "deepflow-ledger"
LOCK_TIMEOUT_S = 600
ROLLBACK = "rollback:"  # reason prefix of rollback moves
DONE, PENDING, FAILED = "done", "pending", "failed"
UNKNOWN = "?"  # the registry could not be read
ANY = "*"  # ``move_alias(if_from=ANY)``: from wherever the alias is


class NoOpMove(ValueError):
    """The alias already points at that version: nothing moved, nothing recorded."""


class StaleMove(ValueError):
    """The alias moved since the caller looked at it (another promotion or rollback won the race)."""


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
    forced: str = ""  # set when moved despite failed gates (``rollback --force``): why it was refused
    status: str = DONE  # pending while the registry call is under way; failed if the alias did not move
    error: str = ""  # a failed move's error
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


def move_alias(use_case: str, alias: str, to_version: str, *, reason: str, evidence: str, actor: str,
               forced: str = "", if_from: str | None = ANY) -> Move:
    """Point ``use_case@alias`` at ``to_version`` and record the move, under the use case's lock.

    Refused, with nothing recorded: a move to the version the alias already has (``NoOpMove``), and,
    with ``if_from`` (a version, or None for no version), a move when the alias no longer points there
    (``StaleMove``: the caller decided against a version that has since been replaced). The entry is
    written before the registry call and says how the move ended; see the module docstring.
    """
    to_version = str(to_version)
    with lock(use_case):
        current = tracking.version_by_alias(use_case, alias)
        before = str(current.version) if current else None
        _settle(use_case, alias, before)
        if before == to_version:
            raise NoOpMove(f"{use_case}@{alias} is already v{to_version}: nothing to move (not recorded)")
        if if_from != ANY and before != if_from:
            raise StaleMove(f"{use_case}@{alias} moved from {_v(if_from)} to {_v(before)} while this move was "
                            f"prepared; not moved to v{to_version} (not recorded): look again and retry")
        move = Move(time=datetime.now(UTC).isoformat(timespec="milliseconds"), use_case=use_case, alias=alias,
                    from_version=before, to_version=to_version, reason=reason, evidence=evidence, actor=actor,
                    forced=forced, status=PENDING)
        entry_id = _append(move)  # if this fails, the alias is not touched
        try:
            tracking.set_alias(use_case, alias, to_version)
        except BaseException as exc:
            now = _alias_now(use_case, alias)  # it may have gone through (a reply lost on the way back)
            if now != UNKNOWN:  # else the entry stays pending, settled by the next move
                moved = now == to_version
                with suppress(Exception):
                    _mark(entry_id, DONE if moved else FAILED, "" if moved else f"{type(exc).__name__}: {exc}")
            raise
        _mark(entry_id, DONE)
    return replace(move, status=DONE, entry_id=entry_id)


def history(use_case: str, alias: str | None = None) -> list[Move]:
    """Every recorded move of ``use_case`` (optionally one alias), oldest first, failed ones included.

    A ``pending`` entry (its process died, or it is under way now) is reported as done when the
    alias went to it (the next entry starts from it, or the registry points at it now), as failed
    when the next entry shows the alias stayed, and as pending otherwise.
    """
    return _settled(_entries(use_case, alias))


def moves(use_case: str, alias: str) -> list[Move]:
    """The moves of ``use_case@alias`` that happened, oldest first."""
    return [m for m in history(use_case, alias) if m.status == DONE]


def previous_champions(use_case: str) -> list[str]:
    """The champions a rollback returns to, the next one last.

    Each move of @champion stacks the version it replaced. A rollback to a version on the stack
    returns to it and drops everything above it, so repeated rollbacks walk back through the
    history (v3 -> v2 -> v1) and never return to a version that was rolled back from; a rollback
    ``--to`` any other version stacks the one it replaced, like a promotion.
    """
    stack: list[str] = []
    for m in moves(use_case, tracking.CHAMPION):
        if m.from_version == m.to_version:  # a no-op recorded before they were refused
            continue
        if m.reason.startswith(ROLLBACK) and m.to_version in stack:
            del stack[len(stack) - 1 - stack[::-1].index(m.to_version):]
        elif m.from_version:
            stack.append(m.from_version)
    return stack


def consistent(use_case: str, alias: str = tracking.CHAMPION) -> bool:
    """Does the alias point where the ledger's last move that happened says it does?"""
    done = moves(use_case, alias)
    current = tracking.version_by_alias(use_case, alias)
    if not done:
        return current is None
    return current is not None and str(current.version) == done[-1].to_version


def gates_refusal(use_case: str, version: str) -> str:
    """Why ``version`` must not be put in production without ``--force``; "" when it passed its gates.

    Passed: its recorded decision is "promoted", or (a version from before decisions were recorded)
    it served as @champion through a move that was not forced. Raises if the version does not exist.
    """
    tags = tracking.get_version(use_case, str(version)).tags or {}
    decision = tags.get("deepflow.decision")
    if decision == "promoted":
        return ""
    if decision:
        why = tags.get("deepflow.decision_reasons") or "no reasons recorded"
        return f"v{version} failed its promotion gates (decision {decision!r}: {clip(why, 300)})"
    if any(m.to_version == str(version) and not m.forced for m in moves(use_case, tracking.CHAMPION)):
        return ""
    return f"v{version} never passed the promotion gates (no recorded decision, never @champion)"


def rollback(use_case: str, reason: str, to_version: str | None = None, actor: str | None = None,
             force: bool = False) -> Move:
    """Move ``@champion`` back: to ``to_version``, or to the champion before the current one
    (``previous_champions``). A version that did not pass its gates is refused unless ``force``;
    a forced move records why it was refused."""
    if not reason.strip():
        raise ValueError(f"{use_case}: a rollback needs a reason (--reason)")
    current = tracking.version_by_alias(use_case, tracking.CHAMPION)
    if current is None:
        raise LookupError(f"{use_case}: no @champion to roll back")
    now = str(current.version)
    if to_version is None:
        earlier = [v for v in previous_champions(use_case) if v != now]
        if not earlier:
            raise LookupError(f"{use_case}: the ledger shows no champion before v{now} to roll back to "
                              "(`deepflow history` lists the moves); name a version with --to")
        to_version = earlier[-1]
    to_version = str(to_version)
    if to_version == now:
        raise NoOpMove(f"{use_case}: v{to_version} is already @champion; nothing to roll back (not recorded)")
    refusal = gates_refusal(use_case, to_version)
    if refusal and not force:
        raise ValueError(f"{use_case}: {refusal}; refusing to make it @champion. `deepflow rollback {use_case} "
                         f"--to {to_version} --force --reason ...` does it anyway and records the override")
    return move_alias(use_case, tracking.CHAMPION, to_version, reason=f"{ROLLBACK} {reason}",
                      evidence=f"models:/{use_case}/{now}", actor=actor or actor_for_cli(),
                      forced=refusal if force else "", if_from=now)


def _v(version: str | None) -> str:
    return f"v{version}" if version else "no version"


def _alias_now(use_case: str, alias: str) -> str | None:
    try:
        current = tracking.version_by_alias(use_case, alias)
    except Exception:  # the registry cannot say: a pending entry stays pending
        return UNKNOWN
    return str(current.version) if current else None


def _settled(entries: list[Move], now: dict[str, str | None] | None = None) -> list[Move]:
    """Resolve pending entries (see ``history``). ``now``: the aliases' versions read under the lock
    (no move under way), which makes a last pending entry the alias does not point at failed."""
    final, now = now is not None, dict(now or {})
    out = []
    for i, m in enumerate(entries):
        if m.status == PENDING:
            later = next((n for n in entries[i + 1:] if n.alias == m.alias), None)
            if later is not None:
                status = DONE if later.from_version == m.to_version else FAILED
            else:
                if m.alias not in now:
                    now[m.alias] = _alias_now(m.use_case, m.alias)
                status = DONE if now[m.alias] == m.to_version else (FAILED if final else PENDING)
            m = replace(m, status=status, error=m.error or ("interrupted: the alias did not move"
                                                            if status == FAILED else ""))
        out.append(m)
    return out


def _settle(use_case: str, alias: str, current: str | None) -> None:
    """Under the lock: write down the verdict on entries left pending by a process that died."""
    if not _entries(use_case, alias, f" and tags.`ledger.status` = '{PENDING}'"):
        return
    raw = _entries(use_case, alias)
    for before, after in zip(raw, _settled(raw, {alias: current}), strict=True):
        if before.status == PENDING:
            _mark(after.entry_id, after.status, after.error)


def _entries(use_case: str, alias: str | None, extra: str = "") -> list[Move]:
    client = tracking.client()
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return []
    query = f"tags.`ledger.use_case` = '{use_case}'"
    if alias:
        query += f" and tags.`ledger.alias` = '{alias}'"
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], query + extra, max_results=1000, page_token=token,
                                  order_by=["attributes.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token:
            break
    found = [_from_tags(r.info.run_id, r.data.tags) for r in runs]
    return sorted(found, key=lambda m: m.time)


def _append(move: Move) -> str:
    tags = {f"ledger.{k}": ("" if v is None else str(v)) for k, v in asdict(move).items() if k != "entry_id"}
    run_id = tracking.start_run(EXPERIMENT, f"{move.use_case}@{move.alias}: "
                                f"{move.from_version or '-'} -> {move.to_version}", tags=tags)
    tracking.end_run(run_id)
    return run_id


def _mark(entry_id: str, status: str, error: str = "") -> None:
    client = tracking.client()
    if error:
        client.set_tag(entry_id, "ledger.error", clip(error, 1000))
    client.set_tag(entry_id, "ledger.status", status)


def _from_tags(run_id: str, tags: dict[str, str]) -> Move:
    get = lambda k: tags.get(f"ledger.{k}", "")  # noqa: E731
    return Move(time=get("time"), use_case=get("use_case"), alias=get("alias"),
                from_version=get("from_version") or None, to_version=get("to_version"),
                reason=get("reason"), evidence=get("evidence"), actor=get("actor"), forced=get("forced"),
                status=get("status") or DONE, error=get("error"), entry_id=run_id)
