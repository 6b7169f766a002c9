"""``deepflow reproduce``: a registered version rebuilt from its birth certificate.

Fast: the comparisons and verdicts, the DVC-cache restore (a corrupted object is named), the lock
check, the git worktree, recorded configs that round-trip. Slow: a real project (git + DVC + a
table entry) whose version is reproduced exactly (also by the nightly self-check flow), then rebuilt
with changed code (mismatch, the changed files named), with its prepared data gone from the cache
(from the DVC remote, then from the stage re-run: exact) and gone from everywhere (unrecoverable,
every attempt named); no alias moves."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from deepflow.kinds.detection.boxes import agreement
from deepflow.reproduce import code, compare, data, environment
from deepflow.reproduce.errors import ReproduceError
from deepflow.settings import PROJECT_ROOT
from tests.tables import customers, write_csv

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}


# --- comparisons and verdicts -------------------------------------------------------------------


def test_identical_metrics_and_scores_are_exact() -> None:
    rows = compare.metric_rows({"auprc": 0.5, "roc_auc": float("nan")}, {"auprc": 0.5, "roc_auc": float("nan")}, 0.0)
    scores = compare.scores(np.array([0.1, 0.9]), np.array([0.1, 0.9]))
    assert scores["identical"] and scores["max_abs_diff"] == 0.0
    assert compare.verdict(rows, scores, True, 0.0)[0] == compare.EXACT


def test_a_metric_off_by_a_hair_is_a_mismatch_when_exact_is_expected() -> None:
    rows = compare.metric_rows({"map50": 0.3861}, {"map50": 0.3727}, 0.0)
    verdict, reason = compare.verdict(rows, None, True, 0.0)
    assert verdict == compare.MISMATCH and "map50" in reason and "0.3727" in reason and "exact expected" in reason
    within = compare.metric_rows({"map50": 0.3861}, {"map50": 0.3757}, 0.02)
    assert compare.verdict(within, None, False, 0.02)[0] == compare.WITHIN


def test_equal_metrics_but_different_predictions_fail_when_exact_is_expected() -> None:
    rows = compare.metric_rows({"f1": 0.9}, {"f1": 0.9}, 0.0)
    scores = compare.scores(np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([[0.2, 0.8], [0.4, 0.6]]))
    assert not scores["identical"] and scores["same_top_class_share"] == 0.5
    assert compare.verdict(rows, scores, True, 0.0)[0] == compare.MISMATCH
    assert compare.verdict(rows, scores, False, 0.01)[0] == compare.WITHIN
    missing = compare.metric_rows({"f1": 0.9}, {}, 0.0)
    assert compare.verdict(missing, None, True, 0.0) == (compare.MISMATCH, "the rebuild did not report test/f1")
    assert not compare.scores(np.zeros(3), np.zeros(4))["comparable"]


def _boxes(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["image", "x1", "y1", "x2", "y2", "class", "score"])


def test_box_agreement_matches_by_class_and_iou() -> None:
    a = _boxes([(0, 0, 0, 10, 10, "car", 0.9), (0, 20, 20, 30, 30, "bus", 0.8), (1, 0, 0, 5, 5, "car", 0.7)])
    assert agreement(a, a.copy())["identical"] and agreement(a, a.copy())["matched_share"] == 1.0
    moved = _boxes([(0, 1, 0, 11, 10, "car", 0.85), (0, 20, 20, 30, 30, "truck", 0.8), (1, 0, 0, 5, 5, "car", 0.7)])
    found = agreement(a, moved)
    assert not found["identical"] and found["matched_share"] == pytest.approx(2 / 3)
    assert found["min_iou"] == pytest.approx(90 / 110) and found["max_score_diff"] == pytest.approx(0.05)


@pytest.mark.parametrize("name", ["fraud", "nlp", "paysim", "traffic"])
def test_a_recorded_config_rebuilds_to_its_hash(name: str) -> None:
    """The certificate holds the config as JSON (integer keys become strings: traffic's class map);
    the rebuild turns it back into the same config, hash for hash."""
    from deepflow import config, kinds, usecase
    from deepflow.reproduce.child import typed_keys

    uc = usecase.get(name)
    recorded = json.loads(json.dumps(config.to_dict(uc.cfg), default=str))
    cls = kinds.config_class(uc.kind)
    rebuilt = config.load_mapping(cls, typed_keys(cls, recorded), (), source="test")
    assert config.config_hash(rebuilt) == config.config_hash(uc.cfg)


# --- data: the DVC cache ------------------------------------------------------------------------


def _md5(blob: bytes) -> str:
    return hashlib.md5(blob).hexdigest()


def _cache_with(tmp_path: Path, files: dict[str, bytes]) -> tuple[Path, str]:
    cache = tmp_path / "cache"
    manifest = []
    for rel, blob in files.items():
        md5 = _md5(blob)
        (cache / "files/md5" / md5[:2]).mkdir(parents=True, exist_ok=True)
        (cache / "files/md5" / md5[:2] / md5[2:]).write_bytes(blob)
        manifest.append({"md5": md5, "relpath": rel})
    text = json.dumps(manifest).encode()
    dir_md5 = _md5(text) + ".dir"
    (cache / "files/md5" / dir_md5[:2]).mkdir(parents=True, exist_ok=True)
    (cache / "files/md5" / dir_md5[:2] / dir_md5[2:]).write_bytes(text)
    return cache, dir_md5


def test_folder_comes_out_of_the_cache_and_a_corrupted_object_is_named(tmp_path: Path) -> None:
    cache, md5 = _cache_with(tmp_path, {"train.parquet": b"rows", "nested/prepare.json": b"{}"})
    data.from_cache(md5, cache, tmp_path / "out")
    assert (tmp_path / "out/train.parquet").read_bytes() == b"rows"
    assert (tmp_path / "out/nested/prepare.json").read_bytes() == b"{}"
    (cache / "files/md5" / _md5(b"rows")[:2] / _md5(b"rows")[2:]).write_bytes(b"ROWS")
    with pytest.raises(ReproduceError, match="DVC cache object of train.parquet does not match its md5"):
        data.from_cache(md5, cache, tmp_path / "again")
    with pytest.raises(ReproduceError, match="lacks 0123"):
        data.from_cache("0123456789abcdef0123456789abcdef.dir", cache, tmp_path / "none")


def test_restore_takes_the_live_folder_only_when_its_fingerprint_matches(tmp_path: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    pd.DataFrame({"x": [1, 2]}).to_parquet(live / "train.parquet")
    want = data.fingerprint(live)
    done = data.restore({"fingerprint": want, "md5": "files:x", "dvc_stage": "none"}, live=live,
                        dest=tmp_path / "dest", project=tmp_path, worktree=tmp_path / "wt", env=dict(os.environ))
    assert "same fingerprint" in done["source"] and data.fingerprint(tmp_path / "dest") == want
    pd.DataFrame({"x": [1, 3]}).to_parquet(live / "train.parquet")
    with pytest.raises(ReproduceError, match="holds other data now"):
        data.restore({"fingerprint": want, "md5": "files:x", "dvc_stage": "none"}, live=live,
                     dest=tmp_path / "dest2", project=tmp_path, worktree=tmp_path / "wt", env=dict(os.environ))


# --- environment and code -----------------------------------------------------------------------


def test_the_default_remote_comes_whole_however_long_or_relative_its_path(tmp_path: Path) -> None:
    """``dvc remote list`` wraps a long path onto another line on a narrow (or no) terminal; the
    remote's url must still come whole, and a relative one as the absolute path it means."""
    project = tmp_path / "project"
    project.mkdir()
    env = {**os.environ, "COLUMNS": "40"}
    subprocess.run(["git", "init", "-q"], cwd=project, env=env, check=True)
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "-q"], cwd=project, env=env, check=True)
    assert data.default_remote(project, env) is None
    far = tmp_path / ("a-folder-name-long-enough-to-wrap-" * 3) / "remote"
    subprocess.run([*dvc, "remote", "add", "--local", "-d", "store", str(far)], cwd=project, env=env, check=True,
                   capture_output=True)
    assert data.default_remote(project, env) == f"store {far}"
    subprocess.run([*dvc, "remote", "add", "-f", "-d", "near", "../near"], cwd=project, env=env, check=True,
                   capture_output=True)  # given relative to the project, stored relative to its .dvc/config
    subprocess.run([*dvc, "remote", "default", "--local", "near"], cwd=project, env=env, check=True,
                   capture_output=True)
    assert "url = ../../near" in (project / ".dvc" / "config").read_text()
    assert data.default_remote(project, env) == f"near {tmp_path / 'near'}"


