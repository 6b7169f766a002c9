"""``deepflow new NAME --data FILE`` for a table: a user's table becomes a dataset entry, with no code.

Reads the file and infers everything (``read.py``, ``infer.py``), then splits the table as the
prepare stage will (:func:`settle_split`): a time-ordered split that leaves a class out of a split
falls back to the content hash, and the contract's per-split bounds are fitted to these very
splits, so the first run's own splits pass. Only when all that succeeds is anything written (the
steps every kind shares are in ``deepflow/newentry.py``): the source copy, the entry, the profile
``reports/<name>/profile.md``, then the prepared splits (a ``<name>_prepare`` DVC stage, or here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from deepflow import newentry, settings
from deepflow.kinds.table.infer import Inference, infer
from deepflow.kinds.table.read import TableError, read_table
from deepflow.newentry import MIN_BUDGET_S, DvcError, parse_budget, project_relative  # noqa: F401 (re-exported)
from deepflow.problems import quote

MAX_NAME_CHARS = 1_000  # a longer column name is a line of data read as a header
STAGE_CODE = ("src/deepflow/kinds/table/prepare.py", "src/deepflow/kinds/table/read.py",
              "src/deepflow/kinds/table/roles.py")  # stage dependencies when the project holds this code


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


def check_names(frame: pd.DataFrame) -> None:
    """A TableError when a column name is longer than :data:`MAX_NAME_CHARS`: a header row that is
    really data (a long text), which every printed inference would repeat."""
    for position, name in enumerate(map(str, frame.columns), start=1):
        if len(name) > MAX_NAME_CHARS:
            raise TableError(f"column {position}'s name has {len(name):,} characters ({quote(name, 40)}): is the "
                             "first line data rather than column names? Pass --no-header, or shorten the names "
                             f"(at most {MAX_NAME_CHARS:,} characters)")


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


def create(name: str, data: str | Path, *, target: str | None = None, task: str | None = None,
           time_column: str | None = None, budget: str | float = "5m", drop_missing_target: bool = False,
           header: bool | None = None, dvc: bool = True, force: bool = False, command: str | None = None,
           echo: Callable[[str], None] = print) -> NewResult:
    """Read, infer and settle the split (nothing written if that fails), then write the source
    copy, the entry, the profile and the prepared splits; ``echo`` gets every printed line.
    ``header`` None: detected (text files)."""
    entry_path = newentry.check_name(name, force)
    budget_s = parse_budget(budget)
    data = Path(data)
    frame, read_cfg, notes = read_table(data, header=header)
    try:
        check_names(frame)
        inf = infer(frame, target=target, task=task, time_column=time_column,
                    drop_missing_target=drop_missing_target, read=read_cfg, read_notes=notes)
        inf.source = data.name
        settle_split(inf, frame, time_given=time_column is not None)
    except TableError as exc:  # a problem of this file: say which
        raise TableError(newentry.in_file(data, exc)) from None
    del frame
    for line in inf.lines():
        echo(line)

    source = newentry.copy_source(data, name)
    prepared = settings.data_dir() / "prepared" / name
    profile_path = settings.reports_dir() / name / "profile.md"
    mapping = inf.to_entry(name, project_relative(source), project_relative(prepared), budget_s)
    about = [f"from {source.name} ({inf.rows:,} rows read). Meant to be reviewed and edited: every inference (target,",
             "task, classes, metric, split, each column's role and note) is a key below, and `columns` is also the",
             "data contract (null shares, ranges, known categories: observed values with a tolerance).",
             "Changing a role, the target or the classes changes the model's schema; editing a bound changes",
             f"only what validation accepts. The profile: {project_relative(profile_path)}. Then: deepflow run {name}"]
    cfg = newentry.write_entry(entry_path, mapping, command or f"deepflow new {name} --data {data}", about)
    from deepflow.kinds.table.profile import markdown

    profile_path.parent.mkdir(parents=True, exist_ok=True)
    profile_path.write_text(markdown(inf, name, f"from {data}, {datetime.now(UTC):%Y-%m-%d %H:%M UTC}"))
    echo(f"wrote     {project_relative(entry_path)} (the entry: review it) and {project_relative(profile_path)}")

    def prepare_here() -> None:
        from deepflow.kinds.table.prepare import prepare

        prepare(cfg, prepared)

    used_dvc, counts = newentry.finish(name, entry_path, source, prepared, dvc_wanted=dvc,
                                       module="deepflow.kinds.table.prepare", stage_code=STAGE_CODE,
                                       prepare_here=prepare_here, echo=echo)
    return NewResult(name=name, entry=entry_path, profile=profile_path, source=source, prepared=prepared,
                     inference=inf, counts=counts, dvc=used_dvc)
