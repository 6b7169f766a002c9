"""``deepflow search ENTRY MODEL``: one more worker on a running hyperparameter study (deepflow.studies).

The study is found in the storage by entry and model (the newest such study, or ``--study NAME``);
its creator recorded the function that runs trials on it and the config it searches with, so this
worker needs neither ``--set`` nor the creator's command line. It runs trials until its budget or the
study's trial cap, waits for the other workers' running trials, then prints the study's best
parameters. Register it in cli.py with ``app.command("search")(search)``.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def _fail(message: str, code: int) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def search(entry: Annotated[str, typer.Argument(help="the dataset entry whose study to join")],
           model: Annotated[str, typer.Argument(help="the searched model (the study's)")],
           parent_run: Annotated[str | None, typer.Option(
               "--parent-run", help="MLflow run the trials become children of", show_default="a new "
               "<model>-search-worker run in the entry's experiment")] = None,
           study: Annotated[str | None, typer.Option(help="the study's name", show_default="the newest study "
                                                     "of ENTRY and MODEL")] = None,
           budget: Annotated[float | None, typer.Option(help="this worker's wall-clock budget in seconds",
                                                        show_default="the study's config")] = None,
           wait: Annotated[float, typer.Option(help="seconds to wait for the study to appear")] = 0.0,
           storage: Annotated[str | None, typer.Option(help="the study database (SQLAlchemy URL)",
                                                       show_default="$DEEPFLOW_OPTUNA_STORAGE, else the "
                                                       "embedded SQLite")] = None) -> None:
    """Run trials on the shared study of ENTRY's MODEL until the budget; print the study's best parameters."""
    from deepflow import config, settings, studies, tracking, usecase

    settings.apply_env_defaults()
    if budget is not None and budget <= 0:
        _fail(f"--budget must be a positive number of seconds, got {budget:g}", 2)
    try:
        usecase.get(entry)
        url, _ = studies.resolve(storage or "", "--storage")
        store = studies.open_storage(storage or "", "--storage")
    except (usecase.UnknownUseCase, config.ConfigError) as exc:
        _fail(str(exc), 2)
    try:
        found = studies.find(store, {"deepflow.entry": entry, "deepflow.model": model}, study, wait)
    except LookupError as exc:
        _fail(f"{exc} ({studies.shown(url)}): start the search that creates it first (the entry's benchmark "
              "run), pass --wait SECONDS, or point --storage / DEEPFLOW_OPTUNA_STORAGE at its database", 1)
    attrs = found.user_attrs
    if attrs.get("deepflow.entry") != entry or attrs.get("deepflow.model") != model:
        _fail(f"study {found.study_name} searches {attrs.get('deepflow.entry')}/{attrs.get('deepflow.model')}, "
              f"not {entry}/{model}", 2)
    out.print(f"joining study {found.study_name} in {studies.shown(url)}", highlight=False, soft_wrap=True)
    try:
        selection = studies.hook(found)(entry, model, attrs, url, parent_run, budget, found.study_name)
    except tracking.TrackingUnavailable as exc:
        _fail(str(exc), 1)
    except (ValueError, LookupError) as exc:  # another identity, a study deleted meanwhile
        _fail(str(exc), 1)
    here = [t["number"] for t in selection.trials if t.get("here")]
    out.print(f"ran trials {here or 'none'} of {len(selection.trials)} in the study; best: "
              f"{json.dumps(selection.params, default=str)}", highlight=False, soft_wrap=True)


if __name__ == "__main__":
    typer.run(search)
