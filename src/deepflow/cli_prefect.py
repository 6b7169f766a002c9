"""``deepflow prefect start | stop | status``: the shared local Prefect server (deepflow.prefect_server)."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

prefect_app = typer.Typer(no_args_is_help=True, help="The shared local Prefect server (API + UI) that deepflow "
                          "commands reuse; it stops itself after an idle period.")
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def _fail(message: str, code: int) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _idle_text(seconds: float) -> str:
    if seconds <= 0:
        return "never stops when idle"
    return f"stops after {f'{seconds:g} s' if seconds < 120 else f'{seconds / 60:g} min'} without requests"


@prefect_app.command()
def start(port: Annotated[int | None, typer.Option(help="port on 127.0.0.1", show_default="4200, else any free port "
                                                   "($DEEPFLOW_PREFECT_PORT)")] = None,
          idle: Annotated[str | None, typer.Option(help="stop after this long without requests and without a "
                                                   "command using it: 1800, 90s, 30m, 1h; 0: never",
                                                   show_default="30m ($DEEPFLOW_PREFECT_IDLE)")] = None) -> None:
    """Start the shared Prefect server in the background (or say where it runs); returns once it answers."""
    from deepflow import dashboards, prefect_api, prefect_server

    try:
        seconds = prefect_server.parse_idle(idle) if idle is not None else prefect_server.idle_s()
    except ValueError as exc:
        _fail(str(exc), 2)
    except dashboards.ServerError as exc:
        _fail(str(exc), 2)
    t0 = time.monotonic()
    before = prefect_server.read()
    try:
        record = prefect_server.use(start=True, port=port, idle=seconds)
        prefect_api.ready(record=record)
    except (dashboards.ServerError, OSError) as exc:
        _fail(str(exc), 1)
    if record == before or not prefect_server.shared(record):
        who = "shared" if prefect_server.shared(record) else "started by `deepflow ui`/`schedule`"
        out.print(f"Prefect server (API + UI): {record['url']}  already running ({who}, pid {record['pid']})",
                  highlight=False)
        return
    out.print(f"Prefect server (API + UI): {record['url']}  (pid {record['pid']}, up in {time.monotonic() - t0:.1f} s; "
              f"{_idle_text(record['idle_s'])}; database in {prefect_server.home()}; log {record['log']})",
              highlight=False, soft_wrap=True)


@prefect_app.command()
def stop(force: Annotated[bool, typer.Option("--force", help="stop it even while commands use it "
                                             "(their runs fail)")] = False) -> None:
    """Stop the shared Prefect server (by the pid it recorded)."""
    from deepflow import dashboards, prefect_server

    try:
        out.print(prefect_server.stop(force=force), highlight=False, soft_wrap=True)
    except dashboards.ServerError as exc:
        _fail(str(exc), 1)


@prefect_app.command()
def status() -> None:
    """Where the shared Prefect server runs, who uses it, and when it stops; exit 1 when none runs."""
    from deepflow import prefect_server

    s = prefect_server.status()
    if s["state"] == "none":
        out.print(f"no Prefect server recorded ({s['record']})", highlight=False)
        raise typer.Exit(1)
    if s["state"] == "gone":
        out.print(f"no Prefect server running (the record names {s['url']}, pid {s.get('pid')}, which is gone)",
                  highlight=False)
        raise typer.Exit(1)
    if not prefect_server.shared(s):
        out.print(f"Prefect server (API + UI): {s['url']}  {s['state']}, started by `deepflow ui`/`schedule` "
                  f"(pid {s.get('pid')}); it stops with that command", highlight=False)
        return
    users = f"in use by pid(s) {', '.join(s['users'])}" if s["users"] else "no command is using it"
    out.print(f"Prefect server (API + UI): {s['url']}  {s['state']} (shared, pid {s['pid']}, since {s['started']}); "
              f"{users}; {_idle_text(s['idle_s'])}; log {s['log']}", highlight=False, soft_wrap=True)
