"""Per-epoch checkpoints of a pipeline member's fits, so that a run killed mid-training resumes from
its last completed epoch instead of starting over (docs/operations.md).

``steps.train_member`` enters :func:`member` around the member's fit; every ``training.fit`` inside
it takes the next :class:`Fit` (a member may fit more than once) and, after every completed epoch,
writes ``<DEEPFLOW_CHECKPOINT_DIR>/<entry>/<member>/<key>/fit-<i>.ckpt`` (temporary file, fsync,
rename: a kill leaves the previous epoch's file or the new one, never half of one). The key is a hash
of everything that makes it *the same work* (:func:`key_parts`): entry, member, kind, data version
and the prepared files' fingerprint, the resolved config's hash, the seed, the deepflow source and the
torch/Lightning versions. The folder of another key is never read; a file whose recorded key is not
this fit's, that does not load as weights, or whose tensors do not fit the model is refused, with a
warning that says why, and the fit starts over.

What is left where:

* a fit that finishes deletes its file; a member that finishes deletes its folder, and the folders
  of other keys of the same entry and member whose owner process is gone (superseded work);
* a kill leaves the folder: the same command started again resumes from it;
* a Python exception (Ctrl-C, a tracking server gone mid-fit, an error in training) leaves it too:
  the same command resumes from the last completed epoch (a deterministic error comes back where it
  was, no sooner than on a fresh start); a fix to the source, config or data is another key, so the
  fixed run starts over and its success removes the old folder;
* one process at a time per key (a lock file): a second process doing the same work trains without
  checkpoints rather than write over the first one's;
* ``deepflow clean`` (deepflow/cli_clean.py) lists the folders (:func:`stored`) and deletes those no
  running process holds (:func:`in_use`, :func:`remove`: under the folder's lock).
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from deepflow import config, processes, settings

log = logging.getLogger(__name__)
KEY_FILE, LOCK_FILE = "key.json", ".lock"
RESUMED_TAG = "deepflow.resumed_from_epoch"  # on a member run whose fit resumed: the epochs it found done
PACKAGE = Path(__file__).resolve().parent


@functools.cache
def source_fingerprint() -> str:
    """sha256 (16 hex digits) of the deepflow package's Python source as this process found it."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(PACKAGE)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def key_parts(*, entry: str, member: str, kind: str, data_version: str, fingerprint: str, cfg: Any) -> dict[str, Any]:
    """What a checkpoint must share with a fit to be resumed by it (``cfg``: the resolved config, overrides
    included; its ``train.seed`` is named apart)."""
    return {"entry": entry, "member": member, "kind": kind, "data_version": data_version,
            "data_fingerprint": fingerprint, "config_hash": config.config_hash(cfg),
            "seed": getattr(getattr(cfg, "train", None), "seed", None),
            "source": source_fingerprint(), "torch": metadata.version("torch"),
            "lightning": metadata.version("lightning")}


def key_of(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(text)) or "_"


def atomic_write(path: Path, save: Callable[[Path], None]) -> None:
    """``save(a temporary path)`` next to ``path``, fsync it, rename it over ``path``: a reader (or a
    process killed meanwhile) sees the old file or the new one, never part of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save(tmp)
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class Member:
    """The checkpoints of one member's fits in this run."""

    folder: Path
    key: str
    parts: dict[str, Any]
    on_resume: Callable[[int], None] | None = None
    fits: int = 0
    resumed_from_epoch: int | None = None

    def next_fit(self) -> Fit:
        self.fits += 1
        return Fit(self, self.fits - 1)


