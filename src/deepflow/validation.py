"""The one door to Great Expectations (1.x): run a use case's suites, return a readable report.

Suites are declared per use case (``usecases/<uc>/expectations.py``) as named lists of GX
expectations, one list per frame (e.g. the rows, and a per-split summary).

A frame may name the columns that identify its rows in ``frame.attrs["row_id"]`` (e.g. a
``split:position`` column): a failure then lists the failing rows by those values, not only the
bad values. The report keeps the suites it ran (``contract.json`` beside the report): the
contract as data, reviewable next to the entry it came from.

Some rules hold for every frame of every contract, built-in or generated, so they are added here
rather than in each suite: every floating-point column must be finite (``±inf`` is never data;
NaN stays a missing value, which the suites' own null rules judge).

Two more checks compare the data with what can be known about it (``ContractConfig``, an entry's
``contract:`` block): the share of rows that are exact copies of another row (:func:`duplicates`,
for the table kinds), and the row count against the data the ``@champion`` was trained on
(:func:`history`, every kind): a source appended to itself, or cut at 60 %, fails here instead of
registering a challenger.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepflow.problems import clip

ROW_ID = "row_id"  # frame.attrs key: the columns that name a frame's rows in failures
SHOWN = 12  # list items shown in a failure's one-line summary (the JSON keeps them all)
CHARS = 120  # characters of one value shown in a failure's summary
FINITE = float(np.finfo(np.float64).max)  # |x| above this is ±inf: the bound of the finite rule


@dataclass
class ContractConfig:
    """An entry's ``contract:`` block: the checks against its own history, on top of its suites."""

    max_duplicate_share: float | None = 0.05  # rows that copy another row, at most this share (None: off)
    # rows now / rows the @champion was trained on, within [low, high] (None: off)
    rows_vs_champion: list[float] | None = field(default_factory=lambda: [0.75, 1.5])


@dataclass
class Failure:
    frame: str
    expectation: str
    column: str | None
    kwargs: dict[str, Any]
    unexpected_count: int | None = None
    examples: list[Any] = field(default_factory=list)
    observed: Any = None
    rows: list[Any] = field(default_factory=list)  # the failing rows, by the frame's row_id columns
    description: str | None = None  # the rule in words, where the suite gave one

    def line(self) -> str:
        where = f"column {self.column!r}" if self.column else "table"
        what = f"{self.unexpected_count} bad value(s), e.g. {_short(self.examples[:5])}" if (
            self.unexpected_count
        ) else f"observed {_short(self.observed)!r}"
        if self.rows:
            what += f" at {_short(self.rows[:5])}"
        if self.description:
            return f"[{self.frame}] {where}: {self.description} ({self.expectation}): {what}"
        kwargs = {k: _short(v) for k, v in self.kwargs.items()}
        return f"[{self.frame}] {self.expectation} on {where} {kwargs}: {what}"


def _short(value: Any) -> Any:
    """A long list (a category set) cut to its first items, a long string (a 5 MB text) to its
    first characters, a mapping's values alike, for the one-line summary."""
    if isinstance(value, list | tuple):
        head = [_short(v) for v in value[:SHOWN]]
        return head + [f"... (+{len(value) - SHOWN} more)"] if len(value) > SHOWN else head
    if isinstance(value, dict):  # a column-set check's {"missing": [...], "unexpected": [...]}
        return {k: _short(v) for k, v in value.items()}
    return clip(value, CHARS) if isinstance(value, str) else value


