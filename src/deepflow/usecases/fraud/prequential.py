"""The handbook's prequential benchmark (issue 8): folds, models, fold metrics, and the flow's steps.

Protocol (the handbook, chapter 5.2-5.3): a fold trains on ``train_days`` from its training start,
skips ``delay_days`` (labels arrive late) and assesses the ``assessment_days`` after that, with the
cards already known to be compromised removed day by day (``prepare.split``). Fold ``i`` starts
``i * assessment_days`` before fold 0. Hyperparameters are chosen on the validation folds
(``val_start``) and reported, mean and std over folds, on the test folds (``test_start``).

Steps pass paths, run ids and small dicts (``flows/prequential.py`` sequences them). Nothing here
registers a model or moves an alias: the single-split pipeline is what registers and promotes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepflow import config, settings, tracking, training, usecase
from deepflow.kinds.tabular import sequences
from deepflow.kinds.tabular.config import TabularConfig
from deepflow.kinds.tabular.metrics import binary_metrics
from deepflow.kinds.tabular.models import Standardize, TabularSystem, build_net, sequence_scalers
from deepflow.scoring import TorchScorer
from deepflow.usecases.fraud.prepare import SplitParams, add_features, split

HISTORY = 10  # previous transactions per row kept in the fold table (the sequence search reads <= this)
HIST = "_HIST_"  # columns of the fold table: positions of each row's previous transactions
SKLEARN = ("logistic_regression", "random_forest", "xgboost")
TORCH = ("ffn", "sequence")
UNSUPERVISED = ("autoencoder", "isolation_forest")
KNOWN = (*SKLEARN, *TORCH)


@dataclass(frozen=True)
class Fold:
    kind: str  # "val" or "test"
    index: int  # 0 = the latest fold
    train_start: str  # YYYY-MM-DD

    @property
    def name(self) -> str:
        return f"{self.kind}{self.index}"


def folds(cfg: TabularConfig, kind: str) -> list[Fold]:
    """The handbook's ``prequentialSplit``: fold ``i`` starts ``i * assessment_days`` earlier."""
    p = cfg.prequential
    start = pd.Timestamp(p.val_start if kind == "val" else p.test_start)
    return [Fold(kind, i, (start - pd.Timedelta(days=i * p.assessment_days)).strftime("%Y-%m-%d"))
            for i in range(p.n_folds)]


def fold_end(cfg: TabularConfig, fold: Fold) -> pd.Timestamp:
    p = cfg.prequential
    return pd.Timestamp(fold.train_start) + pd.Timedelta(days=p.train_days + p.delay_days + p.assessment_days)


# --- the fold table: features and history index, built once on the whole transaction table -------


def table_path(cfg: TabularConfig) -> Path:
    """Where the fold table is cached; the name changes with the source file and the protocol."""
    p = cfg.prequential
    src = usecase.project_path(p.transactions)
    stat = src.stat()
    key = json.dumps([str(src.resolve()), stat.st_size, stat.st_mtime_ns, p.delay_days, HISTORY,
                      cfg.features, cfg.entity_column, cfg.time_column, _last_day(cfg).isoformat()])
    return usecase.project_path(p.cache_dir) / f"table-{hashlib.sha256(key.encode()).hexdigest()[:12]}.parquet"


def _last_day(cfg: TabularConfig) -> pd.Timestamp:
    return max(fold_end(cfg, f) for kind in ("val", "test") for f in folds(cfg, kind))


def build_table(cfg: TabularConfig) -> pd.DataFrame:
    """Features of every transaction up to the last assessment day, plus ``HISTORY`` columns giving
    the positions (in this table) of each row's previous transactions of the card (-1: none).

    Features and history are computed on the whole table before any fold is cut, so history
    crosses fold boundaries; rows before the first fold are kept as history only.
    """
    p = cfg.prequential
    tx = pd.read_parquet(usecase.project_path(p.transactions))
    feats = add_features(tx, delay_days=p.delay_days)
    feats = feats[feats[cfg.time_column] < _last_day(cfg)].reset_index(drop=True)
    index = sequences.history_index(feats[cfg.entity_column].to_numpy(), feats[cfg.time_column].to_numpy(),
                                    HISTORY)
    keep = [c for c in (cfg.id_column, cfg.time_column, cfg.entity_column, "TERMINAL_ID", cfg.label,
                        "TX_FRAUD_SCENARIO", *cfg.features) if c in feats.columns]
    out = feats[keep].copy()
    for k in range(HISTORY):
        out[f"{HIST}{k + 1}"] = index[:, k].astype(np.int32)
    return out


def load_table(path: str | Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def cut(cfg: TabularConfig, table: pd.DataFrame, fold: Fold) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, assessment rows) of a fold: the handbook's ``get_train_test_set``."""
    p = cfg.prequential
    parts = split(table, SplitParams(train_start=fold.train_start, train_days=p.train_days,
                                     delay_days=p.delay_days, test_days=p.assessment_days, history=0))
    return parts["train"], parts["test"]


