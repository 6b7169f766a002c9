"""Registry and ledger under misuse and faults: gates on rollback, refused no-op moves, rollback
history, a registry call that fails midway, a process that dies mid-move, two processes racing.

Versions are registered without models (cheap); their promotion decision is a version tag, as the
pipeline writes it.
"""

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from deepflow import ledger, steps, tracking
from deepflow.cli import app
from deepflow.promotion import Evidence, Policy, decide

NAME = "nlp"  # a shipped entry, so the CLI's entry check passes; no model is ever loaded


@pytest.fixture
def locks(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFLOW_LOCK_DIR", str(tmp_path / "locks"))


def version(decision: str | None = "promoted", reasons: str = "") -> str:
    run_id = tracking.start_run(NAME, "dummy")
    tags = {"deepflow.decision": decision, "deepflow.decision_reasons": reasons} if decision else {}
    return str(tracking.register(NAME, f"runs:/{run_id}/model", run_id, tags))


def champion() -> str | None:
    mv = tracking.version_by_alias(NAME, tracking.CHAMPION)
    return str(mv.version) if mv else None


def promote(v: str) -> ledger.Move:
    return ledger.move_alias(NAME, tracking.CHAMPION, v, reason="promote: test", evidence="e", actor="test")


def chain_ok(moves: list[ledger.Move]) -> bool:
    """Every move that happened starts where the previous one ended, and none stays in place."""
    done = [m for m in moves if m.status == ledger.DONE]
    return (all(b.from_version == a.to_version for a, b in zip(done, done[1:], strict=False))
            and all(m.from_version != m.to_version for m in done))


# 1. A version that failed its gates is not put in production by a rollback, unless forced.

def test_rollback_refuses_a_rejected_version_unless_forced(store, locks) -> None:
    v1 = version()
    v2 = version("rejected", "f1 0.1000 < floor 0.5000")
    v3 = version(None)  # registered, never decided
    promote(v1)
    cli = CliRunner()
    refused = cli.invoke(app, ["rollback", NAME, "--to", v2, "--reason", "try v2"])
    assert refused.exit_code == 1
    said = " ".join(refused.output.split())
    assert f"v{v2} failed its promotion gates" in said and "f1 0.1000 < floor 0.5000" in said and "--force" in said
    never = cli.invoke(app, ["rollback", NAME, "--to", v3, "--reason", "try v3"])
    assert never.exit_code == 1 and "never passed the promotion gates" in " ".join(never.output.split())
    assert champion() == v1 and len(ledger.history(NAME)) == 1  # nothing moved, nothing recorded

    forced = cli.invoke(app, ["rollback", NAME, "--to", v2, "--force", "--reason", "v1 is down"])
    assert forced.exit_code == 0, forced.output
    assert "warning:" in forced.output and "failed its promotion gates" in forced.output
    last = ledger.history(NAME)[-1]
    assert (last.from_version, last.to_version, last.reason) == (v1, v2, "rollback: v1 is down")
    assert "failed its promotion gates" in last.forced and "floor" in last.forced
    assert champion() == v2 and ledger.consistent(NAME)
    assert "FORCED" in cli.invoke(app, ["history", NAME]).output


# 2. A move to where the alias already is: refused, not recorded; promote states the facts.

def test_no_op_moves_are_refused_and_not_recorded(store, locks) -> None:
    v1 = version()
    promote(v1)
    with pytest.raises(ledger.NoOpMove, match=f"already v{v1}.*not recorded"):
        promote(v1)
    with pytest.raises(ledger.NoOpMove, match="already @champion"):
        steps.rollback(NAME, "noop", to_version=v1)
    assert [(m.from_version, m.to_version) for m in ledger.history(NAME)] == [(None, v1)]


def test_promote_refuses_a_challenger_that_is_the_champion(store, locks) -> None:
    v1 = version()
    v2 = version("rejected", "f1 below floor")
    promote(v1)
    ledger.move_alias(NAME, tracking.CHALLENGER, v2, reason="best", evidence="e", actor="test")
    steps.rollback(NAME, "forced for the test", to_version=v2, force=True)
    before = ledger.history(NAME)
    result = CliRunner().invoke(app, ["promote", NAME])
    assert result.exit_code == 1
    assert f"@challenger v{v2} is already @champion" in " ".join(result.output.split())
    assert ledger.history(NAME) == before and champion() == v2
    assert tracking.get_version(NAME, v2).tags["deepflow.decision"] == "rejected"  # no new, wrong decision


def test_the_policy_never_calls_the_champion_itself_no_champion() -> None:
    same = Evidence(metric="f1", challenger_version="2", challenger={"f1": 0.9}, latency_p95_ms=1.0, size_mb=1.0,
                    champion_version="2", champion=None)
    decision = decide(Policy(), same)
    assert not decision.promote and [c.name for c in decision.checks if not c.passed] == ["distinct"]
    assert "no champion yet" not in decision.summary()
    unscored = Evidence(**{**same.__dict__, "champion_version": "1"})  # schema change accepted: not compared
    assert "champion v1 not compared" in decide(Policy(), unscored).summary()


def test_promote_message_names_the_previous_champion(monkeypatch) -> None:
    result = {"challenger": "3", "previous_champion": "1", "champion": "3", "promoted": True,
              "reasons": ["f1 gain over v1 +0.02"]}
    monkeypatch.setattr(steps, "promote_challenger", lambda *a, **k: result)
    said = " ".join(CliRunner().invoke(app, ["promote", NAME]).output.split())
    assert "v3 promoted; @champion v1 -> v3" in said
    monkeypatch.setattr(steps, "promote_challenger", lambda *a, **k: {**result, "previous_champion": None})
    assert "@champion none -> v3" in CliRunner().invoke(app, ["promote", NAME]).output
    kept = {**result, "champion": "1", "promoted": False}
    monkeypatch.setattr(steps, "promote_challenger", lambda *a, **k: kept)
    assert "v3 not promoted; @champion stays v1" in CliRunner().invoke(app, ["promote", NAME]).output


# 3. Rollback follows the ledger: back through the champions, never ping-pong, refuse at the start.

def test_the_reported_sequence(store, locks) -> None:
    """v1 champion, v2 rejected: forced rollback to v2, promote (refused), rollback returns to v1."""
    v1, v2 = version(), version("rejected", "f1 below floor")
    promote(v1)
    steps.rollback(NAME, "try v2", to_version=v2, force=True)
    back = steps.rollback(NAME, "v2 misbehaves")
    assert (back["from_version"], back["to_version"]) == (v2, v1) and champion() == v1
    with pytest.raises(LookupError, match=f"no champion before v{v1}"):
        steps.rollback(NAME, "again")


def test_repeated_rollbacks_walk_back_and_never_ping_pong(store, locks) -> None:
    v1, v2, v3, v4 = (version() for _ in range(4))
    for v in (v1, v2, v3):
        promote(v)
    assert steps.rollback(NAME, "v3 bad")["to_version"] == v2
    assert steps.rollback(NAME, "v2 bad too")["to_version"] == v1
    with pytest.raises(LookupError, match="no champion before"):
        steps.rollback(NAME, "and v1?")
    promote(v4)  # a new champion over v1: rollback returns to v1, then nothing
    assert steps.rollback(NAME, "v4 bad")["to_version"] == v1
    with pytest.raises(LookupError):
        steps.rollback(NAME, "again")
    # --to an earlier champion drops everything above it: v3 is not returned to afterwards.
    promote(v2)
    promote(v3)
    assert steps.rollback(NAME, "straight to v1", to_version=v1)["to_version"] == v1
    with pytest.raises(LookupError):
        steps.rollback(NAME, "back to v3?")
    assert ledger.consistent(NAME) and chain_ok(ledger.history(NAME))


def test_rollback_skips_no_op_entries_of_older_ledgers(store, locks) -> None:
    """Ledgers written before no-op moves were refused may hold a v2 -> v2 entry."""
    v1, v2 = version(), version()
    promote(v1)
    promote(v2)
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    ledger._append(ledger.Move(time=now, use_case=NAME, alias="champion", from_version=v2, to_version=v2,
                               reason="promote: no champion yet", evidence="e", actor="old"))
    assert steps.rollback(NAME, "v2 bad")["to_version"] == v1 and ledger.consistent(NAME)


# 4. The registry call fails midway: the ledger says what happened, and agrees with the registry.

def test_registry_call_that_fails_is_recorded_as_failed(store, locks, monkeypatch) -> None:
    v1, v2, v3 = version(), version(), version()
    promote(v1)

    def down(*_a):
        raise ConnectionError("registry unavailable")

    with monkeypatch.context() as patch:
        patch.setattr(tracking, "set_alias", down)
        with pytest.raises(ConnectionError):
            promote(v2)
    last = ledger.history(NAME)[-1]
    assert (last.to_version, last.status) == (v2, ledger.FAILED) and "registry unavailable" in last.error
    assert champion() == v1 and ledger.consistent(NAME) and ledger.previous_champions(NAME) == []
    assert promote(v3).from_version == v1 and ledger.consistent(NAME) and chain_ok(ledger.history(NAME))
    assert "failed: ConnectionError" in " ".join(CliRunner().invoke(app, ["history", NAME]).output.split())


def test_registry_call_that_applied_then_raised_is_recorded_as_done(store, locks, monkeypatch) -> None:
    v1, v2 = version(), version()
    promote(v1)
    real = tracking.set_alias

    def lost_reply(*args):
        real(*args)
        raise TimeoutError("no reply from the registry")

    monkeypatch.setattr(tracking, "set_alias", lost_reply)
    with pytest.raises(TimeoutError):
        promote(v2)
    assert champion() == v2 and ledger.history(NAME)[-1].status == ledger.DONE and ledger.consistent(NAME)


def test_ledger_that_cannot_finish_its_entry_still_agrees(store, locks, monkeypatch) -> None:
    v1, v2, v3 = version(), version(), version()
    promote(v1)
    real = ledger._mark

    def broken(entry_id, status, error=""):
        raise OSError("ledger store went away")

    monkeypatch.setattr(ledger, "_mark", broken)
    with pytest.raises(OSError):
        promote(v2)  # the alias moved; its entry is still marked pending
    assert champion() == v2 and ledger.history(NAME)[-1].status == ledger.DONE and ledger.consistent(NAME)
    monkeypatch.setattr(ledger, "_mark", real)
    promote(v3)  # settles the pending entry on disk
    assert [m.status for m in ledger._entries(NAME, "champion")] == [ledger.DONE] * 3


DIES = """
import os, sys
from deepflow import ledger, tracking
real, after = tracking.set_alias, sys.argv[2] == "after"
def dies(*args):
    if after:
        real(*args)
    os._exit(9)  # killed mid-move: no except, no finally
tracking.set_alias = dies
ledger.move_alias("nlp", "champion", sys.argv[1], reason="dies", evidence="e", actor="doomed")
"""


@pytest.mark.slow
@pytest.mark.parametrize("when", ["before", "after"])
def test_a_process_killed_mid_move(store, locks, when) -> None:
    v1, v2, v3 = version(), version(), version()
    promote(v1)
    proc = subprocess.run([sys.executable, "-c", DIES, v2, when], env=os.environ.copy(), timeout=120)
    assert proc.returncode == 9
    moved = when == "after"
    assert champion() == (v2 if moved else v1) and ledger.consistent(NAME)
    assert ledger.history(NAME)[-1].status == (ledger.DONE if moved else ledger.PENDING)
    promote(v3)  # the next move writes the verdict down
    assert [m.status for m in ledger._entries(NAME, "champion")] == [
        ledger.DONE, ledger.DONE if moved else ledger.FAILED, ledger.DONE]
    assert ledger.history(NAME)[-1].from_version == (v2 if moved else v1) and chain_ok(ledger.history(NAME))


# 5. Two processes moving one entry's @champion at once, with collisions, on one SQLite store.

RACER = """
import sys
from deepflow import ledger
moved = refused = 0
for v in sys.argv[2:]:
    try:
        ledger.rollback("nlp", "race " + sys.argv[1], to_version=v, actor=sys.argv[1])
        moved += 1
    except (ledger.NoOpMove, ledger.StaleMove):
        refused += 1
print(moved, refused)
"""


@pytest.mark.slow
def test_two_processes_racing_rollbacks(store, locks) -> None:
    v1, v2, v3 = version(), version(), version()
    promote(v1)
    # each target twice in a row: the second is a no-op unless the other process moved in between
    targets = [v2, v2, v3, v3, v1, v1] * 2
    procs = [subprocess.Popen([sys.executable, "-c", RACER, name, *targets], env=os.environ.copy(),
                              stdout=subprocess.PIPE, text=True) for name in ("a", "b")]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    moved, refused = (sum(int(o.split()[i]) for o in outs) for i in (0, 1))
    assert moved + refused == 2 * len(targets) and refused >= 1
    moves = ledger.history(NAME, "champion")
    assert len(moves) == 1 + moved and all(m.status == ledger.DONE for m in moves)
    assert chain_ok(moves) and ledger.consistent(NAME)
    with sqlite3.connect(store / "mlflow.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
