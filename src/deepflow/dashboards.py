"""Local server processes: the MLflow UI and a Prefect server (API + UI), on 127.0.0.1.

Used by ``deepflow ui`` and ``deepflow schedule`` (and by the tests that need real servers). A
Prefect server started here writes its URL to ``$PREFECT_HOME/deepflow-server.json`` (as the shared
server of :mod:`deepflow.prefect_server` does) so other ``deepflow`` commands on this machine use it
instead of starting one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from deepflow import processes, settings

HOST = "127.0.0.1"
discovered: str | None = None  # the PREFECT_API_URL discover_prefect set (not the user's own)


class ServerError(RuntimeError):
    """A server process that did not come up; the message says which and where its log is."""


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen
    log_path: Path

    def stop(self, timeout: float = 15) -> None:
        stop_all([self], timeout)


def stop_all(servers: list[Server], timeout: float = 15) -> None:
    """SIGTERM every server's process group at once, give them ``timeout`` seconds together to
    exit, then SIGKILL the rest: stopping two servers takes one grace period, not two."""
    running = [s for s in servers if s.process.poll() is None]
    for s in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(s.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for s in running:
        try:
            s.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(s.process.pid, signal.SIGKILL)
            s.process.wait(timeout=10)


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def _start(name: str, cmd: list[str], health: str, url: str, env: dict, log_path: Path,
           timeout: float) -> Server:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(name, url, proc, log_path)
    deadline = time.monotonic() + timeout
    while not healthy(health):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            tail = log_path.read_text(errors="replace")[-2000:]
            raise ServerError(f"{name} did not come up on {url} within {timeout:.0f} s "
                              f"(exit {proc.poll()}); log {log_path}:\n{tail}")
        time.sleep(0.5)
    return server


def start_mlflow_ui(port: int = 5000, timeout: float = 120) -> Server:
    """``mlflow ui`` on the configured tracking store (SQLite under mlflow/ by default)."""
    from deepflow import tracking

    tracking.client()  # creates the SQLite schema if this is a fresh clone
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", settings.tracking_uri(),
           "--host", HOST, "--port", str(port), "--workers", "1"]
    if root := settings.artifact_root():
        cmd += ["--default-artifact-root", root]
    url = f"http://{HOST}:{port}"
    return _start("MLflow UI", cmd, f"{url}/health", url, env, settings.reports_dir() / "logs" / "mlflow-ui.log",
                  timeout)


def start_prefect_server(port: int = 4200, timeout: float = 180, ui: bool = True,
                         extra_env: dict[str, str] | None = None) -> Server:
    """``prefect server start`` with its database in ``$PREFECT_HOME`` (SQLite unless
    ``PREFECT_API_DATABASE_CONNECTION_URL`` says otherwise); records its URL for discovery."""
    env = {**os.environ, "PREFECT_UI_ENABLED": str(ui).lower(), **(extra_env or {})}
    env.pop("PREFECT_API_URL", None)
    url = f"http://{HOST}:{port}"
    env["PREFECT_UI_API_URL"] = f"{url}/api"
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)]
    server = _start("Prefect server", cmd, f"{url}/api/health", url, env,
                    settings.reports_dir() / "logs" / "prefect-server.log", timeout)
    _record(server, record_path(env))  # beside the server's own database: its clients look there
    return server


def record_path(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("PREFECT_HOME", settings.PROJECT_ROOT / ".prefect")) / "deepflow-server.json"


def _record(server: Server, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": server.url, "pid": server.process.pid}))


def discover_prefect() -> str | None:
    """Point this process at the recorded local Prefect server (the shared one, or one ``deepflow
    schedule``/``ui`` started), if it answers and ``PREFECT_API_URL`` is not set; returns the API URL
    in use (None: none yet)."""
    global discovered
    if url := os.environ.get("PREFECT_API_URL"):
        return url
    try:
        record = json.loads(record_path().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or "owner" in record and processes.gone(record["owner"]):
        return None  # a shared server's process is gone: no need to wait for an answer
    url = record.get("url", "")
    if url and healthy(f"{url}/api/health", timeout=0.5):
        os.environ["PREFECT_API_URL"] = discovered = f"{url}/api"
        return os.environ["PREFECT_API_URL"]
    return None
