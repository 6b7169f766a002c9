"""The prequential benchmark's report: the handbook's table next to ours, the bake-off, the costs.

Written from the numbers of one run (``flows/prequential.py``), as Markdown, HTML and a PNG, under
``reports/<use case>/prequential/`` and as artifacts of the run's MLflow parent run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

METRICS = ("auprc", "roc_auc", "card_precision_at_100")
TOLERANCE = 0.03  # issue 8: every reproduced AP within +-0.03 of the handbook's
GOAL_AP = 0.70  # issue 8: deepflow's best candidate on the test folds

# The handbook's test folds at its best-on-validation hyperparameters (AP, ROC-AUC, CP@100), as
# quoted in issue 8. Chapter 5.3 for the classical models, chapter 7 for the neural ones.
BOOK: dict[str, tuple[float, float, float]] = {
    "logistic_regression": (0.623, 0.868, 0.297),
    "random_forest": (0.678, 0.870, 0.299),
    "xgboost": (0.687, 0.869, 0.303),
    "ffn": (0.675, 0.876, 0.303),
    "lstm": (0.665, 0.876, 0.297),
    "lstm_attention": (0.667, 0.874, 0.295),
}
BOOK_NAMES = {"logistic_regression": "logistic regression", "random_forest": "random forest",
              "xgboost": "XGBoost", "ffn": "feed-forward network", "lstm": "LSTM, last 5 transactions (in split)",
              "lstm_attention": "LSTM + attention (in split)"}
# our row for each of the handbook's rows
OURS_FOR = {"logistic_regression": "logistic_regression", "random_forest": "random_forest", "xgboost": "xgboost",
            "ffn": "ffn", "lstm": "sequence_in_split", "lstm_attention": "sequence_in_split"}
# fits the handbook's grids need (points x 4 validation folds + points x 4 test folds: its
# model_selection_wrapper scores every point on both) -- ours score only the chosen point on test
BOOK_GRID_POINTS = {"logistic_regression": 4, "random_forest": 12, "xgboost": 18, "ffn": 54}
FAMILY = {"logistic_regression": "classical", "random_forest": "classical", "xgboost": "classical",
          "ffn": "neural (feed-forward)", "sequence": "neural (sequence, full history)",
          "sequence_in_split": "neural (sequence, in-split history)", "autoencoder": "neural (unsupervised)",
          "isolation_forest": "classical (unsupervised)"}


def pm(result: dict | None, metric: str) -> str:
    if not result:
        return "–"
    return f"{result['mean'][metric]:.3f} ± {result['std'][metric]:.3f}"


def reproduction_rows(results: dict[str, dict]) -> list[dict[str, Any]]:
    rows = []
    for book, ours_name in OURS_FOR.items():
        ours = results.get(ours_name)
        b = BOOK[book]
        row = {"book": book, "name": BOOK_NAMES[book], "ours": ours_name if ours else None, "book_ap": b[0],
               "book_auc": b[1], "book_cp": b[2]}
        if ours:
            t = ours["test"]["mean"]
            row |= {"ap": t["auprc"], "ap_std": ours["test"]["std"]["auprc"], "auc": t["roc_auc"],
                    "cp": t["card_precision_at_100"], "diff": t["auprc"] - b[0],
                    "within": abs(t["auprc"] - b[0]) <= TOLERANCE, "seconds": ours["search_s"] + ours["test_s"]}
        rows.append(row)
    return rows


def reproduction_table(results: dict[str, dict]) -> str:
    head = ["handbook model", "AP ours (test folds)", "AP handbook", "diff", f"within ±{TOLERANCE}",
            "ROC-AUC ours / handbook", "CP@100 ours / handbook", "our compute (search + test)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in reproduction_rows(results):
        if r["ours"] is None:
            lines.append(f"| {r['name']} | not run | {r['book_ap']:.3f} | | | – / {r['book_auc']:.3f} | "
                         f"– / {r['book_cp']:.3f} | |")
            continue
        ours = results[r["ours"]]
        lines.append(
            f"| {r['name']}{' (ours: ' + r['ours'] + ')' if r['ours'] != r['book'] else ''} | "
            f"{pm(ours['test'], 'auprc')} | {r['book_ap']:.3f} | {r['diff']:+.3f} | "
            f"{'yes' if r['within'] else '**no**'} | {r['auc']:.3f} / {r['book_auc']:.3f} | "
            f"{r['cp']:.3f} / {r['book_cp']:.3f} | {r['seconds']:.0f} s |")
    return "\n".join(lines)


def bakeoff_table(results: dict[str, dict]) -> str:
    head = ["model", "family", "val AP (mean)", "test AP", "test ROC-AUC", "test CP@100", "test AP per fold",
            "settings tried (stopped early)", "search s", "test s", "chosen hyperparameters"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ranked = sorted(results.values(), key=lambda r: -r["test"]["mean"]["auprc"])
    for r in ranked:
        folds = ", ".join(f"{f['auprc']:.3f}" for f in r["test"]["folds"])
        val = f"{r['val']['mean']['auprc']:.3f}" if r.get("val") else "–"
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        lines.append(f"| {r['model']} | {FAMILY.get(r['model'], FAMILY.get(r['base'], ''))} | {val} | "
                     f"{pm(r['test'], 'auprc')} | {pm(r['test'], 'roc_auc')} | "
                     f"{pm(r['test'], 'card_precision_at_100')} | {folds} | {r['trials']} ({r['pruned']}) | "
                     f"{r['search_s']:.0f} | {r['test_s']:.0f} | {params} |")
    return "\n".join(lines)


def unsupervised_section(unsup: dict | None) -> str:
    if not unsup:
        return "Not run (`prequential.unsupervised=false`)."
    lines = ["| detector | val AP | val ROC-AUC | test AP | test ROC-AUC | test CP@100 | s |",
             "|---|---|---|---|---|---|---|"]
    for name, r in unsup["detectors"].items():
        lines.append(f"| {name} | {pm(r['val'], 'auprc')} | {pm(r['val'], 'roc_auc')} | {pm(r['test'], 'auprc')} | "
                     f"{pm(r['test'], 'roc_auc')} | {pm(r['test'], 'card_precision_at_100')} | "
                     f"{r['val']['seconds'] + r['test']['seconds']:.0f} |")
    lines += ["", "Handbook (chapter 7, one validation week): autoencoder AP 0.18, isolation forest AP 0.16.", "",
              "The autoencoder's reconstruction error as a 16th input (same hyperparameters, test folds):", "",
              "| model | test AP without | with AE error | diff |", "|---|---|---|---|"]
    return "\n".join(lines)


def ae_feature_rows(results: dict[str, dict], unsup: dict | None) -> str:
    if not unsup:
        return ""
    out = []
    for base, r in unsup["ae_feature"].items():
        without = results.get(base)
        if without:
            a, b = without["test"]["mean"]["auprc"], r["test"]["mean"]["auprc"]
            out.append(f"| {base} | {pm(without['test'], 'auprc')} | {pm(r['test'], 'auprc')} | {b - a:+.3f} |")
    return "\n".join(out)


def goals(results: dict[str, dict]) -> list[str]:
    rows = [r for r in reproduction_rows(results) if r["ours"] and r["book"] in ("logistic_regression",
                                                                                   "random_forest", "xgboost", "ffn")]
    within = [r for r in rows if r["within"]]
    out = [f"Reproduction (AP within ±{TOLERANCE} of the handbook, LR / RF / XGBoost / FFN): "
           f"{len(within)} of {len(rows)} "
           + ("**met**" if rows and len(within) == len(rows) else "**not met**")
           + (" (" + ", ".join(f"{r['ours']} {r['diff']:+.3f}" for r in rows) + ")" if rows else "")]
    if results:
        best = max(results.values(), key=lambda r: r["test"]["mean"]["auprc"])
        ap = best["test"]["mean"]["auprc"]
        out.append(f"Best model on the test folds: `{best['model']}`, AP {pm(best['test'], 'auprc')}: goal AP ≥ "
                   f"{GOAL_AP:.2f} " + ("**met**" if ap >= GOAL_AP else "**not met**")
                   + f" (the handbook's best: {max(b[0] for b in BOOK.values()):.3f}).")
    return out


def cost_lines(results: dict[str, dict], timings: dict[str, float], n_folds: int) -> list[str]:
    lines = []
    for name, points in BOOK_GRID_POINTS.items():
        r = results.get(name)
        if r:
            ours = r["trials"] * n_folds + n_folds
            lines.append(f"- `{name}`: the handbook's grid is {points} points × {2 * n_folds} folds = "
                         f"{points * 2 * n_folds} fits; here {r['trials']} settings ({r['pruned']} stopped early) "
                         f"on the validation folds + {n_folds} test fits (≤ {ours} fits) in "
                         f"{r['search_s'] + r['test_s']:.0f} s.")
    wall = timings.get("wall")
    if wall:
        lines.append(f"- The whole run: {wall / 60:.1f} min wall ("
                     + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items() if k != "wall") + ").")
    return lines


def markdown(summary: dict) -> str:
    results = {r["model"]: r for r in summary["results"]}
    unsup = summary.get("unsupervised")
    folds = summary.get("folds", {})
    fold_lines = ", ".join(f"{k} {v['train_start']}" for k, v in folds.items())
    ae = ae_feature_rows(results, unsup)
    return f"""# Fraud: prequential benchmark against the handbook

