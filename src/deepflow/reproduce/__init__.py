"""``deepflow reproduce NAME[@alias|:version]``: rebuild a registered version from its birth
certificate and say whether it came out the same.

1. **Code**: a clean temporary git worktree at the recorded commit (``--code REF``: other code,
   to see whether a change alters the model; the files that differ are named).
2. **Data**: the exact prepared files, checked by the recorded fingerprint (``data.py``: the
   project's folder, else the DVC cache, else the DVC remote, else the DVC stage re-run).
3. **Environment**: the recorded lock file, packages and machine against this one
   (``environment.py``). Only the same environment promises a bit-for-bit rebuild.
4. **Rebuild** (``child.py``, a fresh process running the worktree's code with the recorded config,
   seed and thread count): train the member, score it on the test split, and score the
   registered model there too.
5. **Compare** (``compare.py``): every recorded ``test/*`` metric, and the predictions on the test
   rows (scores, or boxes: the use case's ``compare_predictions``). Same environment and no time
   limit: exact; otherwise within the use case's ``reproduce_tolerance``.
6. **Record** on the version: tag ``reproduced`` (``reproduced_quick`` for ``--quick``) and
   ``registry/v<N>/reproduction.json`` beside the birth certificate. No alias ever moves.

``--quick`` (a nightly self-check): steps 1-3, the registered model re-scored on the restored test
split (its metrics must equal the recorded ones), and the member trained twice on a seeded sample
of the training split for at most two epochs, in two processes: both must give identical
predictions, i.e. training on this machine is deterministic.
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deepflow import certificate, kinds, settings, tracking
from deepflow.reproduce import code, compare, data, environment
from deepflow.reproduce.errors import ReproduceError

__all__ = ["ReproduceError", "reproduce"]

CHILD = Path(__file__).with_name("child.py")
QUICK_ROWS = (400, 0.10, 5000)  # a --quick sample: at least 400 rows, else 10 % of train, at most 5,000
QUICK_EPOCHS = 2


def reproduce(name: str, version: str, *, quick: bool = False, code_ref: str | None = None, record: bool = True,
              echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Rebuild version ``version`` of entry ``name`` and compare; returns the report (also recorded
    on the version unless ``record`` is False). Never raises for a version that cannot be rebuilt:
    the report's verdict is then ``unrecoverable``, with the reason."""
    cert = tracking.birth_certificate(name, version)
    mv = tracking.get_version(name, version)
    kind = cert.get("kind") or (mv.tags or {}).get("deepflow.entry_kind")
    if kind not in kinds.names():
        raise ReproduceError(f"{name} v{version}: the certificate names no known kind ({kind!r})")
    uc_class = kinds.usecase_class(kind)
    report: dict[str, Any] = {
        "use_case": name, "version": str(version), "member": cert["member"], "mode": "quick" if quick else "full",
        "started": datetime.now(UTC).isoformat(timespec="seconds"), "recorded": {
            "git_commit": cert["code"]["git_commit"], "dirty": cert["code"]["dirty"],
            "data_md5": cert["data"]["md5"], "fingerprint": cert["data"]["fingerprint"],
            "config_hash": cert["config_hash"], "lock_hash": cert["lock_hash"], "seed": cert["seed"],
            "hardware": cert.get("hardware"), "training_seconds": cert.get("training_seconds")},
    }
    started = time.perf_counter()
    try:
        _rebuild(cert, name, str(version), kind, uc_class, quick, code_ref, report, echo)
    except ReproduceError as exc:
        report.update(verdict=compare.UNRECOVERABLE, reason=str(exc))
    report["seconds"] = round(time.perf_counter() - started, 1)
    if record:
        _record(name, str(version), mv.run_id, report)
    return report


