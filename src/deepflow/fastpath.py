"""The serving fast path: a loaded scorer's network compiled to its fastest faithful form.

The pyfunc model MLflow stores stays the compatibility format (``mlflow models serve``, batch
scoring and ``deepflow reproduce`` use it as is). For real-time answers, serving asks
:func:`compile_torch` for a faster form of a torch network that scores a float32 array:

* **ONNX Runtime** (``onnxruntime``), one thread, the graph exported from the network with the
  output's sigmoid inside it: for a residual MLP of a few blocks one row takes tens of microseconds
  instead of the ~0.25 ms of eager torch, whose per-operator dispatch dominates at one row
  (``bench/serving_latency.py`` measures it side by side);
* eager torch (``inference_mode``) when the export or the check fails, with the reason kept.

Faithful is checked, not assumed: at load time (on the poller thread, off the request path) the
compiled form and the eager network score the same probe rows (:data:`PROBE_SCALES`: random rows
from tiny to huge magnitudes); a largest difference above :data:`TOLERANCE` keeps eager torch.
The choice and the measured difference are reported in ``/v1/models`` (``runtime``).

:class:`Batcher` is the other half: micro-batching for scorers whose single call is costly
(text encoders, detectors). Requests that arrive while a call runs are grouped into the next one;
a lone request is never held back waiting for company, so it adds no latency at concurrency 1.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("deepflow.fastpath")

TOLERANCE = 1e-5  # largest |compiled - eager| allowed on a probability; relative for other outputs
PROBE_SCALES = (0.01, 1.0, 100.0, 1e4)  # probe rows ~ N(0, scale^2), 64 of each
PROBE_ROWS = 64


@dataclass(frozen=True)
class Compiled:
    """A float32 array (rows, features) -> float64 scores, and what runs it."""

    run: Callable[[np.ndarray], np.ndarray]
    runtime: str  # "onnxruntime" | "torch"
    max_diff: float | None = None  # the probe check's largest difference (None: not compared)
    note: str = ""  # why the faster form is not used, when it is not
    single_ms: float = 0.0  # one row, measured at load (median of a few calls)

    def describe(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "max_diff": self.max_diff, "note": self.note or None,
                "single_row_ms": round(self.single_ms, 4)}


def compile_torch(net: Any, n_features: int, output: str = "logit", threads: int = 1) -> Compiled:
    """The fastest faithful form of ``net`` ((B, F) -> (B,); ``output`` "logit": sigmoid applied)."""
    eager = _eager(net, output)
    try:
        compiled, diff = _onnx(net, n_features, output, threads), None
        diff = _max_diff(compiled, eager, n_features, relative=output != "logit")
    except Exception as exc:  # any export/runtime failure: the eager network still serves
        note = f"ONNX export or check failed ({type(exc).__name__}: {str(exc)[:200]}); serving eager torch"
        log.warning(note)
        return _timed(Compiled(eager, "torch", None, note), n_features)
    if not diff <= TOLERANCE:  # also catches NaN
        note = f"ONNX Runtime differs from torch by {diff:.3g} (> {TOLERANCE:g}); serving eager torch"
        log.warning(note)
        return _timed(Compiled(eager, "torch", diff, note), n_features)
    return _timed(Compiled(compiled, "onnxruntime", diff), n_features)


def _eager(net: Any, output: str) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    net = net.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = net(torch.from_numpy(x))
            if output == "logit":
                out = torch.sigmoid(out)
        return out.numpy().astype(np.float64)

    return run


def _onnx(net: Any, n_features: int, output: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort
    import torch

    class Scores(torch.nn.Module):  # the output's transform inside the graph: one ORT call per request
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.net(x)
            return torch.sigmoid(out) if output == "logit" else out

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
        # dynamo=False: the TorchScript-based exporter needs neither onnxscript nor a graph capture
        torch.onnx.export(Scores().eval(), (torch.zeros(2, n_features),), buffer, dynamo=False,
                          input_names=["x"], output_names=["y"], opset_version=17,
                          dynamic_axes={"x": {0: "rows"}, "y": {0: "rows"}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {"x": x})[0].astype(np.float64).reshape(len(x))

    return run


def _max_diff(fast: Callable, eager: Callable, n_features: int, relative: bool) -> float:
    rng = np.random.default_rng(0)
    worst = 0.0
    for scale in PROBE_SCALES:
        x = (rng.standard_normal((PROBE_ROWS, n_features)) * scale).astype(np.float32)
        a, b = fast(x), eager(x).reshape(len(x))
        both = np.isfinite(a) & np.isfinite(b)
        if not np.array_equal(np.isfinite(a), np.isfinite(b)):
            return float("inf")
        diff = np.abs(a[both] - b[both])
        if relative:
            diff = diff / np.maximum(1.0, np.abs(b[both]))
        worst = max(worst, float(diff.max(initial=0.0)))
    return worst


def _timed(compiled: Compiled, n_features: int) -> Compiled:
    x = np.zeros((1, n_features), dtype=np.float32)
    times = []
    for _ in range(7):
        began = time.perf_counter()
        compiled.run(x)
        times.append(time.perf_counter() - began)
    return Compiled(compiled.run, compiled.runtime, compiled.max_diff, compiled.note, 1000 * float(np.median(times)))


# --- micro-batching ---------------------------------------------------------------------------


class Batcher:
    """Group concurrent requests' items into one call of ``fn`` on a worker thread.

    ``fn(items) -> results`` takes a list and returns one result per item, in order. ``await
    batcher.submit(items)`` returns the results of that request's items. While calls run, new
    requests wait in a queue; the next free worker takes everything queued (up to ``max_items``),
    so a lone request starts at once and concurrent ones share a call. ``workers`` threads (default
    one per CPU this process may use) call ``fn`` side by side: with one intra-op thread per call,
    a second worker keeps the second core busy. A failure of a call is raised in every request of
    its group.
    """

    def __init__(self, fn: Callable[[list[Any]], Sequence[Any]], max_items: int = 64, name: str = "batcher",
                 workers: int = 0) -> None:
        self.fn, self.max_items = fn, max(1, max_items)
        self.workers = workers if workers > 0 else max(1, len(os.sched_getaffinity(0)))
        self._queue: list[tuple[list[Any], asyncio.Future, asyncio.AbstractEventLoop]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self.calls = 0  # calls of fn made (a group of one or more requests each)
        self.requests = 0
        self._name = f"deepflow-{name}"
        self._threads: list[threading.Thread] = []  # started by the first request

    async def submit(self, items: list[Any]) -> list[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        with self._lock:
            if self._stopped:
                raise RuntimeError("batcher stopped")
            if not self._threads:
                self._threads = [threading.Thread(target=self._loop, name=f"{self._name}-{i}", daemon=True)
                                 for i in range(self.workers)]
                for thread in self._threads:
                    thread.start()
            self._queue.append((items, future, loop))
        self._wake.set()
        return await future

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            threads = list(self._threads)
        self._wake.set()
        for thread in threads:
            thread.join(timeout=10)

    def _take(self) -> list[tuple[list[Any], asyncio.Future, asyncio.AbstractEventLoop]] | None:
        """The next group (possibly empty); None when stopped and nothing is left."""
        with self._lock:
            group, count = [], 0
            while self._queue and (not group or count + len(self._queue[0][0]) <= self.max_items):
                entry = self._queue.pop(0)
                group.append(entry)
                count += len(entry[0])
            if not self._queue and not self._stopped:
                self._wake.clear()
            if not group and self._stopped:
                return None
            if group:
                self.calls += 1
                self.requests += len(group)
            return group

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            group = self._take()
            if group is None:
                return
            if not group:
                continue
            items = [item for entry in group for item in entry[0]]
            try:
                results, error = list(self.fn(items)), None
                if len(results) != len(items):
                    raise RuntimeError(f"batched call returned {len(results)} results for {len(items)} items")
            except BaseException as exc:  # handed to every waiting request
                results, error = [], exc
            start = 0
            for entry_items, future, loop in group:
                part = results[start:start + len(entry_items)]
                start += len(entry_items)
                loop.call_soon_threadsafe(_settle, future, part, error)


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def batcher(max_items: int, name: str, score: Callable[[Any, list[Any]], Sequence[Any]]) -> Batcher:
    """A :class:`Batcher` for one serving route: each item is (the version serving its request, one
    payload); a grouped call scores each version's payloads together (``score(version, payloads)``),
    so a reload in the middle of a group scores every request on the version it started with."""

    def call(items: list[tuple[Any, Any]]) -> list[Any]:
        out: list[Any] = []
        for _, group in itertools.groupby(items, key=lambda item: id(item[0])):
            group = list(group)
            out.extend(score(group[0][0], [payload for _, payload in group]))
        return out

    return Batcher(call, max_items=max_items, name=f"{name}-batches")
