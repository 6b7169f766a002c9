"""How ``deepflow new`` shows what it inferred: printed lines, and ``reports/<name>/profile.md``.

Both say the same things in the same words: how the file was read, the target and why, the task,
classes and metric, the split, each column's role and why, what is not used, the leakage check's
scores and the contract's main bounds. The profile adds per-column numbers (missing share,
distinct values, range or top categories) and the target's distribution.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deepflow.kinds.table import leakage
from deepflow.kinds.table.config import FEATURE_ROLES
from deepflow.kinds.table.roles import duplicate_bound

if TYPE_CHECKING:
    from deepflow.kinds.table.infer import Inference

WHY_DROPPED = {"id": "identifier", "text": "free text", "constant": "constant", "leak": "leak",
               "drop": "identifier-like"}


def _read(inf: Inference) -> str:
    r = inf.read
    source = f"{inf.source}: " if inf.source else ""
    size = f"{inf.rows:,} rows x {len(inf.columns) + 1} columns"
    if r is None:
        return f"{source}{size}"
    if r.format != "csv":
        return f"{source}{r.format}, {size}"
    delimiter = "tab" if r.delimiter == "\t" else repr(r.delimiter)
    header = "header row" if r.header else "no header (columns named column_1, ...)"
    return f"{source}CSV, delimiter {delimiter}, encoding {r.encoding}, {header}; {size}"


def _split(inf: Inference) -> str:
    s = inf.split
    train = 1 - s.val - s.test
    if inf.time_column:
        return (f"time-ordered by {inf.time_column} ({inf.time_reason}); oldest {train:.0%} train, then {s.val:.0%} "
                f"validation, newest {s.test:.0%} test")
    how = "stratified by class" if inf.task != "regression" else "rows"
    return (f"content hash, {how} (stable as rows are added): {train:.0%} train, {s.val:.0%} validation, "
            f"{s.test:.0%} test ({inf.time_reason})")


def _target(inf: Inference) -> str:
    if inf.task == "regression":
        t = inf.target_summary
        return f"from {t['min']:,.4g} to {t['max']:,.4g}, mean {t['mean']:,.4g}, median {t['median']:,.4g}"
    return ", ".join(f"{c} {k:,}" for c, k in inf.target_summary.items())


def _leaks(inf: Inference, top: int = 3) -> str:
    metric = leakage.METRIC[inf.task]
    if not inf.leak_scores:
        return f"not checked: fewer than {leakage.MIN_ROWS} rows"
    ranked = sorted(inf.leak_scores.items(), key=lambda kv: -kv[1])
    leaks = [f"{c} {s:.3f}" for c, s in ranked if s >= leakage.LEAK_SCORE]
    head = (f"{len(ranked)} features alone (a small decision tree each, held-out {metric}): ")
    if leaks:
        head += f"LEAK {', '.join(leaks)} (>= {leakage.LEAK_SCORE}, not features; set the role back to keep one)"
    else:
        head += f"none >= {leakage.LEAK_SCORE}"
    rest = [f"{c} {s:.3f}" for c, s in ranked if s < leakage.LEAK_SCORE][:top]
    return head + (f"; highest: {', '.join(rest)}" if rest else "")


def _contract(inf: Inference) -> str:
    parts = [f"train rows >= {inf.rows_min:,}",
             f"copied rows <= {duplicate_bound(inf.duplicate_share):.1%} (measured {inf.duplicate_share:.1%})"]
    if inf.class_share:
        parts.append("class shares " + ", ".join(f"{c} [{lo:g}, {hi:g}]" for c, (lo, hi) in inf.class_share.items()))
    if inf.task == "regression":
        parts.append(f"target in [{inf.target_min:g}, {inf.target_max:g}]")
    return "; ".join(parts) + "; per column: null share, range, categories (in the entry)"


def lines(inf: Inference) -> list[str]:
    """Every inference, one line each (columns one per line)."""
    width = max(len(c) for c in inf.columns)
    out = [f"read      {_read(inf)}",
           f"target    {inf.target} ({inf.target_reason})",
           f"task      {inf.task}: {inf.task_reason}",
           f"{'classes' if inf.task != 'regression' else 'values':<9} {_target(inf)}",
           f"metric    {inf.metric}: {inf.metric_reason}",
           f"split     {_split(inf)}",
           "columns"]
    out += [f"  {c:<{width}}  {s.role:<11}  {s.note}" for c, s in inf.columns.items()]
    roles: dict[str, int] = {}
    for s in inf.columns.values():
        if s.role in FEATURE_ROLES:
            roles[s.role] = roles.get(s.role, 0) + 1
    out.append(f"features  {len(inf.features())} ({', '.join(f'{r} {k}' for r, k in roles.items())})")
    unused = [f"{c} ({WHY_DROPPED.get(s.role, s.role)})" for c, s in inf.columns.items() if s.role not in FEATURE_ROLES]
    out.append(f"not used  {', '.join(unused) or 'none'}")
    out.append(f"leakage   {_leaks(inf)}")
    out.append(f"contract  {_contract(inf)}")
    out += [f"note      {n}" for n in inf.notes]
    return out


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _values(stats: dict) -> str:
    if "top" in stats:
        return ", ".join(f"{v} ({k:,})" for v, k in stats["top"][:5])
    if "min" in stats:
        lo, hi = stats["min"], stats["max"]
        return f"{lo:,.4g} .. {hi:,.4g}" if isinstance(lo, float) else f"{lo} .. {hi}"
    if "true_share" in stats:
        return f"{stats['true_share']:.1%} true"
    return ""


def markdown(inf: Inference, name: str, generated: str) -> str:
    """``reports/<name>/profile.md``: the profile of the source and every inference."""
    md = [f"# {name}: profile of {inf.source or 'the source'}", "",
          f"Written by `deepflow new` ({generated}). The entry `datasets/{name}.yaml` records every inference "
          "below; edit it to change one.", "", "## Inferences", "", "```", *lines(inf), "```", "",
          f"## Target: `{inf.target}` ({inf.task})", ""]
    if inf.task == "regression":
        md += [_target(inf), ""]
    else:
        md += ["| class | rows | share | contract share per split |", "|---|---:|---:|---|"]
        total = sum(inf.target_summary.values())
        for c, k in inf.target_summary.items():
            lo, hi = inf.class_share.get(c, [0, 1])
            md.append(f"| {_cell(c)} | {k:,} | {k / total:.1%} | [{lo:g}, {hi:g}] |")
        md.append("")
    md += ["## Columns", "", "| column | role | dtype | missing | distinct | values | note |",
           "|---|---|---|---:|---:|---|---|"]
    for c, s in inf.columns.items():
        st = inf.stats.get(c, {})
        md.append(f"| {_cell(c)} | {s.role} | {s.dtype} | {st.get('missing', 0):.1%} | {st.get('distinct', 0):,} | "
                  f"{_cell(_values(st))} | {_cell(s.note)} |")
    dropped = [(c, s) for c, s in inf.columns.items() if s.role not in FEATURE_ROLES]
    md += ["", "## Not used by the models", ""]
    md += [f"- `{c}`: {s.role}: {s.note}" for c, s in dropped] or ["Every column is a feature."]
    md += ["", "## Leakage check", "", _leaks(inf, top=0), ""]
    if inf.leak_scores:
        md += [f"| feature | held-out {leakage.METRIC[inf.task]} alone |", "|---|---:|"]
        md += [f"| {_cell(c)} | {v:.3f} |" for c, v in sorted(inf.leak_scores.items(), key=lambda kv: -kv[1])]
    md += ["", "## Contract", "", _contract(inf) + ".", "",
           "Null-share ceilings and class-share bounds are checked per split: they hold the largest (smallest) share "
           "in any of the splits `deepflow new` made, plus a tolerance; numeric ranges are widened by 10 % of the "
           "range (kept at 0 when no value is negative); a categorical column's known categories are its most "
           "frequent values, and the share of non-missing values in them must stay above `known_share_min`.", ""]
    if inf.notes:
        md += ["## Notes", "", *[f"- {n}" for n in inf.notes], ""]
    return "\n".join(md)
