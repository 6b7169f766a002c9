"""Hyperparameter selection on the prequential validation folds.

Classical models: the handbook's grids (``prequential.grids`` in the config), every point on every
validation fold. Lightning candidates: Optuna (seeded TPE sampler, median pruning on the running
mean AP over the folds) within a wall-clock budget per model (``prequential.search.budget_s``: no
trial starts after it, and a running one stops at its next fold once a trial has completed).
Every setting tried is an MLflow child run of the model's run; the selection metric is the mean
average precision over the validation folds.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from deepflow import tracking
from deepflow.kinds.tabular.config import PrequentialConfig, TabularConfig
from deepflow.usecases.fraud import fits, protocol

PRIMARY = "auprc"


@dataclass
class Selection:
    params: dict[str, Any]
    trials: list[dict[str, Any]]  # number, params, state, val (summary or partial)
    seconds: float
    best_result: dict[str, Any] | None = field(default=None)


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def grid_of(cfg: TabularConfig, model: str) -> dict[str, list[Any]]:
    """The configured grid of ``model`` over its default one: ``prequential.grids.xgboost.max_depth=[3]``
    changes one axis and keeps the others."""
    return {**PrequentialConfig().grids.get(model, {}), **cfg.prequential.grids.get(model, {})}


def ffn_space(trial: Any, max_epochs: int) -> dict[str, Any]:
    """The handbook's FFN grid (chapter 7: lr, batch size, epochs, 500 hidden units, 1-2 layers,
    dropout), widened to ranges; batches of 64 are left out for time."""
    return {
        "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [128, 256, 512, 1024]),
        "epochs": trial.suggest_int("epochs", min(5, max_epochs), max_epochs),
        "ffn_hidden": trial.suggest_categorical("ffn_hidden", [100, 250, 500]),
        "ffn_layers": trial.suggest_int("ffn_layers", 1, 2),
        "ffn_dropout": trial.suggest_float("ffn_dropout", 0.0, 0.4, step=0.1),
    }


def sequence_space(trial: Any, max_epochs: int) -> dict[str, Any]:
    return {
        "lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [512, 1024]),
        "epochs": trial.suggest_int("epochs", min(5, max_epochs), max_epochs),
        "seq_length": trial.suggest_categorical("seq_length", [3, 5, 10]),
        "seq_hidden": trial.suggest_categorical("seq_hidden", [16, 32, 64]),
        "seq_blocks": trial.suggest_int("seq_blocks", 0, 3),
        "seq_cell": trial.suggest_categorical("seq_cell", ["gru", "lstm"]),
        "seq_attention": trial.suggest_categorical("seq_attention", [True, False]),
        "dropout": trial.suggest_float("dropout", 0.0, 0.3, step=0.1),
    }


SPACES = {"ffn": ffn_space, "sequence": sequence_space}
FIRST = {  # the first trial of each search: the handbook's FFN, and our single-split sequence settings
    "ffn": {"lr": 1e-3, "batch_size": 256, "epochs": 20, "ffn_hidden": 500, "ffn_layers": 1, "ffn_dropout": 0.2},
    "sequence": {"lr": 2e-3, "batch_size": 1024, "epochs": 12, "seq_length": 5, "seq_hidden": 32,
                 "seq_blocks": 2, "seq_cell": "gru", "seq_attention": True, "dropout": 0.1},
}


def select(cfg: TabularConfig, model: str, table: pd.DataFrame, use_case: str, run_id: str) -> Selection:
    """Best hyperparameters of ``model`` on the validation folds: the grid (classical models) or Optuna
    (``ffn``, ``sequence``), every setting an MLflow child run of ``run_id``; KeyError for another model."""
    if model in fits.SKLEARN:
        return select_grid(cfg, model, table, use_case, run_id)
    if model in SPACES:
        return select_optuna(cfg, model, table, use_case, run_id)
    raise KeyError(f"no search for {model!r} (known: {', '.join(fits.KNOWN)})")


def _trial_run(use_case: str, parent: str, model: str, number: int, params: dict[str, Any]) -> str:
    run_id = tracking.start_run(use_case, f"{model}-{number}", parent, tags={
        "deepflow.kind": "search-trial", "deepflow.member": model})
    tracking.log_params(run_id, params)
    return run_id


def _close_trial(run_id: str, state: str, per: list[dict[str, Any]]) -> None:
    """Log the trial's validation metrics so far (all folds, or those run before pruning)."""
    if per:
        summary = fits.summarise(per)
        tracking.log_metrics(run_id, {**{f"val/{k}": v for k, v in summary["mean"].items()},
                                      **{f"val/{k}_std": v for k, v in summary["std"].items()},
                                      "val/folds": len(per), "time/s": summary["seconds"]})
    tracking.set_tags(run_id, {"deepflow.trial_state": state})
    tracking.end_run(run_id, ok=state != "failed")