def test_lock_differences_name_the_package(tmp_path: Path) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text(f"numpy=={np.__version__}\npandas==0.0.1\nnot-installed-anywhere==1.0\n# comment\n")
    diffs = environment.lock_differences(lock)
    assert diffs == [f"pandas: locked 0.0.1, installed {pd.__version__}",
                     "not-installed-anywhere: locked 1.0, installed absent"]


def test_worktree_at_a_commit_and_the_files_a_ref_changed(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, **GIT_ENV}
    for cmd in (["git", "init", "-q"], ["git", "commit", "-q", "--allow-empty", "-m", "a"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True)
    (repo / "model.py").write_text("LR = 0.1\n")
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "b"], cwd=repo, env=env, check=True)
    first = code.resolve(repo, "HEAD~1", "the recorded commit")
    head = code.resolve(repo, "HEAD", "--code")
    assert code.changed_files(repo, first, head) == ["model.py"]
    with code.worktree(repo, first, tmp_path / "wt") as wt:
        assert wt.is_dir() and not (wt / "model.py").exists()
    assert not (tmp_path / "wt").exists()
    assert "wt" not in subprocess.run(["git", "worktree", "list"], cwd=repo, capture_output=True, text=True).stdout
    with pytest.raises(ReproduceError, match="deadbeef is not in the repository"):
        code.resolve(repo, "deadbeef", "the recorded commit")


