"""The Prefect API a ``deepflow`` command uses, started without holding the command up.

:func:`ensure` picks it: ``PREFECT_API_URL`` when set; else the recorded local server (the shared
one, :mod:`deepflow.prefect_server`, leased while this process lives, or one ``deepflow ui`` or
``schedule`` started); else it starts one: the shared server (``DEEPFLOW_PREFECT_SERVER=shared``,
the default) or, with ``command``, a server of this command's own: Prefect's temporary-server app
(``create_app(ephemeral=True)``) under uvicorn on 127.0.0.1, database in ``$PREFECT_HOME``, in a
child that dies with this process however it ends (:func:`deepflow.processes.die_with_parent`),
stopped at exit, output in ``log_dir/prefect-api.log``.

Either start returns at once: this process binds the socket, so the URL is known before the server
answers, and goes on importing its flows while the server boots; :func:`ready` waits for it before
the first flow call (a request sent earlier waits in the socket's backlog, up to Prefect's 60 s
request timeout). A server migrates its SQLite database under a per-home file lock, so servers
starting together do not fail with "database is locked".

Run ``python -m deepflow.prefect_api --fd FD (--parent PID | --shared --idle S) --home DIR``: the
server's side, serving on the listening socket it inherits (no race for the port).
"""

from __future__ import annotations

import argparse
import atexit
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepflow import dashboards, prefect_server, processes


@dataclass
class _Boot:
    """A server this process waits for before its first flow call."""
    url: str
    log_path: Path
    process: subprocess.Popen | None = None  # our child (per-command server)
    owner: dict[str, str] | None = None  # else the shared server's identity


_owned: dashboards.Server | None = None
_pending: _Boot | None = None


def ensure(log_dir: Path) -> str | None:
    """Point ``PREFECT_API_URL`` at the Prefect API this process uses (see the module's doc) and
    return it, without waiting for a server being started; call :func:`ready` before the first flow
    call. Call it from the main thread (the kernel ties a child's death signal to the thread that
    started it) and before Prefect is imported: Prefect reads ``PREFECT_API_URL`` once, on import.
    Returns None when Prefect is already imported and nothing is recorded (then its own temporary
    server is used)."""
    global _owned, _pending
    configured = os.environ.get("PREFECT_API_URL")
    if configured and configured != dashboards.discovered:
        return configured  # the user's
    imported = "prefect" in sys.modules
    if record := prefect_server.use(start=prefect_server.mode() == prefect_server.SHARED and not imported):
        if prefect_server.shared(record):
            _pending = _shared_boot(record)
        os.environ["PREFECT_API_URL"] = f"{record['url']}/api"
        return os.environ["PREFECT_API_URL"]
    if imported:
        return None
    if _owned is None:
        _owned = start(log_dir / "prefect-api.log")
        # Registered before Prefect is imported, so it runs after Prefect's own exit handlers (atexit runs
        # them in reverse), which still send to the server.
        atexit.register(_owned.stop)
        _pending = _Boot(_owned.url, _owned.log_path, process=_owned.process)
    os.environ["PREFECT_API_URL"] = f"{_owned.url}/api"
    return os.environ["PREFECT_API_URL"]


def ready(timeout: float | None = None, record: dict[str, Any] | None = None) -> None:
    """Wait until the server :func:`ensure` started (or found starting) answers, or the shared one
    ``record`` names; at once when it already did or none is pending. Raises ``dashboards.ServerError``,
    with its log's tail, when it exits or is not healthy within ``timeout`` (default
    ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``, as Prefect's own)."""
    global _pending
    if prefect_server.shared(record):
        _pending = _shared_boot(record)
    boot = _pending
    if boot is None:
        return
    timeout = timeout or float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "20"))
    deadline = time.monotonic() + timeout
    while not dashboards.healthy(f"{boot.url}/api/health", timeout=2):
        ended = boot.process.poll() is not None if boot.process else processes.gone(boot.owner or {})
        if ended or time.monotonic() > deadline:
            if boot.process is not None:
                dashboards.Server("Prefect API", boot.url, boot.process, boot.log_path).stop()
            tail = boot.log_path.read_text(errors="replace")[-2000:] if boot.log_path.exists() else ""
            what = "exited" if ended else f"did not answer within {timeout:.0f} s"
            hint = "" if boot.process or ended else "; `deepflow prefect stop --force` stops it"
            raise dashboards.ServerError(f"Prefect API server {boot.url} {what}{hint}; log {boot.log_path}:\n{tail}")
        time.sleep(0.1)
    _pending = None


