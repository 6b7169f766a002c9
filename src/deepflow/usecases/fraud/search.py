"""Hyperparameter selection on the prequential validation folds.

Classical models: the handbook's grids (``prequential.grids`` in the config), every point on every
validation fold. Lightning candidates: Optuna (seeded TPE sampler, median pruning on the running
mean AP over the folds) within a wall-clock budget per model (``prequential.search.budget_s``: no
trial starts after it, and a running one stops at its next fold once a trial has completed).
Every setting tried is an MLflow child run of the run that executed it; the selection metric is
the mean average precision over the validation folds.

The Optuna study lives in a database (``prequential.search.storage``, deepflow/studies.py) under a
name hashed from what makes trials comparable (``study_identity``): another process with the same
identity (a second benchmark, or ``deepflow search ENTRY MODEL``) works on the same study, and a
search started again continues from the trials already finished. Each worker returns the whole
study: every finished trial (``run_id``: the MLflow run that recorded it; ``here``: run by this
call) and the best complete one."""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from deepflow import config, processes, studies, tracking
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


def _trial_run(use_case: str, parent: str, model: str, number: int, params: dict[str, Any],
               study: str = "") -> str:
    run_id = tracking.start_run(use_case, f"{model}-{number}", parent, tags={
        "deepflow.kind": "search-trial", "deepflow.member": model,
        **({"deepflow.study": study, "deepflow.trial_number": str(number)} if study else {})})
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


def fingerprint(table: pd.DataFrame) -> str:
    """The table's content (values, not where it lies or when it was written): 16 hex digits."""
    hashes = pd.util.hash_pandas_object(table, index=False).to_numpy()
    return hashlib.sha256(hashes.tobytes() + ",".join(map(str, table.columns)).encode()).hexdigest()[:16]


def study_identity(cfg: TabularConfig, model: str, table: pd.DataFrame, use_case: str) -> dict[str, Any]:
    """What makes two searches' trials comparable: entry, model, data, search space, and every
    config value except those that only say how long, where or on how many threads."""
    space = inspect.getsource(SPACES[model]) + json.dumps(FIRST[model], sort_keys=True)
    return {"entry": use_case, "model": model, "data": fingerprint(table),
            "space": hashlib.sha256(space.encode()).hexdigest()[:12],
            "config": {k: v for k, v in config.flatten(cfg).items() if not k.startswith(NOT_COMPARABLE)}}


NOT_COMPARABLE = (  # config keys (prefixes) that leave a trial's result unchanged
    "prequential.search.budget_s", "prequential.search.max_trials", "prequential.search.storage",
    "prequential.threads", "prequential.cache_dir", "prequential.transactions", "prequential.grids",
    "prequential.models", "prequential.book_sequence", "prequential.unsupervised", "prequential.ae_epochs",
    "prequential.test_start", "train.threads", "train.devices", "train.nodes", "promotion.", "contract.",
    "candidates", "baselines", "register_baselines", "threshold", "prepared_dir", "protocol")
EMPTY = {"folds": [], "mean": {}, "std": {}, "seconds": 0.0}


