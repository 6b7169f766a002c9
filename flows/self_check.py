"""Prefect flow: the nightly self-check of the platform (deployment ``self-check/reproduce``).

For each entry (``operations.yaml``: ``self_check.use_cases``; default every entry) whose model has
an ``@champion``: ``deepflow reproduce <entry>@champion --quick`` (``deepflow.reproduce``): the code
and data of the version restored, the registered model re-scored on the restored test split, and
its member trained twice on a sample. The verdicts go to the versions (tag ``reproduced_quick``)
and to a markdown artifact; one champion that does not reproduce fails the flow run, so the
Prefect UI shows it.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from deepflow import operations, settings

FAILED = ("mismatch", "unrecoverable")


@task(name="reproduce-quick")
def check(use_case: str) -> dict:
    from deepflow import reproduce, tracking

    log = get_run_logger()
    champion = tracking.version_by_alias(use_case, tracking.CHAMPION)
    if champion is None:
        return {"version": None, "verdict": "skipped", "reason": "no @champion yet", "seconds": 0.0}
    try:
        report = reproduce.reproduce(use_case, str(champion.version), quick=True,
                                     echo=lambda line: log.info("%s: %s", use_case, line))
    except (LookupError, reproduce.ReproduceError) as exc:  # no certificate, unknown kind
        return {"version": str(champion.version), "verdict": "unrecoverable", "reason": str(exc), "seconds": 0.0}
    return {k: report.get(k) for k in ("version", "verdict", "reason", "seconds")}


def summary(results: dict[str, dict]) -> str:
    lines = ["# Self-check: champions reproduced (`deepflow reproduce --quick`)", "",
             "| entry | version | verdict | seconds | reason |", "|---|---|---|---|---|"]
    for name, r in results.items():
        version = f"v{r['version']}" if r["version"] else "-"
        lines.append(f"| {name} | {version} | {r['verdict']} | {r['seconds'] or 0:.0f} | {r['reason']} |")
    return "\n".join(lines)


@flow(name=operations.SELF_CHECK_FLOW)
def self_check(use_cases: list[str] | None = None) -> dict[str, dict]:
    """Quick-reproduce the champion of each entry in ``use_cases`` (default: the operations config's)."""
    settings.apply_env_defaults()  # first thing: see flows/__init__.py
    names = list(use_cases or operations.load().self_check.use_cases or [])
    results = {name: check(name) for name in names}
    create_markdown_artifact(summary(results), key="self-check", description="nightly reproduction self-check")
    failed = {n: r for n, r in results.items() if r["verdict"] in FAILED}
    if failed:
        raise RuntimeError("self-check: " + "; ".join(f"{n} v{r['version']} {r['verdict']}: {r['reason']}"
                                                       for n, r in failed.items()))
    return results
