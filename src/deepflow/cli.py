"""``deepflow`` command line: new | run | validate | train | promote | entries | status | show | reproduce |
history | rollback | ui | serve | score | schedule | deploy | monitor | incoming (+ ``prefect``:
deepflow/cli_prefect.py, ``search``: deepflow/cli_search.py, ``clean``: deepflow/cli_clean.py).

Long because: one Typer app of seventeen thin commands, each a few lines that parse options and call
``steps``, the flows or a core module; one file is where a user and a newcomer read the whole CLI.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deepflow import settings
from deepflow.cli_clean import clean as clean_command
from deepflow.cli_prefect import prefect_app
from deepflow.cli_search import search as search_command
from deepflow.problems import clip

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="deepflow: validated, tracked, promoted bake-offs of shallow, deep and classical models.")
app.add_typer(prefect_app, name="prefect")  # `deepflow prefect start|stop|status`: the shared Prefect server
app.command("search")(search_command)  # `deepflow search ENTRY MODEL`: one more worker on a shared Optuna study
app.command("clean")(clean_command)  # `deepflow clean [ENTRY]`: checkpoints that failed or killed runs left
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

ERROR_CHARS = 2_000  # an error message longer than this is cut (deepflow.problems quotes values shorter)
UseCaseArg = Annotated[str, typer.Argument(help="dataset entry: datasets/<name>.yaml")]
Overrides = Annotated[list[str] | None, typer.Argument(help="config overrides, key=value")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="on a failure, also print the full traceback "
                                       "(or set DEEPFLOW_DEBUG=1)")]
_OWNS_SERVERS = False  # main() sets it: the `deepflow` process owns the servers its commands start


def _fail(message: str, code: int) -> None:
    """One error line (cut to ERROR_CHARS: however a value slipped into it, never megabytes), then exit."""
    err.print(f"[bold red]error:[/] {escape(clip(message, ERROR_CHARS))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _check(use_case: str, overrides: list[str]) -> None:
    """Unknown use case, unknown key or wrong type: one line, exit code 2."""
    from deepflow import config, usecase

    try:
        usecase.get(use_case, overrides)
    except (usecase.UnknownUseCase, config.ConfigError) as exc:
        _fail(str(exc), 2)


def _pipelines(names: list[str], overrides: list[str], promote: bool, started: float,
               verbose: bool = False) -> list[dict]:
    """Run each entry's pipeline in turn, showing progress on stdout (a live display on a terminal,
    plain lines otherwise); library logs go to a file under reports/logs/ (path printed once).
    An unreachable tracking server fails first, before Prefect starts."""
    from deepflow import progress, tracking

    try:
        tracking.preflight()
    except tracking.TrackingUnavailable as exc:
        _fail(str(exc), 1)
    _prefect_api()
    from flows.pipeline import train_pipeline  # first: Prefect and MLflow set up their logging on import

    # ``started``: when the command began (time.time()), so a budget counts Prefect's start-up too.
    # Not the process's start: an in-process caller (a test runner, a notebook) may be hours old.
    with progress.reporting(out, log_dir=settings.reports_dir() / "logs") as log:
        summaries = []
        for name in names:
            summaries.append(_pipeline(train_pipeline, name, overrides, promote, log, started, verbose))
            started = time.time()  # the next entry's budget starts when its pipeline does
        return summaries


def _prefect_api(wait: bool = False) -> None:
    """In the `deepflow` process, the Prefect API (deepflow.prefect_api): set, recorded, or started now
    without waiting; ``wait``: until it answers (before the first flow call). An in-process caller (a test,
    a notebook) keeps Prefect's own."""
    if not _OWNS_SERVERS:
        return
    from deepflow import dashboards, prefect_api

    try:
        prefect_api.ready() if wait else prefect_api.ensure(settings.reports_dir() / "logs")
    except dashboards.ServerError as exc:
        _fail(str(exc), 1)


