"""Multi-device and multi-node training (Lightning DDP) as its own job, for ``training.fit`` with
``train.devices`` x ``train.nodes`` > 1 (docs/team.md, "Lightning: GPUs and DDP").

The caller's process (a Prefect task, a CLI command) never becomes a rank. :func:`fit` writes the
module, the loaders' tensors and samplers and the options to a job folder, runs
``python -m torch.distributed.run ... -m deepflow.distributed run <job>`` in a process group of its
own, forwards to ``log`` the per-epoch metrics rank 0 appends to ``metrics.jsonl`` (only this
process talks to MLflow), loads rank 0's best weights into ``module`` (CPU, eval mode) and returns a
FitResult, as a one-device fit does.

Loader contract: ``train``/``val`` come from ``training.batches``: a DataLoader with ``batch_size=None``
over a TensorDataset of in-memory tensors whose sampler yields lists of row indices; else TypeError.

Batches: ``train.batch_size`` stays the *global* batch. Every rank walks the one-device batches in the
one-device order and takes its 1/N slice of each (:class:`RankBatches`); DDP averages the slices'
gradients, so with a batch size divisible by N a step is the one-device step and the learning rate
is left as it is: ``train.devices`` changes where a model learns, not what (up to float summation
order, dropout draws, and BatchNorm statistics per rank on CPU, where SyncBatchNorm cannot run;
``train/loss`` is rank 0's slice). Validation: the whole split on every rank, so all ranks compute
the same metric and early stopping agrees. Each rank loads the whole job file (memory: N copies).

Multi-node: ``DEEPFLOW_RDZV_ENDPOINT`` (host:port of this host, reachable from the others) and
``DEEPFLOW_DDP_DIR`` (a folder every host mounts at the same path); this process runs node 0, each
other host ``python -m deepflow.distributed follow $DEEPFLOW_DDP_DIR``, which joins every job
announced there. A DDP fit is not checkpointed for resuming (``deepflow.checkpoints``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from deepflow import progress, trainer_setup

JOB, WEIGHTS, METRICS, RESULT, LAUNCH = "job.pt", "best.pt", "metrics.jsonl", "result.json", "launch.json"
GRACE_S = 300.0  # job start (interpreters, imports, rendezvous) and end, over a fit's time limit


# --- the loader contract and the per-rank batches -------------------------------------------------


def loader_parts(loader: Any, what: str) -> tuple[tuple[torch.Tensor, ...], Sampler]:
    """(tensors, batch sampler) of a loader made by ``training.batches``; TypeError for any other."""
    need = (f"{what}: DDP needs a loader made by training.batches (a DataLoader with batch_size=None over a "
            "TensorDataset of in-memory tensors, whose sampler yields lists of row indices)")
    if not isinstance(loader, DataLoader):
        raise TypeError(f"{need}; got a {type(loader).__name__}")
    if loader.batch_size is not None or loader.batch_sampler is not None:
        raise TypeError(f"{need}; got a DataLoader that batches rows itself (batch_size={loader.batch_size})")
    if not isinstance(loader.dataset, TensorDataset):
        raise TypeError(f"{need}; got a DataLoader over a {type(loader.dataset).__name__}")
    first = next(_peek(loader.sampler), None)
    if first is not None and not isinstance(first, (list, tuple)):
        raise TypeError(f"{need}; its sampler {type(loader.sampler).__name__} yields {type(first).__name__}, not lists")
    return tuple(loader.dataset.tensors), loader.sampler


def _peek(sampler: Sampler) -> Iterator:  # a copy: iterating may advance the sampler's own epoch
    return iter(copy.deepcopy(sampler))


class RankBatches(Sampler[list[int]]):
    """Rank ``rank`` of ``world``'s slice of every batch of ``batches`` (the one-device batch sampler),
    epoch by epoch: Lightning calls :meth:`set_epoch`, passed on to ``batches`` when it has one, so
    every rank slices the same order. Slices are contiguous, their sizes differ by at most one row;
    every rank yields the same number of batches; together they cover each row once."""

    def __init__(self, batches: Sampler, rank: int, world: int) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} of {world} ranks")
        self.batches, self.rank, self.world, self.epoch = batches, rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def whole(self) -> list[list[int]]:
        """This epoch's one-device batches, a last one with fewer rows than ranks joined to the one before."""
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(self.epoch)
        out = [list(map(int, b)) for b in self.batches]
        if len(out) > 1 and len(out[-1]) < self.world:
            out[-2].extend(out.pop())
        rows, smallest = sum(len(b) for b in out), min((len(b) for b in out), default=0)
        if rows < self.world:
            raise ValueError(f"{rows} training rows cannot be split over {self.world} ranks: lower train.devices")
        if smallest < self.world:
            raise ValueError(f"a training batch of {smallest} rows cannot be split over {self.world} ranks: "
                             f"raise train.batch_size to at least {self.world}")
        return out

    def __len__(self) -> int:
        return len(self.whole())

    def __iter__(self) -> Iterator[list[int]]:
        whole = self.whole()
        self.epoch += 1  # a loop that never calls set_epoch still gets a new order each pass
        for batch in whole:
            size, extra = divmod(len(batch), self.world)
            start = self.rank * size + min(self.rank, extra)
            yield batch[start:start + size + (self.rank < extra)]


