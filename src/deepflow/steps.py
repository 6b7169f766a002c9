"""The pipeline's steps as plain functions: validate -> train members -> register -> promote.

Flows (``flows/``) only sequence these. Steps take and return names, run ids, URIs and small
dicts, never DataFrames or models; each step reloads the prepared data it needs.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from deepflow import (
    bakeoff,
    certificate,
    checkpoints,
    config,
    latency,
    ledger,
    progress,
    promotion,
    settings,
    tracking,
    usecase,
    validation,
)
from deepflow import threads as cpu_threads
from deepflow.explain import attach_background
from deepflow.importance import RELIES_ON


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
    progress.step(use_case, "validate")
    uc = usecase.get(use_case, overrides)
    sw = Stopwatch()
    with sw("validation"):
        splits = uc.load_splits()
        frames, suites = uc.validation_inputs(splits)
        rows = sum(len(df) for df in splits.values())
        champion = tracking.version_by_alias(use_case, tracking.CHAMPION)
        history, rules = validation.history(
            rows, str(champion.version) if champion else None,
            int((champion.tags or {}).get("deepflow.data_rows") or 0) if champion else None, uc.cfg.contract)
        if rules:
            frames["history"], suites["history"] = history, rules
        report = validation.validate(f"{use_case}.data", frames, suites)
        report_path = report.save(settings.reports_dir() / use_case)
    if run_id:
        with sw("tracking"):
            tracking.log_artifact(run_id, report_path, "validation")
            tracking.log_artifact(run_id, report_path.with_suffix(".json"), "validation")
            tracking.set_tags(run_id, {"deepflow.validation": "passed" if report.success else "failed"})
    if not report.success:
        raise validation.ValidationFailed(report, report_path)
    fingerprint = data_fingerprint(uc)
    return {
        "suite": report.suite,
        "result": "passed",
        "expectations": report.evaluated,
        "rows": rows,
        "report_path": str(report_path),
        **tracking.data_lineage(uc.prepared_dir, lambda: fingerprint),
        "fingerprint": fingerprint,
        "schema": usecase.schema_hash(uc.schema()),
        "timings": dict(sw.seconds),
    }


def data_fingerprint(uc: usecase.UseCase) -> str:
    """sha256 of the prepared files exactly as they are on disk now (DVC's md5 is per `repro`)."""
    return tracking.files_fingerprint(sorted(uc.prepared_dir.glob("*.parquet")))


def train_member(use_case: str, overrides: Sequence[str], member: str, kind: str,
                 parent_run_id: str, data_version: str, time_limit_s: float | None = None) -> dict:
    """Fit one candidate or baseline in its own nested run (within ``time_limit_s`` seconds of
    fitting when given: the run's budget); evaluate it; log model, plots and reports. A report
    under ``card/`` is also a section of the model card if this member is registered."""
    progress.step(use_case, "train", member)
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

        with sw("training"), checkpoints.member(checkpoints.key_parts(  # per-epoch: a killed run resumes
                entry=use_case, member=member, kind=kind, data_version=data_version, fingerprint=data_fingerprint(uc),
                cfg=uc.cfg), on_resume=lambda epochs: tracking.set_tags(run_id, {checkpoints.RESUMED_TAG: epochs})):
            scorer, info = uc.fit(member, kind, splits, log=log_epoch, time_limit_s=time_limit_s)
            threads = cpu_threads.in_use()  # chosen at the fit's start (training.seed_everything)
            attach_background(scorer, uc.explanation_background(scorer, splits["train"]))
        progress.step(use_case, "evaluate", member)
        with sw("evaluation"):
            val_scores = scorer.predict(splits["val"])
            test_scores = scorer.predict(splits["test"])
            val_metrics = uc.evaluate(val_scores, splits["val"])
            test_metrics, extra = split_extras(uc, scorer, uc.evaluate(test_scores, splits["test"]))
            threshold = uc.threshold(val_scores, splits["val"])
            latency_ms = latency.single_row(scorer, input_example(uc, scorer, splits["test"]).head(1))
            size_mb = scorer_size_mb(scorer)
            interval = uc.primary_interval(test_scores, splits["test"])
            figures = uc.figures(member, test_scores, splits["test"], threshold)
            texts = uc.reports(member, scorer, test_scores, splits["test"])
        with sw("tracking"):
            metrics = {f"val/{k}": v for k, v in val_metrics.items()}
            metrics |= {f"test/{k}": v for k, v in test_metrics.items()}
            metrics |= {f"latency_ms_{k}": latency_ms[k] for k in ("p50", "p95", "wall_p50", "wall_p95")}
            metrics |= {"latency_load_1m": latency_ms["load_1m"]}
            metrics |= extra
            metrics |= {"size_mb": size_mb, f"test/{primary}_low": interval.low,
                        f"test/{primary}_high": interval.high, **{f"info/{k}": v for k, v in info.items()
                                                                 if isinstance(v, int | float)}}
            tracking.log_metrics(run_id, metrics, step=int(info.get("epochs_run", 0)))
            tracking.log_params(run_id, {"member": member, "kind": kind, "threshold": threshold, **threads.params(),
                                         **{f"info.{k}": v for k, v in info.items() if not isinstance(v, int | float)}})
            for path, fig in figures.items():
                tracking.log_figure(run_id, fig, path)
            for path, item in texts.items():  # markdown, or a figure that goes with it
                (tracking.log_text if isinstance(item, str) else tracking.log_figure)(run_id, item, path)
            model_uri = tracking.log_scorer(run_id, scorer, input_example(uc, scorer, splits["test"]))
            tracking.set_tags(run_id, {"deepflow.model_uri": model_uri})
            tracking.end_run(run_id, ok=True)
    except BaseException:
        tracking.end_run(run_id, ok=False)
        raise
    return {
        "member": member, "kind": kind, "run_id": run_id,
        "model_uri": model_uri,
        "threshold": threshold,
        "val": val_metrics, "test": test_metrics,
        "extra": extra,
        "latency_ms": latency_ms,
        "size_mb": size_mb,
        "interval": [interval.low, interval.high],
        "parameters": info.get("parameters"),
        "time_limit_s": time_limit_s,
        "stopped_by": info.get("stopped_by"),
        "fit_info": {k: v for k, v in info.items() if isinstance(v, int | float | str)},
        "threads": asdict(threads),
        "card": "".join(t for p, t in texts.items() if p.startswith("card/") and isinstance(t, str)),
        "relies_on": texts.get(RELIES_ON) if isinstance(texts.get(RELIES_ON), str) else None,
        "primary": primary,
        "timings": dict(sw.seconds),
    }


def register_best(use_case: str, overrides: Sequence[str], results: list[dict], validation_info: dict,
                  pipeline_run_id: str, orchestration: dict | None = None) -> dict:
    """Register the best registrable member (by validation metric) as ``@challenger``.

    Hard rule: only with a passing validation of the exact data version it was trained on.
    """
    progress.step(use_case, "register")
    uc = usecase.get(use_case, overrides)
    if validation_info.get("result") != "passed":
        raise RuntimeError(f"{use_case}: refusing to register without a passing validation")
    fingerprint = data_fingerprint(uc)
    current_data = tracking.data_lineage(uc.prepared_dir, lambda: fingerprint)["data_version"]
    if validation_info.get("schema") != usecase.schema_hash(uc.schema()):
        raise RuntimeError(f"{use_case}: the entry's schema changed during the run ({uc.entry.path} was edited); "
                           "refusing to register")
    if (validation_info["data_version"], validation_info["fingerprint"]) != (current_data, fingerprint):
        raise RuntimeError(f"{use_case}: the prepared data changed after it was validated; refusing to register "
                           f"(validated {validation_info['data_version']}/{validation_info['fingerprint']})")
    primary = uc.primary_metric
    pool = [r for r in results if uc.registrable(r["kind"])]
    if not pool:
        raise RuntimeError(f"{use_case}: no registrable candidate trained")
    best = max(pool, key=lambda r: r["val"][primary])
    if tracking.client().get_run(best["run_id"]).info.experiment_id != tracking.experiment_id(use_case):
        raise RuntimeError(f"{use_case}: run {best['run_id']} is not in experiment {use_case!r}; refusing to "
                           "register another entry's run")
    orchestration = orchestration or {}
    sw = Stopwatch()
    with sw("tracking"):
        tags = {
            "deepflow.member": best["member"],
            "deepflow.data_version": validation_info["data_version"],
            "deepflow.data_source": validation_info["data_source"],
            "deepflow.dvc_stage": validation_info["dvc_stage"],
            "deepflow.entry": str(uc.entry.path.name),
            "deepflow.entry_kind": uc.kind,
            "deepflow.schema": validation_info["schema"],  # checked above: the entry's schema now
            "deepflow.git_commit": tracking.git_commit(),
            "deepflow.validation": f"passed ({validation_info['expectations']} expectations)",
            "deepflow.validation_suite": validation_info["suite"],
            "deepflow.data_rows": validation_info["rows"],
            "deepflow.flow_run_id": orchestration.get("flow_run_id") or "none",
            "deepflow.config_hash": config.config_hash(uc.cfg),
            "deepflow.threshold": best["threshold"],
            f"val/{primary}": round(best["val"][primary], 6),
            **{f"test/{k}": round(v, 6) for k, v in best["test"].items()},
        }
        version = str(tracking.register(use_case, best["model_uri"], best["run_id"], tags))
        cert = certificate.build(use_case=use_case, kind=uc.kind, version=version, member=best, cfg=uc.cfg,
                                 validation=validation_info, orchestration=orchestration,
                                 pipeline_run_id=pipeline_run_id)
        tracking.set_version_tags(use_case, version, certificate.tags(cert))
        tracking.log_text(best["run_id"], certificate.dumps(cert), f"registry/v{version}/birth_certificate.json")
        tracking.log_text(best["run_id"], "\n".join([certificate.model_card(cert, primary), best.get("card") or ""]),
                          f"registry/v{version}/model_card.md")
        ledger.move_alias(use_case, tracking.CHALLENGER, version,
                          reason=f"best on val/{primary} ({best['val'][primary]:.4f}) of {len(pool)} candidates",
                          evidence=f"runs:/{pipeline_run_id}/summary.md",
                          actor=f"pipeline:{orchestration.get('flow_run_id') or pipeline_run_id}")
    return {"version": version, "member": best["member"], "run_id": best["run_id"], "timings": dict(sw.seconds)}


def promote_challenger(use_case: str, overrides: Sequence[str] = (), actor: str = "pipeline",
                       accept_schema_change: bool = False) -> dict:
    """Score ``@challenger`` and ``@champion`` on today's test split in this one run, apply the
    policy, record the decision with the challenger, and move ``@champion`` through the ledger.

    Anything that goes wrong before the move leaves ``@champion`` where it was. A challenger whose
    schema differs from the entry's, or from the champion's, is refused before anything is scored
    (``promotion.check_schemas``; with ``accept_schema_change`` a champion of another schema is not
    compared and only the floors and ceilings apply).
    """
    progress.step(use_case, "promote")
    uc = usecase.get(use_case, overrides)
    primary, p = uc.primary_metric, uc.cfg.promotion
    sw = Stopwatch()
    challenger = tracking.version_by_alias(use_case, tracking.CHALLENGER)
    if challenger is None:
        raise LookupError(f"{use_case}: no @challenger to promote (run `deepflow train {use_case}`)")
    champion = tracking.version_by_alias(use_case, tracking.CHAMPION)
    if champion is not None and str(champion.version) == str(challenger.version):
        raise ledger.NoOpMove(f"{use_case}: @challenger v{challenger.version} is already @champion: nothing to "
                              f"compare or promote (train a new challenger: `deepflow train {use_case}`)")
    policy = promotion.Policy(**{f.name: getattr(p, f.name) for f in fields(promotion.Policy)})
    schema = promotion.check_schemas(
        uc.name, str(uc.entry.path), usecase.schema_hash(uc.schema()), str(challenger.version),
        (challenger.tags or {}).get("deepflow.schema"), str(champion.version) if champion else None,
        (champion.tags or {}).get("deepflow.schema") if champion else None, accept_schema_change)
    if schema.refused:
        return _record_decision(uc, actor, challenger, champion, policy, promotion.Decision(False, schema.checks),
                                None, {"refused_before_scoring": True}, sw)
    champion_compared = None if schema.skip_champion else champion
    with sw("validation"):
        test = uc.load_splits()["test"]
    with sw("evaluation"):
        chall_scorer = tracking.load_scorer(f"models:/{use_case}/{challenger.version}")
        chall_scores = chall_scorer.predict(test)
        chall_metrics, _ = split_extras(uc, chall_scorer, uc.evaluate(chall_scores, test))
        timed = {"challenger": (chall_scorer, input_example(uc, chall_scorer, test).head(1))}
        champ_metrics, gain = None, None
        if champion_compared is not None:
            champ_scorer = tracking.load_scorer(f"models:/{use_case}/{champion.version}")
            champ_scores = champ_scorer.predict(test)
            champ_metrics, _ = split_extras(uc, champ_scorer, uc.evaluate(champ_scores, test))
            gain = uc.primary_gain(chall_scores, champ_scores, test)
            timed["champion"] = (champ_scorer, input_example(uc, champ_scorer, test).head(1))
        latencies = latency.measure(timed)  # interleaved: both under the same conditions
        lat = latencies["challenger"]
    evidence = promotion.Evidence(
        metric=primary, challenger_version=str(challenger.version), challenger=chall_metrics,
        latency_p95_ms=lat["p95"], size_mb=scorer_size_mb(chall_scorer), latency_note=latency.note(lat),
        champion_version=str(champion.version) if champion else None, champion=champ_metrics,
        gain=gain,
    )
    decision = promotion.decide(policy, evidence)
    decision = promotion.Decision(decision.promote, [*schema.checks, *decision.checks])
    return _record_decision(uc, actor, challenger, champion, policy, decision, evidence,
                            {"test_rows": len(test), f"challenger_{primary}": chall_metrics[primary],
                             f"champion_{primary}": champ_metrics[primary] if champ_metrics else None,
                             "gain": asdict(gain) if gain else None,
                             "schema_change_accepted": schema.skip_champion, "latency_ms": latencies}, sw)


def _record_decision(uc: usecase.UseCase, actor: str, challenger, champion, policy: promotion.Policy,
                     decision: promotion.Decision, evidence: promotion.Evidence | None, facts: dict,
                     sw: Stopwatch) -> dict:
    """Write the decision to the challenger's run and version tags; move @champion if promoted."""
    use_case = uc.name
    stamp = time.strftime("%Y%m%dT%H%M%S")
    lineage = tracking.data_lineage(uc.prepared_dir,
                                    lambda: data_fingerprint(uc) if uc.prepared_dir.is_dir() else "none")
    record = {"use_case": use_case, "decided_at": stamp, "decided_by": actor, "data_version": lineage["data_version"],
              "policy": asdict(policy), "evidence": asdict(evidence) if evidence else None,
              **{k: v for k, v in facts.items() if k in ("test_rows", "refused_before_scoring",
                                                          "schema_change_accepted", "latency_ms")},
              **decision.to_dict()}
    path = f"promotion/decision-{stamp}-v{challenger.version}.json"
    evidence_uri = f"runs:/{challenger.run_id}/{path}"
    with sw("tracking"):
        tracking.log_text(challenger.run_id, json.dumps(record, indent=2, default=str), path)
        tracking.set_version_tags(use_case, challenger.version, {
            "deepflow.decision": "promoted" if decision.promote else "rejected",
            "deepflow.decision_reasons": "; ".join(decision.reasons)[:5000],
            "deepflow.decided_by": actor,
            "deepflow.decision_artifact": evidence_uri,
        })
        if decision.promote:
            ledger.move_alias(use_case, tracking.CHAMPION, str(challenger.version), reason=decision.summary()[:5000],
                              evidence=evidence_uri, actor=actor, if_from=str(champion.version) if champion else None)
    final = tracking.version_by_alias(use_case, tracking.CHAMPION)
    primary = uc.primary_metric
    return {
        "challenger": str(challenger.version),
        "previous_champion": str(champion.version) if champion else None,
        "champion": str(final.version) if final else None,
        f"challenger_{primary}": facts.get(f"challenger_{primary}"),
        f"champion_{primary}": facts.get(f"champion_{primary}"),
        "gain": facts.get("gain"),
        "promoted": decision.promote,
        "reasons": decision.reasons,
        "decision_uri": evidence_uri,
        "timings": dict(sw.seconds),
    }


def rollback(use_case: str, reason: str, to_version: str | None = None, actor: str | None = None,
             force: bool = False) -> dict:
    """Move ``@champion`` back (``ledger.rollback``: gates checked unless ``force``)."""
    return asdict(ledger.rollback(use_case, reason, to_version, actor=actor, force=force))


def bakeoff_report(use_case: str, overrides: Sequence[str], summary: dict) -> dict:
    """Write the run's bake-off report (MD, HTML, PNG) under reports/ and log it to MLflow."""
    progress.step(use_case, "report")
    uc = usecase.get(use_case, overrides)
    sw = Stopwatch()
    best = bakeoff.best_by_family(summary, uc.families)
    paired = None
    if "deep" in best and "shallow" in best:  # deep vs shallow, paired on the same test rows
        with sw("evaluation"):
            test = uc.load_splits()["test"]
            deep, shallow = (tracking.load_scorer(best[f]["model_uri"]).predict(test) for f in ("deep", "shallow"))
            paired = uc.primary_gain(deep, shallow, test)
    with sw("tracking"):
        paths = bakeoff.write(summary, uc.families, settings.reports_dir() / use_case / "bakeoff", paired)
        for path in paths.values():
            tracking.log_artifact(summary["run_id"], Path(path), "bakeoff")
    return {"paths": paths, "timings": dict(sw.seconds)}


def split_extras(uc: usecase.UseCase, scorer: Any, test_metrics: dict[str, float]) -> tuple[dict, dict]:
    """Add a use case's optional model-level metrics (``uc.extra_metrics(scorer)``, e.g. behavioural
    tests or a real-data sample) to the test metrics: ``test/x`` joins them as ``x`` (so promotion can
    gate on it); any other name (``coco/map50``) is returned apart, to be logged as is."""
    extra = uc.extra_metrics(scorer)
    merged = test_metrics | {k.removeprefix("test/"): v for k, v in extra.items() if k.startswith("test/")}
    return merged, {k: v for k, v in extra.items() if not k.startswith("test/")}


def input_example(uc: usecase.UseCase, scorer: Any, frame):
    """The use case's input example in the columns this scorer reads, when it names them (a
    sequence scorer reads the entity's history columns besides the row's own features)."""
    features = getattr(scorer, "features", None)
    return uc.input_example(frame, None if features is None else list(features))


def scorer_size_mb(scorer: Any) -> float:
    import cloudpickle

    # plus frozen weights the scorer loads from an installed package rather than pickling them
    return len(cloudpickle.dumps(scorer)) / 2**20 + getattr(scorer, "frozen_mb", 0.0)
