"""The team set-up against real servers (docs/team.md): an MLflow tracking server and a Prefect
server, both backed by PostgreSQL, and a process work pool whose worker runs the pipeline.

Needs PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres): `.ci/run` starts it (and installs
it from Debian packages if it is missing). Without it the tests skip, or fail under CI=true. Each
test makes its own databases and drops them.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port, need_postgres

psycopg2 = pytest.importorskip("psycopg2")

PG = dict(host="127.0.0.1", port=5432, user="postgres")


def start_server(db: str, artifacts, port: int, log: Path | None = None) -> subprocess.Popen:
    """``mlflow server`` on database ``db``; its output goes to ``log`` (quoted if it fails)."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log or os.devnull, "ab") as out:  # the child keeps its own copy of the handle
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"postgresql://postgres@127.0.0.1:5432/{db}",
             "--artifacts-destination", str(artifacts)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
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
    pytest.fail(f"MLflow server on PostgreSQL did not come up within 120 s (exit {proc.poll()})"
                + (f"; log {log}:\n{tail(log)}" if log else ""))


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)


def tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@pytest.mark.slow
def test_ledger_on_a_postgres_backed_mlflow_server(tmp_path, monkeypatch) -> None:
    need_postgres("the team set-up tests")
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


# --- the team set-up: MLflow + Prefect servers on PostgreSQL, a process work pool and its worker ---

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RUN_TIMEOUT_S = 300  # the fraud pipeline on the tiny split takes ~30-60 s; the rest is start-up