def _pipeline(train_pipeline, use_case: str, overrides: list[str], promote: bool, log: Path,
              started_at: float | None = None, verbose: bool = False) -> dict:
    from deepflow import progress, tracking
    from deepflow.validation import ValidationFailed

    progress.step(use_case, "start: Prefect flow run, MLflow run")
    start = time.perf_counter()
    _prefect_api(wait=True)  # inside the clock: the wait for Prefect's server is orchestration
    failure = None
    try:
        summary = train_pipeline(use_case, overrides, promote_challenger=promote, started_at=started_at)
    except (ValidationFailed, FileNotFoundError) as exc:
        failure = str(exc)
    except Exception as exc:  # a crashed step: say what and where; the log file has the traceback
        if why := tracking.unreachable():  # the likely cause, said plainly
            cause = f"MLflow tracking server {settings.tracking_uri()} is unreachable ({why})"
        else:
            cause = f"{type(exc).__name__}: {clip(' '.join(str(exc).split()), 300)}"  # one line
        failure = (f"{use_case} pipeline failed in step '{progress.last_step(use_case)}': {cause} "
                   f"(@champion unchanged; traceback in {log})")
        if verbose or os.environ.get("DEEPFLOW_DEBUG", "") not in ("", "0"):
            import traceback

            err.print("".join(traceback.format_exception(exc)), markup=False, highlight=False, soft_wrap=True)
    progress.finish(use_case, ok=failure is None)
    if failure is not None:
        _fail(failure, 1)
    from deepflow import report

    summary["timings"] = report.add_outer_wall(summary["timings"], time.perf_counter() - start)
    return summary