def with_history(cfg: TabularConfig, table: pd.DataFrame, part: pd.DataFrame, length: int,
                 scope: str = "full") -> pd.DataFrame:
    """``part`` plus its ``length`` history steps. ``scope="full"``: the card's whole prior
    history (the table's index); ``"split"``: only earlier rows inside ``part`` itself, as the
    handbook's sequence models had them."""
    if length <= 0:
        return part
    if length > HISTORY:
        raise ValueError(f"history length {length} > {HISTORY} kept in the fold table")
    if scope == "full":
        index = table[[f"{HIST}{k + 1}" for k in range(length)]].to_numpy().astype(np.int64)
        hist = sequences.history_frame(table, part.index.to_numpy(), index, cfg.features, cfg.time_column)
    elif scope == "split":
        local = part.reset_index(drop=True)
        index = sequences.history_index(local[cfg.entity_column].to_numpy(), local[cfg.time_column].to_numpy(),
                                        length)
        hist = sequences.history_frame(local, np.arange(len(local)), index, cfg.features, cfg.time_column)
        hist.index = part.index
    else:
        raise ValueError(f"history scope {scope!r} (known: full, split)")
    return pd.concat([part, hist], axis=1)


# --- models ----------------------------------------------------------------------------------


def features_of(cfg: TabularConfig, model: str, params: dict[str, Any]) -> list[str]:
    if model == "sequence":
        return [*cfg.features, *sequences.columns(cfg.features, int(params["seq_length"]))]
    return list(cfg.features)


def fit_predict(cfg: TabularConfig, model: str, params: dict[str, Any], train: pd.DataFrame,
                assess: pd.DataFrame, extra: list[str] = ()) -> tuple[np.ndarray, dict[str, float]]:
    """Fit ``model`` with ``params`` on ``train``; scores of ``assess`` and fit facts.

    ``extra``: further input columns (the autoencoder's reconstruction error)."""
    threads = cfg.prequential.threads
    features = [*features_of(cfg, model, params), *extra]
    start = time.perf_counter()
    if model in SKLEARN or model == "isolation_forest":
        estimator = _sklearn(model, params, cfg.train.seed, threads)
        x = train[features].to_numpy(dtype=np.float32)
        if model == "isolation_forest":
            estimator.fit(x)
            fitted = time.perf_counter() - start
            scores = -estimator.score_samples(assess[features].to_numpy(dtype=np.float32))
        else:
            estimator.fit(x, train[cfg.label].to_numpy())
            fitted = time.perf_counter() - start
            scores = estimator.predict_proba(assess[features].to_numpy(dtype=np.float32))[:, 1]
        return np.asarray(scores, dtype=np.float64), {"fit_s": fitted, "parameters": 0}
    net, output = fit_net(cfg, model, params, train, features)
    fitted = time.perf_counter() - start
    scores = TorchScorer(net, features, output).predict(assess)
    return scores, {"fit_s": fitted, "parameters": sum(p.numel() for p in net.parameters())}


def _sklearn(model: str, params: dict[str, Any], seed: int, threads: int):
    from sklearn.ensemble import IsolationForest, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    jobs = threads or None
    if model == "logistic_regression":  # the handbook scales inputs for every model
        return make_pipeline(StandardScaler(), LogisticRegression(C=float(params["C"]), max_iter=1000,
                                                                  random_state=0))
    if model == "random_forest":
        return RandomForestClassifier(n_estimators=int(params["n_estimators"]), max_depth=int(params["max_depth"]),
                                      n_jobs=jobs, random_state=0)
    if model == "xgboost":
        from xgboost import XGBClassifier

        return XGBClassifier(n_estimators=int(params["n_estimators"]), max_depth=int(params["max_depth"]),
                             learning_rate=float(params["learning_rate"]), n_jobs=jobs, random_state=0,
                             verbosity=0, tree_method=params.get("tree_method", "hist"),
                             max_bin=int(params.get("max_bin", 256)))
    if model == "isolation_forest":
        return IsolationForest(n_estimators=int(params.get("n_estimators", 100)), n_jobs=jobs, random_state=seed)
    raise KeyError(f"unknown prequential model {model!r} (known: {', '.join(KNOWN + UNSUPERVISED)})")