class Processes:
    """Every process the team test starts, stopped (with anything they spawned) in reverse order."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen, Path]] = []

    def add(self, name: str, proc: subprocess.Popen, log: Path) -> None:
        self.started.append((name, proc, log))

    def spawn(self, name: str, cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
        with log.open("ab") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.add(name, proc, log)
        return proc

    def check_alive(self) -> None:
        for name, proc, log in self.started:
            if proc.poll() is not None:
                pytest.fail(f"{name} exited early (exit {proc.returncode}); log {log}:\n{tail(log)}")

    def stop_all(self) -> list[str]:
        import psutil

        problems = []
        for name, proc, _ in reversed(self.started):
            try:
                children = psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                children = []
            try:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired) as exc:
                problems.append(f"{name}: {type(exc).__name__}")
            # A flow-run subprocess may sit in its own session: stop whatever this one started.
            _, alive = psutil.wait_procs(children, timeout=5)
            for child in alive:
                child.kill()
            if alive:
                problems.append(f"{name}: killed {len(alive)} leftover child process(es)")
        return problems


def run_cli(name: str, cmd: list[str], env: dict, timeout: float = 180) -> str:
    """A one-shot command; fails the test naming it, with its output, if it fails or hangs."""
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{name} did not finish within {timeout:.0f} s: {' '.join(cmd)}\n"
                    f"{(exc.stdout or b'')[-3000:]!r}{(exc.stderr or b'')[-3000:]!r}")
    if done.returncode:
        pytest.fail(f"{name} failed (exit {done.returncode}): {' '.join(cmd)}\n"
                    f"{(done.stdout + done.stderr)[-4000:]}")
    return done.stdout


def flow_run(api: str, flow_run_id: str) -> dict:
    with urllib.request.urlopen(f"{api}/flow_runs/{flow_run_id}", timeout=10) as r:
        return json.load(r)


@pytest.mark.slow
@pytest.mark.team
def test_worker_runs_the_pipeline_deployment_against_postgres(tmp_path, monkeypatch, fast_overrides) -> None:
    """docs/team.md end to end: `deepflow deploy --pool`, a process worker runs train-pipeline/fraud,
    and the registry state lands in PostgreSQL with the Prefect flow run it came from."""
    need_postgres("the team set-up tests")
    from deepflow import dashboards

    suffix = uuid.uuid4().hex[:8]
    mlflow_db, prefect_db, pool = f"deepflow_mlflow_{suffix}", f"deepflow_prefect_{suffix}", f"team-{suffix}"
    logs, artifacts = tmp_path / "logs", tmp_path / "shared-artifacts"
    logs.mkdir()
    home = tmp_path / "prefect-home"
    # This process starts the Prefect server: its log and discovery record go under tmp_path.
    monkeypatch.setenv("PREFECT_HOME", str(home))
    monkeypatch.setenv("DEEPFLOW_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)

    ops_path = tmp_path / "operations.yaml"
    # Pinned members keep the run short whatever the use case's defaults; no quality floor: this
    # test is about where the run happens and what it records, not how good 2 epochs get.
    overrides = [*fast_overrides, "candidates=[shallow]", "baselines=[logistic_regression]", "promotion.floor=0.0"]
    ops_path.write_text(yaml.safe_dump({
        "pipelines": {"fraud": {"enabled": False, "overrides": overrides},  # the only deployment here:
                      **{name: {"enabled": False} for name in ("nlp", "traffic")}},  # entries scheduled by default
        "monitor": {"schedule": {"enabled": False}, "use_cases": ["fraud"]},
    }))

    admin = psycopg2.connect(dbname="postgres", **PG)
    admin.autocommit = True
    procs = Processes()
    created: list[str] = []
    try:
        for db in (mlflow_db, prefect_db):
            admin.cursor().execute(f"CREATE DATABASE {db}")
            created.append(db)

        # 1. MLflow tracking server on PostgreSQL, artifacts in a shared directory.
        mlflow_port = free_port()
        procs.add("MLflow server", start_server(mlflow_db, artifacts, mlflow_port, logs / "mlflow.log"),
                  logs / "mlflow.log")

        # 2. Prefect server on PostgreSQL (API only).
        try:
            prefect = dashboards.start_prefect_server(free_port(), ui=False, extra_env={
                "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{prefect_db}"})
        except dashboards.ServerError as exc:
            pytest.fail(str(exc))
        procs.add("Prefect server", prefect.process, prefect.log_path)
        api = f"{prefect.url}/api"

        # What every machine of the team sets (docs/team.md): the two servers and the lock.
        env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(home),
               "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
               "DEEPFLOW_LOCK_URL": f"postgresql://postgres@127.0.0.1:5432/{mlflow_db}",
               "DEEPFLOW_OPS_CONFIG": str(ops_path),
               "DEEPFLOW_REPORTS_DIR": str(tmp_path / "reports"),
               "DEEPFLOW_CACHE_DIR": str(tmp_path / "cache"),
               "COLUMNS": "200"}
        env.pop("DEEPFLOW_ARTIFACT_ROOT", None)
        # A regular file where the lock directory would be: any file lock fails the run, so the
        # alias moves must have gone through the PostgreSQL advisory lock.
        (tmp_path / "no-file-locks").write_text("")
        env["DEEPFLOW_LOCK_DIR"] = str(tmp_path / "no-file-locks")
        bin_dir = Path(sys.executable).parent

        # 3. A process work pool and the deployments on it.
        run_cli("prefect work-pool create", [str(bin_dir / "prefect"), "work-pool", "create", pool,
                                              "--type", "process"], env)
        deployed = run_cli("deepflow deploy", [str(bin_dir / "deepflow"), "deploy", "--pool", pool], env)
        assert "train-pipeline/fraud" in deployed, deployed

        # 4. A worker on the pool (INFO: its log shows the submission and the flow run's output).
        procs.spawn("Prefect worker", [str(bin_dir / "prefect"), "worker", "start", "--pool", pool,
                                       "--type", "process", "--name", f"worker-{suffix}"],
                    {**env, "PREFECT_LOGGING_LEVEL": "INFO"}, logs / "worker.log")

        # 5. Trigger the deployment through the API and wait for the worker to finish it.
        created_run = run_cli("prefect deployment run",
                              [str(bin_dir / "prefect"), "deployment", "run", "train-pipeline/fraud"], env)
        match = re.search(r"UUID: ([0-9a-f-]{36})", created_run)
        assert match, created_run
        fr_id = match.group(1)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        state = flow_run(api, fr_id)
        while state["state_type"] not in TERMINAL:
            procs.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"flow run {fr_id} still {state['state_name']} after {RUN_TIMEOUT_S} s; "
                            f"worker log:\n{tail(logs / 'worker.log')}")
            time.sleep(2)
            state = flow_run(api, fr_id)
        assert state["state_type"] == "COMPLETED", (
            f"flow run {fr_id} ended {state['state_name']}: {state['state'].get('message')}\n"
            f"worker log:\n{tail(logs / 'worker.log', 8000)}")
        deployment_id = state["deployment_id"]

        # 6. The registry, as PostgreSQL holds it.
        with psycopg2.connect(dbname=mlflow_db, **PG) as conn, conn.cursor() as cur:
            cur.execute("SELECT alias, version FROM registered_model_aliases WHERE name = 'fraud' ORDER BY alias")
            aliases = dict(cur.fetchall())
            assert "challenger" in aliases, f"nothing registered: {aliases}"
            version = aliases["challenger"]
            cur.execute("SELECT key, value FROM model_version_tags WHERE name = 'fraud' AND version = %s",
                        (version,))
            version_tags = dict(cur.fetchall())
            # First run: no champion to beat, so the gates alone decide.
            assert aliases.get("champion") == version, (
                f"v{version} not promoted: {version_tags.get('deepflow.decision_reasons')}")
            cur.execute("SELECT status FROM model_versions WHERE name = 'fraud' AND version = %s",
                        (version,))
            assert cur.fetchone()[0] == "READY"
            assert version_tags["deepflow.flow_run_id"] == version_tags["cert.flow_run_id"] == fr_id
            assert version_tags["cert.deployment"] == deployment_id
            assert version_tags["deepflow.member"] in {"shallow", "logistic_regression"}
            cur.execute("SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                        "JOIN tags k ON k.run_uuid = r.run_uuid WHERE t.key = 'deepflow.flow_run_id' "
                        "AND t.value = %s AND k.key = 'deepflow.kind' AND k.value = 'pipeline' "
                        "AND r.status = 'FINISHED'", (fr_id,))
            assert len(cur.fetchall()) == 1  # the pipeline run names the Prefect flow run
            cur.execute("SELECT a.value, v.value FROM runs r JOIN experiments e USING (experiment_id) "
                        "JOIN tags a ON a.run_uuid = r.run_uuid AND a.key = 'ledger.alias' "
                        "JOIN tags v ON v.run_uuid = r.run_uuid AND v.key = 'ledger.actor' "
                        "WHERE e.name = 'deepflow-ledger' ORDER BY r.start_time")
            assert cur.fetchall() == [("challenger", f"pipeline:{fr_id}"), ("champion", f"pipeline:{fr_id}")]
        assert list(artifacts.rglob("MLmodel")), f"no model under the shared artifact directory {artifacts}"

        # 7. The flow run, as Prefect's PostgreSQL holds it: completed, by the pool's worker.
        with psycopg2.connect(dbname=prefect_db, **PG) as conn, conn.cursor() as cur:
            cur.execute("SELECT fr.state_type::text, d.name, wp.name, wp.type FROM flow_run fr "
                        "JOIN deployment d ON d.id = fr.deployment_id "
                        "JOIN work_queue wq ON wq.id = fr.work_queue_id "
                        "JOIN work_pool wp ON wp.id = wq.work_pool_id WHERE fr.id = %s", (fr_id,))
            assert cur.fetchone() == ("COMPLETED", "fraud", pool, "process")
            cur.execute("SELECT w.name FROM worker w JOIN work_pool wp ON wp.id = w.work_pool_id "
                        "WHERE wp.name = %s", (pool,))
            assert (f"worker-{suffix}",) in cur.fetchall()
    finally:
        try:
            problems = procs.stop_all()
        finally:
            for db in created:
                admin.cursor().execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            admin.close()
    assert not problems, problems