def _rebuild(cert: dict, name: str, version: str, kind: str, uc_class: type, quick: bool, code_ref: str | None,
             report: dict, echo: Callable[[str], None]) -> None:
    root = settings.PROJECT_ROOT
    recorded = cert["code"]["git_commit"]
    why_not_exact: list[str] = []  # what makes a bit-for-bit rebuild impossible: the tolerance applies
    notes: list[str] = []  # what explains a difference but does not excuse it (the code)
    if cert["code"]["dirty"]:
        notes.append("the version was trained from uncommitted changes the commit lacks")
    with tempfile.TemporaryDirectory(prefix=f"deepflow-reproduce-{name}-v{version}-") as tmp:
        sha = code.resolve(root, code_ref or recorded, "--code" if code_ref else "the recorded commit")
        changed = code.changed_files(root, code.resolve(root, recorded, "the recorded commit"), sha) if code_ref else []
        report["code"] = {"commit": sha, "ref": code_ref or "recorded commit", "changed_files": changed}
        echo(f"code      worktree at {sha[:12]}" + (f" ({code_ref}; differs from the recorded {recorded[:12]} in "
                                                    f"{', '.join(changed)})" if changed else " (the recorded commit)"))
        if changed:
            notes.append(f"the code differs from the recorded commit in {', '.join(changed)}")
        with code.worktree(root, sha, Path(tmp) / "code") as wt:
            env = data.dvc_env(wt)
            prepared = Path(cert["config"]["prepared_dir"])
            live = prepared if prepared.is_absolute() else root / prepared
            dest = Path(tmp) / "data" if prepared.is_absolute() else wt / prepared
            restored = data.restore(cert["data"], live=live, dest=dest, project=root, worktree=wt, env=env)
            report["data"] = {**restored, "fingerprint": data.fingerprint(dest)}
            echo(f"data      fingerprint {report['data']['fingerprint']} restored from {restored['source']}")
            for attempt in restored["attempts"]:  # why the sources before it would not do
                echo(f"          tried first: {attempt}")
            training = cert.get("training") or {}
            if training.get("time_limit_s") is not None:
                why_not_exact.append(f"trained under a time limit ({training['time_limit_s']:.0f} s): "
                                     "the clock may have shaped it")
            spec = {"name": name, "kind": kind, "member": cert["member"], "config": cert["config"],
                    "version": version, "prepared_dir": str(dest), "time_limit_s": training.get("time_limit_s"),
                    "score_original": True}
            child_env = _child_env(env, cert)
            set_threads = child_env.get("DEEPFLOW_THREADS") or child_env.get("OMP_NUM_THREADS")
            here = certificate.hardware() | {"torch_threads": int(set_threads or 0) or None}
            versions = {k: certificate.package_version(k) for k in (cert.get("versions") or {})}
            env_check = environment.check(cert, wt / "requirements" / "lock.txt", here,
                                          versions | {"python": sys.version.split()[0]})
            report["environment"] = env_check
            if not env_check["same"]:
                why_not_exact.append("the environment differs: " + "; ".join(
                    (env_check["hardware"] + env_check["packages"] + env_check["installed_vs_lock"])[:3]
                    or [env_check["lock"]]))
            echo("env       " + ("the recorded machine, packages and lock" if env_check["same"]
                                 else why_not_exact[-1]))
            echo("expect    " + ("exact (bit for bit)" if not why_not_exact else
                                 f"within {uc_class.reproduce_tolerance} on the test metrics: "
                                 f"{'; '.join(why_not_exact)}"))
            report["notes"] = notes
            if quick:
                _quick(spec, cert, child_env, Path(tmp), report, echo)
            else:
                _full(spec, cert, child_env, Path(tmp), report, echo)
            threads = report["rebuild"]["hardware"].get("torch_threads")
            if env_check["same"] and threads != (cert.get("hardware") or {}).get("torch_threads"):
                why_not_exact.append(f"the rebuild ran {threads} torch threads, not the recorded number")
    _judge(cert, uc_class, quick, why_not_exact, report)


def _child_env(env: dict[str, str], cert: dict) -> dict[str, str]:
    """The rebuild's environment: the recorded thread count, the recorded device (CPU when the
    version was trained without a GPU), nothing from this shell's DEEPFLOW_* overrides. The count
    reaches the member's fit as ``DEEPFLOW_THREADS`` (it replaces an auto choice, ``train.threads``
    0; a configured count is the same number) and as the OpenMP/MKL defaults older code read."""
    env = {k: v for k, v in env.items() if k not in certificate.NUMERICS_ENV}
    hardware = cert.get("hardware") or {}
    threads = hardware.get("torch_threads")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env.update((cert.get("training") or {}).get("numerics_env") or {})
    if threads:
        env["DEEPFLOW_THREADS"] = str(threads)
    if hardware.get("gpu") is None:
        env["DEEPFLOW_ACCELERATOR"] = "cpu"
    env["MLFLOW_TRACKING_URI"] = settings.tracking_uri()
    return env