def _print_summaries(summaries: list[dict]) -> None:
    from deepflow import report, usecase

    for s in summaries:  # one table per use case: each has its own metrics
        if s.get("protocol") == "prequential":  # a benchmark run (the prequential protocol): its own tables
            from rich.markdown import Markdown

            out.print(Markdown(s["console"]))
            continue
        shown = usecase.get(s["use_case"]).summary_metrics
        table = Table(title=f"{s['use_case']} pipeline summary")
        all_rows = report.rows(s, shown)
        columns = list(dict.fromkeys(k for row in all_rows for k in row))
        for col in columns:
            table.add_column(col, justify="left" if col in ("use case", "member", "kind") else "right")
        for row in all_rows:
            table.add_row(*[report.fmt(row.get(c, "")) for c in columns])
        out.print(table)
    for s in summaries:
        out.print(s.get("headline") or report.champion_line(s), highlight=False)
        t = s["timings"]
        out.print("  time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()), highlight=False)


@app.command()
def run(use_cases: Annotated[list[str] | None, typer.Argument(help="default: the entries with default: true")] = None,
        override: Annotated[list[str] | None, typer.Option("--set", "-s", help="key=value")] = None,
        verbose: Verbose = False) -> None:
    """Run the full pipeline (validate, train, register, promote) for each dataset entry."""
    started = time.time()  # an entry's budget counts from here (see _pipelines)
    from deepflow import config, usecase

    try:
        names = use_cases or usecase.default_names()
    except config.ConfigError as exc:  # a broken entry file: named, nothing runs
        _fail(str(exc), 2)
    for name in names:
        _check(name, override or [])
    _print_summaries(_pipelines(names, override or [], promote=True, started=started, verbose=verbose))


@app.command()
def new(name: Annotated[str, typer.Argument(help="the new entry's name: datasets/<name>.yaml, model and route")],
        data: Annotated[Path, typer.Option("--data", help="a table (CSV, TSV, JSON lines, Parquet), a labelled text "
                                                          "file, or a YOLO image folder")],
        kind: Annotated[str | None, typer.Option("--kind", help="table | text | detection",
                                                 show_default="guessed from the data, and printed")] = None,
        target: Annotated[str | None, typer.Option("--target", help="the column to predict (text: the label column)",
                                                   show_default="inferred")] = None,
        task: Annotated[str | None, typer.Option("--task", help="table: binary | multiclass | regression",
                                                 show_default="inferred from the target's values")] = None,
        time_column: Annotated[str | None, typer.Option("--time-column", help="table: split by this column's time",
                                                        show_default="the one datetime column, if any")] = None,
        text_column: Annotated[str | None, typer.Option("--text-column", help="text: the column holding the text",
                                                        show_default="the long free-text column")] = None,
        fold_labels: Annotated[bool, typer.Option("--fold-labels", help="text: merge labels that differ only in case "
                                                                        "or surrounding spaces")] = False,
        img_size: Annotated[int | None, typer.Option("--img-size", help="detection: network input, a multiple of 32",
                                                     show_default="from the median image, capped for CPU")] = None,
        duplicates: Annotated[str, typer.Option("--duplicates", help="detection: the same image in two splits: "
                                                "drop (the later copies, recorded) | fail")] = "drop",
        budget: Annotated[str, typer.Option("--budget", help="wall clock of a run: 300, 300s, 5m, 1h")] = "5m",
        drop_missing_target: Annotated[bool, typer.Option("--drop-missing-target",
                                                          help="table: leave out rows without a target value")] = False,
        header: Annotated[bool | None, typer.Option("--header/--no-header", help="the first row names the columns",
                                                    show_default="detected")] = None,
        no_dvc: Annotated[bool, typer.Option("--no-dvc", help="prepare here, without DVC tracking")] = False,
        force: Annotated[bool, typer.Option("--force", help="replace an existing entry of this name")] = False,
        run_after: Annotated[bool, typer.Option("--run", help="then `deepflow run NAME`")] = False,
        ) -> None:
    """Make a dataset entry from your own data, no code: a table, a labelled text file or a YOLO image
    folder. Infers everything (all printed), writes datasets/NAME.yaml and reports/NAME/profile.md,
    tracks the source and prepares the splits."""
    from deepflow import config, newentry
    from deepflow.kinds.guess import guess_kind

    given = {"--target": target, "--task": task, "--time-column": time_column, "--text-column": text_column,
             "--img-size": img_size, "--header" if header else "--no-header": header,
             "--fold-labels": fold_labels or None, "--drop-missing-target": drop_missing_target or None,
             "--duplicates": None if duplicates == "drop" else duplicates}
    given = {flag: value for flag, value in given.items() if value is not None}
    try:
        if kind is not None and kind not in newentry.KINDS:
            raise newentry.EntryError(f"--kind {kind!r}: one of {', '.join(newentry.KINDS)}")
        if duplicates not in ("drop", "fail"):
            raise newentry.EntryError(f"--duplicates {duplicates!r}: drop or fail")
        command = " ".join(["deepflow new", name, f"--data {data}", *([f"--kind {kind}"] if kind else []),
                            *(f if isinstance(v, bool) else f"{f} {v}" for f, v in given.items())])
        path, guessed, first = data, kind is None, []
        if kind is None:  # said with the inferences: a refusal before them stays one line
            kind, path, why = guess_kind(data)
            first.append(f"kind      {kind}: {why}")
        elif kind == "detection" and data.name in ("data.yaml", "data.yml"):
            path = data.parent
        if stray := [flag for flag in given if kind not in _NEW_FLAGS[flag.replace("--no-", "--")]]:
            hint = "; the kind was guessed: pass --kind to choose it" if guessed else ""
            raise newentry.EntryError(f"{', '.join(stray)}: not an option of a {kind} entry{hint} (see deepflow new "
                                      "--help)")
        kwargs = {"table": {"target": target, "task": task, "time_column": time_column, "header": header,
                            "drop_missing_target": drop_missing_target},
                  "text": {"label_column": target, "text_column": text_column, "header": header,
                           "fold_labels": fold_labels},
                  "detection": {"img_size": img_size, "duplicates": duplicates}}[kind]
        create = _front_door(kind)

        def echo(line: str) -> None:
            for shown in [*first, line]:
                out.print(shown, markup=False, highlight=False, soft_wrap=True)
            first.clear()

        create(name, path, **kwargs, budget=budget, dvc=not no_dvc, force=force, command=command, echo=echo)
    except newentry.DvcError as exc:
        _fail(str(exc), 1)
    except (ValueError, OSError, config.ConfigError) as exc:  # EntryError is a ValueError: one line, nothing run
        _fail(str(exc), 2)
    if run_after:
        run([name], None)


_NEW_FLAGS = {"--target": ("table", "text"), "--task": ("table",), "--time-column": ("table",),
              "--text-column": ("text",), "--fold-labels": ("text",), "--header": ("table", "text"),
              "--drop-missing-target": ("table",), "--img-size": ("detection",), "--duplicates": ("detection",)}


def _front_door(kind: str):
    """The ``create`` of a kind's ``deepflow new`` (kinds/<kind>/new.py)."""
    import importlib

    return importlib.import_module(f"deepflow.kinds.{kind}.new").create


@app.command()
def validate(use_case: UseCaseArg, overrides: Overrides = None) -> None:
    """Check the prepared data against the use case's Great Expectations suites."""
    from deepflow import steps
    from deepflow.validation import ValidationFailed

    _check(use_case, overrides or [])
    try:
        info = steps.validate_data(use_case, overrides or [])
    except (ValidationFailed, FileNotFoundError) as exc:
        _fail(str(exc), 1)
    out.print(f"{use_case}: validation passed ({info['expectations']} expectations, data "
              f"{info['data_version']}); report: {info['report_path']}", highlight=False)


@app.command()
def train(use_case: UseCaseArg, overrides: Overrides = None, verbose: Verbose = False) -> None:
    """Validate, train all members and register the best as @challenger (no promotion)."""
    started = time.time()
    _check(use_case, overrides or [])
    _print_summaries(_pipelines([use_case], overrides or [], promote=False, started=started, verbose=verbose))


@app.command()
def promote(use_case: UseCaseArg,
            accept_schema_change: Annotated[bool, typer.Option(
                "--accept-schema-change",
                help="the entry's schema changed on purpose: replace a @champion of the old schema without "
                     "comparing with it (the policy's floors still apply; recorded with the decision)")] = False,
            ) -> None:
    """Compare @challenger with @champion on the current test split; move @champion if it wins."""
    from deepflow import ledger, steps

    _check(use_case, [])
    try:
        result = steps.promote_challenger(use_case, actor=ledger.actor_for_cli(),
                                          accept_schema_change=accept_schema_change)
    except (LookupError, FileNotFoundError, ValueError) as exc:  # ValueError: no-op or stale move, refused
        _fail(str(exc), 1)
    before, after = (f"v{v}" if v else "none" for v in (result["previous_champion"], result["champion"]))
    moved = f"@champion {before} -> {after}" if result["promoted"] else f"@champion stays {after}"
    out.print(f"{use_case}: v{result['challenger']} {'promoted' if result['promoted'] else 'not promoted'}; "
              f"{moved}. Why: {'; '.join(result['reasons'])}", highlight=False)


@app.command()
def entries() -> None:
    """The dataset entries in datasets/: kind, default run, schedule, prepared data; broken files with their error."""
    from deepflow import usecase

    broken: list[Exception] = []  # each error names its file
    found = usecase.entries(lambda _path, exc: broken.append(exc))
    table = Table(title=f"dataset entries in {settings.datasets_dir()}")
    for col in ("entry", "kind", "default", "schedule", "prepared data", "description"):
        table.add_column(col)
    for name, e in found.items():
        prepared = usecase.project_path(str(e.config.get("prepared_dir", "")))
        ready = "yes" if e.config.get("prepared_dir") and (prepared / "train.parquet").exists() else "missing"
        schedule = ", ".join(f"{k} {v}" for k, v in (e.schedule or {}).items()) or "-"
        table.add_row(name, e.kind, "yes" if e.default else "", schedule, ready, e.description)
    out.print(table)
    for exc in broken:
        err.print(f"[bold red]broken entry:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    if broken:
        raise typer.Exit(1)


@app.command()
def status() -> None:
    """Registered models: champion and challenger versions, key metrics, data version."""
    from deepflow import tracking

    table = Table(title=f"registry at {settings.tracking_uri()}")
    for col in ("model", "alias", "version", "member", "test metrics", "data version", "decision"):
        table.add_column(col)
    for model in tracking.registered_models():
        for alias in (tracking.CHAMPION, tracking.CHALLENGER):
            mv = tracking.version_by_alias(model.name, alias)
            if mv is None:
                table.add_row(model.name, alias, "-", "", "", "", "")
                continue
            tags = mv.tags
            metrics = ", ".join(f"{k.removeprefix('test/')}={v}" for k, v in sorted(tags.items())
                                if k.startswith("test/"))
            table.add_row(model.name, alias, str(mv.version), tags.get("deepflow.member", ""), metrics,
                          tags.get("deepflow.data_version", "")[:12], tags.get("deepflow.decision", ""))
    out.print(table)


@app.command()
def show(ref: Annotated[str, typer.Argument(help="USE_CASE, USE_CASE@ALIAS or USE_CASE:VERSION")]) -> None:
    """Print the birth certificate of a registered version (default: @champion)."""
    from deepflow import tracking

    use_case, version = _resolve(ref)
    try:
        cert = tracking.birth_certificate(use_case, version)
    except LookupError as exc:
        _fail(str(exc), 1)
    typer.echo(json.dumps(cert, indent=2, default=str))  # plain JSON: pipe it into jq


def _resolve(ref: str) -> tuple[str, str]:
    """``name`` / ``name@challenger`` / ``name:3`` -> (entry, version)."""
    from deepflow import tracking

    use_case, pinned, version = ref.partition(":")
    if not pinned:
        use_case, _, alias = ref.partition("@")
    _check(use_case, [])
    if not pinned:
        alias = alias or tracking.CHAMPION
        mv = tracking.version_by_alias(use_case, alias)
        if mv is None:
            _fail(f"{use_case} has no @{alias}", 1)
        version = str(mv.version)
    return use_case, version


@app.command()
def reproduce(ref: Annotated[str, typer.Argument(help="USE_CASE, USE_CASE@ALIAS or USE_CASE:VERSION")],
              quick: Annotated[bool, typer.Option("--quick", help="a nightly self-check: re-score the registered "
                                                  "model, train twice on a sample and compare")] = False,
              code: Annotated[str | None, typer.Option("--code", help="rebuild with this git ref's code instead of "
                                                       "the recorded commit (does my change alter the model?)")] = None,
              record: Annotated[bool, typer.Option(help="write the verdict to the version (tag + artifact)")] = True,
              ) -> None:
    """Rebuild a registered version from its birth certificate (code, data, config, seed) and compare
    its test metrics and predictions; exit 1 on a mismatch. Never moves an alias (docs/reproduce.md)."""
    from deepflow import reproduce as rep

    use_case, version = _resolve(ref)
    try:
        report = rep.reproduce(use_case, version, quick=quick, code_ref=code, record=record,
                               echo=lambda line: out.print(escape(line), highlight=False, soft_wrap=True))
    except (LookupError, rep.ReproduceError) as exc:
        _fail(str(exc), 1)
    # full: the recorded metrics beside the rebuilt model's; quick: beside the registered model re-scored
    rows, label = ((report.get("registered_model"), "re-scored") if quick else (report.get("metrics"), "rebuilt"))
    for key, row in (rows or {}).items():
        got = "-" if row["rebuilt"] is None else f"{row['rebuilt']:.6f}"
        diff = "-" if row["diff"] is None else f"{row['diff']:.2g}"
        out.print(f"  test/{key:<22} recorded {row['recorded']:.6f}  {label} {got}  |diff| {diff}", highlight=False)
    if predictions := report.get("predictions"):
        what = "two sample trainings" if quick else "rebuilt vs registered"
        out.print(f"predicts  {what}: {predictions.get('detail')}", highlight=False)
    where = "" if not record else f" (recorded on {use_case} v{version}: tag reproduced{'_quick' if quick else ''})"
    if report["verdict"] in ("exact", "within tolerance"):
        out.print(f"[bold green]{report['verdict']}[/]: {escape(report['reason'])}{escape(where)}", soft_wrap=True)
    else:
        _fail(f"{use_case} v{version} {report['verdict']}: {report['reason']}{where}", 1)


@app.command()
def history(use_case: UseCaseArg) -> None:
    """Every alias move of a use case, oldest first (the promotion ledger)."""
    from deepflow import ledger

    _check(use_case, [])
    table = Table(title=f"{use_case}: alias moves")
    for col in ("time (UTC)", "alias", "from", "to", "status", "actor", "reason", "evidence"):
        table.add_column(col, overflow="fold")
    for m in ledger.history(use_case):
        status = m.status + (f": {m.error}" if m.error else "")
        reason = m.reason + (f" [FORCED past: {m.forced}]" if m.forced else "")
        table.add_row(m.time, m.alias, f"v{m.from_version}" if m.from_version else "-", f"v{m.to_version}",
                      status, m.actor, reason, m.evidence)
    out.print(table)
    if not ledger.consistent(use_case):
        _fail(f"{use_case}@champion does not match the ledger's last move", 1)


@app.command()
def rollback(use_case: UseCaseArg,
             reason: Annotated[str, typer.Option("--reason", help="why (recorded in the ledger)")],
             to: Annotated[str | None, typer.Option("--to", help="version (default: the previous champion)")] = None,
             force: Annotated[bool, typer.Option("--force", help="also a version that failed (or never passed) "
                                                 "its promotion gates; the ledger records the override")] = False,
             ) -> None:
    """Move @champion back (default: to the champion before the current one) and record it in the ledger."""
    from mlflow.exceptions import MlflowException

    from deepflow import steps

    _check(use_case, [])
    try:
        move = steps.rollback(use_case, reason, to, force=force)
    except (LookupError, ValueError, MlflowException) as exc:
        _fail(str(getattr(exc, "message", exc)), 1)
    if move["forced"]:
        err.print(f"[bold yellow]warning:[/] {escape(move['forced'])}; made @champion anyway (--force), recorded "
                  "in the ledger", highlight=False, soft_wrap=True)
    out.print(f"{use_case}@champion: v{move['from_version']} -> v{move['to_version']} ({move['reason']})",
              highlight=False)


@app.command()
def ui(port: Annotated[int, typer.Option(help="MLflow UI port")] = 5000,
       prefect_port: Annotated[int, typer.Option(help="Prefect server port (when none is configured)")] = 4200,
       ) -> None:
    """Open both dashboards on 127.0.0.1: MLflow (runs, models, @champion) and Prefect (flow runs,
    deployments, schedules). Starts a Prefect server unless PREFECT_API_URL names one. Ctrl-C (or
    SIGTERM) stops both."""
    import signal

    from deepflow import dashboards

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C and `kill` both stop the servers. A command started in the background of a script
    # inherits an ignored SIGINT: take it back, or Ctrl-C (a process-group SIGINT) would do nothing.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    started = []
    try:
        started.append(_started(dashboards.start_mlflow_ui, port))
        out.print(f"MLflow UI:  {started[-1].url}  (store {settings.tracking_uri()})", highlight=False)
        if api := dashboards.discover_prefect():
            out.print(f"Prefect UI: {api.removesuffix('/api')}  (already running)", highlight=False)
        else:
            started.append(_started(dashboards.start_prefect_server, prefect_port))
            out.print(f"Prefect UI: {started[-1].url}  (database in {os.environ['PREFECT_HOME']})", highlight=False)
        out.print("Ctrl-C stops them.")
        while all(s.process.poll() is None for s in started):
            time.sleep(1)
        _fail(f"{next(s for s in started if s.process.poll() is not None).name} exited; see its log", 1)
    except KeyboardInterrupt:
        pass
    finally:
        dashboards.stop_all(started)


def _started(start, port: int):
    from deepflow import dashboards

    try:
        return start(port)
    except dashboards.ServerError as exc:
        _fail(str(exc), 1)


@app.command()
def serve(host: str = "127.0.0.1", port: int = 8000,
          reload_interval: Annotated[float, typer.Option(help="seconds between registry polls (0: off)")] = 5.0,
          torch_threads: Annotated[int, typer.Option(help="torch intra-op threads per inference call")] = 1,
          api_key_file: Annotated[Path | None, typer.Option(
              help="file holding the API key (else $DEEPFLOW_API_KEY); required off 127.0.0.1")] = None,
          insecure_no_auth: Annotated[bool, typer.Option(
              "--insecure-no-auth", help="serve a non-loopback host without an API key")] = False) -> None:
    """Serve every use case's @champion over HTTP (FastAPI + uvicorn; Ctrl-C stops it).

    With an API key every route but /healthz and /readyz needs it (docs/serving.md)."""
    from deepflow import guards, serving

    try:
        key = guards.api_key(api_key_file)
        guards.check_exposure(host, key, insecure_no_auth)  # before loading anything: fail fast
    except guards.ExposureError as exc:
        _fail(str(exc), 2)
    serving.serve(serving.ServeConfig(host=host, port=port, reload_interval=reload_interval,
                                      torch_threads=torch_threads, api_key=key, insecure_no_auth=insecure_no_auth))


@app.command()
def score(use_case: UseCaseArg,
          input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="CSV, TSV, JSON lines or Parquet to score")],
          output_path: Annotated[Path, typer.Argument(metavar="OUTPUT", help=".parquet or .csv; rejects go beside it")],
          chunk_size: Annotated[int, typer.Option("--chunk-size", min=1, help="rows per chunk")] = 100_000,
          alias: Annotated[str | None, typer.Option("--alias", help="registry alias to score with",
                                                    show_default="champion")] = None,
          version: Annotated[str | None, typer.Option("--version", help="a version (overrides --alias)")] = None,
          explain: Annotated[bool, typer.Option("--explain", help="add each row's top contributions "
                                                "(an `explanation` JSON column; slower, docs/explain.md)")] = False,
          top: Annotated[int, typer.Option("--top", min=1, help="contributions per explained row")] = 5,
          ) -> None:
    """Score a file with USE_CASE@ALIAS (loaded once); failed rows go to OUTPUT's .rejects file."""
    from deepflow import tracking
    from deepflow.batch import BatchError

    _check(use_case, [])
    _prefect_api()  # before Prefect is imported: the shared server, or one that dies with this command
    from flows.score import score_batch

    _prefect_api(wait=True)

    try:
        result = score_batch(use_case, str(input_path), str(output_path), chunk_size=chunk_size,
                             alias=alias or tracking.CHAMPION, version=version, explain_top=top if explain else None)
    except (BatchError, FileNotFoundError) as exc:
        _fail(str(exc), 1)
    except Exception as exc:  # a crash mid-file: nothing was written under OUTPUT
        _fail(f"{use_case} batch scoring failed: {type(exc).__name__}: {exc} (no output written)", 1)
    out.print(f"{result['model']} v{result['version']}: {result['scored']:,} scored, "
              f"{result['rejected']:,} rejected of {result['rows']:,} rows in {result['seconds']:.1f} s -> "
              f"{result['output']} (rejects: {result['rejects']})", highlight=False, soft_wrap=True)


