"""The promotion ledger: append-only, durable, serialised, and the only way aliases move."""

import os
import subprocess
import sys
import threading

import pytest

from deepflow import ledger, steps, tracking
from tests.conftest import PG_URL, postgres_up


def make_versions(n: int, name: str = "fraud") -> list[str]:
    run_id = tracking.start_run(name, "dummy")
    return [str(tracking.register(name, f"runs:/{run_id}/model", run_id, {})) for _ in range(n)]


@pytest.fixture
def locks(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFLOW_LOCK_DIR", str(tmp_path / "locks"))


def test_moves_are_recorded_in_order(store, locks) -> None:
    v1, v2 = make_versions(2)
    ledger.move_alias("fraud", "champion", v1, reason="first", evidence="e1", actor="cli:test")
    m = ledger.move_alias("fraud", "champion", v2, reason="better", evidence="e2", actor="pipeline:x")
    assert (m.from_version, m.to_version) == (v1, v2) and m.entry_id
    moves = ledger.history("fraud")
    assert [(x.from_version, x.to_version, x.reason, x.actor) for x in moves] == [
        (None, v1, "first", "cli:test"), (v1, v2, "better", "pipeline:x")]
    assert ledger.consistent("fraud")
    assert ledger.history("paysim") == []


@pytest.mark.slow  # several seconds: in the slow layer (CI runs it), the default run stays fast
def test_ledger_survives_a_restart(store, locks) -> None:
    (v1,) = make_versions(1)
    ledger.move_alias("fraud", "champion", v1, reason="first", evidence="e", actor="cli:test")
    # A new interpreter (a "restarted" deepflow) sees the same history through the same store.
    code = ("from deepflow import ledger; m = ledger.history('fraud'); "
            "print(len(m), m[0].to_version, ledger.consistent('fraud'))")
    out = subprocess.run([sys.executable, "-c", code], env=os.environ.copy(), capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    assert out == ["1", v1, "True"]


def test_failed_ledger_write_leaves_the_alias_alone(store, locks, monkeypatch) -> None:
    """The entry is written before the registry call: no entry, no move."""
    v1, v2 = make_versions(2)
    ledger.move_alias("fraud", "champion", v1, reason="first", evidence="e", actor="t")

    def broken(move):
        raise OSError("ledger store unavailable")

    with monkeypatch.context() as patch:
        patch.setattr(ledger, "_append", broken)
        with pytest.raises(OSError):
            ledger.move_alias("fraud", "champion", v2, reason="x", evidence="e", actor="t")
    assert str(tracking.version_by_alias("fraud", "champion").version) == v1
    assert ledger.consistent("fraud")


def test_rollback_round_trip(store, locks) -> None:
    v1, v2, v3 = make_versions(3)
    for v in (v1, v2, v3):
        ledger.move_alias("fraud", "champion", v, reason=f"to {v}", evidence="e", actor="pipeline:t")
    back = steps.rollback("fraud", "v3 misbehaves", actor="cli:test")
    assert (back["from_version"], back["to_version"]) == (v3, v2)
    again = steps.rollback("fraud", "v2 too", actor="cli:test")  # previous of v2 is v1
    assert again["to_version"] == v1
    forward = steps.rollback("fraud", "restore", to_version=v3, actor="cli:test")
    assert forward["to_version"] == v3
    assert [m.to_version for m in ledger.history("fraud")] == [v1, v2, v3, v2, v1, v3]
    assert ledger.history("fraud")[-1].reason == "rollback: restore" and ledger.consistent("fraud")
    with pytest.raises(ValueError, match="already @champion"):
        steps.rollback("fraud", "noop", to_version=v3)
    with pytest.raises(ValueError, match="needs a reason"):
        steps.rollback("fraud", "  ")


def test_concurrent_moves_leave_alias_and_ledger_agreeing(store, locks) -> None:
    versions = make_versions(6)
    ledger.move_alias("fraud", "champion", versions[0], reason="start", evidence="e", actor="t")
    errors: list[BaseException] = []

    def promote(v: str) -> None:
        try:
            ledger.move_alias("fraud", "champion", v, reason=f"race {v}", evidence="e", actor=f"t{v}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions[1:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    moves = ledger.history("fraud", "champion")
    assert len(moves) == 6
    # Serialised: every move starts where the previous one ended.
    assert all(b.from_version == a.to_version for a, b in zip(moves, moves[1:], strict=False))
    assert ledger.consistent("fraud")


@pytest.mark.slow  # several seconds: in the slow layer (CI runs it), the default run stays fast
def test_no_registration_without_validation_of_the_exact_data(store, locks, prepared_dir) -> None:
    import pandas as pd

    overrides = [f"prepared_dir={prepared_dir}"]
    checked = steps.validate_data("fraud", overrides)
    result = {"member": "shallow", "kind": "candidate", "run_id": "r", "model_uri": "m", "threshold": 0.5,
              "val": {"auprc": 0.5}, "test": {"auprc": 0.5}, "timings": {}}
    with pytest.raises(RuntimeError, match="passing validation"):
        steps.register_best("fraud", overrides, [result], {**checked, "result": "failed"}, "run")
    test = pd.read_parquet(prepared_dir / "test.parquet")
    test.iloc[:-1].to_parquet(prepared_dir / "test.parquet")  # the data moves on after validation
    with pytest.raises(RuntimeError, match="changed after it was validated"):
        steps.register_best("fraud", overrides, [result], checked, "run")
    assert tracking.registered_models() == []


WORKER = """
import sys
from deepflow import ledger
for v in sys.argv[2:]:
    ledger.move_alias("fraud", "champion", v, reason="proc " + sys.argv[1], evidence="e", actor=sys.argv[1])
"""


def race_two_processes(versions: list[str]) -> None:
    """Two OS processes promoting into the same alias at the same time."""
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, name, *vs], env=os.environ.copy())
             for name, vs in (("a", versions[0::2]), ("b", versions[1::2]))]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    moves = ledger.history("fraud", "champion")
    assert len(moves) == len(versions)
    assert moves[0].from_version is None
    assert all(b.from_version == a.to_version for a, b in zip(moves, moves[1:], strict=False))
    assert ledger.consistent("fraud")


@pytest.mark.slow
def test_two_processes_with_the_file_lock(store, locks) -> None:
    race_two_processes(make_versions(8))


@pytest.mark.slow
def test_two_processes_with_the_postgres_advisory_lock(store, monkeypatch) -> None:
    if not postgres_up():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    monkeypatch.setenv("DEEPFLOW_LOCK_URL", PG_URL)
    monkeypatch.setenv("DEEPFLOW_LOCK_DIR", "/nonexistent/not-used")
    race_two_processes(make_versions(8))
