"""``deepflow clean``: delete the per-epoch checkpoints that failed or killed runs left behind
(deepflow.checkpoints; docs/operations.md).

A run that finishes deletes its own checkpoints; one that is killed or fails keeps them, so that the
same command resumes where it was. Those are what this command lists and deletes: every folder no
running process holds, optionally only the ``--stale`` ones (written by other deepflow source or
torch/Lightning versions: no run of this code resumes from them) or those older than ``--older-than``.
Register it in cli.py with ``app.command("clean")(clean)``.
"""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

out = Console(width=None if sys.stdout.isatty() else 160)


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


def _age(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 48 * 3600 else f"{seconds / 86400:.1f} d"


def clean(entry: Annotated[str | None, typer.Argument(help="only this dataset entry's checkpoints",
                                                      show_default="every entry")] = None,
          stale: Annotated[bool, typer.Option("--stale", help="only checkpoints no run of this code can resume "
                                              "from (other deepflow source, torch or Lightning)")] = False,
          older_than: Annotated[float | None, typer.Option("--older-than", metavar="HOURS",
                                                           help="only checkpoints last written this long ago")] = None,
          dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would go; delete nothing")] = False,
          ) -> None:
    """Delete the resumable checkpoints that failed or killed runs left (never those a running run holds)."""
    from deepflow import checkpoints, processes, settings

    settings.apply_env_defaults()
    if older_than is not None and older_than < 0:
        Console(stderr=True).print(f"[bold red]error:[/] --older-than must be 0 or more hours, got {older_than:g}")
        raise typer.Exit(2)
    root = settings.checkpoint_dir()
    if root is None:
        out.print("checkpoints are off (DEEPFLOW_CHECKPOINT_DIR=off): nothing to clean")
        return
    found = [s for s in checkpoints.stored(root) if entry is None or s.entry == entry]
    if not found:
        out.print(f"no checkpoints under {escape(str(root))}" + (f" for entry {escape(entry)}" if entry else ""))
        return
    now, me = time.time(), processes.identity()
    table = Table("entry", "member", "fits", "size", "age", "action", title=f"checkpoints under {escape(str(root))}")
    gone = kept = 0
    for item in found:
        age = now - item.modified
        why = checkpoints.in_use(item, me)
        if why is None and stale and item.stale is None:
            why = "this code may resume from it (not --stale)"
        if why is None and older_than is not None and age < older_than * 3600:
            why = f"younger than {older_than:g} h"
        if why is None and not dry_run:
            why = checkpoints.remove(item)
        verb = "would remove" if dry_run else "removed"
        action = f"kept: {why}" if why else verb + (f" ({item.stale})" if item.stale else "")
        gone, kept = (gone, kept + item.size) if why else (gone + item.size, kept)
        table.add_row(escape(item.entry), escape(item.member), str(item.fits), _mib(item.size), _age(age),
                      escape(action))
    out.print(table)
    out.print(f"{'would free' if dry_run else 'freed'} {_mib(gone)}; kept {_mib(kept)}")
