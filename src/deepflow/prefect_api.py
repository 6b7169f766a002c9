"""A Prefect API server owned by this process, for a command that runs flows when no server is set up.

Without ``PREFECT_API_URL``, Prefect starts a temporary API server in a subprocess of its own on
first use; a ``kill -9`` of the command leaves that server running and listening. :func:`ensure`
starts the same kind of server (Prefect's ``create_app(ephemeral=True)`` under uvicorn, on
127.0.0.1, database in ``$PREFECT_HOME``) as a child that dies with this process, whatever ends it
(:func:`deepflow.processes.die_with_parent`), and points ``PREFECT_API_URL`` at it. It serves this
process until it exits (stopped at exit). A server configured (``PREFECT_API_URL``) or started by
``deepflow schedule``/``ui`` (``dashboards.discover_prefect``) is used instead and never started.

Run ``python -m deepflow.prefect_api --parent PID --fd FD``: the child side, serving on the
listening socket it inherits (no race for the port between choosing it and binding it).
"""

from __future__ import annotations

import argparse
import atexit
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from filelock import FileLock

from deepflow import dashboards, processes

_owned: dashboards.Server | None = None


def ensure(log_dir: Path) -> str | None:
    """The Prefect API this process uses: the configured or discovered one, else a server started
    here (its output goes to ``log_dir/prefect-api.log``). Call it from the main thread (the kernel
    ties the child's death signal to the thread that started it) and before Prefect is imported:
    Prefect reads ``PREFECT_API_URL`` once, on import. Returns None when Prefect is already imported
    (then its own temporary server is used)."""
    global _owned
    if url := dashboards.discover_prefect():
        return url
    if "prefect" in sys.modules:
        return None
    if _owned is None:
        # One start at a time per Prefect home: a server migrates its SQLite database when it starts, and two
        # commands starting together (two `deepflow run`s of one entry) failed with "database is locked".
        home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
        home.mkdir(parents=True, exist_ok=True)
        with FileLock(home / "deepflow-api-start.lock"):
            _owned = start(log_dir / "prefect-api.log")
        # Registered before Prefect is imported, so it runs after Prefect's own exit handlers (atexit runs
        # them in reverse), which still send to the server.
        atexit.register(_owned.stop)
    os.environ["PREFECT_API_URL"] = f"{_owned.url}/api"
    return os.environ["PREFECT_API_URL"]


def start(log_path: Path, timeout: float | None = None) -> dashboards.Server:
    """A Prefect API server on a free port of 127.0.0.1 in a child of this process that dies with it;
    raises ``dashboards.ServerError`` (with its log's tail) when it is not healthy within ``timeout``
    (default: ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``, as Prefect's own)."""
    timeout = timeout or float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "20"))
    listener = socket.create_server((dashboards.HOST, 0))
    url = f"http://{dashboards.HOST}:{listener.getsockname()[1]}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "deepflow.prefect_api", "--parent", str(os.getpid()), "--fd", str(listener.fileno())]
    with log_path.open("ab") as out, listener:  # the child holds the socket now: this copy is closed
        out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} Prefect API {url} for pid {os.getpid()}\n".encode())
        out.flush()
        # Its own session: a Ctrl-C in the terminal reaches this process, which stops the server at exit.
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, pass_fds=(listener.fileno(),),
                                start_new_session=True)
    server = dashboards.Server("Prefect API", url, proc, log_path)
    deadline = time.monotonic() + timeout
    while not dashboards.healthy(f"{url}/api/health", timeout=2):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            tail = log_path.read_text(errors="replace")[-2000:]
            raise dashboards.ServerError(f"Prefect API server did not come up on {url} within {timeout:.0f} s "
                                         f"(exit {proc.poll()}); log {log_path}:\n{tail}")
        time.sleep(0.2)
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Prefect API server that dies with its parent")
    parser.add_argument("--parent", type=int, required=True, help="the pid whose death ends this server")
    parser.add_argument("--fd", type=int, required=True, help="an inherited listening socket")
    args = parser.parse_args(argv)
    processes.die_with_parent(args.parent)
    import uvicorn
    from prefect.server.api.server import create_app

    app = create_app(ephemeral=True, final=True)  # Prefect's temporary-server app: no UI, few services
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="on"))
    server.run(sockets=[socket.socket(fileno=args.fd)])


if __name__ == "__main__":
    main()