# --- the caller's side -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(job: Path, devices: int, nodes: int, endpoint: str, host: bool) -> list[str]:
    """The torchrun command of one node of ``job`` (``host``: the node that serves the rendezvous)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--nproc-per-node", str(devices),
           "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", job.name,
           "--rdzv-conf", f"is_host={str(host).lower()}", "--max-restarts", "0"]
    if nodes == 1:
        cmd += ["--local-addr", "127.0.0.1"]
    return [*cmd, "-m", "deepflow.distributed", "run", str(job)]


def job_env(threads: int, nodes: int) -> dict[str, str]:
    """The ranks' environment: this process's import path (the pickled module's classes resolve as
    here), ``threads`` torch threads per rank, and gloo on loopback only on a single node."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([p for p in sys.path if p and os.path.isdir(p)])}
    if nodes == 1 and sys.platform.startswith("linux") and Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


def _stop(proc: subprocess.Popen) -> None:
    """End the job's process group (torchrun and its ranks), SIGTERM then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


def _tail(job: Path, lines: int = 20) -> str:  # the last lines of torchrun's output and of each rank's
    paths = [p for p in [job / "launcher.log", *sorted((job / "logs").glob("rank*.log"))] if p.is_file()]
    return "\n".join(f"--- {p.name} ---\n" + "\n".join(p.read_text(errors="replace").rstrip().splitlines()[-lines:])
                     for p in paths) or "(no logs)"


class _Lines:
    """Complete lines appended to a file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def new(self) -> Iterable[dict]:
        if not self.path.is_file():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        done = data[: data.rfind(b"\n") + 1]
        self.offset += len(done)
        return [json.loads(line) for line in done.decode().splitlines() if line.strip()]


