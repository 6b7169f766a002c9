"""The code of a reproduction: a clean temporary git worktree at the recorded commit (or another ref)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from deepflow.reproduce.errors import ReproduceError


def git(root: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise ReproduceError(f"code: `git {' '.join(args)}` failed in {root}: "
                             f"{(done.stderr or done.stdout).strip().splitlines()[-1:] or ['?']}")
    return done.stdout.strip()


def resolve(root: Path, ref: str, what: str) -> str:
    """The full commit of ``ref``, or a ReproduceError saying it is not in this repository."""
    if not (root / ".git").exists():
        raise ReproduceError(f"code: {root} is not a git repository, so {what} {ref} cannot be checked out")
    sha = git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    if not sha:
        raise ReproduceError(f"code: {what} {ref} is not in the repository at {root} "
                             "(fetch it, or pass --code REF to rebuild with other code)")
    return sha


def changed_files(root: Path, recorded: str, used: str, limit: int = 8) -> list[str]:
    """Files that differ between the recorded commit and the one used (``git diff --name-only``)."""
    if recorded == used:
        return []
    names = git(root, "diff", "--name-only", recorded, used).splitlines()
    return names[:limit] + ([f"... {len(names) - limit} more"] if len(names) > limit else [])


@contextlib.contextmanager
def worktree(root: Path, sha: str, where: Path) -> Iterator[Path]:
    """A detached worktree of ``root`` at ``sha`` in ``where``, removed afterwards (the repository's
    own working tree, index and branches are never touched)."""
    git(root, "worktree", "add", "--detach", "--quiet", str(where), sha)
    try:
        yield where
    finally:
        git(root, "worktree", "remove", "--force", str(where), check=False)
        shutil.rmtree(where, ignore_errors=True)
        git(root, "worktree", "prune", check=False)
