"""Hyperparameter studies shared by several workers (deepflow/studies.py, usecases/fraud/search.py).

Fast: study names, where the storage is, bad storage URLs, a dead worker's trial, the first trial
enqueued once. Slow: a search started again continues its study (SQLite, the embedded default);
two real processes, a benchmark-style search and a `deepflow search` worker, share one study on
PostgreSQL (127.0.0.1:5432, trust auth; skipped without it, failing under CI=true).
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from deepflow import processes, settings, studies, usecase
from deepflow.usecases.fraud import protocol, search
from tests.conftest import need_postgres, prequential

TINY = [  # small simulated data (2018-04-01 + 60 days), 2 validation folds, 1 epoch per trial
    "prequential.n_folds=2", "prequential.val_start=2018-04-24", "prequential.test_start=2018-05-08",
    "prequential.search.max_epochs=1", "prequential.threads=1", "train.batch_size=512",
]


def overrides(transactions: Path, *more: str) -> list[str]:
    return prequential(transactions, TINY, *more)


def fold_table(cfg) -> pd.DataFrame:
    path = protocol.table_path(cfg)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        protocol.build_table(cfg).to_parquet(path, index=False)
    return protocol.load_table(path)


# --- fast ----------------------------------------------------------------------------------------


def test_study_name_depends_on_what_makes_trials_comparable() -> None:
    table = pd.DataFrame({"a": [1.0, 2.0], "b": [0, 1]})
    base = usecase.get("fraud").cfg

    def name(cfg=base, data=table, model="ffn", entry="fraud") -> str:
        return studies.study_name(search.study_identity(cfg, model, data, entry), f"{entry}.{model}")

    assert name() == name() and name().startswith("fraud.ffn.")
    assert studies.study_name({"a": 1, "b": [2]}, "x") == studies.study_name({"b": [2], "a": 1}, "x")
    same = ["prequential.search.budget_s={ffn: 5}", "prequential.search.max_trials=3", "prequential.threads=1",
            "prequential.search.storage=memory", "prequential.cache_dir=elsewhere"]
    for item in same:  # how long, where, how many threads: the same study
        assert name(usecase.get("fraud", [item]).cfg) == name(), item
    for item in ["prequential.search.seed=7", "prequential.search.max_epochs=3", "prequential.n_folds=2",
                 "train.seed=1", "prequential.val_start=2018-07-04"]:
        assert name(usecase.get("fraud", [item]).cfg) != name(), item
    assert name(data=table.assign(a=[1.0, 2.5])) != name()
    assert name(model="sequence") != name() and name(entry="paysim") != name()


def test_storage_resolution(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(studies.ENV, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm' / 'mlflow.db'}")
    assert studies.resolve() == (f"sqlite:///{tmp_path / 'm' / 'optuna.db'}", f"the default ({studies.ENV} unset)")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert settings.optuna_storage() == f"sqlite:///{settings.PROJECT_ROOT / 'mlflow' / 'optuna.db'}"
    monkeypatch.setenv(studies.ENV, "postgresql://postgres@db:5432/optuna")
    assert studies.resolve() == ("postgresql://postgres@db:5432/optuna", studies.ENV)
    assert studies.resolve(" memory ", "prequential.search.storage") == ("memory", "prequential.search.storage")
    assert studies.shown("postgresql://me:secret@db/optuna") == "postgresql://me:***@db/optuna"


@pytest.mark.parametrize("url, why", [("garbage", "Could not parse"), ("postgres://db/x", "postgres"),
                                      ("postgresql://postgres@127.0.0.1:1/none", "OperationalError")])
def test_bad_storage_url_names_the_setting(url, why, monkeypatch) -> None:
    with pytest.raises(studies.StorageError, match="prequential.search.storage=") as info:
        studies.open_storage(url, "prequential.search.storage")
    assert why in str(info.value) and "sqlite:///" in str(info.value)
    monkeypatch.setenv(studies.ENV, url)
    with pytest.raises(studies.StorageError, match=f"^{studies.ENV}="):
        studies.open_storage()


def sampler(created: bool):
    import optuna

    return optuna.samplers.RandomSampler(seed=0)


def test_first_trial_is_enqueued_once_per_study(tmp_path) -> None:
    from optuna.trial import TrialState

    storage = studies.open_storage(f"sqlite:///{tmp_path / 'o.db'}")
    assert storage.heartbeat_interval == studies.HEARTBEAT_S and storage.grace_period == studies.GRACE_S
    one, created = studies.open_study(storage, "s", sampler, None, {"x": 1}, {"deepflow.entry": "e"})
    two, joined = studies.open_study(storage, "s", sampler, None, {"x": 1}, {"deepflow.entry": "other"})
    assert created and not joined and two.user_attrs["deepflow.entry"] == "e"
    assert [t.params for t in two.get_trials(states=(TrialState.WAITING,))] == [{}] and len(two.trials) == 1
    with pytest.raises(LookupError, match="no study 'missing'"):
        studies.open_study(storage, "missing", sampler, None, create=False)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_a_dead_workers_trial_fails_and_does_not_hold_the_others(tmp_path) -> None:
    from optuna.trial import TrialState

    study, _ = studies.open_study(studies.open_storage(f"sqlite:///{tmp_path / 'o.db'}"), "s", sampler, None)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = processes.identity(dead.pid)
    dead.wait(timeout=30)
    trial = study.ask()
    trial.set_user_attr("deepflow.owner", owner)
    study.set_user_attr(f"worker:{owner['host']}:{owner['pid']}:{owner['start']}",
                        {"owner": owner, "state": "running", "seen": time.time()})
    alive = study.ask()
    alive.set_user_attr("deepflow.owner", processes.identity())
    assert studies.others_busy(study)  # this process's trial still runs
    study.tell(alive, 1.0)
    assert not studies.others_busy(study)  # the dead worker's trial is failed, its worker ignored
    assert study.trials[trial.number].state == TrialState.FAIL
    assert studies.wait_for_others(study, 5.0) < 1.0


# --- slow ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_search_started_again_continues_its_study(store, transactions) -> None:
    from mlflow import MlflowClient

    from deepflow import tracking

    def run(max_trials: int) -> tuple[str, search.Selection]:
        cfg = usecase.get("fraud", overrides(transactions, f"prequential.search.max_trials={max_trials}",
                                              "prequential.search.budget_s={ffn: 60}")).cfg
        run_id = tracking.start_run("fraud", "ffn")
        selection = search.select_optuna(cfg, "ffn", fold_table(cfg), "fraud", run_id)
        tracking.end_run(run_id)
        return run_id, selection

    first_run, first = run(2)
    again_run, again = run(2)  # the same identity, nothing left to do: the study's trials, none run here
    more_run, more = run(3)  # a larger cap: one more trial, numbered after the others
    assert (store / "optuna.db").is_file()  # the embedded default: beside the MLflow store
    assert [(t["number"], t["here"]) for t in first.trials] == [(0, True), (1, True)]
    assert [t["here"] for t in again.trials] == [False, False] and again.params == first.params
    assert [(t["number"], t["here"]) for t in more.trials] == [(0, False), (1, False), (2, True)]
    assert first.trials[0]["params"]["ffn_hidden"] == search.FIRST["ffn"]["ffn_hidden"]  # the known-good start
    assert more.params == max(more.trials, key=lambda t: t["val"]["mean"]["auprc"])["params"]

    client = MlflowClient(settings.tracking_uri())
    exp = client.get_experiment_by_name("fraud").experiment_id
    children = {r: client.search_runs([exp], f"tags.mlflow.parentRunId = '{r}'")
                for r in (first_run, again_run, more_run)}
    assert sorted(int(c.data.tags["deepflow.trial_number"]) for c in children[first_run]) == [0, 1]
    assert children[again_run] == [] and len(children[more_run]) == 1
    assert {t["run_id"] for t in more.trials[:2]} == {c.info.run_id for c in children[first_run]}
    study = client.get_run(more_run).data.tags["deepflow.study"]
    assert {c.data.tags["deepflow.study"] for c in children[first_run] + children[more_run]} == {study}
    csv = client.download_artifacts(again_run, "prequential/trials.csv")
    assert pd.read_csv(csv)["run_id"].tolist() == [t["run_id"] for t in first.trials]


CREATOR = """
import json, sys
from deepflow import settings
settings.apply_env_defaults()
from deepflow import tracking, usecase
from deepflow.usecases.fraud import protocol, search
cfg = usecase.get("fraud", json.loads(sys.argv[1])).cfg
run_id = tracking.start_run("fraud", "ffn")
selection = search.select_optuna(cfg, "ffn", protocol.load_table(protocol.table_path(cfg)), "fraud", run_id)
tracking.end_run(run_id)
print("RESULT " + json.dumps({"run_id": run_id, "params": selection.params,
                              "here": [t["number"] for t in selection.trials if t["here"]]}))
