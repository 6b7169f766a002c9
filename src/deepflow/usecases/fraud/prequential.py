"""The handbook's prequential benchmark (issue 8): the flow's steps.

The protocol (folds, the fold table, each fold's rows) is ``protocol.py``; fitting and assessing
a model on folds is ``fits.py``; choosing hyperparameters on the validation folds is
``search.py``; the report is ``reproduction.py``.

Steps pass paths, run ids and small dicts (``flows/prequential.py`` sequences them). Nothing here
registers a model or moves an alias: the single-split pipeline is what registers and promotes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from deepflow import config, settings, tracking, usecase
from deepflow.kinds.tabular.config import TabularConfig
from deepflow.scoring import TorchScorer
from deepflow.usecases.fraud import search
from deepflow.usecases.fraud.fits import fit_net, run_folds
from deepflow.usecases.fraud.protocol import build_table, cut, fold_data, folds, load_table, table_path

# --- the flow's steps ------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, category: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[category] = self.seconds.get(category, 0.0) + now - since
        return now


def start(use_case: str, overrides: list[str], flow_run_id: str | None) -> dict:
    """The parent MLflow run of a prequential benchmark."""
    t0 = time.perf_counter()
    uc = usecase.get(use_case, overrides)
    run_id = tracking.start_run(use_case, f"{use_case}-prequential", tags={
        "deepflow.kind": "prequential", "deepflow.flow_run_id": flow_run_id or "none",
        "deepflow.git_commit": tracking.git_commit(),
    })
    tracking.log_params(run_id, {**config.flatten(uc.cfg), "config_hash": config.config_hash(uc.cfg)})
    return {"run_id": run_id, "timings": {"tracking": time.perf_counter() - t0}}


def prepare(use_case: str, overrides: list[str], run_id: str) -> dict:
    """Build (or reuse) the fold table and validate every fold's rows with the use case's contract."""
    from deepflow import validation
    from deepflow.kinds.tabular import expectations

    uc = usecase.get(use_case, overrides)
    cfg: TabularConfig = uc.cfg
    if not cfg.prequential.transactions:
        raise config.ConfigError(f"{uc.entry.path}: protocol=prequential needs config.prequential.transactions "
                                 "(the raw time-stamped rows the folds are cut from)")
    clock, t = _Clock(), time.perf_counter()
    lineage = source_lineage(usecase.project_path(cfg.prequential.transactions))
    path = table_path(cfg)
    cached = path.exists()
    if not cached:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        build_table(cfg).to_parquet(tmp, index=False)
        tmp.replace(path)
    t = clock.add("data", t)  # features and card history of the whole table (skipped when cached)
    table = load_table(path)
    counts, parts = {}, []
    for kind in ("val", "test"):
        for fold in folds(cfg, kind):
            train, assess = cut(cfg, table, fold)
            counts[fold.name] = {"train_start": fold.train_start, "train_rows": len(train),
                                 "assess_rows": len(assess), "assess_frauds": int(assess[cfg.label].sum())}
            parts += [train, assess]
    rows = pd.concat(parts).drop_duplicates(cfg.id_column)  # every row some fold trains or assesses on
    report = validation.validate(f"{use_case}.prequential", {"rows": rows}, {"rows": expectations.suites(cfg)["rows"]})
    report_path = report.save(settings.reports_dir() / use_case / "prequential")
    t = clock.add("validation", t)
    tracking.log_artifact(run_id, report_path, "validation")
    tracking.log_text(run_id, json.dumps(counts, indent=2), "prequential/folds.json")
    tracking.set_tags(run_id, {"deepflow.validation": "passed" if report.success else "failed",
                               "deepflow.data_version": lineage["data_version"],
                               "deepflow.dvc_stage": lineage["dvc_stage"]})
    clock.add("tracking", t)
    if not report.success:
        raise validation.ValidationFailed(report, report_path)
    return {"table": str(path), "cached": cached, "rows": len(table), "folds": counts,
            "data_version": lineage["data_version"], "validation": str(report_path),
            "timings": clock.seconds}


def source_lineage(source: Path) -> dict[str, str]:
    """The DVC md5 of the transactions file when a stage writes it, else the file's own sha256."""
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no transactions to cut the folds from (run `make data` first)")
    return tracking.data_lineage(source, lambda: tracking.files_fingerprint([source]))


def benchmark(use_case: str, overrides: list[str], model: str, parent_run_id: str, table_path_: str,
              params: dict[str, Any] | None = None, scope: str = "full", name: str | None = None) -> dict:
    """Choose ``model``'s hyperparameters on the validation folds (grid or Optuna, each setting a
    child run), then fit and assess it on every test fold. With ``params``: no search."""
    uc = usecase.get(use_case, overrides)
    cfg: TabularConfig = uc.cfg
    name = name or model
    clock, t = _Clock(), time.perf_counter()
    run_id = tracking.start_run(use_case, name, parent_run_id, tags={
        "deepflow.kind": "prequential-model", "deepflow.member": name})
    try:
        table = load_table(table_path_)
        t = clock.add("validation", t)
        chosen = search.Selection(params=dict(params), trials=[], seconds=0.0) if params is not None else \
            search.select(cfg, model, table, use_case, run_id)
        t = clock.add("training", t)
        length = int(chosen.params.get("seq_length", 0)) if model == "sequence" else 0
        test = run_folds(cfg, model, chosen.params, fold_data(cfg, table, "test", length, scope))
        t = clock.add("training", t)
        val = chosen.best_result
        result = {"model": name, "base": model, "scope": scope, "params": chosen.params,
                  "val": val, "test": test, "search_s": chosen.seconds, "test_s": test["seconds"],
                  "trials": len(chosen.trials), "pruned": sum(tr["state"] != "complete" for tr in chosen.trials),
                  "run_id": run_id}
        log_result(run_id, result)
        tracking.end_run(run_id, ok=True)
        clock.add("tracking", t)
    except BaseException:
        tracking.end_run(run_id, ok=False)
        raise
    return {**result, "timings": clock.seconds}


