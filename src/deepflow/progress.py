"""Live progress of ``deepflow run`` / ``train``: each entry's current step, each member's epochs,
time spent and (where known) time left; library log noise goes to a file instead of the terminal.

One reporter per process. Pipeline code reports, and nothing happens unless a command enabled it:

- :func:`step` ``(entry, name, member=None)`` at the start of each step (``steps.py``: validate,
  train / evaluate a member, register, promote, report); it also records which entry and member
  the code running in this context works for (:func:`current`);
- :func:`epoch` and :func:`fitted` from ``training.fit`` at the end of each epoch and of the fit;
- :func:`finish` when an entry's pipeline has ended (the CLI); :func:`last_step` says where a
  failed one was (the CLI's error line names it).

:func:`reporting` enables it for a block: a rich live display when the console is a terminal,
otherwise plain lines (every step; at most one epoch line per member per ``interval`` seconds; one
line when a fit ends). Every call is thread-safe: Prefect may run tasks in worker threads of this
process.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

_current: ContextVar[tuple[str | None, str | None]] = ContextVar("deepflow_progress", default=(None, None))
_lock = threading.RLock()
_view: _Lines | _Live | None = None
_route: _LogRoute | None = None
_last_step: dict[str, str] = {}

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that say nothing useful at INFO, even in a file (GX: ~200 lines per process about its docs).
QUIET_LOGGERS = ("great_expectations._docs_decorators",)
# File only, even at ERROR: a failed flow or task run's traceback (the command prints its own error line),
# and each retry of an HTTP request (a tracking server that stays down ends in that error line).
FILE_ONLY_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "urllib3.connectionpool")


# --- what pipeline code calls ------------------------------------------------------------------


def step(entry: str, name: str, member: str | None = None) -> None:
    """``entry`` starts step ``name`` (for ``member`` when given); later :func:`epoch` reports from
    this context are attributed to that entry and member. A no-op display-wise when not enabled."""
    _current.set((entry, member))
    with _lock:
        _last_step[entry] = _label(name, member)
        if _route is not None:
            _route.refresh()  # a library imported since may have added its own terminal handler
        if _view is not None:
            _view.step(entry, name, member)


def epoch(entry: str | None, member: str | None, done: int, total: int, *, seconds: float,
          may_stop_early: bool = False) -> None:
    """``done`` of ``total`` epochs finished after ``seconds`` of training; ``may_stop_early``: early
    stopping may end the fit before ``total``. ``entry``/``member`` None (a fit outside any step,
    e.g. a benchmark's): shown as ``deepflow`` / ``fit``."""
    with _lock:
        if _view is not None:
            _view.epoch(entry or "deepflow", member or "fit", done, total, seconds, may_stop_early)


def fitted(entry: str | None, member: str | None, epochs: int, total: int, *, seconds: float) -> None:
    """A fit ended after ``epochs`` of at most ``total`` epochs, ``seconds`` of training."""
    with _lock:
        if _view is not None:
            _view.fitted(entry or "deepflow", member or "fit", epochs, total, seconds)


def finish(entry: str, ok: bool = True) -> None:
    """``entry``'s pipeline ended (``ok``: without an error)."""
    with _lock:
        if _view is not None:
            _view.finish(entry, ok)


def last_step(entry: str) -> str | None:
    """The step ``entry`` started last in this process, from any thread (``train shallow``); None before any."""
    with _lock:
        return _last_step.get(entry)


def current() -> tuple[str | None, str | None]:
    """(entry, member) of the last :func:`step` in this context; (None, None) before any."""
    return _current.get()


def enabled() -> bool:
    with _lock:
        return _view is not None


def logs_routed() -> bool:
    """True while library logs go to a file (then INFO logs are welcome: nobody sees them live)."""
    with _lock:
        return _route is not None


# --- turning it on ------------------------------------------------------------------------------


@contextmanager
def reporting(console: Console | None = None, *, log_dir: Path | None = None, live: bool | None = None,
              interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> Iterator[Path | None]:
    """Report progress on ``console`` (default: stdout) for the block, and send library logs
    (INFO and up) to ``log_dir/deepflow-<time>.log`` when ``log_dir`` is given: warnings and errors
    still reach stderr too, except a failed Prefect run's traceback (file only: the caller prints
    its own error line). Yields the log file's path (printed once) or None. ``live`` None: a live
    display when the console is an interactive terminal, else plain lines. Nested use is refused."""
    global _view, _route
    console = console or Console()
    use_live = (console.is_terminal and not console.is_dumb_terminal) if live is None else live
    with _lock:
        if _view is not None or _route is not None:
            raise RuntimeError("progress reporting is already enabled in this process")
        path = None
        if log_dir is not None:
            path = Path(log_dir) / f"deepflow-{time.strftime('%Y%m%dT%H%M%S')}.log"
            _route = _LogRoute(path)
            console.print(f"library logs: {_shown(path)}", markup=False, highlight=False, soft_wrap=True)
        try:
            _view = _Live(console) if use_live else _Lines(console, interval, clock)
        except BaseException:
            if _route is not None:
                _route.close()
                _route = None
            raise
    try:
        yield path
    finally:
        with _lock:
            view, route, _view, _route = _view, _route, None, None
            if view is not None:
                view.close()
            if route is not None:
                route.close()


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --- formatting ---------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """``42s``, ``3m 05s``, ``1h 02m``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m {s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m"


def _label(name: str, member: str | None) -> str:
    return f"{name} {member}" if member else name


def _left(done: int, total: int, seconds: float, may_stop_early: bool) -> str:
    """Time left from the mean epoch time so far."""
    if done <= 0 or done >= total:
        return ""
    text = f"~{duration(seconds / done * (total - done))} left"
    return f"{text} (early stopping may end it sooner)" if may_stop_early else text


def _members(n: int) -> str:
    return f"{n} member" if n == 1 else f"{n} members"


def _fit_end(epochs: int, total: int, seconds: float) -> str:
    return f"{epochs}/{total} epochs in {duration(seconds)}" + (" (stopped early)" if epochs < total else "")


# --- the two displays ---------------------------------------------------------------------------


class _Lines:
    """Plain lines for pipes and CI logs: ``[hh:mm:ss] entry: what``, every step and fit end, and
    an epoch line per member only when ``interval`` seconds passed since that member's last line."""

    def __init__(self, console: Console, interval: float, clock: Callable[[], float]) -> None:
        self.console, self.interval, self.clock = console, interval, clock
        self.t0 = clock()
        self.started: dict[str, float] = {}
        self.last: dict[tuple[str, str | None], float] = {}

    def _say(self, entry: str, text: str) -> None:
        s = int(self.clock() - self.t0)
        stamp = f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"
        self.console.print(f"[{stamp}] {entry}: {text}", markup=False, highlight=False, soft_wrap=True)

    def step(self, entry: str, name: str, member: str | None) -> None:
        self.started.setdefault(entry, self.clock())
        self.last[(entry, member)] = self.clock()
        self._say(entry, _label(name, member))

    def epoch(self, entry: str, member: str | None, done: int, total: int, seconds: float,
              may_stop_early: bool) -> None:
        now, key = self.clock(), (entry, member)
        if now - self.last.get(key, self.t0) < self.interval:
            return
        self.last[key] = now
        left = _left(done, total, seconds, may_stop_early)
        self._say(entry, f"{_label('train', member)}: epoch {done}/{total}, {duration(seconds)} so far"
                  + (f", {left}" if left else ""))

    def fitted(self, entry: str, member: str | None, epochs: int, total: int, seconds: float) -> None:
        self.last[(entry, member)] = self.clock()
        self._say(entry, f"{_label('train', member)}: {_fit_end(epochs, total, seconds)}")

    def finish(self, entry: str, ok: bool) -> None:
        start = self.started.pop(entry, None)
        took = "" if start is None else f" in {duration(self.clock() - start)}"
        self._say(entry, ("done" if ok else "failed") + took)

    def close(self) -> None:
        pass


class _Live:
    """A rich live display: one row per entry (its current step, elapsed time) and one per member
    (epochs as a bar, elapsed, time left). An entry's member rows fold away when it finishes."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=24), TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(), TextColumn("{task.fields[note]}"), console=console, refresh_per_second=4)
        self.entries: dict[str, TaskID] = {}
        self.members: dict[tuple[str, str | None], TaskID] = {}
        self.open: dict[str, tuple[str, str | None]] = {}
        self.progress.start()

    def _entry(self, entry: str) -> TaskID:
        if entry not in self.entries:
            self.entries[entry] = self.progress.add_task(f"[bold]{escape(entry)}[/]", total=None, count="",
                                                         note="")
        return self.entries[entry]

    def _member(self, entry: str, member: str | None) -> TaskID:
        key = (entry, member)
        if self.open.get(entry) not in (None, key):
            self._close_member(entry)
        if key not in self.members:
            self._entry(entry)
            self.members[key] = self.progress.add_task(f"  {escape(member or '')}", total=None, count="",
                                                       note="")
        self.open[entry] = key
        return self.members[key]

    def _close_member(self, entry: str) -> None:
        key = self.open.pop(entry, None)
        if key is None:
            return
        task = self.progress.tasks[self.members[key]]
        if task.total is None:
            self.progress.update(task.id, total=1, completed=1)
        self.progress.update(task.id, note="done")
        self.progress.stop_task(task.id)

    def step(self, entry: str, name: str, member: str | None) -> None:
        described = f"[bold]{escape(entry)}[/] {escape(_label(name, member))}"
        self.progress.update(self._entry(entry), description=described)
        if member is None:
            self._close_member(entry)
        else:
            self.progress.update(self._member(entry, member), note=escape(name))

    def epoch(self, entry: str, member: str | None, done: int, total: int, seconds: float,
              may_stop_early: bool) -> None:
        self.progress.update(self._member(entry, member), total=total, completed=done,
                             count=f"{done}/{total} epochs", note=_left(done, total, seconds, may_stop_early))

    def fitted(self, entry: str, member: str | None, epochs: int, total: int, seconds: float) -> None:
        self.progress.update(self._member(entry, member), total=total, completed=epochs,
                             count=f"{epochs}/{total} epochs",
                             note="stopped early" if epochs < total else "")

    def finish(self, entry: str, ok: bool) -> None:
        self._close_member(entry)
        for (owner, _), task in self.members.items():
            if owner == entry:
                self.progress.update(task, visible=False)
        task = self._entry(entry)
        verdict = "done" if ok else "[red]failed[/]"
        self.progress.update(task, total=1, completed=1 if ok else 0,
                             description=f"[bold]{escape(entry)}[/] {verdict}",
                             count=_members(sum(owner == entry for owner, _ in self.members)))
        self.progress.stop_task(task)

    def close(self) -> None:
        self.progress.stop()


# --- library logs to a file ---------------------------------------------------------------------


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a live display redirects it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _to_terminal(handler: logging.Handler) -> bool:
    """A handler that prints to a stream other than a file or an in-memory buffer (test capture)."""
    return (isinstance(handler, logging.StreamHandler) and not isinstance(handler, (logging.FileHandler, _Stderr))
            and not isinstance(getattr(handler, "stream", None), io.StringIO))


class _LogRoute:
    """Every logger's records (INFO and up) to one file; WARNING and up also to stderr, except
    :data:`FILE_ONLY_LOGGERS`; the terminal handlers that libraries installed (Prefect's console,
    MLflow's, Lightning's) taken off meanwhile and put back by :meth:`close`."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = logging.FileHandler(path, encoding="utf-8")
        self.file.setLevel(logging.INFO)
        self.file.setFormatter(logging.Formatter(LOG_FORMAT))
        self.terminal = _Stderr()
        self.terminal.setLevel(logging.WARNING)
        self.terminal.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.terminal.addFilter(lambda record: not record.name.startswith(FILE_ONLY_LOGGERS))
        self.removed: list[tuple[logging.Logger, logging.Handler]] = []
        self.propagating: list[logging.Logger] = []
        self.levels = {name: logging.getLogger(name).level for name in ("", *QUIET_LOGGERS)}
        logging.root.setLevel(logging.INFO)
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        self.refresh()

    def refresh(self) -> None:
        """(Re)attach the file and stderr handlers to the root; take terminal handlers off every
        logger, letting its records propagate to the root instead."""
        root = logging.getLogger()
        for handler in (self.file, self.terminal):
            if handler not in root.handlers:
                root.addHandler(handler)
        loggers = [root, *(lg for lg in list(logging.root.manager.loggerDict.values())
                           if isinstance(lg, logging.Logger))]
        for lg in loggers:
            for handler in [h for h in lg.handlers if _to_terminal(h)]:
                lg.removeHandler(handler)
                self.removed.append((lg, handler))
                if lg is not root and not lg.propagate:
                    lg.propagate = True
                    self.propagating.append(lg)

    def close(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self.file)
        root.removeHandler(self.terminal)
        self.file.close()
        for lg, handler in self.removed:
            if handler not in lg.handlers:
                lg.addHandler(handler)
        for lg in self.propagating:
            lg.propagate = False
        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)
