"""The one door to MLflow: runs, metrics, artifacts, models, the registry and its aliases.

Every call names its ``run_id``: MLflow's fluent "active run" is thread-local and collides under
Prefect's task runners. The only fluent use is scoped inside ``log_scorer``.

Every run carries its owner (``deepflow.owner.*``: host, boot, pid, process start), so that
:func:`fail_stale_runs` can end the runs of a process that was killed (docs/operations.md). A
tracking server that does not answer fails a call within a bounded time (``settings.TRACKING_HTTP_ENV``);
:func:`preflight` checks it before a run, :func:`unreachable` after a failure.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import subprocess
import time
import warnings
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from deepflow import processes, settings

CHAMPION, CHALLENGER = "champion", "challenger"
OWNER = "deepflow.owner"  # tag prefix: .host .boot .pid .start (processes.identity)
FAILURE = "deepflow.failure"  # why deepflow ended a run FAILED that its own process could not end
log = logging.getLogger(__name__)
MODEL_REQUIREMENTS = ("torch", "scikit-learn", "xgboost", "pandas", "numpy", "cloudpickle")


_made: set[str] = set()  # SQLite stores this process has made sure exist


def client() -> MlflowClient:
    settings.apply_env_defaults()
    uri = settings.tracking_uri()
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:///") and uri not in _made:
        # Two processes opening a fresh SQLite store at once both run MLflow's schema migrations, and the second
        # fails ("Online migration expected to match one row"): the first open of each process is locked.
        from filelock import FileLock

        db = Path(uri.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{db}.lock"):
            MlflowClient(uri).search_experiments(max_results=1)  # opens the store: creates or migrates it
        _made.add(uri)
    return MlflowClient(uri)


def experiment_id(name: str) -> str:
    """The experiment named after the use case, created with a local artifact root if needed."""
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return c.create_experiment(name, artifact_location=settings.artifact_root())


def start_run(experiment: str, run_name: str, parent_run_id: str | None = None,
              tags: dict[str, str] | None = None) -> str:
    owner = {f"{OWNER}.{key}": value for key, value in processes.identity().items()}
    all_tags = {"mlflow.runName": run_name, **owner, **(tags or {})}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    return client().create_run(experiment_id(experiment), tags=all_tags, run_name=run_name).info.run_id


def end_run(run_id: str, ok: bool = True) -> None:
    client().set_terminated(run_id, "FINISHED" if ok else "FAILED")


def end_failed_run(run_id: str) -> None:
    """Mark a run FAILED on the way out of an error; a tracking server that cannot take it (often
    the error itself) is logged, not raised, so that the caller re-raises the original error."""
    try:
        end_run(run_id, ok=False)
    except Exception as exc:  # the original error matters; this one goes to the log file
        log.info("could not mark run %s FAILED (the next run's fail_stale_runs will): %s", run_id, str(exc)[:300])


def fail_stale_runs(max_age_h: float | None = None) -> list[dict[str, str]]:
    """Mark FAILED every RUNNING run whose owner process is verifiably gone (this host: the pid is
    dead or reused, or the host rebooted; ``processes.gone``), and, when ``max_age_h`` is given
    (default ``settings.stale_run_hours()``), another host's runs started longer ago than that.
    Runs without deepflow's owner tags (another tool's) are never touched. The reason goes into
    the ``deepflow.failure`` tag. Returns ``{"run_id", "name", "reason", "flow_run_id"}`` per run."""
    max_age_h = settings.stale_run_hours() if max_age_h is None else max_age_h
    c = client()
    experiments = [e.experiment_id for e in c.search_experiments()]
    running = c.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=1000) if experiments else []
    me, now, swept = processes.identity(), time.time(), []
    for run in running:
        tags = run.data.tags
        owner = {key: tags.get(f"{OWNER}.{key}", "") for key in ("host", "boot", "pid", "start")}
        if not owner["pid"]:
            continue
        reason = processes.gone(owner, me)
        age_h = (now - run.info.start_time / 1000) / 3600
        if reason is None and max_age_h and owner["host"] != me["host"] and age_h > max_age_h:
            reason = (f"process {owner['pid']} on {owner['host']} still RUNNING after {age_h:.1f} h "
                      f"(DEEPFLOW_STALE_RUN_HOURS={max_age_h:g})")
        if reason is None:
            continue
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        reason = f"stale: owner {reason}; marked FAILED by process {me['pid']} on {me['host']} at {stamp}"
        name = tags.get("mlflow.runName", run.info.run_id)
        try:
            set_tags(run.info.run_id, {FAILURE: reason})
            c.set_terminated(run.info.run_id, "FAILED")
        except MlflowException as exc:  # housekeeping: never the reason a run fails
            log.warning("run %s (%s) was left RUNNING and stays so: %s", name, run.info.run_id, exc.message[:200])
            continue
        log.warning("run %s (%s) was left RUNNING: %s", name, run.info.run_id, reason)
        swept.append({"run_id": run.info.run_id, "name": name, "reason": reason,
                      "flow_run_id": tags.get("deepflow.flow_run_id", "none")})
    return swept


class TrackingUnavailable(RuntimeError):
    """The tracking server does not answer; the message names it and says how it failed."""


def unreachable(uri: str | None = None, timeout: float | None = None) -> str | None:
    """Why the MLflow tracking server at ``uri`` (default: the configured one) does not answer
    ``GET /health`` within ``timeout`` seconds (default ``MLFLOW_HTTP_REQUEST_TIMEOUT``), one try;
    None when it answers, or when the store is not an HTTP server. Any HTTP answer but a gateway's
    502/503/504 counts as an answer (an auth wall or a proxy without /health still is the server)."""
    import requests

    uri = uri or settings.tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return None
    timeout = settings.tracking_timeout_s() if timeout is None else timeout
    verify = (os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
              or os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "false").lower() != "true")  # as MLflow's client
    try:
        answer = requests.get(f"{uri.rstrip('/')}/health", timeout=timeout, verify=verify)
    except requests.Timeout:
        return f"no answer within {timeout:g} s (MLFLOW_HTTP_REQUEST_TIMEOUT)"
    except requests.RequestException as exc:
        cause = exc.args[0] if exc.args else exc
        text = str(getattr(cause, "reason", cause))
        return "connection refused" if "refused" in text.lower() else text[:200]
    if answer.status_code in (502, 503, 504):
        return f"HTTP {answer.status_code} from {uri}"
    return None


def preflight() -> None:
    """Raise :class:`TrackingUnavailable` when the tracking server does not answer (before a run)."""
    if why := unreachable():
        raise TrackingUnavailable(f"MLflow tracking server {settings.tracking_uri()} is unreachable: {why} "
                                  "(MLFLOW_TRACKING_URI; nothing was run)")


def log_params(run_id: str, params: dict[str, Any]) -> None:
    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client().log_batch(run_id, params=items[i : i + 100])


def log_metrics(run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    """One batched call per set of metrics (per epoch, not per step)."""
    ts = int(pd.Timestamp.now().timestamp() * 1000)
    client().log_batch(run_id, metrics=[Metric(k, float(v), ts, step) for k, v in metrics.items()])


def set_tags(run_id: str, tags: dict[str, Any]) -> None:
    client().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_figure(run_id: str, figure, path: str) -> None:
    import matplotlib.pyplot as plt

    client().log_figure(run_id, figure, path)
    plt.close(figure)


def log_text(run_id: str, text: str, path: str) -> None:
    client().log_text(run_id, text, path)


def log_artifact(run_id: str, local_path: Path, artifact_dir: str | None = None) -> None:
    client().log_artifact(run_id, str(local_path), artifact_dir)


# --- models ----------------------------------------------------------------------------------


# MLflow warns at class creation that `predict` has no type hints (and forces the warning on with
# its own filter); the scorer checks its own input, so the notice is swallowed here only.
with warnings.catch_warnings():
    warnings.showwarning = lambda *args, **kwargs: None

    class ScorerModel(mlflow.pyfunc.PythonModel):
        """pyfunc face of a scorer: a frame of raw feature columns in, one score per row out."""

        def __init__(self, scorer) -> None:
            self.scorer = scorer

        def predict(self, context, model_input, params=None):
            return self.scorer.predict(model_input)


def log_scorer(run_id: str, scorer, input_example: pd.DataFrame) -> str:
    """Log ``scorer`` as the run's pyfunc model (with signature and example); return its URI."""
    import logging

    from mlflow.models import infer_signature

    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)  # the cloudpickle notice, each time
    output = scorer.predict(input_example)
    with warnings.catch_warnings():  # its "integer columns cannot hold missing values" hint: outputs never do
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        signature = infer_signature(input_example, output if isinstance(output, pd.DataFrame) else np.asarray(output))
    packages = (*MODEL_REQUIREMENTS, *getattr(scorer, "requirements", ()))  # e.g. a frozen encoder's wheel
    requirements = [f"{p}=={metadata.version(p)}" for p in packages]
    client()  # make sure the tracking URI is set before the fluent call below
    with mlflow.start_run(run_id=run_id, nested=True):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ScorerModel(scorer),
            signature=signature,
            input_example=input_example,
            pip_requirements=requirements,
        )
    return info.model_uri