def log_result(run_id: str, result: dict) -> None:
    """Log a model's result to its run: best params, val/test mean, std and per-fold metrics, result.json."""
    tracking.log_params(run_id, {"model": result["model"], "scope": result["scope"],
                                 **{f"best.{k}": v for k, v in result["params"].items()}})
    out: dict[str, float] = {"time/search_s": result["search_s"], "time/test_s": result["test_s"],
                             "search/trials": result["trials"], "search/pruned": result["pruned"]}
    for stage in ("val", "test"):
        r = result.get(stage)
        if not r:
            continue
        out |= {f"{stage}/{k}": v for k, v in r["mean"].items()}
        out |= {f"{stage}/{k}_std": v for k, v in r["std"].items()}
        for i, f in enumerate(r["folds"]):
            out |= {f"{stage}/{k}_fold{i}": f[k] for k in r["mean"]}
    tracking.log_metrics(run_id, out)
    tracking.log_text(run_id, json.dumps(result, indent=2, default=str), "prequential/result.json")


def unsupervised(use_case: str, overrides: list[str], parent_run_id: str, table_path_: str,
                 supervised: dict[str, dict[str, Any]]) -> dict:
    """Autoencoder vs isolation forest (no labels) on the validation and test folds; then the
    autoencoder's reconstruction error as an extra input of the supervised models in
    ``supervised`` (name -> best params), on the test folds."""
    uc = usecase.get(use_case, overrides)
    cfg: TabularConfig = uc.cfg
    clock, t = _Clock(), time.perf_counter()
    table = load_table(table_path_)
    ae_params = {"epochs": cfg.prequential.ae_epochs, "lr": cfg.train.lr, "batch_size": cfg.train.batch_size}
    detectors = {"autoencoder": ae_params, "isolation_forest": {"n_estimators": 100}}
    rows: dict[str, dict] = {}
    for name, params in detectors.items():
        run_id = tracking.start_run(use_case, name, parent_run_id, tags={
            "deepflow.kind": "prequential-unsupervised", "deepflow.member": name})
        result = {"model": name, "base": name, "scope": "none", "params": params, "search_s": 0.0,
                  "trials": 0, "pruned": 0, "run_id": run_id}
        for kind in ("val", "test"):
            result[kind] = run_folds(cfg, "autoencoder" if name == "autoencoder" else name, params,
                                     fold_data(cfg, table, kind))
        result["test_s"] = result["test"]["seconds"]
        log_result(run_id, result)
        tracking.end_run(run_id, ok=True)
        rows[name] = result
    t = clock.add("training", t)
    data = []  # the test folds, with the autoencoder's error (trained on that fold's genuine rows) added
    for fold, train, assess in fold_data(cfg, table, "test"):
        net, _ = fit_net(cfg, "autoencoder", ae_params, train, list(cfg.features))
        scorer = TorchScorer(net, cfg.features, "score")
        data.append((fold, train.assign(AE_ERROR=scorer.predict(train)),
                     assess.assign(AE_ERROR=scorer.predict(assess))))
    with_ae: dict[str, dict] = {}
    for base, params in supervised.items():
        name = f"{base}+ae_error"
        run_id = tracking.start_run(use_case, name, parent_run_id, tags={
            "deepflow.kind": "prequential-model", "deepflow.member": name})
        test = run_folds(cfg, base, params, data, extra=["AE_ERROR"])
        result = {"model": name, "base": base, "scope": "none", "params": params, "val": None, "test": test,
                  "search_s": 0.0, "test_s": test["seconds"], "trials": 0, "pruned": 0, "run_id": run_id}
        log_result(run_id, result)
        tracking.end_run(run_id, ok=True)
        with_ae[base] = result
    clock.add("training", t)
    return {"detectors": rows, "ae_feature": with_ae, "timings": clock.seconds}


def report(use_case: str, summary: dict) -> dict:
    """Write the reproduction table and bake-off (MD, HTML, PNG) under reports/ and to the parent run."""
    from deepflow.usecases.fraud import reproduction  # matplotlib, only when a report is written

    t0 = time.perf_counter()
    paths = reproduction.write(summary, settings.reports_dir() / use_case / "prequential")
    for path in paths.values():
        tracking.log_artifact(summary["run_id"], Path(path), "prequential")
    return {"paths": paths, "console": reproduction.console(summary),
            "timings": {"tracking": time.perf_counter() - t0}}