def select_grid(cfg: TabularConfig, model: str, table: pd.DataFrame, use_case: str, run_id: str) -> Selection:
    start = time.perf_counter()
    data = protocol.fold_data(cfg, table, "val")
    trials = []
    for number, params in enumerate(grid_points(grid_of(cfg, model))):
        trial_run = _trial_run(use_case, run_id, model, number, params)
        try:
            result = fits.run_folds(cfg, model, params, data)
        except BaseException:
            _close_trial(trial_run, "failed", [])
            raise
        _close_trial(trial_run, "complete", result["folds"])
        trials.append({"number": number, "params": params, "state": "complete", "val": result})
    best = max(trials, key=lambda t: t["val"]["mean"][PRIMARY])
    selection = Selection(best["params"], trials, time.perf_counter() - start, best["val"])
    _log_trials(run_id, selection)
    return selection


def select_optuna(cfg: TabularConfig, model: str, table: pd.DataFrame, use_case: str, run_id: str) -> Selection:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = cfg.prequential.search
    start = time.perf_counter()
    length = protocol.HISTORY if model == "sequence" else 0
    data = protocol.fold_data(cfg, table, "val", length)
    space = SPACES[model]
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1) if s.pruning
              else optuna.pruners.NopPruner())
    study = optuna.create_study(direction="maximize", pruner=pruner,
                                sampler=optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=5))
    first = dict(FIRST[model])
    first["epochs"] = min(first["epochs"], s.max_epochs)
    study.enqueue_trial(first)
    trials: list[dict[str, Any]] = []
    budget = float(s.budget_s.get(model, 300.0))

    def objective(trial) -> float:
        params = space(trial, s.max_epochs)
        trial_run = _trial_run(use_case, run_id, model, trial.number, params)
        per: list[dict[str, Any]] = []

        def report(i: int, so_far: list[dict[str, Any]]) -> None:
            per[:] = so_far
            trial.report(fits.summarise(so_far)["mean"][PRIMARY], i)
            if trial.should_prune():
                raise optuna.TrialPruned("pruned")
            last = i == len(data) - 1
            if not last and time.perf_counter() - start > budget and any(t["state"] == "complete" for t in trials):
                raise optuna.TrialPruned("budget")  # the budget holds within a trial too, to one fold

        try:
            result = fits.run_folds(cfg, model, params, data, on_fold=report)
        except optuna.TrialPruned as why:
            state = "pruned" if str(why) == "pruned" else "stopped: budget"
            _close_trial(trial_run, state, per)
            trials.append({"number": trial.number, "params": params, "state": state,
                           "val": fits.summarise(per)})
            raise
        except BaseException:
            _close_trial(trial_run, "failed", per)
            raise
        _close_trial(trial_run, "complete", result["folds"])
        trials.append({"number": trial.number, "params": params, "state": "complete", "val": result})
        return result["mean"][PRIMARY]

    study.optimize(objective, n_trials=s.max_trials, timeout=budget, gc_after_trial=False)
    complete = [t for t in trials if t["state"] == "complete"]
    best = max(complete, key=lambda t: t["val"]["mean"][PRIMARY])
    selection = Selection(best["params"], trials, time.perf_counter() - start, best["val"])
    _log_trials(run_id, selection, budget)
    return selection


def _log_trials(run_id: str, selection: Selection, budget: float | None = None) -> None:
    rows = [{"number": t["number"], "state": t["state"], "folds": len(t["val"]["folds"]),
             **{f"val/{k}": round(v, 4) for k, v in t["val"]["mean"].items()},
             "seconds": round(t["val"]["seconds"], 1), **t["params"]} for t in selection.trials]
    tracking.log_text(run_id, pd.DataFrame(rows).to_csv(index=False), "prequential/trials.csv")
    if budget is not None:
        tracking.log_params(run_id, {"search.budget_s": budget})
    tracking.log_text(run_id, json.dumps(selection.params, indent=2, default=str), "prequential/best_params.json")