OpsOverrides = Annotated[list[str] | None, typer.Option("--set", "-s", help="operations config key=value")]


def _ops(overrides: list[str] | None):
    from deepflow import config, operations

    try:
        return operations.load(overrides=overrides or [])
    except config.ConfigError as exc:
        _fail(str(exc), 2)


@app.command()
def schedule(override: OpsOverrides = None,
             prefect_port: Annotated[int, typer.Option(help="port of the Prefect server started here")] = 4200,
             ) -> None:
    """Serve the deployments (one per use-case pipeline + monitor) on their schedules until Ctrl-C.

    Uses PREFECT_API_URL if set, else a Prefect server this command starts (UI included)."""
    from deepflow import dashboards

    ops = _ops(override)
    server = None
    if not dashboards.discover_prefect():
        server = _started(dashboards.start_prefect_server, prefect_port)
        os.environ["PREFECT_API_URL"] = f"{server.url}/api"
        out.print(f"Prefect server + UI: {server.url}", highlight=False)
    from flows import deployments

    try:
        deployments.serve_all(ops)
    except KeyboardInterrupt:
        pass
    finally:
        if server:
            server.stop()


@app.command()
def deploy(pool: Annotated[str, typer.Option("--pool", help="Prefect work pool (e.g. a process pool)")],
           override: OpsOverrides = None) -> None:
    """Register the deployments with a work pool (team set-up); `prefect worker start --pool POOL`
    runs them. Needs PREFECT_API_URL (a Prefect server)."""
    from deepflow import dashboards

    ops = _ops(override)
    if not dashboards.discover_prefect():
        _fail("deploy needs a Prefect server: set PREFECT_API_URL (see docs/team.md)", 2)
    from flows import deployments

    ids = deployments.deploy_to_pool(ops, pool)
    names = [f"train-pipeline/{u}" for u in ops.pipelines] + ["monitor/incoming", "self-check/reproduce"]
    out.print(f"{len(ids)} deployments on work pool {pool!r}: " + ", ".join(names), highlight=False)