@dataclass
class Fit:
    """The checkpoint of one ``training.fit`` of a member (the ``index``-th of the run)."""

    member: Member
    index: int

    @property
    def path(self) -> Path:
        return self.member.folder / f"fit-{self.index}.ckpt"

    @property
    def key(self) -> str:
        """Recorded in the file (``checkpoint["deepflow"]["key"]``) and checked before it is loaded."""
        return f"{self.member.key}/fit-{self.index}"

    def write(self, save: Callable[[Path], None]) -> None:
        atomic_write(self.path, save)

    def resumable(self, state_dict: dict[str, Any]) -> tuple[Path, int] | None:
        """The file to resume this fit from and its completed epochs; None: start over (a refused file
        is deleted, and a warning says why). ``state_dict``: the model's, to check the tensors' shapes."""
        if not self.path.is_file():
            return None
        import torch

        try:
            ckpt = torch.load(self.path, map_location="cpu", weights_only=True)
            mark = ckpt.get("deepflow") or {}
            theirs = ckpt["state_dict"]
        except Exception as exc:  # truncated, not a checkpoint, or objects that are not weights
            return self._refuse(f"it does not load as a checkpoint of weights ({type(exc).__name__}: {str(exc)[:200]})")
        if mark.get("key") != self.key:
            return self._refuse(f"it was written for other work (key {mark.get('key')!r}, this fit's is {self.key!r})")
        wrong = sorted({k for k, v in state_dict.items() if k not in theirs or tuple(theirs[k].shape) != tuple(v.shape)}
                       | (set(theirs) - set(state_dict)))
        if wrong:
            return self._refuse(f"its tensors do not fit the model ({', '.join(wrong[:3])})")
        epochs = int(mark.get("epochs", 0))
        self.member.resumed_from_epoch = epochs
        log.warning("%s/%s: resuming fit %d from its checkpoint after epoch %d (%s)", self.member.parts["entry"],
                    self.member.parts["member"], self.index, epochs, self.path)
        if self.member.on_resume is not None:
            self.member.on_resume(epochs)
        return self.path, epochs

    def _refuse(self, why: str) -> None:
        log.warning("%s: not resuming from %s: %s; training starts over", self.member.parts["entry"], self.path, why)
        self.path.unlink(missing_ok=True)
        return None

    def done(self) -> None:
        self.path.unlink(missing_ok=True)


_active: contextvars.ContextVar[Member | None] = contextvars.ContextVar("deepflow_checkpoints", default=None)


def active() -> Member | None:
    """The member whose fits write checkpoints now (inside :func:`member`), or None."""
    return _active.get()


@contextmanager
def member(parts: dict[str, Any], on_resume: Callable[[int], None] | None = None) -> Iterator[Member | None]:
    """Checkpoint the fits of one member (``parts``: :func:`key_parts`) while inside; ``on_resume(epochs)``
    is called when a fit resumes. Yields None (no checkpoints) when ``DEEPFLOW_CHECKPOINT_DIR=off`` or
    another live process holds the same key."""
    root = settings.checkpoint_dir()
    if root is None:
        yield None
        return
    key = key_of(parts)
    base = root / _name(parts["entry"]) / _name(parts["member"])
    folder = base / key
    folder.mkdir(parents=True, exist_ok=True)
    lock = _try_lock(folder)
    if lock is None:
        log.warning("%s/%s: another process is doing the same work (%s); this one writes no checkpoints",
                    parts["entry"], parts["member"], folder)
        yield None
        return
    try:
        record = json.dumps({"key": key, "parts": parts, "owner": processes.identity()}, indent=1, default=str)
        atomic_write(folder / KEY_FILE, lambda tmp: tmp.write_text(record))
        token = _active.set(Member(folder, key, parts, on_resume))
        try:
            yield _active.get()
        except BaseException:
            if any(folder.glob("fit-*.ckpt")):
                log.warning("%s/%s: checkpoints kept in %s: the same command resumes from them", parts["entry"],
                            parts["member"], folder)
            raise
        finally:
            _active.reset(token)
        shutil.rmtree(folder, ignore_errors=True)
        prune(base, keep=key)
    finally:
        lock.release()


