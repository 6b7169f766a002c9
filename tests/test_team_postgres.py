"""The ledger and registry against a real MLflow tracking server backed by PostgreSQL.

Needs PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres): `.ci/run` starts it if it is
installed and stopped. The test makes its own database and drops it afterwards.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from tests.conftest import free_port, postgres_up

psycopg2 = pytest.importorskip("psycopg2")

PG = dict(host="127.0.0.1", port=5432, user="postgres")


def start_server(db: str, artifacts, port: int) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"postgresql://postgres@127.0.0.1:5432/{db}",
         "--artifacts-destination", str(artifacts)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    stop(proc)
    pytest.fail("MLflow server on PostgreSQL did not come up within 120 s")


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)


@pytest.mark.slow
def test_ledger_on_a_postgres_backed_mlflow_server(tmp_path, monkeypatch) -> None:
    if not postgres_up():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    from deepflow import ledger, steps, tracking

    db = f"deepflow_test_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(dbname="postgres", **PG)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {db}")
    port = free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("DEEPFLOW_LOCK_DIR", str(tmp_path / "locks"))
    server = start_server(db, tmp_path / "artifacts", port)
    try:
        run_id = tracking.start_run("fraud", "dummy")
        versions = [str(tracking.register("fraud", f"runs:/{run_id}/model", run_id, {})) for _ in range(3)]
        for v in versions:
            ledger.move_alias("fraud", "champion", v, reason=f"to {v}", evidence="e", actor="pipeline:pg")
        steps.rollback("fraud", "bad release", actor="cli:pg")

        stop(server)  # restart the server: the ledger lives in PostgreSQL, not in the process
        server = start_server(db, tmp_path / "artifacts", port)
        moves = ledger.history("fraud")
        assert [m.to_version for m in moves] == [*versions, versions[1]]
        assert moves[-1].reason == "rollback: bad release" and ledger.consistent("fraud")
        assert str(tracking.version_by_alias("fraud", "champion").version) == versions[1]

        with psycopg2.connect(dbname=db, **PG) as conn, conn.cursor() as cur:
            cur.execute("SELECT alias, version FROM registered_model_aliases WHERE name = 'fraud'")
            assert cur.fetchall() == [("champion", int(versions[1]))]
            cur.execute("SELECT count(*) FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
                        "WHERE e.name = %s", (ledger.EXPERIMENT,))
            assert cur.fetchone()[0] == 4
    finally:
        stop(server)
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        admin.close()
