"""The shared Prefect server: one long-lived local server (API + UI) per Prefect home, started once in
the background and reused by every ``deepflow`` command; it stops itself when idle, or on request.

``deepflow run/train/score/monitor`` start it when no Prefect server is configured or running
(``DEEPFLOW_PREFECT_SERVER=shared``, the default; ``command`` gives each command its own server that
dies with it, :mod:`deepflow.prefect_api`); ``deepflow prefect start|stop|status`` manage it by hand.
It is Prefect's full server app (``create_app()``: API, UI and background services, so
``deepflow schedule`` and ``deepflow ui`` can use it too) under uvicorn on 127.0.0.1, database in
``$PREFECT_HOME``, the one every mode uses, so the UI shows every run's history.

Files beside the database: ``deepflow-server.json`` (the record :func:`deepflow.dashboards.discover_prefect`
reads: URL, pid and the process's identity, so it is only ever stopped by the pid it recorded and a
reused pid is never taken for it), ``deepflow-server.leases/<pid>.json`` (one per command using it:
a live one keeps it up however long a flow runs silently), ``deepflow-server.log``. It stops after
``DEEPFLOW_PREFECT_IDLE`` (default 30 min; 0: never) with no request in flight, none answered in
that time and no live lease. Record, leases and retirement change under one file lock, so a command
either leases a server that stays, or finds no record and starts another.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from deepflow import dashboards, processes

MODE_ENV, IDLE_ENV, PORT_ENV = "DEEPFLOW_PREFECT_SERVER", "DEEPFLOW_PREFECT_IDLE", "DEEPFLOW_PREFECT_PORT"
SHARED, COMMAND = "shared", "command"
DEFAULT_IDLE_S = 1800.0
DEFAULT_PORT = 4200  # Prefect's own default; taken: any free port
START_LOCK = "deepflow-api-start.lock"  # held by a server while it migrates its database (prefect_api.main)
_IDLE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)?\s*$", re.IGNORECASE)
_spawned: list[subprocess.Popen] = []  # servers this process started: kept, so that Python does not warn on exit


def mode() -> str:
    """``DEEPFLOW_PREFECT_SERVER``: ``shared`` (default) or ``command``."""
    value = os.environ.get(MODE_ENV, SHARED).strip().lower() or SHARED
    if value not in (SHARED, COMMAND):
        raise dashboards.ServerError(f"{MODE_ENV}={value!r}: {SHARED} (one background server, reused) or {COMMAND} "
                                     "(a server per command)")
    return value


def parse_idle(text: str | float) -> float:
    """Seconds from ``1800``, ``90s``, ``30m``, ``1h``; 0 means never."""
    match = _IDLE.match(str(text))
    if not match:
        raise ValueError(f"idle timeout {text!r}: give a duration such as 1800, 90s, 30m or 1h (0: never)")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[(match.group(2) or "s")[0].lower()]


def idle_s() -> float:
    try:
        return parse_idle(os.environ.get(IDLE_ENV, DEFAULT_IDLE_S))
    except ValueError as exc:
        raise dashboards.ServerError(f"{IDLE_ENV}: {exc}") from None


def home() -> Path:
    return dashboards.record_path().parent


def log_path() -> Path:
    return home() / "deepflow-server.log"


def _lock() -> FileLock:
    home().mkdir(parents=True, exist_ok=True)
    return FileLock(home() / "deepflow-server.lock")


def read() -> dict[str, Any] | None:
    """The recorded server (shared, or one ``deepflow ui``/``schedule`` started); None: no record."""
    try:
        record = json.loads(dashboards.record_path().read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("url") else None


def _write(record: dict[str, Any]) -> None:
    path = dashboards.record_path()
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)  # a reader sees the old record or the new one, never half of one


def _forget(pid: int) -> None:
    """Remove the record if it names ``pid``."""
    if (record := read()) and record.get("pid") == pid:
        dashboards.record_path().unlink(missing_ok=True)


def shared(record: dict[str, Any] | None) -> bool:
    return bool(record) and record.get("kind") == SHARED


def alive(record: dict[str, Any]) -> bool:
    """A shared server: its process still runs (it may still be starting); another: it answers."""
    if shared(record):
        return processes.gone(record.get("owner", {})) is None
    return dashboards.healthy(f"{record['url']}/api/health", timeout=0.5)


# --- leases: which commands use the server ---------------------------------------------------------


def _lease_dir() -> Path:
    return home() / "deepflow-server.leases"


def lease(url: str) -> None:
    """Keep the shared server at ``url`` up while this process lives (released at exit; a killed
    process's lease is ignored: its owner is gone)."""
    path = _lease_dir() / f"{os.getpid()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": url, **processes.identity()}))
    atexit.register(path.unlink, missing_ok=True)


def leases(url: str) -> list[dict[str, str]]:
    """Live leases on the server at ``url``; removes those of processes that are gone."""
    live = []
    for path in sorted(_lease_dir().glob("*.json")):
        try:
            owner = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written
        if processes.gone(owner):
            path.unlink(missing_ok=True)
        elif owner.get("url") == url:
            live.append(owner)
    return live


# --- start, use, stop ------------------------------------------------------------------------------


