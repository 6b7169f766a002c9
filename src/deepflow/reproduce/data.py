"""The data of a reproduction: the exact prepared files a version was trained on, or a clear no.

A birth certificate records the DVC md5 of the prepared folder and a fingerprint (sha256) of its
``*.parquet`` files. Restoring tries, in order, and the fingerprint decides each time:

1. the project's own prepared folder, when it still holds that data (copied, never used in place);
2. the DVC cache, object by object from the folder's ``.dir`` manifest, each file's md5 checked
   (a corrupted cache object is named, not used);
3. the project's DVC remote: ``dvc fetch`` of the stage's outputs at the recorded commit into the
   project's cache (what ``dvc pull`` would add), then as in 2;
4. re-running the DVC stage in the reproduction's worktree (the recorded commit's ``dvc.yaml``,
   the project's cache for its inputs, ``--no-run-cache`` so the command really runs, nothing
   committed to the cache).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from deepflow import tracking
from deepflow.newentry import dvc_error
from deepflow.reproduce.errors import ReproduceError


def fingerprint(folder: Path) -> str | None:
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    return tracking.files_fingerprint(files) if files else None


def restore(data: dict, *, live: Path, dest: Path, project: Path, worktree: Path, env: dict[str, str]) -> dict:
    """Put the data of ``data`` (the certificate's ``data`` section) into ``dest``; returns how
    (``source``, ``attempts``); a ReproduceError lists every attempt when none gave that data."""
    want, md5, stage = data["fingerprint"], data.get("md5") or "", data.get("dvc_stage") or "none"
    attempts: list[str] = []
    found = fingerprint(live)
    if found == want:
        shutil.copytree(live, dest, dirs_exist_ok=True)
        return {"source": f"the project's {_rel(live, project)} (same fingerprint)", "attempts": attempts}
    attempts.append(f"the project's {_rel(live, project)} " + ("is missing" if found is None else
                                                               f"holds other data now (fingerprint {found})"))
    dvc_output = md5.endswith(".dir")
    cache = cache_dir(project, env) if dvc_output else None

    def cached(source: str, failed: str = "", before=lambda: None) -> bool:
        """Copy ``md5`` out of the cache (after ``before``: a fetch); True when it is the recorded data."""
        try:
            before()
            from_cache(md5, cache, dest)
            if (got := fingerprint(dest)) == want:
                return True
            attempts.append(f"{source}'s {md5} has other parquet files (fingerprint {got})")
        except ReproduceError as exc:
            attempts.append(f"{failed}{exc}")
        shutil.rmtree(dest, ignore_errors=True)
        return False

    if dvc_output and cached("the DVC cache"):
        return {"source": f"the DVC cache (md5 {md5})", "attempts": attempts}
    staged = stage != "none" and (worktree / "dvc.yaml").is_file()
    remote = default_remote(project, env) if staged and dvc_output else None
    if staged:  # the worktree's DVC works on the project's cache and remote
        share(worktree, cache or cache_dir(project, env), remote, env)
    if remote and cached("the DVC remote", f"the DVC remote {remote}: ", lambda: fetch(stage, worktree, env)):
        return {"source": f"the DVC remote {remote} (md5 {md5})", "attempts": attempts}
    if staged:
        try:
            rerun(stage, worktree, env)
            if (got := fingerprint(dest)) == want:
                return {"source": f"re-running DVC stage {stage} at the recorded commit", "attempts": attempts}
            attempts.append(f"re-running stage {stage} gave other data (fingerprint {got})")
        except ReproduceError as exc:
            attempts.append(str(exc))
    raise ReproduceError(f"data: cannot restore the prepared data of fingerprint {want} (md5 {md5 or '?'}): "
                         + "; ".join(attempts))


def cache_dir(project: Path, env: dict[str, str]) -> Path:
    """The project's DVC cache folder (``dvc cache dir``; ``.dvc/cache`` if DVC cannot say)."""
    done = _dvc(["cache", "dir"], project, env, 120)
    path = done.stdout.strip().splitlines()[-1:] if done.returncode == 0 else []
    return Path(path[0]) if path else project / ".dvc" / "cache"


def _object(cache: Path, md5: str) -> Path:
    """Where DVC 3 keeps an object (``files/md5/ab/cdef...``), else DVC 2's layout (``ab/cdef...``)."""
    new = cache / "files" / "md5" / md5[:2] / md5[2:]
    return new if new.exists() else cache / md5[:2] / md5[2:]


def from_cache(md5: str, cache: Path, dest: Path) -> None:
    """Copy the folder ``md5`` (a ``.dir`` object) out of the cache, checking each file's md5."""
    manifest = _object(cache, md5)
    if not manifest.is_file():
        raise ReproduceError(f"the DVC cache {cache} lacks {md5}")
    try:
        entries = json.loads(manifest.read_text())
    except ValueError as exc:
        raise ReproduceError(f"the DVC cache's manifest {md5} is not JSON ({exc})") from None
    for item in entries:
        rel, want = item["relpath"], item["md5"]
        source = _object(cache, want)
        if not source.is_file():
            raise ReproduceError(f"the DVC cache lacks {rel} (md5 {want})")
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        if (got := tracking.file_md5(target)) != want:
            raise ReproduceError(f"the DVC cache object of {rel} does not match its md5 (recorded {want}, "
                                 f"its bytes hash to {got}): the cache is corrupted")


def _dvc(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def default_remote(project: Path, env: dict[str, str]) -> str | None:
    """``name url`` of the project's default DVC remote as configured now (any config level), or None.

    The url comes from ``dvc config remote.<name>.url``, which prints it whole and, for a local path
    written relative to its config file, as an absolute path; ``dvc remote list`` is a table for
    people that wraps long paths onto another line."""
    name = _dvc(["remote", "default"], project, env, 120).stdout.strip()
    if not name:
        return None
    done = _dvc(["config", f"remote.{name}.url"], project, env, 120)
    url = done.stdout.strip()
    return f"{name} {url}" if done.returncode == 0 and url else None


def share(worktree: Path, cache: Path, remote: str | None, env: dict[str, str]) -> None:
    """Point the worktree's DVC at the project's cache and default remote (``name url``; local config only)."""
    local = worktree / ".dvc" / "config.local"
    local.parent.mkdir(exist_ok=True)
    local.write_text(f"[cache]\n    dir = {cache}\n")
    if remote:
        name, url = (remote.split(" ", 1) + [""])[:2]
        _dvc(["remote", "add", "--local", "--force", "--default", name, url], worktree, env, 120)


def fetch(stage: str, worktree: Path, env: dict[str, str]) -> None:
    """``dvc fetch`` the stage's outputs (as the recorded commit's ``dvc.lock`` names them) from the
    remote into the cache (both shared with the project: :func:`share`)."""
    done = _dvc(["fetch", stage], worktree, env)
    if done.returncode != 0:
        raise ReproduceError(f"`dvc fetch {stage}` failed: {dvc_error(done, 300)}")


def rerun(stage: str, worktree: Path, env: dict[str, str]) -> None:
    """``dvc repro`` the stage in the worktree: inputs from the project's cache (:func:`share`), the
    command really run."""
    _dvc(["checkout", "--quiet"], worktree, env)  # inputs present in the cache; the others fail the repro
    done = _dvc(["repro", "--no-run-cache", "--no-commit", "--force", stage], worktree, env, 3600)
    if done.returncode != 0:
        raise ReproduceError(f"re-running stage {stage} failed: {dvc_error(done, 300)}")


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def dvc_env(worktree: Path) -> dict[str, str]:
    """The environment of DVC and of the rebuild in the worktree: this Python first on PATH, the
    worktree's ``src/`` first on PYTHONPATH, the worktree as the project root."""
    env = {k: v for k, v in os.environ.items() if k not in ("DEEPFLOW_DATA_DIR", "DEEPFLOW_DATASETS_DIR")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DEEPFLOW_ROOT"] = str(worktree)
    if (worktree / "src" / "deepflow").is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(worktree / "src"), env.get("PYTHONPATH")]))
    return env