# --- end to end ---------------------------------------------------------------------------------


def _project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A throw-away deepflow project in git + DVC that holds its own copy of the deepflow code."""
    project = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT / "src" / "deepflow", project / "src" / "deepflow",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (project / "requirements").mkdir()
    shutil.copyfile(PROJECT_ROOT / "requirements" / "lock.txt", project / "requirements" / "lock.txt")
    (project / "mlflow").mkdir()
    (project / ".gitignore").write_text("mlflow/\nreports/\n.prefect/\n.locks/\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEEPFLOW_", "MLFLOW_"))}
    env.update(GIT_ENV, DEEPFLOW_ROOT=str(project), PYTHONPATH=str(project / "src"),
               MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow' / 'mlflow.db'}",
               # each command's own Prefect server, as conftest asks: the shared one would outlive the test
               DEEPFLOW_PREFECT_SERVER="command")
    bin_dir = Path(sys.executable).parent
    for cmd in (["git", "init", "-q"], [str(bin_dir / "dvc"), "init", "-q"]):
        subprocess.run(cmd, cwd=project, env=env, check=True)
    return project, env


def _deepflow(env: dict[str, str], cwd: Path, *args: str, code: int = 0) -> str:
    done = subprocess.run([sys.executable, "-m", "deepflow.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=1200)
    output = done.stdout + done.stderr
    assert done.returncode == code, f"deepflow {' '.join(args)} -> {done.returncode}\n{output[-3000:]}"
    return output


def _commit(project: Path, env: dict[str, str], message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=project, env=env, check=True)
    subprocess.run(["git", "commit", "-q", "-m", message], cwd=project, env=env, check=True)


@pytest.mark.slow
def test_reproduce_exact_then_changed_code_then_lost_data(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    project, env = _project(tmp_path)
    csv = write_csv(customers(700).drop(columns=["plan_next", "spend_next"]), tmp_path / "upload" / "churn.csv")
    _deepflow(env, tmp_path, "new", "churn", "--data", str(csv), "--target", "churned", "--budget", "20m")
    _commit(project, env, "churn entry")
    _deepflow(env, project, "run", "churn", "--set", "members=[linear,shallow]", "--set", "train.epochs=4")
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    champion = client.get_model_version_by_alias("churn", "champion")
    assert str(champion.version) == "1"

    done = _deepflow(env, project, "reproduce", "churn@champion")
    assert "exact: every test metric and every test prediction is identical" in done, done
    assert "restored from the project's data/prepared/churn" in done
    tags = client.get_model_version("churn", "1").tags
    assert tags["reproduced"].startswith("exact ")
    report = json.loads(Path(client.download_artifacts(champion.run_id, "registry/v1/reproduction.json")).read_text())
    assert report["verdict"] == "exact" and report["environment"]["same"], report["environment"]
    assert len(report["why_not_exact"]) == 1 and report["why_not_exact"][0].startswith("trained under a time limit")
    assert report["predictions"]["identical"] and "/deepflow-reproduce-churn-v1-" in report["rebuild"]["deepflow"]

    # the nightly self-check flow (deployment self-check/reproduce): `reproduce --quick` of each champion
    script = "import json; from flows.self_check import self_check; print('RESULT', json.dumps(self_check()))"
    done = subprocess.run([sys.executable, "-c", script], cwd=project, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads(done.stdout.split("RESULT", 1)[1])
    assert results["churn"]["verdict"] == "exact" and results["churn"]["version"] == "1", results
    assert client.get_model_version("churn", "1").tags["reproduced_quick"].startswith("exact ")
    quick = json.loads(Path(client.download_artifacts(champion.run_id, "registry/v1/reproduction_quick.json"))
                       .read_text())
    assert quick["rebuild"]["train_rows"] == 400 and quick["predictions"]["identical"]

    # changed code: the C grid of the linear model (the winner here) and the seed of the networks
    for path, old, new in (("kinds/table/classical.py", "LogisticRegression(C=c,", "LogisticRegression(C=c * 0.5,"),
                           ("trainer_setup.py", "L.seed_everything(seed,", "L.seed_everything(seed + 1,")):
        source = project / "src/deepflow" / path
        assert old in source.read_text(), f"{path} no longer has {old!r}: point this test at where it moved"
        source.write_text(source.read_text().replace(old, new))
    _commit(project, env, "another C grid, another seed")
    changed = _deepflow(env, project, "reproduce", "churn:1", "--code", "HEAD", "--no-record", code=1)
    assert "differs from the recorded" in changed and "src/deepflow/kinds/table/classical.py" in changed
    assert "mismatch" in changed and "src/deepflow/trainer_setup.py" in changed.split("error:")[1]

    # the prepared data edited in place and its cache objects gone: fetched from the DVC remote
    remote = tmp_path / "remote"
    dvc = [str(Path(sys.executable).parent / "dvc")]
    for args in (["remote", "add", "--local", "-d", "store", str(remote)], ["push", "-q"]):
        subprocess.run(dvc + args, cwd=project, env=env, check=True, capture_output=True)
    prepared = project / "data/prepared/churn"
    frame = pd.read_parquet(prepared / "train.parquet")
    frame.iloc[:-1].to_parquet(prepared / "train.parquet")
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["churn_prepare"]["outs"][0]["md5"]
    cache = project / ".dvc" / "cache" / "files" / "md5"

    def drop_prepared_from_cache() -> None:
        manifest = cache / lock[:2] / lock[2:]
        for item in json.loads(manifest.read_text()):
            (cache / item["md5"][:2] / item["md5"][2:]).unlink()
        manifest.unlink()

    drop_prepared_from_cache()
    fetched = _deepflow(env, project, "reproduce", "churn@champion", "--no-record")
    assert f"restored from the DVC remote store {remote}" in fetched and "exact:" in fetched, fetched

    # ... and gone from the remote too: the DVC stage is re-run at the commit
    drop_prepared_from_cache()
    shutil.rmtree(remote)
    rerun = _deepflow(env, project, "reproduce", "churn@champion", "--no-record")
    assert "restored from re-running DVC stage churn_prepare at the recorded commit" in rerun, rerun
    assert "exact:" in rerun

    # ... and the source's cache object gone too: nothing to rebuild from
    shutil.rmtree(project / ".dvc" / "cache")
    lost = _deepflow(env, project, "reproduce", "churn@champion", code=1)
    assert "unrecoverable" in lost and "holds other data now" in lost and "lacks" in lost
    assert "the DVC remote store" in lost and "re-running stage churn_prepare failed" in lost
    assert client.get_model_version("churn", "1").tags["reproduced"].startswith("unrecoverable")
    assert str(client.get_model_version_by_alias("churn", "champion").version) == "1"  # no alias moved