def load_scorer(model_uri: str):
    """The plain scorer behind a logged pyfunc (``models:/<name>@champion`` works)."""
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().scorer


def register(name: str, model_uri: str, run_id: str, tags: dict[str, Any]) -> str:
    c = client()
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description=f"deepflow {name} champion line")
    # A tracking server refuses a ``models:/m-<id>`` source (what log_model returns) unless the
    # logged model's id comes with it; the embedded SQLite store works it out by itself.
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    mv = c.create_model_version(name, model_uri, run_id=run_id, model_id=model_id,
                                tags={k: str(v) for k, v in tags.items()})
    return mv.version


def set_version_tags(name: str, version: str, tags: dict[str, Any]) -> None:
    c = client()
    for k, v in tags.items():
        c.set_model_version_tag(name, version, k, str(v))


def get_version(name: str, version: str) -> ModelVersion:
    return client().get_model_version(name, version)


def birth_certificate(name: str, version: str) -> dict:
    """The JSON birth certificate logged with a registered version."""
    try:
        mv = get_version(name, version)
    except MlflowException as exc:
        raise LookupError(f"{name}: no version {version}") from exc
    path = f"registry/v{version}/birth_certificate.json"
    try:
        local = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=path,
                                                    tracking_uri=settings.tracking_uri())
    except (MlflowException, OSError) as exc:
        raise LookupError(f"{name} v{version} has no birth certificate ({path})") from exc
    return json.loads(Path(local).read_text())


