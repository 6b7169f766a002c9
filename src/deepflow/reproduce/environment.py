"""The environment of a reproduction: is this the Python environment and machine the version was
trained in? Only then is a bit-for-bit rebuild expected; otherwise the use case's tolerance applies."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path
from typing import Any

from deepflow.certificate import lock_hash

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_differences(lock: Path, limit: int = 8) -> list[str]:
    """``name: locked X, installed Y`` for each pin of ``lock`` this interpreter does not have."""
    if not lock.is_file():
        return [f"no lock file at {lock}"]
    diffs = []
    for line in lock.read_text().splitlines():
        if not (m := PIN.match(line.strip())):
            continue
        name, locked = m.groups()
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "absent"
        if _norm(installed) != _norm(locked) and installed.split("+")[0] != locked.split("+")[0]:
            diffs.append(f"{name}: locked {locked}, installed {installed}")
    return diffs[:limit] + ([f"... {len(diffs) - limit} more"] if len(diffs) > limit else [])


def check(cert: dict[str, Any], lock: Path, here: dict[str, Any], versions: dict[str, str]) -> dict[str, Any]:
    """Compare the recorded environment with this one. ``here``: this machine's hardware as the
    rebuild saw it; ``versions``: the packages the certificate lists, as installed here."""
    recorded_hw = cert.get("hardware") or {}
    keys = ("machine", "cpu", "cores", "torch_threads", "cpu_capability", "gpu")
    hardware = [f"{k}: recorded {recorded_hw.get(k)!r}, here {here.get(k)!r}" for k in keys
                if k in recorded_hw and recorded_hw.get(k) != here.get(k)]
    recorded_versions = cert.get("versions") or {}
    packages = [f"{k}: recorded {v}, here {versions.get(k, 'absent')}" for k, v in recorded_versions.items()
                if k in versions and versions[k] != v]
    commit_lock = lock_hash(lock)  # the commit's lock file, hashed as the certificate's was
    lock_matches = commit_lock == cert.get("lock_hash")
    installed = lock_differences(lock)
    same = not hardware and not packages and lock_matches and not installed
    return {"same": same, "hardware": hardware, "packages": packages,
            "lock": "same lock file as recorded" if lock_matches else
            f"the commit's lock hash {commit_lock} differs from the recorded {cert.get('lock_hash')}",
            "installed_vs_lock": installed}
