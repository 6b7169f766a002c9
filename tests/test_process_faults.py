"""Process faults: a `deepflow run` killed with SIGKILL mid-training, an MLflow tracking server that
dies mid-run or is down from the start, and the error a failing run prints.

The slow tests run the real command in a subprocess (the cheapest entry, paysim, on a temporary
MLflow store and Prefect home) and kill real processes by PID; servers bind 127.0.0.1 only.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from deepflow import processes, settings, tracking
from tests.conftest import free_port
from tests.faults import refused, wait_for

ENTRY = "paysim"  # the cheapest shipped entry: three members on a 3 MB sample


# --- helpers -------------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by whoever adopted it, is not)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def listening_ports(pid: int) -> set[int]:
    """TCP ports ``pid`` listens on (its socket inodes matched against /proc/net/tcp*)."""
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # gone, or not ours to read
        return set()
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def command_env(tmp_path: Path, tracking_uri: str) -> dict[str, str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "DEEPFLOW_REPORTS_DIR": str(tmp_path / "reports"),
           "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    return env


def deepflow(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[subprocess.Popen, Path, Path]:
    """``deepflow ARGS`` in a subprocess (stdout and stderr to files)."""
    out, err = tmp_path / f"out-{time.monotonic_ns()}.txt", tmp_path / f"err-{time.monotonic_ns()}.txt"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen([sys.executable, "-m", "deepflow.cli", *args], env=env, stdout=o, stderr=e,
                                cwd=tmp_path)
    return proc, out, err


def stop(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` (its process group when it leads one) unless it has ended."""
    if proc.poll() is None:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    proc.wait(timeout=30)


def prepared(tmp_path: Path) -> str:
    """The entry's splits prepared under ``tmp_path`` (a fresh clone has no ``data/prepared``), as an override."""
    from deepflow.usecases.fraud import paysim

    out = tmp_path / "prepared"
    out.mkdir()
    raw = pd.read_csv(settings.PROJECT_ROOT / "data/external/paysim/paysim_sample.csv")
    for name, frame in paysim.prepare(raw).items():
        frame.to_parquet(out / f"{name}.parquet", index=False)
    return f"prepared_dir={out}"


def runs(uri: str) -> list:
    c = MlflowClient(uri)
    return c.search_runs([e.experiment_id for e in c.search_experiments()])


# --- kill -9 mid-training --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_kill_9_mid_training_leaves_no_server_and_the_next_run_fails_its_runs(tmp_path, monkeypatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = command_env(tmp_path, uri)
    data = prepared(tmp_path)
    proc, out, _ = deepflow(tmp_path, env, "run", ENTRY, "--set", "train.epochs=50", "--set", data)
    try:
        wait_for("training to start", lambda: "train shallow" in out.read_text(), 90)
        wait_for("the member's MLflow run", lambda: len([r for r in runs(uri) if r.info.status == "RUNNING"]) >= 2, 30)
        servers = [pid for pid in children(proc.pid) if listening_ports(pid)]
        assert servers, "the run's Prefect API server (a child that listens) was not found"
        ports = {port for pid in servers for port in listening_ports(pid)}
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        stop(proc)

    # No child server outlives the killed run: its processes are gone and nothing listens on its ports.
    # Both are waited for: a killed process's leader shows as a zombie while its other threads are
    # still exiting, and its sockets close only once the last of them is gone.
    wait_for("the child server to die", lambda: not any(alive(pid) for pid in servers), 10)
    wait_for(f"port(s) {ports} of the killed run's server to refuse connections",
             lambda: all(refused(port) for port in ports), 10,
             detail=lambda: "listeners: " + str({
                 pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:200]
                 for pid in (int(p.name) for p in Path("/proc").glob("[0-9]*")) if listening_ports(pid) & ports}))
    left = [r for r in runs(uri) if r.info.status == "RUNNING"]
    assert {r.data.tags["deepflow.owner.pid"] for r in left} == {str(proc.pid)}

    # The next run marks them FAILED with the reason, and their Prefect flow run Crashed, then goes on
    # (here it fails by design, at its first training step).
    nxt, _, err = deepflow(tmp_path, env, "train", ENTRY, "train.batch_size=0", data)
    try:
        assert nxt.wait(timeout=100) == 1, err.read_text()
    finally:
        stop(nxt)
    assert "was left RUNNING" in err.read_text()
    for run in (r for r in runs(uri) if r.info.run_id in {x.info.run_id for x in left}):
        assert run.info.status == "FAILED"
        reason = run.data.tags[tracking.FAILURE]
        assert reason.startswith(f"stale: owner process {proc.pid} on {socket.gethostname()} is gone")
        assert f"marked FAILED by process {nxt.pid}" in reason
    flow_run = next(r.data.tags["deepflow.flow_run_id"] for r in left if "deepflow.flow_run_id" in r.data.tags)
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:
        (state,) = db.execute("select state_type from flow_run where id = ?", (flow_run,)).fetchone()
    assert state == "CRASHED"


