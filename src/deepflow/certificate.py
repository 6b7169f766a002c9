"""Birth certificates and model cards for registered versions.

A birth certificate says where a version came from: data version, code, validation, orchestration,
resolved config, environment, hardware and training time. It is stored as version tags
(``cert.*``) and as ``registry/v<N>/birth_certificate.json`` in the version's run; the model card
(Markdown) sits beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from deepflow import config, settings, tracking

# Variables that change a CPU's float results (threads; the vector ISA of torch's own kernels,
# oneDNN and MKL): recorded when set, and set again by `deepflow reproduce`.
NUMERICS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "DEEPFLOW_THREADS", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
                "MKL_CBWR")
PACKAGES = ("deepflow", "torch", "lightning", "mlflow", "prefect", "great_expectations", "dvc", "scikit-learn",
            "xgboost", "pandas", "numpy")


def lock_hash(lock: Path | None = None) -> str:
    """sha256 (16 hex digits) of the lock file: the project's, or ``lock`` (another checkout's)."""
    lock = lock or settings.PROJECT_ROOT / "requirements" / "lock.txt"
    return hashlib.sha256(lock.read_bytes()).hexdigest()[:16] if lock.exists() else "missing"


def hardware() -> dict[str, Any]:
    import torch

    return {
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # the vector instructions torch's CPU kernels use (AVX512, AVX2, ...): another set rounds
        # differently, so a model trained on another CPU differs in its last bits (docs/reproduce.md)
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def build(*, use_case: str, kind: str, version: str, member: dict, cfg: Any, validation: dict,
          orchestration: dict, pipeline_run_id: str) -> dict[str, Any]:
    commit = tracking.git_commit()
    return {
        "use_case": use_case,
        "kind": kind,
        "version": str(version),
        "member": member["member"],
        "run_id": member["run_id"],
        "model_uri": member["model_uri"],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {"dvc_stage": validation["dvc_stage"], "source": validation["data_source"],
                 "md5": validation["data_version"], "schema": validation.get("schema"),
                 "fingerprint": validation["fingerprint"]},
        "code": {"git_commit": commit.removesuffix("-dirty"), "dirty": commit.endswith("-dirty")},
        "validation": {
            "suite": validation["suite"],
            "result": validation["result"],
            "expectations": validation["expectations"],
            "report": f"runs:/{pipeline_run_id}/validation/validation.md",
        },
        "orchestration": {"pipeline_run_id": pipeline_run_id, **orchestration},
        "config": config.to_dict(cfg),
        "config_hash": config.config_hash(cfg),
        "lock_hash": lock_hash(),
        "seed": cfg.train.seed,
        "versions": {"python": platform.python_version(),
                     **{p: package_version(p) for p in PACKAGES}},
        # torch_threads: the member's own fit's count (chosen per fit: deepflow/threads.py), which
        # `deepflow reproduce` replays; "threads" under training says how it was chosen
        "hardware": hardware() | ({"torch_threads": member["threads"]["threads"]} if member.get("threads") else {}),
        "training_seconds": round(member["timings"].get("training", 0.0), 3),
        # what `deepflow reproduce` needs to train it again the same way (a time limit lets the
        # clock shape a model: such a version is compared within tolerance, not bit for bit)
        "training": {"time_limit_s": member.get("time_limit_s"), "stopped_by": member.get("stopped_by"),
                     "accelerator": os.environ.get("DEEPFLOW_ACCELERATOR", "auto"),
                     "precision": os.environ.get("DEEPFLOW_PRECISION", "32-true"),
                     "numerics_env": {k: os.environ[k] for k in NUMERICS_ENV if k in os.environ},
                     "threads": member.get("threads"),
                     **{k: member.get("fit_info", {}).get(k) for k in ("epochs_run", "best_epoch", "steps")}},
        "metrics": {"val": member["val"], "test": member["test"]},
        "latency_ms": member["latency_ms"],
        "size_mb": member["size_mb"],
    }


def tags(cert: dict[str, Any]) -> dict[str, str]:
    """The certificate's one-line facts as version tags (``cert.*``)."""
    return {
        "cert.data_md5": cert["data"]["md5"],
        "cert.git_commit": cert["code"]["git_commit"],
        "cert.git_dirty": str(cert["code"]["dirty"]).lower(),
        "cert.validation": f"{cert['validation']['result']} ({cert['validation']['suite']})",
        "cert.flow_run_id": str(cert["orchestration"].get("flow_run_id")),
        "cert.deployment": str(cert["orchestration"].get("deployment_id")),
        "cert.config_hash": cert["config_hash"],
        "cert.lock_hash": cert["lock_hash"],
        "cert.seed": str(cert["seed"]),
        "cert.torch": cert["versions"]["torch"],
        "cert.lightning": cert["versions"]["lightning"],
        "cert.mlflow": cert["versions"]["mlflow"],
        "cert.hardware": f"{cert['hardware']['cpu']} x{cert['hardware']['cores']}, "
                         f"gpu={cert['hardware']['gpu']}",
        "cert.training_seconds": str(cert["training_seconds"]),
    }


def model_card(cert: dict[str, Any], primary: str) -> str:
    test, val = cert["metrics"]["test"], cert["metrics"]["val"]
    metrics = "\n".join(f"| {k} | {val.get(k, float('nan')):.4f} | {v:.4f} |" for k, v in test.items())
    return f"""# Model card: {cert['use_case']} v{cert['version']} ({cert['member']})

## Intended use
Scores the records of entry `{cert['use_case']}` for review. Inputs: the prepared columns of data
stage `{cert['data']['dvc_stage']}` (raw values; preprocessing ships inside the model). Output: the
kind's prediction per record. A decision threshold, where the kind uses one, is stored as version
tag `deepflow.threshold` (chosen on the validation split).

## Data
DVC output md5 `{cert['data']['md5']}`; validated by suite `{cert['validation']['suite']}`
({cert['validation']['result']}, {cert['validation']['expectations']} expectations; report
{cert['validation']['report']}).

## Metrics
| metric | validation | test |
|---|---|---|
{metrics}

Primary metric: `{primary}`. Latency at batch 1 (plain scorer): p50 {cert['latency_ms']['p50']:.2f} ms,
p95 {cert['latency_ms']['p95']:.2f} ms. Size {cert['size_mb']:.2f} MB.

## Limitations
Trained on the `train` split of entry `{cert['use_case']}` and evaluated on its `test` split: it
has seen only the patterns that data holds, and the test split is the only evidence of how it
generalises. Scores are not calibrated probabilities unless the member is a calibrated classifier
(an autoencoder's are reconstruction errors). Re-validate before use on another population;
promotion evidence is in the version's `promotion/` artifacts.

## Provenance
git `{cert['code']['git_commit']}`{' (dirty tree)' if cert['code']['dirty'] else ''}, config hash
`{cert['config_hash']}`, lock hash `{cert['lock_hash']}`, seed {cert['seed']}, Prefect flow run
`{cert['orchestration'].get('flow_run_id')}`, trained in {cert['training_seconds']:.1f} s on
{cert['hardware']['cpu']} ({cert['hardware']['cores']} cores, GPU: {cert['hardware']['gpu']}),
torch {cert['versions']['torch']}, Lightning {cert['versions']['lightning']}, MLflow {cert['versions']['mlflow']}.
"""


def package_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def dumps(cert: dict[str, Any]) -> str:
    return json.dumps(cert, indent=2, default=str)