def _run_child(spec: dict, env: dict[str, str], out: Path, timeout_s: float) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    spec_path = out / "spec.json"
    spec_path.write_text(json.dumps(spec, default=str))
    script = out / "child.py"  # a copy: run from here, it cannot import this checkout's deepflow
    shutil.copyfile(CHILD, script)
    try:
        done = subprocess.run([sys.executable, str(script), str(spec_path), str(out)], cwd=env["DEEPFLOW_ROOT"],
                              env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ReproduceError(f"rebuild: did not finish within {timeout_s:.0f} s") from None
    result_path = out / "result.json"
    if not result_path.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ReproduceError(f"rebuild: the training process exited {done.returncode}: {tail[0][:300]}")
    result = json.loads(result_path.read_text())
    if not result.get("ok"):
        raise ReproduceError(f"rebuild: {result.get('error', 'failed')[:400]}")
    for which in ("reproduced", "original"):
        if (out / f"{which}.pkl").is_file():
            with (out / f"{which}.pkl").open("rb") as f:
                result[f"{which}_predictions"] = pickle.load(f)
    return result


def _timeout(cert: dict) -> float:
    return max(1800.0, 6 * float(cert.get("training_seconds") or 0))


def _full(spec: dict, cert: dict, env: dict[str, str], tmp: Path, report: dict, echo: Callable[[str], None]) -> None:
    echo(f"rebuild   {cert['member']}: training with the recorded config (hash {cert['config_hash']}) and "
         f"seed {cert['seed']} (recorded: {cert.get('training_seconds') or 0:.0f} s)")
    result = _run_child(spec, env, tmp / "rebuild", _timeout(cert))
    report["rebuild"] = _summary(result)
    report["_pairs"] = {"rebuilt": result["metrics"], "registered": result["original_metrics"],
                        "predictions": (result.get("original_predictions"), result.get("reproduced_predictions"))}


def _quick(spec: dict, cert: dict, env: dict[str, str], tmp: Path, report: dict, echo: Callable[[str], None]) -> None:
    import pyarrow.parquet as pq

    low, share, high = QUICK_ROWS
    rows = pq.ParquetFile(Path(spec["prepared_dir"]) / "train.parquet").metadata.num_rows
    spec = {**spec, "epochs_cap": QUICK_EPOCHS, "sample": int(min(high, max(low, share * rows)))}
    echo(f"quick     the registered model re-scored; {cert['member']} trained twice on a seeded sample of "
         f"{min(spec['sample'], rows):,} training rows, at most {QUICK_EPOCHS} epochs")
    first = _run_child(spec, env, tmp / "first", _timeout(cert))
    second = _run_child({**spec, "score_original": False}, env, tmp / "second", _timeout(cert))
    report["rebuild"] = {**_summary(first), "epochs_cap": QUICK_EPOCHS}
    report["_pairs"] = {"rebuilt": None, "registered": first["original_metrics"],
                        "predictions": (first.get("reproduced_predictions"), second.get("reproduced_predictions")),
                        "second": second["metrics"], "first": first["metrics"]}


def _summary(result: dict) -> dict:
    return {k: result.get(k) for k in ("config_hash", "fit_seconds", "train_rows", "test_rows", "info", "hardware",
                                       "versions", "deepflow")}


def _judge(cert: dict, uc_class: type, quick: bool, why_not_exact: list[str], report: dict) -> None:
    pairs = report.pop("_pairs")
    exact = not why_not_exact
    tolerance = 0.0 if exact else float(uc_class.reproduce_tolerance)
    recorded = cert["metrics"]["test"]
    if report["rebuild"]["config_hash"] != cert["config_hash"]:  # explains a difference; excuses none
        report["notes"].append(f"the recorded config rebuilds to hash {report['rebuild']['config_hash']}, "
                               f"not {cert['config_hash']}")
    report.update(exact_expected=exact, why_not_exact=why_not_exact, tolerance=tolerance)
    registered = compare.metric_rows(recorded, pairs["registered"], tolerance)
    report["registered_model"] = registered
    original, rebuilt = pairs["predictions"]
    predictions = uc_class.compare_predictions(original, rebuilt)
    report["predictions"] = predictions
    if quick:  # two trainings on one machine: identical, always
        runs = compare.metric_rows(pairs["first"], pairs["second"], 0.0)
        report["metrics"] = runs
        checks = [("the registered model on the restored data", compare.verdict(registered, None, exact, tolerance)),
                  ("two trainings on a sample", compare.verdict(runs, predictions, True, 0.0))]
    else:
        report["metrics"] = compare.metric_rows(recorded, pairs["rebuilt"], tolerance)
        checks = [("the registered model on the restored data", compare.verdict(registered, None, exact, tolerance)),
                  ("the rebuilt model", compare.verdict(report["metrics"], predictions, exact, tolerance))]
    failed = [(what, v) for what, v in checks if v[0] == compare.MISMATCH]
    if failed:
        what, (_, reason) = failed[0]
        report.update(verdict=compare.MISMATCH, reason=f"{what}: {reason}"
                      + (f" ({'; '.join(report['notes'])})" if report["notes"] else ""))
    else:
        level = compare.EXACT if all(v[0] == compare.EXACT for _, v in checks) else compare.WITHIN
        report.update(verdict=level, reason=checks[-1][1][1] + (f" ({'; '.join(why_not_exact)})"
                                                               if why_not_exact and level != compare.EXACT else ""))


def _record(name: str, version: str, run_id: str, report: dict) -> None:
    """Tag ``reproduced`` (or ``reproduced_quick``) and ``registry/v<N>/reproduction[_quick].json``."""
    suffix = "_quick" if report["mode"] == "quick" else ""
    text = json.dumps(report, indent=2, default=_plain)
    tracking.log_text(run_id, text, f"registry/v{version}/reproduction{suffix}.json")
    tracking.set_version_tags(name, version, {
        f"reproduced{suffix}": f"{report['verdict']} {report['started'][:10]}: {report['reason']}"[:480]})


def _plain(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    return str(value)