def test_a_dying_parent_takes_its_child_along(tmp_path) -> None:
    child = ("import os, time; from deepflow import processes; processes.die_with_parent(os.getppid()); "
             "time.sleep(60)")
    parent = ("import subprocess, sys, time; "
              f"c = subprocess.Popen([sys.executable, '-c', {child!r}]); print(c.pid, flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(proc.stdout.readline())
        time.sleep(1.5)  # the child is importing and arming its death signal
        assert alive(child_pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        wait_for("the child to die with its parent", lambda: not alive(child_pid), 5)
    finally:
        stop(proc)


# --- which RUNNING runs are stale ----------------------------------------------------------------


def test_only_runs_of_verifiably_dead_owners_are_failed(store, monkeypatch) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    me = processes.identity()

    def run(name: str, **owner: str) -> str:
        return tracking.start_run("stale", name, tags={f"{tracking.OWNER}.{k}": v for k, v in owner.items()})

    ids = {
        "dead pid": run("a", pid=str(dead.pid)),
        "pid reused": run("b", start="1"),
        "rebooted": run("c", boot="another-boot"),
        "mine": run("d"),
        "other host": run("e", host="elsewhere"),
    }
    c = tracking.client()
    foreign = c.create_run(tracking.experiment_id("stale"), run_name="another tool's").info.run_id

    swept = {s["run_id"]: s["reason"] for s in tracking.fail_stale_runs()}
    assert set(swept) == {ids["dead pid"], ids["pid reused"], ids["rebooted"]}
    assert f"process {dead.pid} on {me['host']} is gone;" in swept[ids["dead pid"]]
    assert "now belongs to a process started later" in swept[ids["pid reused"]]
    assert "the host has rebooted since" in swept[ids["rebooted"]]
    for run_id, reason in swept.items():
        got = c.get_run(run_id)
        assert got.info.status == "FAILED" and got.data.tags[tracking.FAILURE] == reason
    for run_id in (ids["mine"], ids["other host"], foreign):
        assert c.get_run(run_id).info.status == "RUNNING"

    # Another host's run: only with a documented age bound.
    monkeypatch.setenv("DEEPFLOW_STALE_RUN_HOURS", "0.00001")
    time.sleep(0.1)
    swept = tracking.fail_stale_runs()
    assert [s["run_id"] for s in swept] == [ids["other host"]]
    assert "still RUNNING after" in swept[0]["reason"] and "DEEPFLOW_STALE_RUN_HOURS" in swept[0]["reason"]
    assert c.get_run(ids["mine"]).info.status == c.get_run(foreign).info.status == "RUNNING"


# --- the MLflow tracking server ------------------------------------------------------------------


def test_mlflow_http_calls_are_bounded_by_default(monkeypatch) -> None:
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    for key in settings.TRACKING_HTTP_ENV:
        monkeypatch.delenv(key, raising=False)
    settings.apply_env_defaults()
    retries, factor, timeout = (MLFLOW_HTTP_REQUEST_MAX_RETRIES.get(), MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get(),
                                MLFLOW_HTTP_REQUEST_TIMEOUT.get())
    backoff = sum(factor * 2 ** (k - 1) + 1 for k in range(2, retries + 1))  # urllib3's, plus 1 s jitter each
    assert (retries + 1) * timeout + backoff <= 120  # a silent host; a refused connection: backoff only
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")  # the user's value wins
    settings.apply_env_defaults()
    assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 300


def test_preflight_names_an_unreachable_server_within_the_bound(monkeypatch) -> None:
    port = free_port()  # nothing listens: connection refused
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    t0 = time.monotonic()
    with pytest.raises(tracking.TrackingUnavailable, match=rf"http://127.0.0.1:{port} is unreachable: connection "
                                                            "refused"):
        tracking.preflight()
    assert time.monotonic() - t0 < 5

    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections (backlog), never answers
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
        t0 = time.monotonic()
        with pytest.raises(tracking.TrackingUnavailable, match="no answer within 1 s"):
            tracking.preflight()
        assert time.monotonic() - t0 < 5


def test_run_against_a_down_server_fails_before_any_work(store, monkeypatch) -> None:
    from deepflow.cli import app

    port = free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    t0 = time.monotonic()
    result = CliRunner().invoke(app, ["run", ENTRY])
    assert result.exit_code == 1 and time.monotonic() - t0 < 10
    assert result.output.strip().splitlines() == [
        f"error: MLflow tracking server http://127.0.0.1:{port} is unreachable: connection refused "
        "(MLFLOW_TRACKING_URI; nothing was run)"]


def mlflow_server(db: Path, artifacts: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{db}", "--artifacts-destination", str(artifacts)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for("the MLflow server", lambda: proc.poll() is None and tracking.unreachable(
            f"http://127.0.0.1:{port}", timeout=2) is None, 90, interval=0.5)
    except BaseException:
        stop(proc)
        raise
    return proc


@pytest.mark.slow
@pytest.mark.timeout(170)
def test_mlflow_server_killed_mid_run_fails_in_bounded_time_naming_it(tmp_path) -> None:
    db = tmp_path / "server.db"
    seed = MlflowClient(f"sqlite:///{db}")  # a champion before the run, to see that it does not move
    seed.create_registered_model(ENTRY)
    seed.create_model_version(ENTRY, "file:///nowhere/model")
    seed.set_registered_model_alias(ENTRY, tracking.CHAMPION, "1")
    port = free_port()
    server = mlflow_server(db, tmp_path / "artifacts", port, tmp_path / "mlflow-server.log")
    url = f"http://127.0.0.1:{port}"
    try:
        proc, out, err = deepflow(tmp_path, command_env(tmp_path, url), "run", ENTRY, "--set", "train.epochs=50",
                                  "--set", prepared(tmp_path))
        try:
            wait_for("training to start", lambda: "train shallow" in out.read_text(), 100)
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
            killed = time.monotonic()
            code = proc.wait(timeout=110)
            took = time.monotonic() - killed
        finally:
            stop(proc)
    finally:
        stop(server)
    text = err.read_text()
    assert code == 1, text
    assert took < 100, f"took {took:.0f} s to fail after the server died"
    assert "Traceback" not in text and "Retrying" not in text
    last = text.strip().splitlines()[-1]
    assert last.startswith(f"error: {ENTRY} pipeline failed in step 'train shallow': MLflow tracking server {url} "
                           "is unreachable (connection refused) (@champion unchanged; traceback in "), last
    after = MlflowClient(f"sqlite:///{db}")
    assert str(after.get_model_version_by_alias(ENTRY, tracking.CHAMPION).version) == "1"
    assert [str(v.version) for v in after.search_model_versions(f"name='{ENTRY}'")] == ["1"]
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as prefect_db:  # Prefect's history has it failed too
        assert prefect_db.execute("select state_type from flow_run").fetchall() == [("FAILED",)]


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", [["score", ENTRY, "in.csv", "out.parquet"], ["monitor", ENTRY]])
def test_score_and_monitor_own_their_prefect_server_too(tmp_path, command) -> None:
    """`deepflow score` and `monitor` run flows too: their Prefect server is theirs, and gone when they end."""
    (tmp_path / "in.csv").write_text("amount\n1.0\n")
    env = command_env(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")
    proc, out, err = deepflow(tmp_path, env, *command)
    try:
        code = proc.wait(timeout=100)
    finally:
        stop(proc)
    log = (tmp_path / "reports" / "logs" / "prefect-api.log").read_text()
    started = [line for line in log.splitlines() if line.endswith(f" for pid {proc.pid}")]
    assert started, (code, log[-2000:], err.read_text()[-2000:])
    port = int(started[0].split(" Prefect API ")[1].split()[0].rsplit(":", 1)[1])
    wait_for("the command's Prefect server to stop", lambda: refused(port), 15)


# --- two runs of one entry at once --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_concurrent_runs_of_one_entry_leave_registry_and_ledger_consistent(tmp_path, monkeypatch) -> None:
    """Two `deepflow run paysim` processes on one store at the same time: each registers a challenger
    and tries to promote it. Whatever the interleaving, each ends with exit 0 or one `error:` line,
    and afterwards the ledger and the registry agree, no run is left RUNNING, and every version
    has its decision recorded."""
    from deepflow import ledger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = command_env(tmp_path, uri)
    data = prepared(tmp_path)
    quick = ["--set", "train.epochs=1", "--set", "candidates=[shallow]", "--set", "baselines=[]",
             "--set", "promotion.floor=0.0", "--set", data]  # one quick member, promotable
    procs = [deepflow(tmp_path, env, "run", ENTRY, *quick) for _ in range(2)]
    try:
        codes = [proc.wait(timeout=280) for proc, _, _ in procs]
    finally:
        for proc, _, _ in procs:
            stop(proc)
    for code, (_, _, err) in zip(codes, procs, strict=True):
        text = err.read_text()
        assert code == 0 or (code == 1 and "Traceback" not in text and text.strip().splitlines()[-1].startswith(
            "error: ")), text[-3000:]
    assert 0 in codes, [err.read_text()[-2000:] for _, _, err in procs]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    versions = tracking.client().search_model_versions(f"name='{ENTRY}'")
    assert len(versions) == 2
    assert ledger.consistent(ENTRY) and ledger.consistent(ENTRY, tracking.CHALLENGER)
    champions = ledger.moves(ENTRY, tracking.CHAMPION)
    assert champions and all(m.from_version != m.to_version for m in champions)
    assert all(b.from_version == a.to_version for a, b in zip(champions, champions[1:], strict=False))
    assert not [r for r in runs(uri) if r.info.status == "RUNNING"]
    decided = [v.version for v in versions
               if tracking.client().get_model_version(ENTRY, v.version).tags.get("deepflow.decision")]
    assert decided, "no promotion decision was recorded"


# --- the error a failing run prints --------------------------------------------------------------


def test_a_failing_step_is_one_line_and_debug_prints_the_traceback(monkeypatch, tmp_path) -> None:
    import flows.pipeline
    from deepflow import progress
    from deepflow.cli import app

    def crashing_flow(use_case, overrides, promote_challenger, started_at=None):
        progress.step(use_case, "train", "deep")
        raise RuntimeError("disk\non fire")

    monkeypatch.setenv("DEEPFLOW_REPORTS_DIR", str(tmp_path))
    monkeypatch.setattr(flows.pipeline, "train_pipeline", crashing_flow)
    quiet = CliRunner().invoke(app, ["train", ENTRY])
    assert quiet.exit_code == 1 and "Traceback" not in quiet.output
    assert f"{ENTRY} pipeline failed in step 'train deep': RuntimeError: disk on fire (@champion" in quiet.output
    for switch, env in ((["--verbose"], {}), ([], {"DEEPFLOW_DEBUG": "1"})):
        loud = CliRunner().invoke(app, ["train", ENTRY, *switch], env=env)
        assert loud.exit_code == 1 and "Traceback (most recent call last)" in loud.output
        assert 'raise RuntimeError("disk\\non fire")' in loud.output
