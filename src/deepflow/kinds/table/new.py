"""``deepflow new NAME --data PATH``: a user's table becomes a dataset entry, with no code.

Reads the file and infers everything (``read.py``, ``infer.py``), then splits the table as the
prepare stage will (:func:`settle_split`): a time-ordered split that leaves a class out of a split
falls back to the content hash, and the contract's per-split bounds are fitted to these very
splits, so the first run's own splits pass. Only when all that succeeds is anything written: the
source copied to ``<data>/sources/<name>/``, the entry ``datasets/<name>.yaml`` (a header says it
was generated and is meant to be reviewed), the profile ``reports/<name>/profile.md``, then the
prepared splits. In a DVC project the source is ``dvc add``-ed and the splits come from a
``<name>_prepare`` stage run by ``dvc repro`` (so the models' lineage names the DVC hashes in
``dvc.lock``); elsewhere, or with ``dvc=False``, the splits are prepared in this process.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import yaml

from deepflow import settings, usecase
from deepflow.kinds.table.infer import Inference, infer
from deepflow.kinds.table.read import TableError, read_table

MIN_BUDGET_S = 60.0  # a run keeps a reserve for registration and promotion; less leaves no time to train
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hr|hours?)?\s*$", re.IGNORECASE)
STAGE_CODE = ("src/deepflow/kinds/table/prepare.py", "src/deepflow/kinds/table/read.py",
              "src/deepflow/kinds/table/roles.py")  # stage dependencies when the project holds this code


class DvcError(RuntimeError):
    """A DVC command failed after the entry was written (the message says what to run)."""


@dataclass
class NewResult:
    name: str
    entry: Path
    profile: Path
    source: Path
    prepared: Path
    inference: Inference
    counts: dict[str, int] = field(default_factory=dict)
    dvc: bool = False


def parse_budget(text: str | float) -> float:
    """Seconds from ``300``, ``300s``, ``5m``, ``1.5min`` or ``1h``; at least :data:`MIN_BUDGET_S`."""
    match = _BUDGET.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise TableError(f"--budget {text!r}: give a duration such as 300, 300s, 5m or 1h")
    unit = (match.group(2) or "s")[0].lower()
    seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[unit]
    if seconds < MIN_BUDGET_S:
        raise TableError(f"--budget {text!r}: the minimum is {MIN_BUDGET_S:.0f}s (1m): a run keeps a reserve of its "
                         "budget for registration and promotion, and needs time to train before that")
    return seconds


def settle_split(inf: Inference, frame: pd.DataFrame, time_given: bool) -> dict[str, pd.DataFrame]:
    """Split ``frame`` as prepare will (the same cast, hashes and cuts: deterministic) and fit the
    contract's per-split bounds to those splits. A time-ordered split that leaves a class (of 3 rows
    or more) out of a split falls back to the stratified content hash, with a note; with
    ``--time-column`` (``time_given``) that is a TableError instead."""
    from deepflow.config import load_mapping
    from deepflow.kinds.table import roles
    from deepflow.kinds.table.config import TableConfig
    from deepflow.kinds.table.prepare import prepared_splits

    def splits() -> dict[str, pd.DataFrame]:
        return prepared_splits(frame, load_mapping(TableConfig, inf.to_entry("new", "", "", MIN_BUDGET_S)["config"]))

    parts = splits()
    if inf.time_column and inf.task != "regression":
        counts = pd.concat(list(parts.values()))[inf.target].value_counts()
        gaps = [f"{c!r} has no row in {' or '.join(names)}" for c in inf.classes if counts.get(c, 0) >= 3
                if (names := [n for n, part in parts.items() if not (part[inf.target] == c).any()])]
        if gaps:
            why = f"the time-ordered split by {inf.time_column} leaves a class out ({', '.join(gaps)})"
            if time_given:
                raise TableError(f"--time-column {inf.time_column}: {why}: every class needs rows in train, "
                                 "validation and test; leave --time-column out to split by content hash")
            inf.notes.append(f"{why}: split by content hash, stratified by class, instead")
            inf.time_column, inf.time_reason = None, f"{why}, so not by time"
            parts = splits()
    roles.fit_to_splits(inf.columns, inf.class_share, parts, inf.target, inf.rows)
    return parts


def check_name(name: str, force: bool) -> Path:
    """The entry file ``name`` would be; TableError when the name is invalid, reserved or taken."""
    if not usecase.NAME.match(name):
        raise TableError(f"entry name {name!r}: use lower-case letters, digits, '-' or '_', starting with a letter "
                         "(it names the model, the experiment and the URL)")
    if name in usecase.RESERVED or name.endswith("-monitoring"):
        raise TableError(f"entry name {name!r} is taken by deepflow itself ({', '.join(usecase.RESERVED)} and "
                         "*-monitoring are reserved)")
    path = settings.datasets_dir() / f"{name}.yaml"
    if path.exists() and not force:
        raise TableError(f"{path} exists: pick another name, or pass --force to replace the entry (its registered "
                         "models stay)")
    return path


def project_relative(path: Path) -> str:
    """``path`` relative to the project root when inside it (what the entry records), else absolute."""
    try:
        return path.resolve().relative_to(settings.PROJECT_ROOT.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


class _Dumper(yaml.SafeDumper):
    """Mappings as blocks, lists on one line: a column is a block, its categories one line."""


_Dumper.add_representer(list, lambda d, data: d.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True))


def entry_text(mapping: dict, name: str, command: str, source: Path, rows: int, profile: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = [f"# Generated by `{command}` on {when}",
              f"# from {source.name} ({rows:,} rows read). Meant to be reviewed and edited: every inference (target,",
              "# task, classes, metric, split, each column's role and note) is a key below, and `columns` is also the",
              "# data contract (null shares, ranges, known categories: observed values with a tolerance).",
              "# Changing a role, the target or the classes changes the model's schema; editing a bound changes",
              f"# only what validation accepts. The profile: {profile}. Then: deepflow run {name}"]
    body = yaml.dump(mapping, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)
    return "\n".join(header) + "\n" + body


def create(name: str, data: str | Path, *, target: str | None = None, task: str | None = None,
           time_column: str | None = None, budget: str | float = "5m", drop_missing_target: bool = False,
           header: bool | None = None, dvc: bool = True, force: bool = False, command: str | None = None,
           echo: Callable[[str], None] = print) -> NewResult:
    """Read, infer and settle the split (nothing written if that fails), then write the source
    copy, the entry, the profile and the prepared splits; ``echo`` gets every printed line.
    ``header`` None: detected (text files)."""
    entry_path = check_name(name, force)
    budget_s = parse_budget(budget)
    data = Path(data)
    frame, read_cfg, notes = read_table(data, header=header)
    inf = infer(frame, target=target, task=task, time_column=time_column, drop_missing_target=drop_missing_target,
                read=read_cfg, read_notes=notes)
    inf.source = data.name
    settle_split(inf, frame, time_given=time_column is not None)
    del frame
    for line in inf.lines():
        echo(line)

    source = settings.data_dir() / "sources" / name / data.name
    source.parent.mkdir(parents=True, exist_ok=True)
    if not source.exists() or not source.samefile(data):
        shutil.copyfile(data, source)
    prepared = settings.data_dir() / "prepared" / name
    profile_path = settings.reports_dir() / name / "profile.md"
    mapping = inf.to_entry(name, project_relative(source), project_relative(prepared), budget_s)
    command = command or f"deepflow new {name} --data {data}"
    entry_path.parent.mkdir(parents=True, exist_ok=True)
    entry_path.write_text(entry_text(mapping, name, command, source, inf.rows, project_relative(profile_path)))
    cfg = usecase.resolve_config(usecase.read_entry(entry_path))  # the file as every later command reads it
    from deepflow.kinds.table.profile import markdown

    profile_path.parent.mkdir(parents=True, exist_ok=True)
    profile_path.write_text(markdown(inf, name, f"from {data}, {datetime.now(UTC):%Y-%m-%d %H:%M UTC}"))
    echo(f"wrote     {project_relative(entry_path)} (the entry: review it) and {project_relative(profile_path)}")

    result = NewResult(name=name, entry=entry_path, profile=profile_path, source=source, prepared=prepared,
                       inference=inf)
    use_dvc, why = _dvc_usable(dvc, entry_path, source, prepared)
    if use_dvc:
        _dvc_prepare(name, entry_path, source, prepared, echo)
        result.dvc = True
    else:
        from deepflow.kinds.table.prepare import prepare

        result.counts = prepare(cfg, prepared)
        echo(f"source    {project_relative(source)} (a copy; {why})")
    counts = result.counts or _counts(prepared)
    echo(f"prepared  {project_relative(prepared)}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items() if k != "rows")
         + " rows")
    echo(f"next      deepflow run {name}")
    return result


def _counts(prepared: Path) -> dict[str, int]:
    import pyarrow.parquet as pq

    return {s: pq.ParquetFile(prepared / f"{s}.parquet").metadata.num_rows for s in ("train", "val", "test")
            if (prepared / f"{s}.parquet").exists()}


def _dvc_usable(wanted: bool, *paths: Path) -> tuple[bool, str]:
    if not wanted:
        return False, "DVC not used: --no-dvc"
    if not (settings.PROJECT_ROOT / ".dvc").is_dir():
        return False, f"DVC not used: no .dvc/ in {settings.PROJECT_ROOT}"
    outside = [p for p in paths if project_relative(p).startswith("/")]
    if outside:
        return False, f"DVC not used: {outside[0]} is outside the project {settings.PROJECT_ROOT}"
    return True, ""


def _dvc(*args: str) -> None:
    """One DVC command in the project root, with this Python's folder first on PATH so the stage's
    ``python -m ...`` runs in the same environment."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=settings.PROJECT_ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if line.lower().startswith("error")] or lines[-1:]
        raise DvcError(f"`dvc {args[0]}` failed: {' '.join(errors)[:500]}")


def _dvc_prepare(name: str, entry_path: Path, source: Path, prepared: Path, echo: Callable[[str], None]) -> None:
    """``dvc add`` the source, write the ``<name>_prepare`` stage and ``dvc repro`` it."""
    src, entry, out = (project_relative(p) for p in (source, entry_path, prepared))
    _dvc("add", src)
    echo(f"source    {src} (a copy, tracked by DVC: {src}.dvc)")
    stage = f"{name}_prepare"
    deps = [src, entry, *(c for c in STAGE_CODE if (settings.PROJECT_ROOT / c).is_file())]
    try:
        _dvc("stage", "add", "--force", "-n", stage, *(a for d in deps for a in ("-d", d)), "-o", out,
             f"python -m deepflow.kinds.table.prepare {name}")
        _dvc("repro", stage)
    except DvcError as exc:
        raise DvcError(f"{exc} (the entry {entry} is written; fix this, then run `dvc repro {stage}`)") from None
    echo(f"stage     {stage} in dvc.yaml: {src} + {entry} -> {out} (dvc repro {stage} re-runs it; dvc.lock has "
         "the hashes)")