@dataclass
class ValidationReport:
    suite: str
    success: bool
    evaluated: int
    rows: dict[str, int]
    failures: list[Failure]
    # the expectations run, per frame (their GX configurations): saved as contract.json
    contract: dict[str, list[dict[str, Any]]] = field(default_factory=dict, repr=False)

    def to_markdown(self) -> str:
        head = "PASSED" if self.success else "FAILED"
        lines = [
            f"# Validation {head}: `{self.suite}`",
            "",
            f"{self.evaluated} expectations over "
            + ", ".join(f"{k} ({n:,} rows)" for k, n in self.rows.items()),
            "",
        ]
        lines += [f"- {f.line()}" for f in self.failures]
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        body = {k: v for k, v in asdict(self).items() if k != "contract"}
        return json.dumps(body, indent=2, default=str)

    def save(self, directory: Path) -> Path:
        """Write ``validation.json``, ``validation.md`` and the suites run (``contract.json``);
        return the Markdown path."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "validation.json").write_text(self.to_json())
        if self.contract:
            (directory / "contract.json").write_text(
                json.dumps({"suite": self.suite, "frames": self.contract}, indent=2, default=str))
        md = directory / "validation.md"
        md.write_text(self.to_markdown())
        return md


class ValidationFailed(RuntimeError):
    """Data broke its contract; ``report_path`` says which expectation, column and values."""

    def __init__(self, report: ValidationReport, report_path: Path) -> None:
        first = report.failures[0].line() if report.failures else "unknown failure"
        more = f" (+{len(report.failures) - 1} more)" if len(report.failures) > 1 else ""
        super().__init__(f"validation of {report.suite!r} failed: {first}{more}; report: {report_path}")
        self.report = report
        self.report_path = report_path


def rows_of(splits: dict[str, pd.DataFrame], where: str = "_row") -> pd.DataFrame:
    """Every row of every split in one frame, with ``split`` and ``where`` (``"train:17"``: the
    split and the row's position in its file) added and named as the frame's :data:`ROW_ID`, so a
    failure points at the rows to look at."""
    parts = [df.reset_index(drop=True).assign(split=name, **{where: [f"{name}:{i}" for i in range(len(df))]})
             for name, df in splits.items()]
    rows = pd.concat(parts, ignore_index=True)
    rows.attrs[ROW_ID] = [where]
    return rows


def duplicates(rows: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One row: how many of ``rows`` repeat an earlier row on ``columns``, their share, and the
    first copies as ``"train:812 = train:3"`` (by the rows' :data:`ROW_ID`), so a failure of
    :func:`duplicate_rules` points at them."""
    where = (rows.attrs.get(ROW_ID) or [None])[0]
    copies = rows.duplicated(subset=columns, keep="first") if len(rows) else pd.Series([], dtype=bool)
    n = int(copies.sum())
    shown = ""
    if n and where is not None:
        first = rows.groupby(columns, dropna=False, sort=False)[where].transform("first")
        pairs = [f"{a} = {b}" for a, b in zip(rows.loc[copies, where].head(3), first[copies].head(3), strict=True)]
        shown = f": {', '.join(pairs)}" + (f" (+{n - 3:,} more)" if n > 3 else "")
    frame = pd.DataFrame([{"copies": f"{n:,} of {len(rows):,} rows copy an earlier row{shown}",
                           "share": n / max(len(rows), 1)}])
    frame.attrs[ROW_ID] = ["copies"]
    return frame


def duplicate_rules(cfg: ContractConfig) -> list:
    """The rule over :func:`duplicates`' frame (none when ``max_duplicate_share`` is None)."""
    import great_expectations.expectations as gxe

    if cfg.max_duplicate_share is None:
        return []
    return [gxe.ExpectColumnValuesToBeBetween(
        column="share", min_value=0, max_value=cfg.max_duplicate_share,
        description=f"at most {cfg.max_duplicate_share:.0%} of the rows are exact copies of another row "
                    "(contract.max_duplicate_share)")]


def history(rows: int, champion: str | None, champion_rows: int | None,
            cfg: ContractConfig) -> tuple[pd.DataFrame, list]:
    """(one-row frame, its rule): today's row count against the ``champion_rows`` the ``@champion``
    (version ``champion``) was trained on. Nothing to check without a champion that recorded it."""
    import great_expectations.expectations as gxe

    if cfg.rows_vs_champion is None or champion is None or not champion_rows:
        return pd.DataFrame(), []
    low, high = cfg.rows_vs_champion
    frame = pd.DataFrame([{"rows": f"{rows:,} rows now, {champion_rows:,} for @champion v{champion}",
                           "ratio": rows / champion_rows}])
    frame.attrs[ROW_ID] = ["rows"]
    return frame, [gxe.ExpectColumnValuesToBeBetween(
        column="ratio", min_value=low, max_value=high,
        description=f"rows within {low}x..{high}x of the data @champion was trained on "
                    "(contract.rows_vs_champion; a deliberate change: contract.rows_vs_champion=null)")]


def validate(suite: str, frames: dict[str, pd.DataFrame], expectations: dict[str, list]) -> ValidationReport:
    """Run each frame's expectations; never raises on bad data, only reports it."""
    import great_expectations as gx
    from great_expectations.execution_engine import pandas_execution_engine

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    # GX fingerprints every batch below this size by hashing it, and hashing an object column
    # makes a fixed-width string array (longest value x distinct values): one 5 MB text among 10,000
    # asked for 189 GiB, and mixed types raised. The fingerprint is never used here: off.
    pandas_execution_engine.HASH_THRESHOLD = 0
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    source = context.data_sources.add_pandas(f"{suite}-source")
    failures: list[Failure] = []
    contract: dict[str, list[dict[str, Any]]] = {}
    evaluated = 0
    for frame_name, items in expectations.items():
        frame = frames[frame_name]
        row_id = [c for c in frame.attrs.get(ROW_ID, []) if c in frame.columns]
        items = [*items, *finite_rules(frame)]
        contract[frame_name] = [_configuration(e) for e in items]
        batch_def = source.add_dataframe_asset(frame_name).add_batch_definition_whole_dataframe(
            "all"
        )
        # The whole suite in one add: GX re-serialises a stored suite on every add_expectation
        # (quadratic: 60 % of a 150-expectation validation went there).
        gx_suite = context.suites.add(gx.ExpectationSuite(name=f"{suite}.{frame_name}", expectations=items))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{suite}.{frame_name}", data=batch_def, suite=gx_suite)
        )
        result_format: Any = (
            {"result_format": "SUMMARY", "unexpected_index_column_names": row_id} if row_id else "SUMMARY"
        )
        result = definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)
        evaluated += len(result.results)
        for r in result.results:
            if r.success:
                continue
            kwargs = {k: v for k, v in r.expectation_config.kwargs.items() if k != "batch_id"}
            res = r.result or {}
            failures.append(
                Failure(
                    frame=frame_name,
                    expectation=r.expectation_config.type,
                    column=kwargs.pop("column", None),
                    kwargs=kwargs,
                    unexpected_count=res.get("unexpected_count"),
                    examples=[_short(_plain(v)) for v in (res.get("partial_unexpected_list") or [])][:10],
                    observed=_plain(_observed(res)),
                    rows=_failed_rows(res, row_id),
                    description=r.expectation_config.description,
                )
            )
            if message := _exception(r.exception_info):
                failures[-1].observed = message
    return ValidationReport(
        suite=suite,
        success=not failures,
        evaluated=evaluated,
        rows={k: len(v) for k, v in frames.items()},
        failures=failures,
        contract=contract,
    )


