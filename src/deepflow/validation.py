"""The one door to Great Expectations (1.x): run a use case's suites, return a readable report.

Suites are declared per use case (``usecases/<uc>/expectations.py``) as named lists of GX
expectations, one list per frame (e.g. the rows, and a per-split summary).

A frame may name the columns that identify its rows in ``frame.attrs["row_id"]`` (e.g. a
``split:position`` column): a failure then lists the failing rows by those values, not only the
bad values. The report keeps the suites it ran (``contract.json`` beside the report): the
contract as data, reviewable next to the entry it came from.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

ROW_ID = "row_id"  # frame.attrs key: the columns that name a frame's rows in failures
SHOWN = 12  # list items shown in a failure's one-line summary (the JSON keeps them all)


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

    def line(self) -> str:
        where = f"column {self.column!r}" if self.column else "table"
        what = f"{self.unexpected_count} bad value(s), e.g. {self.examples[:5]}" if (
            self.unexpected_count
        ) else f"observed {self.observed!r}"
        if self.rows:
            what += f" at {_short(self.rows[:5])}"
        kwargs = {k: _short(v) for k, v in self.kwargs.items()}
        return f"[{self.frame}] {self.expectation} on {where} {kwargs}: {what}"


def _short(value: Any) -> Any:
    """A long list (a category set) cut to its first items for the one-line summary."""
    if isinstance(value, list | tuple) and len(value) > SHOWN:
        return [*value[:SHOWN], f"... (+{len(value) - SHOWN} more)"]
    return value


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


def validate(suite: str, frames: dict[str, pd.DataFrame], expectations: dict[str, list]) -> ValidationReport:
    """Run each frame's expectations; never raises on bad data, only reports it."""
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    source = context.data_sources.add_pandas(f"{suite}-source")
    failures: list[Failure] = []
    contract: dict[str, list[dict[str, Any]]] = {}
    evaluated = 0
    for frame_name, items in expectations.items():
        frame = frames[frame_name]
        row_id = [c for c in frame.attrs.get(ROW_ID, []) if c in frame.columns]
        contract[frame_name] = [_configuration(e) for e in items]
        batch_def = source.add_dataframe_asset(frame_name).add_batch_definition_whole_dataframe(
            "all"
        )
        gx_suite = context.suites.add(gx.ExpectationSuite(name=f"{suite}.{frame_name}"))
        for expectation in items:
            gx_suite.add_expectation(expectation)
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
                    examples=[_plain(v) for v in (res.get("partial_unexpected_list") or [])][:10],
                    observed=_plain(_observed(res)),
                    rows=_failed_rows(res, row_id),
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
