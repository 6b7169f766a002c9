"""The one door to Great Expectations (1.x): run a use case's suites, return a readable report.

Suites are declared per use case (``usecases/<uc>/expectations.py``) as named lists of GX
expectations, one list per frame (e.g. the rows, and a per-split summary).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass
class Failure:
    frame: str
    expectation: str
    column: str | None
    kwargs: dict[str, Any]
    unexpected_count: int | None = None
    examples: list[Any] = field(default_factory=list)
    observed: Any = None

    def line(self) -> str:
        where = f"column {self.column!r}" if self.column else "table"
        what = f"{self.unexpected_count} bad value(s), e.g. {self.examples[:5]}" if (
            self.unexpected_count
        ) else f"observed {self.observed!r}"
        return f"[{self.frame}] {self.expectation} on {where} {self.kwargs}: {what}"


@dataclass
class ValidationReport:
    suite: str
    success: bool
    evaluated: int
    rows: dict[str, int]
    failures: list[Failure]

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
        return json.dumps(asdict(self), indent=2, default=str)

    def save(self, directory: Path) -> Path:
        """Write ``validation.json`` and ``validation.md``; return the Markdown path."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "validation.json").write_text(self.to_json())
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
    evaluated = 0
    for frame_name, items in expectations.items():
        batch_def = source.add_dataframe_asset(frame_name).add_batch_definition_whole_dataframe(
            "all"
        )
        gx_suite = context.suites.add(gx.ExpectationSuite(name=f"{suite}.{frame_name}"))
        for expectation in items:
            gx_suite.add_expectation(expectation)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{suite}.{frame_name}", data=batch_def, suite=gx_suite)
        )
        result = definition.run(
            batch_parameters={"dataframe": frames[frame_name]}, result_format="SUMMARY"
        )
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
                    observed=_plain(res.get("observed_value")),
                )
            )
            if r.exception_info and r.exception_info.get("raised_exception"):
                failures[-1].observed = r.exception_info.get("exception_message")
    return ValidationReport(
        suite=suite,
        success=not failures,
        evaluated=evaluated,
        rows={k: len(v) for k, v in frames.items()},
        failures=failures,
    )


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