@app.command()
def monitor(use_case: Annotated[str | None, typer.Argument(help="default: every monitored use case")] = None,
            batch: Annotated[Path | None, typer.Option("--batch", help="check this file/folder, not the inbox")] = None,
            override: OpsOverrides = None) -> None:
    """Drift-check new batches in data/incoming/<use case>/ against the champion; retrain on drift."""
    from deepflow import batch as batch_mod

    _ops(override)  # a bad key fails here, before any Prefect start-up
    if use_case:
        _check(use_case, [])
    _prefect_api()  # before Prefect is imported: the shared server, or one that dies with this command
    from flows.monitor import monitor as monitor_flow

    _prefect_api(wait=True)

    try:
        results = monitor_flow(use_case, str(batch) if batch else None, list(override or []))
    except (batch_mod.BatchError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc), 1)
    for r in results:
        if not r["batches"]:
            out.print(f"{r['use_case']}: no new batches", highlight=False)
            continue
        if "error" in r:  # every entry was checked: this one could not be
            err.print(f"{r['use_case']}: {escape(r['decision']['reason'])}", highlight=False, soft_wrap=True)
            continue
        verdict = "DRIFT" if r["drifted"] else "no drift"
        out.print(f"{r['use_case']}: {verdict} (score {r['score']:.3f}, {r['rows']:,} rows from "
                  f"{', '.join(r['batches'])}); {r['decision']['reason']}; report {r['report']}",
                  highlight=False, soft_wrap=True)
    if any("error" in r for r in results):
        raise typer.Exit(1)