def _bind(port: int | None) -> socket.socket:
    """A listening socket on ``port`` (default ``DEEPFLOW_PREFECT_PORT``, else 4200 if free, else any)."""
    chosen = port is not None or PORT_ENV in os.environ
    try:
        port = int(os.environ.get(PORT_ENV, DEFAULT_PORT)) if port is None else port
        return socket.create_server((dashboards.HOST, port))
    except ValueError:
        raise dashboards.ServerError(f"{PORT_ENV}={os.environ[PORT_ENV]!r}: a port number (0: any free port)") from None
    except OSError as exc:
        if chosen:
            raise dashboards.ServerError(f"cannot serve Prefect on {dashboards.HOST}:{port}: {exc.strerror}") from None
        return socket.create_server((dashboards.HOST, 0))  # 4200 is taken (another server): any port


def _spawn(port: int | None, idle: float) -> dict[str, Any]:
    """Start a shared server in the background (its own session, not this process's child in any way
    that ends with it) and record it; returns at once, before it answers."""
    listener = _bind(port)
    url = f"http://{dashboards.HOST}:{listener.getsockname()[1]}"
    env = {**os.environ, "PREFECT_UI_ENABLED": "true", "PREFECT_UI_API_URL": f"{url}/api"}
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "deepflow.prefect_api", "--shared", "--fd", str(listener.fileno()),
           "--idle", str(idle), "--home", str(home())]
    log = log_path()
    with log.open("ab") as out, listener:  # the child holds the socket now
        out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} shared Prefect server {url} started by pid {os.getpid()}, "
                  f"stops after {idle:.0f} s idle\n".encode())
        out.flush()
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                pass_fds=(listener.fileno(),), start_new_session=True, cwd=home())
    _spawned.append(proc)
    record = {"url": url, "pid": proc.pid, "kind": SHARED, "owner": processes.identity(proc.pid), "idle_s": idle,
              "log": str(log), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _write(record)
    return record


def use(start: bool, port: int | None = None, idle: float | None = None) -> dict[str, Any] | None:
    """The recorded server if it is up (a shared one is leased by this process, and may still be
    starting), else a new shared one when ``start`` (leased too), else None. A stale record is
    replaced when starting."""
    with _lock():
        record = read()
        if record and alive(record):
            if shared(record):
                lease(record["url"])
            return record
        if not start:
            return None
        record = _spawn(port, idle_s() if idle is None else idle)
        lease(record["url"])
        return record


def stop(force: bool = False, timeout: float = 15) -> str:
    """Stop the shared server by the pid it recorded (SIGTERM, then SIGKILL after ``timeout``);
    refuses while a command uses it unless ``force``. Returns what happened, one line."""
    with _lock():
        record = read()
        if not record:
            return f"no shared Prefect server is recorded ({dashboards.record_path()})"
        if not shared(record):
            raise dashboards.ServerError(f"the Prefect server at {record['url']} (pid {record.get('pid')}) was started "
                                         "by `deepflow ui` or `deepflow schedule`: it stops with that command")
        owner = record.get("owner", {})
        if processes.gone(owner):
            _forget(record["pid"])
            return f"the shared Prefect server (pid {record['pid']}) was not running; its record is removed"
        users = [u["pid"] for u in leases(record["url"]) if u["pid"] != str(os.getpid())]
        if users and not force:
            raise dashboards.ServerError(f"the shared Prefect server at {record['url']} is in use by pid(s) "
                                         f"{', '.join(users)}: stopping it fails their runs (--force stops it anyway)")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(record["pid"]), signal.SIGTERM)  # its own session: the pid leads its group
        _forget(record["pid"])
    deadline = time.monotonic() + timeout
    while not processes.gone(owner) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.1)
    how = ""
    if not processes.gone(owner):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(record["pid"]), signal.SIGKILL)
        how = f", killed after {timeout:.0f} s"
    return f"stopped the shared Prefect server at {record['url']} (pid {record['pid']}{how})"


def _reap() -> None:
    for proc in _spawned:
        proc.poll()  # a server this process started and that exited: not a zombie


def status() -> dict[str, Any]:
    """The record with ``state``: running | starting | gone (a stale record) | none, and ``users``."""
    record = read()
    if not record:
        return {"state": "none", "record": str(dashboards.record_path())}
    healthy = dashboards.healthy(f"{record['url']}/api/health", timeout=2)
    if shared(record):
        state = "running" if healthy else "gone" if processes.gone(record.get("owner", {})) else "starting"
        users = [u["pid"] for u in leases(record["url"]) if u["pid"] != str(os.getpid())]
    else:
        state, users = ("running" if healthy else "gone"), []
    return {**record, "state": state, "users": users, "record": str(dashboards.record_path())}


# --- the server's side -----------------------------------------------------------------------------


def retire(url: str) -> bool:
    """Called by the idle server: True when no live lease holds it, after removing its record (so
    no command can lease it any more); False: keep serving."""
    lock = _lock()
    try:
        lock.acquire(timeout=5)
    except Timeout:
        return False
    try:
        if leases(url):
            return False
        _forget(os.getpid())
        return True
    finally:
        lock.release()


def forget_me() -> None:
    """At the server's exit: its record goes, if it still names it."""
    with contextlib.suppress(Timeout), _lock().acquire(timeout=5):
        _forget(os.getpid())