def select_optuna(cfg: TabularConfig, model: str, table: pd.DataFrame, use_case: str, run_id: str,
                  join: str | None = None) -> Selection:
    """Optuna on the shared study of this identity (deepflow/studies.py): run trials until this
    worker's budget or the study's ``max_trials``, wait for the other workers' running trials, and
    return the whole study (best params, every finished trial). ``join``: the study to join, which
    must exist and have this identity."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = cfg.prequential.search
    start = time.perf_counter()
    length = protocol.HISTORY if model == "sequence" else 0
    data = protocol.fold_data(cfg, table, "val", length)
    space = SPACES[model]
    identity = study_identity(cfg, model, table, use_case)
    name = studies.study_name(identity, f"{use_case}.{model}")
    if join is not None and name != join:
        raise ValueError(f"this worker's search is study {name}, not {join}: its data (fingerprint "
                         f"{identity['data']}) or search config differ from the study's")
    storage = studies.open_storage(s.storage, "prequential.search.storage")
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1) if s.pruning
              else optuna.pruners.NopPruner())
    first = dict(FIRST[model])
    first["epochs"] = min(first["epochs"], s.max_epochs)
    me = studies.worker_key()

    def sampler(created: bool) -> Any:  # the creator samples with the configured seed; joiners each with their own
        seed = s.seed if created else (s.seed + int(hashlib.sha256(me.encode()).hexdigest()[:8], 16)) % 2**31
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)

    study, created = studies.open_study(storage, name, sampler, pruner, first, create=join is None, attrs={
        "deepflow.entry": use_case, "deepflow.model": model, "deepflow.data": identity["data"],
        studies.WORKER_HOOK: f"{__name__}:work", "deepflow.config": config.to_dict(cfg),
        "deepflow.created_by_run": run_id})
    tracking.set_tags(run_id, {"deepflow.study": name, "deepflow.study_storage": studies.shown(
        studies.resolve(s.storage, "prequential.search.storage")[0]), "deepflow.study_role": "created" if created
        else "joined"})
    budget = float(s.budget_s.get(model, 300.0))
    here: list[int] = []

    def objective(trial) -> float:
        trial.set_user_attr("deepflow.owner", processes.identity())  # first: a dead worker's trial is failed at once
        params = space(trial, s.max_epochs)
        trial_run = _trial_run(use_case, run_id, model, trial.number, params, name)
        trial.set_user_attr("deepflow.run_id", trial_run)
        studies.seen(study)
        per: list[dict[str, Any]] = []

        def report(i: int, so_far: list[dict[str, Any]]) -> None:
            per[:] = so_far
            trial.report(fits.summarise(so_far)["mean"][PRIMARY], i)
            if trial.should_prune():
                raise optuna.TrialPruned("pruned")
            last = i == len(data) - 1
            if (not last and time.perf_counter() - start > budget
                    and study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))):
                raise optuna.TrialPruned("budget")  # the budget holds within a trial too, to one fold

        try:
            result = fits.run_folds(cfg, model, params, data, on_fold=report)
        except optuna.TrialPruned as why:
            _finish(trial, trial_run, "pruned" if str(why) == "pruned" else "stopped: budget", per)
            here.append(trial.number)
            raise
        except BaseException:
            _close_trial(trial_run, "failed", per)
            raise
        _finish(trial, trial_run, "complete", result["folds"])
        here.append(trial.number)
        return result["mean"][PRIMARY]

    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    studies.fail_stale(study)
    remaining = s.max_trials - len(study.get_trials(deepcopy=False, states=finished))
    studies.seen(study)
    try:
        if remaining > 0:
            study.optimize(objective, n_trials=remaining, timeout=budget, gc_after_trial=False, callbacks=[
                optuna.study.MaxTrialsCallback(s.max_trials, states=finished), lambda st, _: studies.seen(st)])
    finally:
        studies.seen(study, "done")
    waited = studies.wait_for_others(study, budget)
    selection = _study_selection(study, here, time.perf_counter() - start)
    tracking.log_metrics(run_id, {"search/trials_here": len(here), "search/trials_study": len(selection.trials),
                                  "search/waited_s": waited})
    _log_trials(run_id, selection, budget)
    return selection


def _finish(trial: Any, run_id: str, state: str, per: list[dict[str, Any]]) -> None:
    """Record a trial's state and validation summary in the study (what other workers and a later
    search read) and in its MLflow run."""
    trial.set_user_attr("deepflow.state", state)
    trial.set_user_attr("deepflow.val", json.loads(json.dumps(fits.summarise(per), default=_plain)))
    _close_trial(run_id, state, per)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


def _study_selection(study: Any, here: list[int], seconds: float) -> Selection:
    """Every finished or failed trial of the study (who ran it: ``run_id``; ``here``: this call),
    and the best complete one (ties: the lower number, so every worker picks the same)."""
    from optuna.trial import TrialState

    states = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
    trials = [{"number": t.number, "params": dict(t.params), "run_id": t.user_attrs.get("deepflow.run_id", ""),
               "state": "failed" if t.state == TrialState.FAIL else t.user_attrs.get("deepflow.state", states[t.state]),
               "val": t.user_attrs.get("deepflow.val") or EMPTY, "here": t.number in here}
              for t in study.get_trials(deepcopy=False) if t.state in states]
    complete = [t for t in trials if t["state"] == "complete" and t["val"]["mean"]]
    if not complete:
        raise RuntimeError(f"study {study.study_name}: no complete trial ({len(trials)} finished or failed); "
                           "give the search a longer prequential.search.budget_s")
    best = max(complete, key=lambda t: (t["val"]["mean"][PRIMARY], -t["number"]))
    return Selection(best["params"], trials, seconds, best["val"])


def work(entry: str, model: str, attrs: dict[str, Any], storage: str, parent_run: str | None = None,
         budget_s: float | None = None, study: str = "") -> Selection:
    """An extra worker on ``study`` (``deepflow search``): its creator's config (``attrs``) with
    this worker's ``storage`` and budget, the fold table of this host (built when missing), trials
    as child runs of ``parent_run`` or of a new ``<model>-search-worker`` run."""
    from deepflow import usecase

    usecase.get(entry)  # an unknown entry fails here
    cfg = config.load_mapping(TabularConfig, attrs["deepflow.config"], source=f"study {study}")
    cfg.prequential.search.storage = storage
    if budget_s is not None:
        cfg.prequential.search.budget_s = {**cfg.prequential.search.budget_s, model: float(budget_s)}
    path = protocol.table_path(cfg)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        protocol.build_table(cfg).to_parquet(tmp, index=False)
        tmp.replace(path)
    table = protocol.load_table(path)
    run_id = parent_run or tracking.start_run(entry, f"{model}-search-worker", tags={
        "deepflow.kind": "search-worker", "deepflow.member": model})
    try:
        selection = select_optuna(cfg, model, table, entry, run_id, join=study)
    except BaseException:
        if not parent_run:
            tracking.end_failed_run(run_id)
        raise
    if not parent_run:
        tracking.end_run(run_id, ok=True)
    return selection


def _log_trials(run_id: str, selection: Selection, budget: float | None = None) -> None:
    rows = [{"number": t["number"], "state": t["state"], "folds": len(t["val"]["folds"]),
             **{f"val/{k}": round(v, 4) for k, v in t["val"]["mean"].items()},
             "seconds": round(t["val"]["seconds"], 1), **{k: t[k] for k in ("here", "run_id") if k in t},
             **t["params"]} for t in selection.trials]
    tracking.log_text(run_id, pd.DataFrame(rows).to_csv(index=False), "prequential/trials.csv")
    if budget is not None:
        tracking.log_params(run_id, {"search.budget_s": budget})
    tracking.log_text(run_id, json.dumps(selection.params, indent=2, default=str), "prequential/best_params.json")
