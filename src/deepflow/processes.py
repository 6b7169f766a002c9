"""Which process owns a record, whether that process is gone, and children that die with their parent.

A record (an MLflow run) names its owner with :func:`identity`: host name, boot, pid and the
process's start time. :func:`gone` says why an owner is verifiably dead, or None: it only answers
for owners on this host, and a live process, even one that reused the pid, is never called dead
(the start time tells them apart). Start times and boot ids come from ``/proc`` (Linux); elsewhere
only the pid's existence is checked, and on Windows nothing is ever called gone.

:func:`die_with_parent` is what a child server calls first: the kernel kills it when its parent
dies, ``kill -9`` included (Linux's parent-death signal), and a watchdog thread does the same
elsewhere.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first); None: no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2:].split()  # the command name may hold spaces and ")"


def boot_id() -> str:
    """This boot of this host's kernel (Linux); "" where unknown."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def start_ticks(pid: int) -> str:
    """When ``pid`` started, in clock ticks since boot (Linux; "" elsewhere or when it is gone)."""
    fields = _proc_stat(pid) if sys.platform.startswith("linux") else None
    return fields[19] if fields else ""  # field 22 of stat(5); fields[0] is field 3


def identity(pid: int | None = None) -> dict[str, str]:
    """The owner of what this process records: host, boot, pid, start."""
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "boot": boot_id(), "pid": str(pid), "start": start_ticks(pid)}


def _alive(pid: int) -> bool:
    if sys.platform.startswith("linux"):
        fields = _proc_stat(pid)
        return fields is not None and fields[0] != "Z"  # a zombie has exited; only its exit status is left
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def gone(owner: dict[str, str], me: dict[str, str] | None = None) -> str | None:
    """Why ``owner`` (an :func:`identity`) is verifiably dead, seen from ``me`` (this process); None
    when it may be alive: another host's process, or a pid that still runs with its start time."""
    me = me or identity()
    if os.name == "nt" or not owner.get("pid", "").isdigit() or owner.get("host") != me["host"]:
        return None
    pid, who = int(owner["pid"]), f"process {owner['pid']} on {owner['host']}"
    if owner.get("boot") and me["boot"] and owner["boot"] != me["boot"]:
        return f"{who} is gone: the host has rebooted since"
    if not _alive(pid):
        return f"{who} is gone"
    now = start_ticks(pid)
    if owner.get("start") and now and now != owner["start"]:
        return f"{who} is gone (pid {pid} now belongs to a process started later)"
    return None


def die_with_parent(parent_pid: int, poll_s: float = 1.0) -> None:
    """Make this process end when ``parent_pid`` (its parent) does, however the parent ends:
    Linux's parent-death signal (SIGKILL), set here; elsewhere a daemon thread that polls the
    parent. Exits at once when the parent is already gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    if not sys.platform.startswith("linux"):
        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(poll_s)
            os._exit(1)

        threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