def fit(module: Any, train: DataLoader, val: DataLoader | None, *, max_epochs: int, monitor: str, patience: int,
        log: Callable[[dict[str, float], int], None] | None = None, fast_dev_run: bool = False, mode: str = "max",
        time_limit_s: float | None = None, devices: int = 2, nodes: int = 1):
    """``training.fit``'s contract on ``devices`` processes (CPU) or GPUs on each of ``nodes`` hosts."""
    if mode not in ("max", "min") or devices < 1 or nodes < 1:
        raise ValueError(f"mode={mode!r}, train.devices={devices}, train.nodes={nodes}: expected mode 'max' or "
                         "'min' and counts >= 1")
    train_parts = loader_parts(train, "train")
    val_parts = None if val is None else loader_parts(val, "val")
    RankBatches(train_parts[1], 0, devices * nodes).whole()  # too few rows: say so before starting anything
    endpoint = os.environ.get("DEEPFLOW_RDZV_ENDPOINT", "").strip()
    base = os.environ.get("DEEPFLOW_DDP_DIR", "").strip()
    if nodes > 1 and (":" not in endpoint or not base):
        raise ValueError(f"train.nodes={nodes}: set DEEPFLOW_RDZV_ENDPOINT (host:port of this host, reachable from "
                         "the other hosts) and DEEPFLOW_DDP_DIR (a folder every host mounts at the same path), and "
                         "run `python -m deepflow.distributed follow $DEEPFLOW_DDP_DIR` on each other host")
    if nodes == 1:
        endpoint = f"127.0.0.1:{_free_port()}"
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    job = Path(tempfile.mkdtemp(prefix="ddp-", dir=base or None))
    (job / "logs").mkdir()
    threads = max(1, torch.get_num_threads() // devices)
    options = {"max_epochs": max_epochs, "monitor": monitor, "patience": patience, "mode": mode,
               "fast_dev_run": fast_dev_run, "devices": devices, "nodes": nodes, "threads": threads,
               "time_limit_s": time_limit_s,  # training only (as in training.fit), not the job's start
               "seed": int(getattr(train_parts[1], "seed", 0)), "trainer": trainer_setup.trainer_options()}
    try:
        if type(module).__module__ == "__main__":  # the ranks' __main__ is this module: it would not resolve
            raise TypeError(f"its class is defined in __main__; move {type(module).__name__} into a module")
        torch.save({"module": module, "train": train_parts, "val": val_parts, "options": options}, job / JOB)
    except Exception as exc:  # pickling: a lambda, an open file, a local class in the module
        shutil.rmtree(job, ignore_errors=True)
        raise TypeError(f"{type(module).__name__} cannot be saved for a DDP job ({type(exc).__name__}: {exc}); "
                        "train it with train.devices=1") from exc
    if nodes > 1:
        (job / LAUNCH).write_text(json.dumps({"devices": devices, "nodes": nodes, "endpoint": endpoint}))
    limit = float(os.environ.get("DEEPFLOW_DDP_TIMEOUT", 0) or 0) or (
        None if time_limit_s is None else time_limit_s + GRACE_S)
    (entry, member), total = progress.current(), 1 if fast_dev_run else max_epochs
    lines, history = _Lines(job / METRICS), []
    start = time.perf_counter()
    with (job / "launcher.log").open("wb") as out:
        proc = subprocess.Popen(command(job, devices, nodes, endpoint, host=True), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                env=job_env(threads, nodes))
    try:
        while True:
            finished = proc.poll() is not None
            for line in lines.new():
                history.append(line["metrics"])
                if log is not None:
                    log(line["metrics"], line["epoch"])
                progress.epoch(entry, member, line["epoch"] + 1, total, seconds=line["seconds"],
                               may_stop_early=val is not None and not fast_dev_run)
            if finished:
                break
            if limit is not None and time.perf_counter() - start > limit:
                _stop(proc)
                raise TimeoutError(f"DDP job still running after {limit:.0f} s (DEEPFLOW_DDP_TIMEOUT); stopped. "
                                   f"Its files are kept in {job}:\n{_tail(job)}")
            time.sleep(0.2)
    finally:
        _stop(proc)
        (job / LAUNCH).unlink(missing_ok=True)
    if proc.returncode != 0 or not (job / RESULT).is_file():
        raise RuntimeError(f"DDP job failed (torchrun exit code {proc.returncode}); its files are kept in {job}:\n"
                           f"{_tail(job)}")
    result = json.loads((job / RESULT).read_text())
    module.load_state_dict(torch.load(job / WEIGHTS, map_location="cpu", weights_only=True))
    module.cpu().eval()
    progress.fitted(entry, member, result["epochs_run"], total, seconds=result["seconds"])
    shutil.rmtree(job, ignore_errors=True)
    return trainer_setup.FitResult(best_value=result["best_value"], best_epoch=result["best_epoch"],
                              epochs_run=result["epochs_run"], steps=result["steps"], seconds=result["seconds"],
                              history=history, stopped_by=result["stopped_by"])


# --- the ranks' side -------------------------------------------------------------------------------


def _save(state: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({k: v.detach().cpu().clone() for k, v in state.items()}, tmp)
    os.replace(tmp, path)


def _callbacks(job: Path, options: dict, has_val: bool) -> tuple[list, Any, Any, Any]:
    import lightning as L

    class BestWeights(L.Callback):
        """The best epoch's value on every rank (they agree); its weights in ``best.pt``, by rank 0."""

        def __init__(self) -> None:
            self.best: float | None = None
            self.best_epoch = -1

        def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            metric = trainer.callback_metrics.get(options["monitor"])
            if trainer.sanity_checking or metric is None:
                return
            value = float(metric)
            if self.best is None or (value > self.best if options["mode"] == "max" else value < self.best):
                self.best, self.best_epoch = value, trainer.current_epoch
                if trainer.is_global_zero:
                    _save(module.state_dict(), job / WEIGHTS)

    class EpochLines(L.Callback):
        """Rank 0 appends each finished epoch's ``train/*`` and ``val/*`` metrics to ``metrics.jsonl``."""

        def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            if trainer.sanity_checking or not trainer.is_global_zero:
                return
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))}
            line = {"epoch": trainer.current_epoch, "metrics": metrics, "seconds": time.perf_counter() - self.start}
            with (job / METRICS).open("a") as f:
                f.write(json.dumps(line) + "\n")

    best = BestWeights()
    callbacks: list[L.Callback] = [best, EpochLines()]
    stopper = timer = None
    if has_val:
        stopper = L.pytorch.callbacks.EarlyStopping(monitor=options["monitor"], mode=options["mode"],
                                                    patience=options["patience"])
        callbacks.append(stopper)
    if options["time_limit_s"] is not None:
        timer = L.pytorch.callbacks.Timer(duration=timedelta(seconds=max(options["time_limit_s"], 0.0)),
                                          interval="step")
        callbacks.append(timer)
    return callbacks, best, stopper, timer