"""
PG = dict(host="127.0.0.1", port=5432, user="postgres")
WORKER_BUDGET_S = 10


def finish(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    """Wait for ``proc`` (its whole process group is killed past ``timeout``); its output."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        pytest.fail(f"{proc.args[:3]} ran past {timeout:.0f} s; log:\n{log.read_text()[-3000:]}")
    text = log.read_text()
    assert proc.returncode == 0, f"{proc.args[:3]} exited {proc.returncode}:\n{text[-3000:]}"
    return text


@pytest.mark.slow
def test_two_processes_share_one_study_on_postgres(tmp_path, transactions, monkeypatch) -> None:
    need_postgres("the shared-search test")
    import optuna
    import psycopg2
    from mlflow import MlflowClient

    from deepflow import tracking

    items = overrides(transactions, "prequential.search.max_trials=40",
                      f"prequential.search.budget_s={{ffn: {WORKER_BUDGET_S}}}")
    cfg = usecase.get("fraud", items).cfg
    fold_table(cfg)  # both workers read the same cached fold table
    dbs = {k: f"deepflow_test_{k}_{uuid.uuid4().hex[:8]}" for k in ("optuna", "mlflow")}
    admin = psycopg2.connect(dbname="postgres", **PG)
    admin.autocommit = True
    for db in dbs.values():
        admin.cursor().execute(f"CREATE DATABASE {db}")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"postgresql://postgres@127.0.0.1:5432/{dbs['mlflow']}",
           studies.ENV: f"postgresql://postgres@127.0.0.1:5432/{dbs['optuna']}",
           "DEEPFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts"), "DEEPFLOW_REPORTS_DIR": str(tmp_path / "reports")}
    procs: list[subprocess.Popen] = []
    try:
        for key in ("MLFLOW_TRACKING_URI", studies.ENV, "DEEPFLOW_ARTIFACT_ROOT"):
            monkeypatch.setenv(key, env[key])
        tracking.experiment_id("fraud")  # the schemas and the experiment exist before two processes race
        storage = studies.open_storage()
        logs = {name: tmp_path / f"{name}.log" for name in ("creator", "worker")}
        commands = {"creator": [sys.executable, "-c", CREATOR, json.dumps(items)],
                    "worker": [sys.executable, "-m", "deepflow.cli_search", "fraud", "ffn", "--wait", "60",
                               "--budget", str(WORKER_BUDGET_S)]}
        for name, cmd in commands.items():
            with logs[name].open("wb") as out:
                procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True, cwd=settings.PROJECT_ROOT))
        texts = [finish(p, logs[name], 150) for p, name in zip(procs, commands, strict=True)]

        creator = json.loads(texts[0].split("RESULT ", 1)[1].splitlines()[0])
        worker_line = next(line for line in texts[1].splitlines() if line.startswith("ran trials"))
        worker_here = json.loads(worker_line.split("ran trials ", 1)[1].split(" of ")[0])
        worker_best = json.loads(worker_line.split("best: ", 1)[1])
        [summary] = optuna.get_all_study_summaries(storage, include_best_trial=False)
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        numbers = sorted(t.number for t in study.trials)
        print(f"creator ran trials {creator['here']}, the worker {worker_here}")
        assert creator["here"] and worker_here, texts  # both processes ran trials
        assert not set(creator["here"]) & set(worker_here)
        assert numbers == sorted(creator["here"] + worker_here) == list(range(len(numbers)))
        assert all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
        assert creator["params"] == worker_best == study.trials[max(
            (t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: (t.value, -t.number)).number].params
        assert sum(t.params == {**search.FIRST["ffn"], "epochs": 1} for t in study.trials) == 1  # enqueued once

        client = MlflowClient(env["MLFLOW_TRACKING_URI"])
        exp = client.get_experiment_by_name("fraud").experiment_id
        trials = client.search_runs([exp], "tags.`deepflow.kind` = 'search-trial'")
        [worker_run] = client.search_runs([exp], "tags.`deepflow.kind` = 'search-worker'")
        by_parent: dict[str, list[int]] = {}
        for run in trials:
            assert run.data.tags["deepflow.study"] == summary.study_name and run.info.status == "FINISHED"
            by_parent.setdefault(run.data.tags["mlflow.parentRunId"], []).append(
                int(run.data.tags["deepflow.trial_number"]))
        assert {k: sorted(v) for k, v in by_parent.items()} == {
            creator["run_id"]: sorted(creator["here"]), worker_run.info.run_id: sorted(worker_here)}
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        for db in dbs.values():
            admin.cursor().execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        admin.close()


def _open_at_once(url: str, workers: int = 6) -> list:
    """``workers`` threads open the storage ``url`` at the same moment; what each got (or raised)."""
    import threading

    barrier, got = threading.Barrier(workers), [None] * workers

    def open_one(i: int) -> None:
        barrier.wait()
        try:
            got[i] = studies.open_storage(url)
        except Exception as exc:
            got[i] = exc

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return got


def test_workers_opening_an_empty_sqlite_storage_at_once_all_get_it(tmp_path) -> None:
    got = _open_at_once(f"sqlite:///{tmp_path / 'optuna.db'}")
    assert not [g for g in got if isinstance(g, Exception)], got
    assert got[0].get_all_studies() == []


def test_workers_opening_an_empty_postgres_database_at_once_all_get_it() -> None:
    """Two brand-new workers on a fresh database race to create Optuna's tables and version row."""
    need_postgres("the shared-search storage race")
    import psycopg2

    db = f"deepflow_test_race_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(dbname="postgres", **PG)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {db}")
    try:
        got = _open_at_once(f"postgresql://postgres@127.0.0.1:5432/{db}")
        assert not [g for g in got if isinstance(g, Exception)], got
        for storage in got:
            storage.engine.dispose()
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        admin.close()