def set_alias(name: str, alias: str, version: str) -> None:
    client().set_registered_model_alias(name, alias, version)


def delete_alias(name: str, alias: str) -> None:
    client().delete_registered_model_alias(name, alias)


def version_by_alias(name: str, alias: str) -> ModelVersion | None:
    try:
        return client().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def registered_models() -> list:
    return list(client().search_registered_models())


# --- lineage ---------------------------------------------------------------------------------


def dvc_stage_of(path: Path, lock_path: Path | None = None) -> tuple[str, str] | None:
    """(stage, md5) of the ``dvc.lock`` output that is exactly ``path``; None when DVC does not track it."""
    lock_path = lock_path or settings.PROJECT_ROOT / "dvc.lock"
    if not lock_path.exists():
        return None
    try:
        rel = Path(path).resolve().relative_to(settings.PROJECT_ROOT.resolve()).as_posix()
    except ValueError:  # outside the project: not a DVC output of it
        return None
    for stage, info in ((yaml.safe_load(lock_path.read_text()) or {}).get("stages") or {}).items():
        for out in info.get("outs") or []:
            if out.get("path", "").rstrip("/") == rel and out.get("md5"):
                return stage, out["md5"]
    return None


def files_fingerprint(paths: Iterable[Path]) -> str:
    """sha256 (first 16 hex digits) of the files' names and bytes exactly as they are on disk now."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def data_lineage(data_path: Path, fingerprint: Callable[[], str]) -> dict[str, str]:
    """What data a run used: the DVC md5 of its stage's output when ``data_path`` is one, else
    ``files:<fingerprint()>`` (called only then: hashing is skipped when DVC already knows the data),
    never another entry's hash."""
    found = dvc_stage_of(data_path)
    if found and dvc_md5(Path(data_path)) != found[1]:  # edited since DVC wrote it: the lock's hash would lie
        found = None
    stage, version = found if found else ("none", f"files:{fingerprint()}")
    return {"data_version": version, "dvc_stage": stage, "data_source": str(data_path)}


def file_md5(path: Path) -> str:
    """The md5 of a file's bytes (DVC 3's hash of a file, and of each file of a folder)."""
    digest = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dvc_md5(path: Path) -> str | None:
    """The md5 DVC 3 gives ``path`` as it is on disk now: a file's :func:`file_md5`; a folder's is the
    md5 of its sorted ``[{"md5", "relpath"}]`` listing, suffixed ``.dir`` (as in ``dvc.lock``)."""
    if path.is_file():
        return file_md5(path)
    if not path.is_dir():
        return None
    files = sorted((p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file())
    listing = [{"md5": file_md5(p), "relpath": rel} for rel, p in files]
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode()).hexdigest() + ".dir"


@functools.cache
def git_commit() -> str:
    """HEAD commit, suffixed ``-dirty`` when tracked files changed; "unknown" outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=settings.PROJECT_ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}{'-dirty' if dirty else ''}" if sha else "unknown"