MLflow run `{summary['run_id']}`, data `{summary.get('data_version')}` (DVC md5 of `fraud_simulate`).
Protocol: {summary.get('n_folds')} folds of 7 days of training, 7 days of delay, 7 days of assessment, shifted back a
week per fold; hyperparameters chosen on the validation folds (mean AP), reported on the test folds (mean ± std
over folds). Training starts: {fold_lines}. Nothing was registered: `@champion` is unchanged.

## The handbook's table, reproduced

{reproduction_table(results)}

## Bake-off on the test folds

{bakeoff_table(results)}

![test AP per fold](prequential_ap.png)

## Goals

{chr(10).join('- ' + g for g in goals(results))}

## Unsupervised detectors (same folds)

{unsupervised_section(unsup)}
{ae}

## Compute

{chr(10).join(cost_lines(results, summary.get('timings', {}), summary.get('n_folds', 4)))}
"""


def plot(summary: dict):
    results = sorted(summary["results"], key=lambda r: r["test"]["mean"]["auprc"])
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(results) + 1.5))
    for i, r in enumerate(results):
        aps = [f["auprc"] for f in r["test"]["folds"]]
        ax.scatter(aps, [i] * len(aps), color="tab:grey", s=12, zorder=2)
        ax.errorbar(r["test"]["mean"]["auprc"], i, xerr=r["test"]["std"]["auprc"], fmt="o", color="tab:blue",
                    capsize=3, zorder=3)
        book = next((BOOK[b][0] for b, o in OURS_FOR.items() if o == r["model"]), None)
        if book is not None:
            ax.scatter([book], [i], marker="x", color="tab:red", zorder=4)
    ax.axvline(GOAL_AP, color="tab:green", linestyle=":", label=f"goal {GOAL_AP}")
    ax.scatter([], [], marker="x", color="tab:red", label="handbook")
    ax.set(yticks=range(len(results)), yticklabels=[r["model"] for r in results],
           xlabel="average precision on the test folds (mean ± std; grey: folds)", title="fraud: prequential test AP")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def console(summary: dict) -> str:
    """The short version for the terminal: the reproduction table, a compact bake-off, the goals."""
    results = {r["model"]: r for r in summary["results"]}
    lines = ["| model | val AP | test AP | test ROC-AUC | test CP@100 | search + test s |", "|---|---|---|---|---|---|"]
    for r in sorted(results.values(), key=lambda r: -r["test"]["mean"]["auprc"]):
        val = f"{r['val']['mean']['auprc']:.3f}" if r.get("val") else "–"
        lines.append(f"| {r['model']} | {val} | {pm(r['test'], 'auprc')} | {pm(r['test'], 'roc_auc')} | "
                     f"{pm(r['test'], 'card_precision_at_100')} | {r['search_s'] + r['test_s']:.0f} |")
    goal_lines = "\n".join("- " + g for g in goals(results))
    return "\n\n".join([reproduction_table(results), "\n".join(lines), goal_lines])


def write(summary: dict, directory: Path) -> dict[str, str]:
    from deepflow.bakeoff import html

    directory.mkdir(parents=True, exist_ok=True)
    text = markdown(summary)
    paths = {"md": directory / "report.md", "html": directory / "report.html", "png": directory / "prequential_ap.png",
             "json": directory / "summary.json"}
    paths["md"].write_text(text)
    paths["json"].write_text(json.dumps(summary, indent=2, default=str))
    paths["html"].write_text(html(text))
    fig = plot(summary)
    fig.savefig(paths["png"], dpi=120)
    plt.close(fig)
    return {k: str(v) for k, v in paths.items()}