@app.command()
def incoming(use_case: UseCaseArg,
             rows: Annotated[int, typer.Option(help="rows (transactions, texts or frames)")] = 3000,
             drift: Annotated[float, typer.Option(help="0: like the training data; 1: clearly shifted")] = 0.0,
             seed: Annotated[int, typer.Option(help="generator seed")] = 1,
             override: OpsOverrides = None) -> None:
    """Write a new batch (drifted on request) into the entry's inbox, for `deepflow monitor`."""
    from deepflow import config, operations
    from deepflow import drift as drift_mod

    _check(use_case, [])
    try:  # the entry's `incoming:` generator, else its kind's generic one
        path = drift_mod.make_batch(use_case, operations.inbox(_ops(override), use_case), rows=rows, drift=drift,
                                    seed=seed)
    except (FileNotFoundError, ValueError) as exc:  # no prepared data yet, a bad `incoming:`, drift out of range
        _fail(str(exc), 2 if isinstance(exc, config.ConfigError) else 1)
    out.print(f"{use_case}: wrote {path} ({rows} rows, drift {drift})", highlight=False)


@app.callback()
def _environment() -> None:
    # Every command: the quiet/offline defaults and embedded stores (settings.apply_env_defaults),
    # set here rather than on import so that importing this module changes nothing.
    settings.apply_env_defaults()


def main() -> None:
    """The ``deepflow`` console script: environment defaults first (before anything imports
    Prefect, which reads its settings once), then the local Prefect server, then the command."""
    from deepflow import dashboards

    global _OWNS_SERVERS
    _OWNS_SERVERS = True
    settings.apply_env_defaults()
    dashboards.discover_prefect()  # use the local Prefect server `deepflow schedule`/`ui` started
    try:
        app()
    except SystemExit as exc:
        _exit(exc.code)
    _exit(0)


def _exit(code: int | str | None) -> NoReturn:
    """End the process as Python's exit does, less the module teardown that follows it (seconds once
    torch, Lightning, MLflow and Prefect are imported; docs/benchmarks.md): the non-daemon threads
    are waited for (threading's own exit hooks first, so idle thread pools end), the exit handlers
    run (logging flushed, owned servers stopped), the standard streams are flushed, then
    ``os._exit``. An exception other than SystemExit never comes here: it ends the process the usual
    way, with its traceback."""
    import atexit
    import threading

    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    threading._shutdown()  # what the interpreter calls first on exit: joins non-daemon threads
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a broken pipe: nothing more to say
            pass
    os._exit(code or 0)


if __name__ == "__main__":
    main()
