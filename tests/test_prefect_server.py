"""The shared Prefect server (deepflow.prefect_server) and the non-blocking start of a command's own
(deepflow.prefect_api): records, leases, stop by the recorded pid, idle stop, reuse across commands.

The session runs in the per-command mode (conftest); the tests here ask for the shared mode in the
environment of the processes they start, with a private Prefect home, and stop every server they
started by the pid it recorded. Real servers bind 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepflow import dashboards, prefect_server, processes
from tests.conftest import free_port
from tests.faults import refused, wait_for


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A private Prefect home; any shared server recorded there is stopped by its pid afterwards."""
    path = tmp_path / "prefect"
    path.mkdir()
    monkeypatch.setenv("PREFECT_HOME", str(path))
    monkeypatch.setenv("DEEPFLOW_PREFECT_PORT", "0")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    yield path
    record = prefect_server.read()
    if prefect_server.shared(record) and not processes.gone(record["owner"]):
        os.killpg(record["pid"], signal.SIGKILL)
        wait_for("the shared server to die", lambda: processes.gone(record["owner"]), 10)


def env(tmp_path: Path, mode: str) -> dict[str, str]:
    out = {**os.environ, "DEEPFLOW_PREFECT_SERVER": mode, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "DEEPFLOW_REPORTS_DIR": str(tmp_path / "reports")}
    out.pop("PREFECT_API_URL", None)
    return out


