"""DVC stage commands do not depend on PATH (issue 19, item 6).

`.venv/bin/dvc repro` from a shell without the venv on PATH used to run the system `python`, fail
on `import deepflow`, and leave the stage's output folder deleted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BARE = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}  # no venv anywhere on it


def test_every_stage_runs_the_projects_python() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages and all(s["cmd"].startswith("scripts/python -m deepflow.") for s in stages.values()), stages


def test_the_stage_python_is_found_without_path() -> None:
    venv = Path(sys.prefix) / "bin" / "python"
    env = {**BARE, "DEEPFLOW_PYTHON": str(venv)} if not (ROOT / ".venv").is_dir() else BARE
    done = subprocess.run(["scripts/python", "-c", "import deepflow, sys; print(sys.prefix)"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve() == Path(sys.prefix).resolve()


def test_a_python_without_deepflow_is_refused_with_what_to_do(tmp_path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")  # a python that cannot import deepflow
    fake.chmod(0o755)
    done = subprocess.run(["scripts/python", "-m", "deepflow.usecases.fraud.simulate"], cwd=ROOT,
                          env={**BARE, "DEEPFLOW_PYTHON": str(fake)}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert "cannot import deepflow" in done.stderr and "make bootstrap" in done.stderr and "checkout" in done.stderr
