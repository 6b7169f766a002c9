"""The pipeline's steps as plain functions: validate -> train members -> register -> promote.

Flows (``flows/``) only sequence these. Steps take and return names, run ids, URIs and small
dicts, never DataFrames or models; each step reloads the prepared data it needs.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from deepflow import config, promotion, settings, tracking, usecase, validation


class Stopwatch:
    """Seconds spent per category (validation, training, evaluation, tracking)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, category: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[category] += time.perf_counter() - start


def start_pipeline(use_case: str, overrides: Sequence[str], flow_run_id: str | None) -> dict:
    uc = usecase.get(use_case, overrides)
    sw = Stopwatch()
    with sw("tracking"):
        run_id = tracking.start_run(use_case, f"{use_case}-pipeline", tags={
            "deepflow.kind": "pipeline",
            "deepflow.flow_run_id": flow_run_id or "none",
            "deepflow.git_commit": tracking.git_commit(),
        })
        tracking.log_params(run_id, {**config.flatten(uc.cfg), "config_hash": config.config_hash(uc.cfg)})
    return {"run_id": run_id, "timings": dict(sw.seconds)}


def validate_data(use_case: str, overrides: Sequence[str], run_id: str | None = None) -> dict:
    """Run the use case's data contract; raise ValidationFailed (report saved) on bad data."""
    uc = usecase.get(use_case, overrides)
    sw = Stopwatch()
    with sw("validation"):
        splits = uc.load_splits()
        frames, suites = uc.validation_inputs(splits)
        report = validation.validate(f"{use_case}.data", frames, suites)
        report_path = report.save(settings.reports_dir() / use_case)
    if run_id:
        with sw("tracking"):
            tracking.log_artifact(run_id, report_path, "validation")
            tracking.log_artifact(run_id, report_path.with_suffix(".json"), "validation")
            tracking.set_tags(run_id, {"deepflow.validation": "passed" if report.success else "failed"})
    if not report.success:
        raise validation.ValidationFailed(report, report_path)
    return {
        "suite": report.suite,
        "result": "passed",
        "expectations": report.evaluated,
        "report_path": str(report_path),
        "data_version": tracking.dvc_hash(uc.cfg.dvc_stage),
        "timings": dict(sw.seconds),
    }


def train_member(use_case: str, overrides: Sequence[str], member: str, kind: str,
                 parent_run_id: str, data_version: str) -> dict:
    """Fit one candidate or baseline in its own nested run; evaluate it; log model and plots."""
    uc = usecase.get(use_case, overrides)
    sw = Stopwatch()
    primary = uc.primary_metric
    with sw("tracking"):
        run_id = tracking.start_run(use_case, member, parent_run_id, tags={
            "deepflow.kind": kind, "deepflow.member": member, "deepflow.data_version": data_version,
        })
    try:
        with sw("validation"):  # data loading is accounted with the data checks
            splits = uc.load_splits()

        def log_epoch(metrics: dict[str, float], epoch: int) -> None:
            with sw("tracking"):
                tracking.log_metrics(run_id, metrics, step=epoch)

        with sw("training"):
            scorer, info = uc.fit(member, kind, splits, log=log_epoch)
        with sw("evaluation"):
            val_scores = scorer.predict(splits["val"])
            test_scores = scorer.predict(splits["test"])
            val_metrics = uc.evaluate(val_scores, splits["val"])
            test_metrics = uc.evaluate(test_scores, splits["test"])
            threshold = uc.threshold(val_scores, splits["val"])
            latency_ms = _latency_ms(scorer, uc.input_example(splits["test"]).head(1))
            figures = uc.figures(member, test_scores, splits["test"], threshold)
        with sw("tracking"):
            metrics = {f"val/{k}": v for k, v in val_metrics.items()}
            metrics |= {f"test/{k}": v for k, v in test_metrics.items()}
            metrics |= {"latency_ms_batch1": latency_ms, **{f"info/{k}": v for k, v in info.items()}}
            tracking.log_metrics(run_id, metrics, step=int(info.get("epochs_run", 0)))
            tracking.log_params(run_id, {"member": member, "kind": kind, "threshold": threshold})
            for path, fig in figures.items():
                tracking.log_figure(run_id, fig, path)
            model_uri = tracking.log_scorer(run_id, scorer, uc.input_example(splits["test"]))
            tracking.set_tags(run_id, {"deepflow.model_uri": model_uri})
            tracking.end_run(run_id, ok=True)
    except BaseException:
        tracking.end_run(run_id, ok=False)
        raise
    return {
        "member": member,
        "kind": kind,
        "run_id": run_id,
        "model_uri": model_uri,
        "threshold": threshold,
        "val": val_metrics,
        "test": test_metrics,
        "latency_ms_batch1": latency_ms,
        "primary": primary,
        "timings": dict(sw.seconds),
    }