def _shared_boot(record: dict[str, Any]) -> _Boot:
    return _Boot(record["url"], Path(record.get("log", prefect_server.log_path())), owner=record.get("owner", {}))


def start(log_path: Path) -> dashboards.Server:
    """A Prefect API server on a free port of 127.0.0.1 in a child of this process that dies with it;
    returns at once (it answers once :func:`ready` returns)."""
    listener = socket.create_server((dashboards.HOST, 0))
    url = f"http://{dashboards.HOST}:{listener.getsockname()[1]}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "deepflow.prefect_api", "--parent", str(os.getpid()), "--fd", str(listener.fileno()),
           "--home", str(prefect_server.home())]
    prefect_server.home().mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out, listener:  # the child holds the socket now: this copy is closed
        out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} Prefect API {url} for pid {os.getpid()}\n".encode())
        out.flush()
        # Its own session: a Ctrl-C in the terminal reaches this process, which stops the server at exit.
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, pass_fds=(listener.fileno(),),
                                start_new_session=True)
    return dashboards.Server("Prefect API", url, proc, log_path)


# --- the server's side -----------------------------------------------------------------------------


class _Watched:
    """The Prefect app, plus: the start lock released once its start-up (migrations) is done, and the
    requests (HTTP and websockets) in flight and the time of the last one, for the idle stop."""

    def __init__(self, app: Any, lock: Any) -> None:
        self.app, self.lock = app, lock
        self.in_flight, self.last = 0, time.monotonic()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            async def told(message: dict) -> None:
                if message["type"].startswith("lifespan.startup.") and self.lock.is_locked:
                    self.lock.release()
                    self.last = time.monotonic()  # idle counts from when it serves
                await send(message)

            return await self.app(scope, receive, told)
        self.in_flight += 1
        self.last = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.last = time.monotonic()


def _stop_when_idle(server: Any, watched: _Watched, idle_s: float, url: str) -> None:
    """Ask uvicorn to stop once nothing was asked for ``idle_s`` and no command leases the server."""
    period = min(30.0, max(0.2, idle_s / 10))
    while not server.should_exit:
        time.sleep(period)
        if watched.in_flight or watched.lock.is_locked or time.monotonic() - watched.last < idle_s:
            continue
        if prefect_server.retire(url):
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} idle for {idle_s:.0f} s: stopping", flush=True)
            server.should_exit = True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A Prefect API server for deepflow (see deepflow.prefect_api)")
    parser.add_argument("--fd", type=int, required=True, help="an inherited listening socket")
    parser.add_argument("--home", required=True, help="the Prefect home (its start lock)")
    parser.add_argument("--parent", type=int, help="a command's own server: the pid whose death ends it")
    parser.add_argument("--shared", action="store_true", help="the shared server: API, UI and services")
    parser.add_argument("--idle", type=float, default=prefect_server.DEFAULT_IDLE_S,
                        help="shared: seconds idle before it stops (0: never)")
    args = parser.parse_args(argv)
    if args.parent:
        processes.die_with_parent(args.parent)
    import uvicorn
    from filelock import FileLock, Timeout
    from prefect.server.api.server import create_app

    # A command's own: Prefect's temporary-server app (no UI, few services). Shared: the full one.
    app = create_app(ephemeral=not args.shared, final=True)
    watched = _Watched(app, FileLock(Path(args.home) / prefect_server.START_LOCK, thread_local=False))
    listener = socket.socket(fileno=args.fd)
    server = uvicorn.Server(uvicorn.Config(watched, log_level="error", lifespan="on", timeout_graceful_shutdown=5))
    if args.shared and args.idle > 0:
        url = f"http://{dashboards.HOST}:{listener.getsockname()[1]}"
        threading.Thread(target=_stop_when_idle, args=(server, watched, args.idle, url), daemon=True).start()
    try:  # released when the app has started (lifespan): its migrations are done
        watched.lock.acquire(timeout=1)
    except Timeout:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} waiting for another Prefect server of {args.home} to start "
              f"({watched.lock.lock_file})", flush=True)
        watched.lock.acquire()
    try:
        server.run(sockets=[listener])
    finally:
        if watched.lock.is_locked:
            watched.lock.release()
        if args.shared:
            prefect_server.forget_me()


if __name__ == "__main__":
    main()
