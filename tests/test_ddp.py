"""DDP in its own job (deepflow/distributed.py): the loader contract, the per-rank batches, the checks
made before anything starts, and, ``slow``, real 2-process CPU (gloo) jobs: the ``table`` kind with
``train.devices=2`` against ``train.devices=1``, and a job whose rank 1 fails.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from deepflow import distributed, training


def rows(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, generator=g), torch.randn(n, generator=g)


class Toy(L.LightningModule):
    """Linear regression; ``fail_rank``: that rank raises in its second training step."""

    def __init__(self, fail_rank: int | None = None) -> None:
        super().__init__()
        self.layer, self.fail_rank = torch.nn.Linear(3, 1), fail_rank

    def training_step(self, batch, index: int) -> torch.Tensor:
        if self.trainer.global_rank == self.fail_rank and index == 1:
            raise RuntimeError(f"toy failure on rank {self.fail_rank}")
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x)[:, 0], y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


# --- the loader contract ----------------------------------------------------------------------------


@pytest.mark.parametrize("loader, says", [
    (DataLoader(TensorDataset(*rows()), batch_size=8), "batches rows itself"),
    (DataLoader(list(range(10)), batch_size=None), "over a list"),
    (DataLoader(TensorDataset(*rows()), batch_size=None), "yields int"),
    ([rows()], "got a list"),
])
def test_other_loaders_are_refused_with_what_they_are(loader, says: str) -> None:
    with pytest.raises(TypeError, match="made by training.batches") as err:
        distributed.loader_parts(loader, "train")
    assert says in str(err.value)


def test_loaders_of_training_batches_give_their_tensors_and_sampler() -> None:
    x, y = rows()
    for shuffle in (True, False):
        loader = training.batches(x, y, batch_size=8, shuffle=shuffle, seed=3)
        tensors, sampler = distributed.loader_parts(loader, "train")
        assert tensors[0] is x and tensors[1] is y and sampler is loader.sampler
    shuffled = training.batches(x, y, batch_size=8, shuffle=True, seed=3)
    distributed.loader_parts(shuffled, "train")
    assert shuffled.sampler.epoch == 0  # looking at the loader did not use up an epoch's order


# --- the per-rank batches ---------------------------------------------------------------------------


@pytest.mark.parametrize("n, batch_size, world", [(103, 10, 2), (101, 10, 2), (100, 8, 3), (7, 3, 3), (64, 64, 4)])
def test_ranks_split_every_batch_disjointly_and_take_the_same_number(n: int, batch_size: int, world: int) -> None:
    for epoch in (0, 1):
        one = training.ShuffledBatches(n, batch_size, seed=5)
        one.set_epoch(epoch)
        whole = list(one)
        parts = []
        for rank in range(world):
            sampler = distributed.RankBatches(training.ShuffledBatches(n, batch_size, seed=5), rank, world)
            sampler.set_epoch(epoch)
            parts.append(list(sampler))
            assert len(parts[-1]) == len(sampler)
        assert len({len(p) for p in parts}) == 1  # the same number of steps on every rank
        everything = [i for p in parts for b in p for i in b]
        assert sorted(everything) == list(range(n))  # disjoint, and every row once
        for step in range(len(parts[0])):  # step k of every rank: a slice of the one-device batch k
            together = sorted(i for p in parts for i in p[step])
            expected = sorted(whole[step]) if step < len(parts[0]) - 1 or len(whole) == len(parts[0]) \
                else sorted(whole[step] + whole[step + 1])
            assert together == expected
            sizes = [len(p[step]) for p in parts]
            assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_the_order_depends_on_the_epoch_and_only_on_it() -> None:
    def epoch_batches(epoch: int) -> list[list[int]]:
        sampler = distributed.RankBatches(training.ShuffledBatches(50, 10, seed=1), 1, 2)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert epoch_batches(0) == epoch_batches(0) and epoch_batches(0) != epoch_batches(1)
    unset = distributed.RankBatches(training.ShuffledBatches(50, 10, seed=1), 1, 2)
    assert list(unset) == epoch_batches(0) and list(unset) == epoch_batches(1)  # a new order each pass


def test_fewer_rows_than_ranks_is_an_error() -> None:
    with pytest.raises(ValueError, match="3 training rows cannot be split over 4 ranks"):
        distributed.RankBatches(training.ShuffledBatches(3, 2, seed=0), 0, 4).whole()
    with pytest.raises(ValueError, match="batch of 1 rows cannot .* 2 ranks: raise train.batch_size to at least 2"):
        distributed.RankBatches(training.ShuffledBatches(40, 1, seed=0), 0, 2).whole()
    with pytest.raises(ValueError, match="rank 2 of 2"):
        distributed.RankBatches(training.ShuffledBatches(3, 2, seed=0), 2, 2)


# --- what is checked before a job starts ------------------------------------------------------------


def fit_toy(module: L.LightningModule, devices: int = 2, nodes: int = 1, n: int = 40, **kwargs):
    x, y = rows(n)
    return distributed.fit(module, training.batches(x, y, batch_size=8, shuffle=True, seed=1), None,
                           max_epochs=2, monitor="val/x", patience=1, devices=devices, nodes=nodes, **kwargs)


def test_multi_node_needs_an_endpoint_and_a_shared_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPFLOW_RDZV_ENDPOINT", raising=False)
    with pytest.raises(ValueError, match="DEEPFLOW_RDZV_ENDPOINT.*DEEPFLOW_DDP_DIR.*follow"):
        fit_toy(Toy(), devices=1, nodes=2)


def test_bad_options_and_too_few_rows_fail_before_a_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPFLOW_DDP_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="mode='best'"):
        fit_toy(Toy(), mode="best")
    with pytest.raises(ValueError, match="1 training rows cannot be split over 2 ranks"):
        fit_toy(Toy(), n=1)
    assert list(tmp_path.iterdir()) == []


def test_a_module_that_does_not_pickle_is_refused_and_leaves_nothing(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPFLOW_DDP_DIR", str(tmp_path))
    module = Toy()
    module.hook = lambda: None  # a lambda: no pickle
    with pytest.raises(TypeError, match="Toy cannot be saved for a DDP job.*train.devices=1"):
        fit_toy(module)
    assert list(tmp_path.iterdir()) == []


def test_commands_stay_on_loopback_on_one_node() -> None:
    one = distributed.command(Path("/j/ddp-1"), 2, 1, "127.0.0.1:29500", host=True)
    assert one[one.index("--local-addr") + 1] == "127.0.0.1" and one[-3:] == ["deepflow.distributed", "run", "/j/ddp-1"]
    assert one[one.index("--nproc-per-node") + 1] == "2" and "is_host=true" in one
    many = distributed.command(Path("/j/ddp-1"), 4, 3, "10.0.0.1:29400", host=False)
    assert "--local-addr" not in many and many[many.index("--nnodes") + 1] == "3" and "is_host=false" in many
    assert pickle.loads(pickle.dumps(training.ShuffledBatches(5, 2, 1))).seed == 1  # what the job file holds


# --- real jobs: 2 CPU processes (gloo) ------------------------------------------------------------


@pytest.mark.slow  # ~20 s on 2 quiet cores, most of it the 2 ranks' start (torch + Lightning imports)
def test_two_processes_learn_what_one_process_learns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_table_models import make

    monkeypatch.setenv("DEEPFLOW_DDP_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("DEEPFLOW_ACCELERATOR", "cpu")
    uc, splits = make("binary")
    # No dropout: the 2-rank fit is then the 1-process fit step for step (same batches, order and
    # learning rate; DDP averages the halves' gradients), so the metrics may differ only by float
    # summation order. Measured: identical to the last digit; tolerance 1e-4 (AUPRC on 135 rows moves
    # by >= 1/135 per rank swap, far above this). With dropout the ranks draw other masks: not compared.
    uc.cfg.train.epochs, uc.cfg.train.patience, uc.cfg.model.dropout = 4, 4, 0.0
    runs = {}
    for devices in (1, 2):
        uc.cfg.train.devices = devices
        logged: list[tuple[int, dict]] = []
        scorer, info = uc.fit("shallow", "candidate", splits, log=lambda m, e, into=logged: into.append((e, m)))
        test = splits["test"]
        runs[devices] = (uc.evaluate(scorer.predict(test), test)[uc.primary_metric], info, logged, scorer)
    (one, info1, log1, _), (two, info2, log2, scorer2) = runs[1], runs[2]
    assert abs(one - two) <= 1e-4, (one, two)
    assert [e for e, _ in log2] == [0, 1, 2, 3] and all("val/auprc" in m and "train/loss" in m for _, m in log2)
    assert [m["val/auprc"] for _, m in log2] == pytest.approx([m["val/auprc"] for _, m in log1], abs=1e-4)
    assert (info2["best_epoch"], info2["epochs_run"], info2["steps"], info2["stopped_by"]) == \
        (info1["best_epoch"], info1["epochs_run"], info1["steps"], "max epochs")
    net = scorer2.model
    assert all(p.device.type == "cpu" for p in net.parameters()) and not net.training
    assert list((tmp_path / "jobs").iterdir()) == []  # the job folder is removed after a good job


@pytest.mark.slow  # ~12 s: one job of 2 ranks
def test_a_failing_rank_stops_the_job_with_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPFLOW_DDP_DIR", str(tmp_path))
    monkeypatch.setenv("DEEPFLOW_ACCELERATOR", "cpu")
    monkeypatch.setenv("DEEPFLOW_DDP_TIMEOUT", "120")
    with pytest.raises(RuntimeError, match="DDP job failed") as err:
        fit_toy(Toy(fail_rank=1))
    assert "toy failure on rank 1" in str(err.value) and "rank1.log" in str(err.value)
    (job,) = tmp_path.iterdir()  # kept for the post-mortem, named in the error
    assert str(job) in str(err.value) and not (job / distributed.LAUNCH).exists()
    assert not (job / distributed.RESULT).exists()


@pytest.mark.slow  # ~18 s: two "hosts" on this one, 1 rank each
def test_two_nodes_through_a_follower(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Node 0 is this process's job; the other node is `deepflow.distributed follow` on the shared folder
    (here both on 127.0.0.1; across hosts the endpoint is node 0's address and the folder a shared mount)."""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import free_port

    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setenv("DEEPFLOW_DDP_DIR", str(shared))
    monkeypatch.setenv("DEEPFLOW_RDZV_ENDPOINT", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("DEEPFLOW_ACCELERATOR", "cpu")
    monkeypatch.setenv("DEEPFLOW_DDP_TIMEOUT", "120")
    if Path("/sys/class/net/lo").exists():
        monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # keep the ranks' traffic on loopback here
    with (tmp_path / "follower.log").open("w") as out:
        follower = subprocess.Popen([sys.executable, "-m", "deepflow.distributed", "follow", str(shared),
                                     "--idle", "90"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        module = Toy()
        result = fit_toy(module, devices=1, nodes=2)
    finally:
        if follower.poll() is None:
            os.killpg(follower.pid, signal.SIGTERM)
        follower.wait(30)
    assert (result.epochs_run, result.steps) == (2, 10)  # 40 rows in 5 global batches of 8, 2 epochs
    assert "joining" in (tmp_path / "follower.log").read_text()
    assert not module.training and list(shared.iterdir()) == []


def test_a_module_class_from_main_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPFLOW_DDP_DIR", str(tmp_path))
    script_class = type("Script", (Toy,), {"__module__": "__main__"})  # as if defined in a script run as __main__
    with pytest.raises(TypeError, match="defined in __main__; move Script into a module"):
        fit_toy(script_class())
    assert list(tmp_path.iterdir()) == []
