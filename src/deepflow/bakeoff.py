"""The bake-off report: every candidate and baseline of one pipeline run, side by side.

Quality with its bootstrap interval, secondary metrics, size and cost, a quality-vs-latency plot,
and a verdict on shallow vs. deep for this data, written from the numbers (never by hand).
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from deepflow.stats import Interval

FAMILY_COLOURS = {"shallow": "tab:blue", "deep": "tab:red", "transfer": "tab:purple", "classical": "tab:grey"}


def family(member: dict, families: dict[str, str]) -> str:
    return "classical" if member["kind"] == "baseline" else families.get(member["member"], "deep")


def table(summary: dict, families: dict[str, str]) -> str:
    p = summary["primary"]
    secondary = [k for k in summary["members"][0]["test"] if k != p]
    head = ["member", "family", f"test/{p} [95% CI]", *[f"test/{k}" for k in secondary],
            "parameters", "train s", "p50 ms", "p95 ms", "size MB", "registered"]
    reg = summary.get("registered") or {}
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in summary["members"]:
        lo, hi = m["interval"]
        cells = [m["member"], family(m, families), f"{m['test'][p]:.4f} [{lo:.4f}, {hi:.4f}]",
                 *[f"{m['test'][k]:.4f}" for k in secondary],
                 f"{m['parameters']:,}" if m.get("parameters") else "–",
                 f"{m['timings'].get('training', 0):.1f}", f"{m['latency_ms']['p50']:.2f}",
                 f"{m['latency_ms']['p95']:.2f}", f"{m['size_mb']:.2f}",
                 f"v{reg['version']}" if reg.get("run_id") == m["run_id"] else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_by_family(summary: dict, families: dict[str, str]) -> dict[str, dict]:
    p = summary["primary"]
    best: dict[str, dict] = {}
    for m in summary["members"]:
        f = family(m, families)
        if f not in best or m["test"][p] > best[f]["test"][p]:
            best[f] = m
    return best


def verdict(summary: dict, families: dict[str, str], paired_gain: Interval | None = None) -> str:
    """One paragraph: best deep vs best shallow (and the classical reference), from the numbers.

    ``paired_gain``: paired-bootstrap interval of deep - shallow on the same test rows; when given,
    it decides the claim (stronger than comparing the two marginal intervals).
    """
    p = summary["primary"]
    best = best_by_family(summary, families)
    parts = []
    if "deep" in best and "shallow" in best:
        d, s = best["deep"], best["shallow"]
        gain = d["test"][p] - s["test"][p]
        cost = d["latency_ms"]["p50"] / max(s["latency_ms"]["p50"], 1e-9)
        size = (d.get("parameters") or 0) / max(s.get("parameters") or 1, 1)
        if paired_gain is not None:
            evidence = (f"paired {paired_gain.confidence:.0%} interval of the gain "
                        f"[{paired_gain.low:+.4f}, {paired_gain.high:+.4f}]")
            if paired_gain.low > 0:
                claim = f"depth pays here ({evidence} excludes zero)"
            elif paired_gain.high < 0:
                claim = f"depth costs quality here ({evidence} is below zero)"
            else:
                claim = f"depth is not a clear win here ({evidence} includes zero)"
        else:
            overlap = d["interval"][0] <= s["interval"][1] and s["interval"][0] <= d["interval"][1]
            claim = ("depth pays here" if gain > 0 and not overlap else
                     "depth helps a little, but the intervals overlap: not a clear win" if gain > 0 else
                     "depth does not pay here: the shallow network is as good or better")
        ratio = f"{size:.0f}" if size >= 10 else f"{size:.2g}"  # "100x", "0.12x"
        parts.append(
            f"On this data, {claim}. The best deep model (`{d['member']}`) reaches {p} "
            f"{d['test'][p]:.4f} [{d['interval'][0]:.4f}, {d['interval'][1]:.4f}] against "
            f"{s['test'][p]:.4f} [{s['interval'][0]:.4f}, {s['interval'][1]:.4f}] for the shallow "
            f"network ({gain:+.4f}), with {ratio}x the parameters and {cost:.1f}x the single-row latency."
        )
    if "transfer" in best:
        t = best["transfer"]
        rivals = [best[f] for f in ("deep", "shallow") if f in best]
        if rivals:
            r = max(rivals, key=lambda m: m["test"][p])
            parts.append(
                f"The frozen pretrained encoder with a trained head (`{t['member']}`) scores {t['test'][p]:.4f} "
                f"against {r['test'][p]:.4f} for the best network trained from scratch (`{r['member']}`), "
                f"at {t['latency_ms']['p50'] / max(r['latency_ms']['p50'], 1e-9):.1f}x its single-row latency."
            )
    if "classical" in best:
        c = best["classical"]
        top = max(best.values(), key=lambda m: m["test"][p])
        parts.append(
            f"The best classical reference (`{c['member']}`) scores {c['test'][p]:.4f}; "
            + ("it is the best model of this run." if top is c
               else f"the best neural model beats it by {top['test'][p] - c['test'][p]:+.4f}.")
        )
    return " ".join(parts) or "Not enough families trained for a verdict."


def plot(summary: dict, families: dict[str, str]) -> Figure:
    p = summary["primary"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in summary["members"]:
        f = family(m, families)
        y, (lo, hi) = m["test"][p], m["interval"]
        x = m["latency_ms"]["p50"]
        # The point can sit just outside its bootstrap interval (detection: COCO mAP vs the numpy
        # twin the bootstrap resamples; one test image): a bar never goes below zero length.
        ax.errorbar(x, y, yerr=[[max(y - lo, 0.0)], [max(hi - y, 0.0)]], fmt="o", color=FAMILY_COLOURS[f], capsize=3)
        ax.annotate(m["member"], (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    for f, colour in FAMILY_COLOURS.items():
        ax.plot([], [], "o", color=colour, label=f)
    ax.set(xscale="log", xlabel="p50 latency per row, batch 1 (ms, log)", ylabel=f"test/{p} (95% CI)",
           title=f"{summary['use_case']}: quality vs latency")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def markdown(summary: dict, families: dict[str, str], paired_gain: Interval | None = None) -> str:
    promo = summary.get("promotion") or {}
    return f"""# Bake-off: {summary['use_case']}