def register_best(use_case: str, overrides: Sequence[str], results: list[dict],
                  validation_info: dict, flow_run_id: str | None) -> dict:
    """Register the best registrable member (by validation metric) as ``@challenger``.

    Hard rule: only called after validation of this exact data version passed.
    """
    uc = usecase.get(use_case, overrides)
    if validation_info.get("result") != "passed":
        raise RuntimeError(f"{use_case}: refusing to register without a passing validation")
    primary = uc.primary_metric
    pool = [r for r in results if uc.registrable(r["kind"])]
    if not pool:
        raise RuntimeError(f"{use_case}: no registrable candidate trained")
    best = max(pool, key=lambda r: r["val"][primary])
    sw = Stopwatch()
    with sw("tracking"):
        tags = {
            "deepflow.member": best["member"],
            "deepflow.data_version": validation_info["data_version"],
            "deepflow.git_commit": tracking.git_commit(),
            "deepflow.validation": f"passed ({validation_info['expectations']} expectations)",
            "deepflow.validation_suite": validation_info["suite"],
            "deepflow.flow_run_id": flow_run_id or "none",
            "deepflow.config_hash": config.config_hash(uc.cfg),
            "deepflow.threshold": best["threshold"],
            f"val/{primary}": round(best["val"][primary], 6),
            **{f"test/{k}": round(v, 6) for k, v in best["test"].items()},
        }
        version = tracking.register(use_case, best["model_uri"], best["run_id"], tags)
        tracking.set_alias(use_case, tracking.CHALLENGER, version)
    return {"version": version, "member": best["member"], "run_id": best["run_id"],
            "timings": dict(sw.seconds)}


def promote_challenger(use_case: str, overrides: Sequence[str] = (), actor: str = "pipeline") -> dict:
    """Evaluate ``@challenger`` and ``@champion`` on today's test split; move ``@champion`` if won.

    Anything that goes wrong before the alias move leaves ``@champion`` where it was.
    """
    uc = usecase.get(use_case, overrides)
    primary = uc.primary_metric
    sw = Stopwatch()
    challenger = tracking.version_by_alias(use_case, tracking.CHALLENGER)
    if challenger is None:
        raise LookupError(f"{use_case}: no @challenger to promote (run `deepflow train {use_case}`)")
    champion = tracking.version_by_alias(use_case, tracking.CHAMPION)
    with sw("validation"):
        test = uc.load_splits()["test"]
    with sw("evaluation"):
        chall_value = uc.evaluate(_scores(use_case, challenger.version, test), test)[primary]
        champ_value = None
        if champion is not None and champion.version != challenger.version:
            champ_value = uc.evaluate(_scores(use_case, champion.version, test), test)[primary]
    if champion is not None and champion.version == challenger.version:
        decision = promotion.Decision(False, [f"v{challenger.version} is already champion"])
    else:
        p = uc.cfg.promotion
        decision = promotion.decide(primary, chall_value, champ_value, margin=p.margin, floor=p.floor)
    with sw("tracking"):
        tracking.set_version_tags(use_case, challenger.version, {
            "deepflow.decision": "promoted" if decision.promote else "rejected",
            "deepflow.decision_reasons": "; ".join(decision.reasons),
            "deepflow.decided_by": actor,
            f"deepflow.decision_{primary}": round(chall_value, 6),
        })
        if decision.promote:
            tracking.set_alias(use_case, tracking.CHAMPION, challenger.version)
    final = tracking.version_by_alias(use_case, tracking.CHAMPION)
    return {
        "challenger": challenger.version,
        "previous_champion": champion.version if champion else None,
        "champion": final.version if final else None,
        f"challenger_{primary}": chall_value,
        f"champion_{primary}": champ_value,
        "promoted": decision.promote,
        "reasons": decision.reasons,
        "timings": dict(sw.seconds),
    }


def _scores(use_case: str, version: str, frame) -> np.ndarray:
    return tracking.load_scorer(f"models:/{use_case}/{version}").predict(frame)


def _latency_ms(scorer: Any, one_row, repeats: int = 50) -> float:
    """Median single-row latency of the plain scorer (no server), in ms."""
    scorer.predict(one_row)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        scorer.predict(one_row)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)