def finite_rules(frame: pd.DataFrame) -> list:
    """One rule per floating-point column: its values lie within ±float64 max, i.e. are not ±inf.

    GX skips missing values in column-map rules, so NaN passes here and is judged by the
    suites' own null rules.
    """
    import great_expectations.expectations as gxe

    return [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=-FINITE, max_value=FINITE,
                                              description="values are finite (no ±inf)")
            for c in frame.columns if pd.api.types.is_float_dtype(frame[c])]


def _configuration(expectation: Any) -> dict[str, Any]:
    """One expectation as reviewable data: ``{"type": ..., "kwargs": {...}}``."""
    config = expectation.configuration.to_json_dict()
    return {"type": config["type"], "kwargs": config["kwargs"]}


def _observed(result: dict[str, Any]) -> Any:
    """What GX saw; for a column-set check, the missing and unexpected columns, not the full list."""
    mismatched = (result.get("details") or {}).get("mismatched")
    return mismatched if mismatched else result.get("observed_value")


def _failed_rows(result: dict[str, Any], row_id: list[str]) -> list[Any]:
    """The failing rows' ``row_id`` values (one value, or a list for several columns)."""
    if not row_id:
        return []
    out = []
    for item in result.get("partial_unexpected_index_list") or []:
        if isinstance(item, dict):
            values = [_plain(item.get(c)) for c in row_id]
            out.append(values[0] if len(values) == 1 else values)
    return out[:10]


def _exception(info: Any) -> str | None:
    """The message of an exception GX caught while evaluating (a missing column, a bad type).

    GX 1.x reports it either flat (``{"raised_exception": ..., "exception_message": ...}``) or
    keyed by the metric that raised it; the first message found is kept.
    """
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return info.get("exception_message")
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return value.get("exception_message")
    return None


def _plain(value: Any) -> Any:
    """numpy scalars and tuples -> JSON-friendly Python values."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        try:
            return value.item()
        except (ValueError, AttributeError):
            return str(value)
    return value