Pipeline run `{summary['run_id']}`, data version `{summary['data_version']}`, all members trained
and tested on the same frozen split. Intervals: seeded bootstrap of the test rows.

{table(summary, families)}

![quality vs latency](quality_vs_latency.png)

## Verdict
{verdict(summary, families, paired_gain)}

{relies_section(summary)}
## Promotion
{('; '.join(promo.get('reasons', [])) or 'not run') if promo else 'not run'}
{time_section(summary)}"""


def relies_section(summary: dict) -> str:
    """What each member relies on (its model card's first sentence), "" when no member says."""
    lines = [f"- {m['relies_on'].strip()}" for m in summary["members"] if m.get("relies_on")]
    if not lines:
        return ""
    return "\n".join(["## What each member relies on", "",
                      "From the members' model cards (global importance on the test split; docs/explain.md).", "",
                      *lines, ""])


def time_section(summary: dict) -> str:
    """How the run's time went: per member its fit limit, training and after-fit seconds and what
    stopped it; the budget, its reserve, and every member it skipped with the reason ("" when the
    run had no budget)."""
    b = summary.get("budget") or {}
    if b.get("budget_s") is None:
        return ""
    stopped = {m["member"]: m.get("stopped_by") or "–" for m in summary["members"]}
    rows = []
    for m in b.get("members", []):
        limit = "–" if m["time_limit_s"] is None else f"{m['time_limit_s']:.0f}"
        rows.append(f"| {m['member']} | {limit} | {m['training_s']:.1f} | {m['after_fit_s']:.1f} | "
                    f"{stopped.get(m['member'], '–')} |")
    skipped = [f"- `{s['member']}` skipped: {s['reason']}" for s in b.get("skipped", [])] or ["Nothing was skipped."]
    return "\n".join([
        "", "## Time", "",
        f"Budget {b['budget_s']:.0f} s for the whole run, {b['reserve_s']:.0f} s of it kept for registration, "
        f"promotion and this report; {b['spent_s']:.1f} s spent when this report was written.", "",
        "| member | fit limit s | train s | evaluate + log s | stopped by |", "|---|---|---|---|---|", *rows, "",
        *skipped, ""])


def html(markdown_text: str) -> str:
    import markdown as md

    body = md.markdown(markdown_text, extensions=["tables"])
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}")
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head><body>{body}</body></html>"


def write(summary: dict[str, Any], families: dict[str, str], directory,
          paired_gain: Interval | None = None) -> dict[str, str]:
    """Write report.md, report.html and quality_vs_latency.png; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    text = markdown(summary, families, paired_gain)
    paths = {"md": directory / "report.md", "html": directory / "report.html",
             "png": directory / "quality_vs_latency.png"}
    paths["md"].write_text(text)
    paths["html"].write_text(html(text))
    fig = plot(summary, families)
    fig.savefig(paths["png"], dpi=120)
    plt.close(fig)
    return {k: str(v) for k, v in paths.items()}