def fit_net(cfg: TabularConfig, model: str, params: dict[str, Any], train: pd.DataFrame, features: list[str]):
    """Train a Lightning candidate for exactly ``params["epochs"]`` epochs (no early stopping: the
    assessment week is never looked at). Returns (network, output kind)."""
    training.seed_everything(cfg.train.seed, cfg.prequential.threads)
    x = torch_tensor(train[features])
    y = torch_tensor(train[cfg.label])
    m = dataclasses.replace(cfg.model, **{k: v for k, v in params.items() if hasattr(cfg.model, k)})
    step_scaler = None
    if model == "sequence":
        scaler, step_scaler = sequence_scalers(x.numpy(), len(cfg.features), m.seq_length)
        if len(features) > len(cfg.features) + len(sequences.columns(cfg.features, m.seq_length)):
            raise ValueError("extra inputs are for the flat models only")
    else:
        scaler = Standardize(x.mean(0).numpy(), x.std(0).numpy())
    net, objective = build_net(model, scaler, m, step_scaler)
    if objective == "reconstruction":  # the autoencoder learns what genuine looks like
        x, y = x[y == 0], y[y == 0]
    system = TabularSystem(net, objective, lr=float(params.get("lr", cfg.train.lr)),
                         weight_decay=float(params.get("weight_decay", cfg.train.weight_decay)))
    loader = training.batches(x, y, batch_size=int(params.get("batch_size", cfg.train.batch_size)), shuffle=True,
                              seed=cfg.train.seed)
    with warnings.catch_warnings():  # "validation_step but no val_dataloader": on purpose
        warnings.filterwarnings("ignore", message=".*val_dataloader.*")
        training.fit(system, loader, None, max_epochs=int(params["epochs"]), monitor="val/auprc", patience=0)
    return net, ("score" if objective == "reconstruction" else "logit")


def torch_tensor(values: pd.DataFrame | pd.Series):
    import torch

    return torch.from_numpy(values.to_numpy(dtype=np.float32, copy=True))


# --- evaluation over folds -------------------------------------------------------------------

FoldData = list[tuple[Fold, pd.DataFrame, pd.DataFrame]]


def fold_data(cfg: TabularConfig, table: pd.DataFrame, kind: str, length: int = 0, scope: str = "full") -> FoldData:
    out = []
    for fold in folds(cfg, kind):
        train, assess = cut(cfg, table, fold)
        out.append((fold, with_history(cfg, table, train, length, scope),
                    with_history(cfg, table, assess, length, scope)))
    return out


def metrics(cfg: TabularConfig, frame: pd.DataFrame, scores: np.ndarray) -> dict[str, float]:
    return binary_metrics(frame, scores, k=cfg.top_k, entity=cfg.entity_column, label=cfg.label,
                         time=cfg.time_column)


def run_folds(cfg: TabularConfig, model: str, params: dict[str, Any], data: FoldData,
              on_fold: Callable[[int, list[dict]], None] | None = None,
              extra: list[str] = ()) -> dict[str, Any]:
    """Fit and assess ``model`` on each fold; ``on_fold(i, so_far)`` may raise to stop early."""
    per: list[dict[str, Any]] = []
    for i, (fold, train, assess) in enumerate(data):
        start = time.perf_counter()
        scores, facts = fit_predict(cfg, model, params, train, assess, extra)
        per.append({"fold": fold.name, "train_start": fold.train_start, **metrics(cfg, assess, scores),
                    **facts, "seconds": time.perf_counter() - start, "train_rows": len(train),
                    "assess_rows": len(assess)})
        if on_fold is not None:
            on_fold(i, per)
    return summarise(per)


def summarise(per: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and (population, as sklearn's GridSearchCV and the handbook) std of each metric."""
    names = [k for k in per[0] if k not in ("fold", "train_start", "fit_s", "parameters", "seconds",
                                             "train_rows", "assess_rows")]
    return {
        "folds": per,
        "mean": {k: float(np.mean([f[k] for f in per])) for k in names},
        "std": {k: float(np.std([f[k] for f in per])) for k in names},
        "seconds": float(sum(f.get("seconds", 0.0) for f in per)),
        "parameters": int(per[-1].get("parameters", 0)),
    }


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
    clock, t = _Clock(), time.perf_counter()
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
                               "deepflow.data_version": tracking.dvc_hash(cfg.prequential.dvc_stage)})
    clock.add("tracking", t)
    if not report.success:
        raise validation.ValidationFailed(report, report_path)
    return {"table": str(path), "cached": cached, "rows": len(table), "folds": counts,
            "data_version": tracking.dvc_hash(cfg.prequential.dvc_stage), "validation": str(report_path),
            "timings": clock.seconds}


def benchmark(use_case: str, overrides: list[str], model: str, parent_run_id: str, table_path_: str,
              params: dict[str, Any] | None = None, scope: str = "full", name: str | None = None) -> dict:
    """Choose ``model``'s hyperparameters on the validation folds (grid or Optuna, each setting a
    child run), then fit and assess it on every test fold. With ``params``: no search."""
    from deepflow.usecases.fraud import search

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
    from deepflow.usecases.fraud import reproduction

    t0 = time.perf_counter()
    paths = reproduction.write(summary, settings.reports_dir() / use_case / "prequential")
    for path in paths.values():
        tracking.log_artifact(summary["run_id"], Path(path), "prequential")
    return {"paths": paths, "console": reproduction.console(summary),
            "timings": {"tracking": time.perf_counter() - t0}}
