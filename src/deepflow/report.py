"""Pipeline summaries: one dict per run, rendered as Markdown (Prefect/MLflow) or a terminal table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

TIMING_CATEGORIES = ("orchestration", "validation", "training", "evaluation", "tracking")


def merge_timings(parts: list[dict[str, float]], wall_s: float) -> dict[str, float]:
    """Sum step timings; orchestration is what the wall clock saw that no step accounted for."""
    total: dict[str, float] = {c: 0.0 for c in TIMING_CATEGORIES}
    for part in parts:
        for k, v in part.items():
            total[k] = total.get(k, 0.0) + v
    total["orchestration"] = max(wall_s - sum(v for k, v in total.items() if k != "orchestration"), 0)
    total["wall"] = wall_s
    return total


def add_outer_wall(timings: dict[str, float], wall_s: float) -> dict[str, float]:
    """Charge what the flow body could not see (Prefect start-up, flow overhead) to orchestration."""
    out = dict(timings)
    out["orchestration"] += wall_s - out["wall"]
    out["wall"] = wall_s
    return out


def rows(summary: dict[str, Any], metrics: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per trained member, with the registered/champion markers; ``metrics`` picks the
    test metrics shown (default: all)."""
    primary = summary["primary"]
    reg = summary.get("registered") or {}
    out = []
    for r in summary["members"]:
        out.append({
            "use case": summary["use_case"],
            "member": r["member"],
            "kind": r["kind"],
            f"val/{primary}": r["val"][primary],
            **{f"test/{k}": v for k, v in r["test"].items() if metrics is None or k in metrics},
            "p50 ms": r["latency_ms"]["p50"],
            "registered": f"v{reg['version']}" if reg.get("run_id") == r["run_id"] else "",
        })
    return out


def champion_line(summary: dict[str, Any]) -> str:
    promo = summary.get("promotion")
    reg = summary.get("registered") or {}
    if not promo:
        return f"{summary['use_case']}: v{reg.get('version')} is @challenger (promotion not run)"
    verdict = "promoted to @champion" if promo["promoted"] else "not promoted"
    return (f"{summary['use_case']}: v{promo['challenger']} ({reg.get('member')}) {verdict}; "
            f"@champion = v{promo['champion']}. Why: {'; '.join(promo['reasons'])}{skipped_note(summary)}")


def skipped_note(summary: dict[str, Any]) -> str:
    """" Skipped (budget 300 s): deep." when the run's budget left members out, else ""."""
    skipped = summary.get("skipped") or []
    if not skipped:
        return ""
    return f" Skipped (budget {summary.get('budget_s') or 0:.0f} s): {', '.join(s['member'] for s in skipped)}."


def budget_lines(summary: dict[str, Any]) -> list[str]:
    """The budget and what it skipped, and why: lines for the run summary (none without a budget)."""
    if summary.get("budget_s") is None:
        return []
    wall = (summary.get("timings") or {}).get("wall")
    lines = [f"Budget: {summary['budget_s']:.0f} s" + (f", run took {wall:.1f} s." if wall is not None else ".")]
    lines += [f"- skipped `{s['member']}`: {s['reason']}" for s in summary.get("skipped") or []]
    return lines


def markdown(summary: dict[str, Any]) -> str:
    table = rows(summary)
    head = list(table[0])
    lines = [f"# {summary['use_case']} pipeline", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for row in table:
        lines.append("| " + " | ".join(fmt(row[h]) for h in head) + " |")
    lines += ["", champion_line(summary), "", "Time (s): " + ", ".join(
        f"{k} {v:.1f}" for k, v in summary["timings"].items())]
    if budget := budget_lines(summary):
        lines += ["", *budget]
    return "\n".join(lines) + "\n"


def fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