def deepflow(tmp_path: Path, mode: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deepflow.cli", *args], env=env(tmp_path, mode), cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)


def sleeper() -> subprocess.Popen:
    """A harmless live process in its own session, to stand for a server or a command."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)


# --- settings -------------------------------------------------------------------------------------


def test_mode_and_idle_settings(monkeypatch) -> None:
    monkeypatch.delenv(prefect_server.MODE_ENV, raising=False)
    assert prefect_server.mode() == "shared"
    monkeypatch.setenv(prefect_server.MODE_ENV, "Command")
    assert prefect_server.mode() == "command"
    monkeypatch.setenv(prefect_server.MODE_ENV, "per-process")
    with pytest.raises(dashboards.ServerError, match="DEEPFLOW_PREFECT_SERVER='per-process': shared .* or command"):
        prefect_server.mode()
    assert [prefect_server.parse_idle(t) for t in ("1800", "90s", "30m", "1.5h", "0", " 2 min ")] == [
        1800, 90, 1800, 5400, 0, 120]
    for bad in ("", "soon", "-5", "30d"):
        with pytest.raises(ValueError, match="give a duration"):
            prefect_server.parse_idle(bad)


# --- records and leases (no server) --------------------------------------------------------------


def test_a_stale_record_is_ignored_without_waiting(home) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with socket.create_server(("127.0.0.1", 0)) as silent:  # would hold a health request for its whole timeout
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        record = {"url": url, "pid": dead.pid, "kind": "shared", "owner": processes.identity(dead.pid) | {
            "pid": str(dead.pid), "start": "1"}, "idle_s": 60}
        dashboards.record_path().write_text(json.dumps(record))
        t0 = time.monotonic()
        assert dashboards.discover_prefect() is None
        assert prefect_server.use(start=False) is None
        assert time.monotonic() - t0 < 0.4  # no health request was sent to the dead server's port
    assert prefect_server.status()["state"] == "gone"
    assert "was not running; its record is removed" in prefect_server.stop()
    assert prefect_server.read() is None


def test_leases_of_dead_processes_and_other_servers_do_not_count(home) -> None:
    url = "http://127.0.0.1:1"
    prefect_server.lease(url)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lease_dir = home / "deepflow-server.leases"
    (lease_dir / f"{dead.pid}.json").write_text(json.dumps({"url": url, **processes.identity(os.getpid()),
                                                            "pid": str(dead.pid)}))
    other = sleeper()
    try:
        (lease_dir / f"{other.pid}.json").write_text(json.dumps({"url": "http://127.0.0.1:2",
                                                                 **processes.identity(other.pid)}))
        assert [lease["pid"] for lease in prefect_server.leases(url)] == [str(os.getpid())]
        assert not (lease_dir / f"{dead.pid}.json").exists()  # a dead process's lease is removed
        assert [lease["pid"] for lease in prefect_server.leases("http://127.0.0.1:2")] == [str(other.pid)]
    finally:
        other.kill()
        other.wait()


def test_stop_kills_only_the_recorded_process_and_refuses_while_in_use(home) -> None:
    server, user = sleeper(), sleeper()
    try:
        url = "http://127.0.0.1:1"
        record = {"url": url, "pid": server.pid, "kind": "shared", "idle_s": 60}
        # The pid runs, but it is not the process recorded (another start time): never signalled.
        dashboards.record_path().write_text(json.dumps({**record, "owner": {
            **processes.identity(server.pid), "start": "1"}}))
        assert "was not running" in prefect_server.stop()
        assert server.poll() is None

        dashboards.record_path().write_text(json.dumps({**record, "owner": processes.identity(server.pid)}))
        (home / "deepflow-server.leases").mkdir(exist_ok=True)
        (home / "deepflow-server.leases" / f"{user.pid}.json").write_text(json.dumps({
            "url": url, **processes.identity(user.pid)}))
        with pytest.raises(dashboards.ServerError, match=f"in use by pid\\(s\\) {user.pid}: .*--force"):
            prefect_server.stop()
        assert server.poll() is None and prefect_server.read() is not None
        assert prefect_server.stop(force=True) == f"stopped the shared Prefect server at {url} (pid {server.pid})"
        assert server.wait(timeout=10) == -signal.SIGTERM
        assert prefect_server.read() is None
    finally:
        for p in (server, user):
            p.kill()
            p.wait()


def test_a_server_started_by_ui_is_not_stopped_here(home) -> None:
    dashboards.record_path().write_text(json.dumps({"url": "http://127.0.0.1:1", "pid": os.getpid()}))
    with pytest.raises(dashboards.ServerError, match="started by `deepflow ui` or `deepflow schedule`"):
        prefect_server.stop(force=True)


# --- real servers ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_commands_start_the_shared_server_once_and_reuse_it(home, tmp_path) -> None:
    """The first command starts it in the background (replacing a stale record), it outlives the
    command, the next command reuses it, both flow runs are in its database, and `deepflow prefect
    stop` stops it by its pid."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    dashboards.record_path().write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": dead.pid, "kind": "shared",
                                                    "owner": {**processes.identity(), "pid": str(dead.pid)}}))
    (tmp_path / "in.csv").write_text("amount\n1.0\n")
    score = ["score", "paysim", "in.csv", "out.parquet"]  # no champion: the flow runs and fails, quickly

    first = deepflow(tmp_path, "shared", *score)
    assert first.returncode == 1 and "error:" in first.stderr, first.stderr[-2000:]
    record = prefect_server.read()
    assert prefect_server.shared(record) and record["pid"] != dead.pid, record
    assert not processes.gone(record["owner"]), "the shared server did not outlive the command"
    assert dashboards.healthy(f"{record['url']}/api/health")
    assert not (tmp_path / "reports" / "logs" / "prefect-api.log").exists()  # no server of the command's own

    second = deepflow(tmp_path, "shared", *score)
    assert second.returncode == 1, second.stderr[-2000:]
    assert prefect_server.read() == record  # the same server, not a new one
    with sqlite3.connect(home / "prefect.db") as db:
        assert db.execute("select count(*) from flow_run").fetchone() == (2,)
    assert prefect_server.leases(record["url"]) == []  # both commands ended: their leases went with them

    status = deepflow(tmp_path, "shared", "prefect", "status")
    assert status.returncode == 0 and f"{record['url']}  running (shared, pid {record['pid']}" in status.stdout
    stop = deepflow(tmp_path, "shared", "prefect", "stop")
    assert stop.returncode == 0 and f"stopped the shared Prefect server at {record['url']}" in stop.stdout
    wait_for("the server to exit", lambda: processes.gone(record["owner"]), 10)
    assert refused(int(record["url"].rsplit(":", 1)[1])) and prefect_server.read() is None
    assert deepflow(tmp_path, "shared", "prefect", "status").returncode == 1


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_shared_server_stops_when_idle_but_not_while_leased(home, tmp_path) -> None:
    port = free_port()
    user = sleeper()  # a live command using it, leased before the server starts (no window to go idle)
    try:
        (home / "deepflow-server.leases").mkdir()
        (home / "deepflow-server.leases" / f"{user.pid}.json").write_text(json.dumps({
            "url": f"http://127.0.0.1:{port}", **processes.identity(user.pid)}))
        started = deepflow(tmp_path, "command", "prefect", "start", "--idle", "2s", "--port", str(port))
        assert started.returncode == 0, started.stderr
        assert "stops after 2 s without requests" in started.stdout
        record = prefect_server.read()
        time.sleep(4)  # twice the idle timeout, no request: the lease keeps it up
        assert not processes.gone(record["owner"]) and prefect_server.read() == record
        user.kill()  # killed: its lease no longer counts
        user.wait()
        wait_for("the idle server to stop", lambda: processes.gone(record["owner"]), 15)
    finally:
        user.kill()
        user.wait()
    assert prefect_server.read() is None and refused(int(record["url"].rsplit(":", 1)[1]))
    assert "idle for 2 s: stopping" in Path(record["log"]).read_text()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_commands_own_server_starts_without_holding_it_up(tmp_path) -> None:
    """Per-command mode: ensure() returns before the server answers, ready() waits for it; a server
    that cannot start is reported with its log's tail and the command's wait ends."""
    script = """
import os, sys, time
from pathlib import Path
from deepflow import dashboards, prefect_api
t = time.monotonic()
url = prefect_api.ensure(Path(sys.argv[1]))
took = time.monotonic() - t
try:
    prefect_api.ready(timeout=60)
except dashboards.ServerError as exc:
    print("ERROR", str(exc).splitlines()[0])
else:
    print("UP", dashboards.healthy(url.removesuffix("/api") + "/api/health"))
print("ENSURE", took, url)
"""
    base = {**env(tmp_path, "command"), "PREFECT_HOME": str(tmp_path / "prefect")}
    ok = subprocess.run([sys.executable, "-c", script, str(tmp_path / "logs")], env=base, capture_output=True,
                        text=True, timeout=100)
    lines = dict(line.split(" ", 1) for line in ok.stdout.splitlines())
    assert lines.get("UP") == "True", ok.stdout + ok.stderr[-2000:]
    took, url = lines["ENSURE"].split()
    assert float(took) < 1.0, f"ensure() took {took} s: it waited for the server"
    assert refused(int(url.removesuffix("/api").rsplit(":", 1)[1]))  # stopped with its command
    assert not (tmp_path / "prefect" / "deepflow-server.json").exists()  # a command's own server is not recorded

    bad = {**base, "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"}
    failed = subprocess.run([sys.executable, "-c", script, str(tmp_path / "logs")], env=bad, capture_output=True,
                            text=True, timeout=100)
    assert "ERROR Prefect API server http://127.0.0.1:" in failed.stdout and " exited; log " in failed.stdout, (
        failed.stdout + failed.stderr[-2000:])