def _try_lock(folder: Path) -> Any:
    """``folder``'s lock, taken now (a ``filelock.FileLock``: release it), or None when another
    process holds it: one process at a time does a key's work or deletes its folder."""
    from filelock import FileLock, Timeout

    lock = FileLock(folder / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


def prune(base: Path, keep: str) -> list[Path]:
    """Delete the checkpoint folders under ``base`` (one entry's member) but ``keep`` whose owner
    process is gone (``processes.gone``); returns them."""
    me, removed = processes.identity(), []
    for folder in sorted(p for p in base.iterdir() if p.is_dir() and p.name != keep) if base.is_dir() else []:
        try:
            owner = json.loads((folder / KEY_FILE).read_text())["owner"]
        except (OSError, ValueError, KeyError, TypeError):  # being created, or not ours: left alone
            continue
        if processes.gone(owner, me):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            log.info("removed superseded checkpoints %s", folder)
    return removed


# --- what is stored, and `deepflow clean` -------------------------------------------------------


@dataclass
class Stored:
    """One checkpoint folder (``<root>/<entry>/<member>/<key>``) as :func:`stored` found it."""

    folder: Path
    entry: str
    member: str
    fits: int  # fit-*.ckpt files: the fits that have completed epochs to resume from
    size: int  # bytes in the folder
    modified: float  # newest file's mtime (epoch seconds)
    owner: dict[str, str] | None  # None: no readable key file (being created, or not deepflow's)
    stale: str | None  # why no run of this code can resume from it, or None


def stored(root: Path) -> list[Stored]:
    """Every checkpoint folder under ``root``, oldest first."""
    found = []
    for folder in sorted(root.glob("*/*/*")) if root.is_dir() else []:
        if not folder.is_dir():
            continue
        try:
            stats = {p.name: p.stat() for p in folder.iterdir() if p.is_file()}
            modified = max((s.st_mtime for s in stats.values()), default=folder.stat().st_mtime)
        except FileNotFoundError:  # a run that finished meanwhile deleted it
            continue
        try:
            record = json.loads((folder / KEY_FILE).read_text())
            owner, parts = dict(record["owner"]), dict(record["parts"])
        except (OSError, ValueError, KeyError, TypeError):
            owner, parts = None, {}
        found.append(Stored(folder, folder.parent.parent.name, folder.parent.name,
                            sum(n.startswith("fit-") and n.endswith(".ckpt") for n in stats),
                            sum(s.st_size for s in stats.values()), modified,
                            owner, _stale(parts) if owner is not None else None))
    return sorted(found, key=lambda s: s.modified)


def _stale(parts: dict[str, Any]) -> str | None:
    for field, now, what in (("source", source_fingerprint(), "deepflow source"),
                             ("torch", metadata.version("torch"), "torch"),
                             ("lightning", metadata.version("lightning"), "Lightning")):
        if parts.get(field) != now:
            return f"written by another {what} ({parts.get(field)}; now {now})"
    return None


def in_use(item: Stored, me: dict[str, str] | None = None) -> str | None:
    """Why ``item`` must be left alone now (a process holds its lock, or its owner runs on another
    host that this one cannot see), or None."""
    if item.owner is not None and item.owner.get("host") != (me or processes.identity())["host"]:
        return (f"written by process {item.owner.get('pid')} on host {item.owner.get('host')}, "
                "which this host cannot check")
    lock = _try_lock(item.folder)
    if lock is None:
        pid = (item.owner or {}).get("pid", "?")
        return f"in use: a run holds its lock (process {pid} wrote it)"
    lock.release()
    return None


def remove(item: Stored) -> str | None:
    """Delete ``item``'s folder unless a run takes it meanwhile (checked under its lock); the reason it
    was kept, or None. Empty member and entry folders above it go too."""
    lock = _try_lock(item.folder)
    if lock is None:
        return "in use: a run took its lock"
    try:
        shutil.rmtree(item.folder, ignore_errors=True)
    finally:
        lock.release()
    for parent in (item.folder.parent, item.folder.parent.parent):
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
    return None