def run(job: Path) -> None:
    """One rank of ``job`` (torchrun sets RANK and WORLD_SIZE): its output goes to ``logs/rank<r>.log``."""
    import warnings

    import lightning as L
    from lightning.pytorch.strategies import DDPStrategy

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    fd = os.open(job / "logs" / f"rank{rank}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1), os.dup2(fd, 2)
    warnings.filterwarnings("ignore", message=".*(sync_dist|LeafSpec|does not have many workers).*")
    spec = torch.load(job / JOB, map_location="cpu", weights_only=False)
    options, module = spec["options"], spec["module"]
    trainer_setup.seed_everything(options["seed"] + rank, options["threads"])  # own dropout draws per rank
    train = DataLoader(TensorDataset(*spec["train"][0]), batch_size=None,
                       sampler=RankBatches(spec["train"][1], rank, world))
    val = None if spec["val"] is None else DataLoader(TensorDataset(*spec["val"][0]), batch_size=None,
                                                      sampler=spec["val"][1])
    callbacks, best, stopper, timer = _callbacks(job, options, val is not None)
    trainer_options = {k: v for k, v in options["trainer"].items() if k != "devices"}
    gpu = torch.cuda.is_available() and trainer_options["accelerator"] in ("auto", "gpu", "cuda")
    trainer = L.Trainer(
        **trainer_options, devices=options["devices"], num_nodes=options["nodes"],
        strategy=DDPStrategy(find_unused_parameters=True), sync_batchnorm=gpu, use_distributed_sampler=False,
        max_epochs=options["max_epochs"], logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, deterministic=True,
        fast_dev_run=options["fast_dev_run"], callbacks=callbacks)
    start = time.perf_counter()
    trainer.fit(module, train, val)
    seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return
    if best.best is None:  # no validation (or no monitored value): the last weights, as training.fit keeps them
        _save(module.state_dict(), job / WEIGHTS)
    stopped_by = ("early stopping" if stopper is not None and stopper.stopped_epoch > 0
                  else "time limit" if timer is not None and timer.time_remaining("train") <= 0 else "max epochs")
    result = {"best_value": best.best, "best_epoch": best.best_epoch, "epochs_run": trainer.current_epoch,
              "steps": trainer.global_step, "seconds": seconds, "stopped_by": stopped_by, "world": world}
    (job / RESULT).write_text(json.dumps(result))


def follow(folder: Path, idle_s: float | None, poll_s: float = 1.0) -> None:
    """Another host of multi-node fits: join every job announced in ``folder`` (``DEEPFLOW_DDP_DIR``), one at
    a time, until ``idle_s`` seconds pass without one (None: until stopped)."""
    seen: set[str] = set()
    last = time.monotonic()
    while idle_s is None or time.monotonic() - last < idle_s:
        for launch in sorted(folder.glob(f"*/{LAUNCH}")):
            job = launch.parent
            if job.name in seen:
                continue
            seen.add(job.name)
            try:
                spec = json.loads(launch.read_text())
            except (OSError, ValueError):
                continue  # removed or half-written: that job is over or not ours to join
            print(f"joining {job} ({spec['nodes']} nodes x {spec['devices']} devices)", flush=True)
            cmd = command(job, spec["devices"], spec["nodes"], spec["endpoint"], host=False)
            subprocess.run(cmd, env=job_env(max(1, (os.cpu_count() or 1) // spec["devices"]), spec["nodes"]),
                           stdin=subprocess.DEVNULL, check=False)
            last = time.monotonic()
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deepflow.distributed", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("run", help="one rank of a job (started by torchrun)").add_argument("job", type=Path)
    follower = sub.add_parser("follow", help="on each other host of a multi-node fit: join its jobs")
    follower.add_argument("folder", type=Path, help="DEEPFLOW_DDP_DIR, the same shared folder as on node 0")
    follower.add_argument("--idle", type=float, default=None, help="stop after this many seconds without a job")
    args = parser.parse_args(argv)
    run(args.job) if args.what == "run" else follow(args.folder, args.idle)


if __name__ == "__main__":
    main()
