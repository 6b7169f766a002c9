"""Crash-safe training: per-epoch checkpoints of the pipeline's member fits and their resume
(deepflow/checkpoints.py, training.EpochCheckpoint).

Fast: the key, the atomic write, what is left after success, an exception and a dead owner, refused
checkpoints, the (seed, epoch) shuffle. In process: a fit stopped after epoch 5 and resumed ends
with the same weights, metrics and curve as an uninterrupted one. Slow: a real `deepflow run` killed
with SIGKILL once a checkpoint exists; the same command resumes from it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from deepflow import checkpoints, processes, settings, training


@dataclasses.dataclass
class Train:
    seed: int = 7
    epochs: int = 9


@dataclasses.dataclass
class Cfg:
    train: Train = dataclasses.field(default_factory=Train)
    lr: float = 0.01


def parts(**change) -> dict:
    base = dict(entry="toy", member="deep", kind="candidate", data_version="files:abc", fingerprint="abc", cfg=Cfg())
    return checkpoints.key_parts(**{**base, **change})


@pytest.fixture
def ckdir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "checkpoints"
    monkeypatch.setenv("DEEPFLOW_CHECKPOINT_DIR", str(folder))
    return folder


# --- the key ---------------------------------------------------------------------------------------


def test_the_key_changes_with_every_part_of_the_work_and_only_with_it() -> None:
    key = checkpoints.key_of(parts())
    assert key == checkpoints.key_of(parts())  # stable
    others = [parts(entry="toy2"), parts(member="shallow"), parts(kind="baseline"), parts(data_version="files:abd"),
              parts(fingerprint="abd"), parts(cfg=Cfg(lr=0.02)), parts(cfg=Cfg(train=Train(seed=8)))]
    assert len({key, *(checkpoints.key_of(p) for p in others)}) == len(others) + 1
    p = parts()
    assert p["seed"] == 7 and p["source"] == checkpoints.source_fingerprint() and p["torch"] == torch.__version__


def test_the_setting_names_the_folder_or_turns_checkpoints_off(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("DEEPFLOW_CHECKPOINT_DIR", raising=False)
    assert settings.checkpoint_dir() == settings.PROJECT_ROOT / ".checkpoints"
    monkeypatch.setenv("DEEPFLOW_CHECKPOINT_DIR", str(tmp_path))
    assert settings.checkpoint_dir() == tmp_path
    monkeypatch.setenv("DEEPFLOW_CHECKPOINT_DIR", "off")
    with checkpoints.member(parts()) as m:
        assert m is None and checkpoints.active() is None


# --- files: atomic write, what is left when ----------------------------------------------------------


def test_a_write_that_fails_midway_leaves_the_previous_file_and_no_temporary(tmp_path) -> None:
    path = tmp_path / "fit-0.ckpt"
    checkpoints.atomic_write(path, lambda tmp: tmp.write_text("epoch 1"))

    def broken(tmp: Path) -> None:
        tmp.write_text("half of epoch 2")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        checkpoints.atomic_write(path, broken)
    assert path.read_text() == "epoch 1"
    assert [p.name for p in tmp_path.iterdir()] == ["fit-0.ckpt"]


def test_success_deletes_the_members_checkpoints_an_exception_keeps_them(ckdir) -> None:
    with checkpoints.member(parts()) as m:
        assert checkpoints.active() is m and json.loads((m.folder / "key.json").read_text())["parts"] == parts()
        m.next_fit().write(lambda tmp: tmp.write_bytes(b"x"))
        assert (m.folder / "fit-0.ckpt").exists()
    assert not m.folder.exists() and checkpoints.active() is None

    with pytest.raises(KeyboardInterrupt), checkpoints.member(parts()) as m:
        m.next_fit().write(lambda tmp: tmp.write_bytes(b"x"))
        raise KeyboardInterrupt
    assert (m.folder / "fit-0.ckpt").exists() and checkpoints.active() is None


def test_a_finished_member_removes_other_keys_only_of_dead_owners(ckdir) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    base = ckdir / "toy" / "deep"
    for name, owner in (("old-dead", processes.identity(dead.pid)), ("old-alive", processes.identity())):
        (base / name).mkdir(parents=True)
        (base / name / "key.json").write_text(json.dumps({"owner": owner}))
    with checkpoints.member(parts()):
        pass
    assert sorted(p.name for p in base.iterdir()) == ["old-alive"]


def test_a_second_process_of_the_same_work_writes_no_checkpoints(ckdir) -> None:
    code = ("import json; from deepflow import checkpoints\n"
            f"with checkpoints.member(json.loads({json.dumps(parts())!r})) as m:\n    print(m is None, flush=True)\n")
    with checkpoints.member(parts()) as mine:
        assert mine is not None
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                               cwd=Path(__file__).parents[1])
    assert other.stdout.strip() == "True", other.stderr
    assert "another process is doing the same work" in other.stderr


# --- refused checkpoints -------------------------------------------------------------------------


class Noisy(L.LightningModule):
    """Dropout, its own noise generator, Adam and an epoch-wise step schedule: every state a resume
    must bring back. ``stop_at``: raise as that epoch starts (the fit's checkpoint has ``stop_at`` epochs)."""

    def __init__(self, stop_at: int | None = None, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Dropout(0.3), nn.Linear(width, 1))
        self.noise = torch.Generator().manual_seed(5)
        self.stop_at = stop_at

    def training_step(self, batch, _):
        x, y = batch
        x = x + 0.01 * torch.randn(x.shape, generator=self.noise)
        loss = nn.functional.mse_loss(self.net(x).squeeze(-1), y)
        self.log("train/loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val/score", -nn.functional.mse_loss(self.net(x).squeeze(-1), y))

    def on_train_epoch_start(self) -> None:
        if self.current_epoch == self.stop_at:
            raise Stopped(f"stopped at epoch {self.stop_at}")

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=0.01)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)}


class Stopped(RuntimeError):
    pass


def tiny_fit(key: dict | None, stop_at: int | None = None, width: int = 16, epochs: int = 9):
    """Seed, build, fit (inside ``checkpoints.member(key)`` unless None); the module, result, logged curve."""
    import contextlib

    training.seed_everything(0, 1)
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(1))
    module, curve = Noisy(stop_at, width), []
    with checkpoints.member(key) if key is not None else contextlib.nullcontext():
        result = training.fit(module, training.batches(x, x.sum(-1), batch_size=32, shuffle=True, seed=3),
                              training.batches(x[:64], x[:64].sum(-1), batch_size=64, shuffle=False),
                              max_epochs=epochs, monitor="val/score", patience=3,
                              log=lambda metrics, epoch: curve.append((epoch, metrics)))
    return module, result, curve


def stopped_fit(key: dict, at: int) -> Path:
    with pytest.raises(Stopped):
        tiny_fit(key, stop_at=at)
    (path,) = (settings.checkpoint_dir() / "toy" / "deep").glob("*/fit-0.ckpt")
    assert torch.load(path, weights_only=True)["deepflow"]["epochs"] == at
    return path


def test_a_checkpoint_of_other_work_is_never_loaded(ckdir, caplog) -> None:
    path = stopped_fit(parts(), at=2)
    foreign = ckdir / "toy" / "deep" / checkpoints.key_of(parts(fingerprint="zzz"))
    foreign.mkdir()
    path.rename(foreign / "fit-0.ckpt")  # another key's file, moved into this key's folder
    with caplog.at_level(logging.WARNING, logger="deepflow.checkpoints"):
        _, result, _ = tiny_fit(parts(fingerprint="zzz"), epochs=3)
    assert result.resumed_from_epoch == 0 and result.epochs_run == 3
    assert "it was written for other work" in caplog.text
    assert not (foreign / "fit-0.ckpt").exists()  # refused, deleted, and the finished member cleaned up


@pytest.mark.parametrize("damage", ["truncated", "other model"])
def test_an_unreadable_or_misfitting_checkpoint_is_refused_and_the_fit_starts_over(ckdir, caplog, damage) -> None:
    path = stopped_fit(parts(), at=2)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="deepflow.checkpoints"):
        _, result, curve = tiny_fit(parts(), width=16 if damage == "truncated" else 8, epochs=3)
    assert result.resumed_from_epoch == 0 and [e for e, _ in curve] == [0, 1, 2]
    assert ("does not load" if damage == "truncated" else "do not fit the model") in caplog.text


# --- exactness ---------------------------------------------------------------------------------------


def test_the_shuffle_order_is_a_function_of_seed_and_epoch() -> None:
    def order(seed: int, epoch: int | None) -> list[int]:
        sampler = training.ShuffledBatches(50, 8, seed)
        if epoch is not None:
            sampler.set_epoch(epoch)
        return [i for batch in sampler for i in batch]

    assert sorted(order(1, 3)) == list(range(50)) and len(list(training.ShuffledBatches(50, 8, 1))) == 7
    assert order(1, 3) == order(1, 3) != order(1, 4) != order(2, 4)
    passes = training.ShuffledBatches(50, 8, 1)  # never told the epoch: each pass is the next one
    assert [[i for b in passes for i in b] for _ in range(2)] == [order(1, 0), order(1, 1)]


def test_a_resumed_fit_ends_exactly_as_an_uninterrupted_one(ckdir) -> None:
    module, result, curve = tiny_fit(None)
    stopped_fit(parts(), at=5)
    resumed, again, curve_again = tiny_fit(parts())
    assert again.resumed_from_epoch == 5 and result.resumed_from_epoch == 0
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    assert (again.best_value, again.best_epoch, again.epochs_run, again.steps, again.stopped_by) == (
        result.best_value, result.best_epoch, result.epochs_run, result.steps, result.stopped_by)
    assert curve_again == curve  # epochs 0-4 replayed from the checkpoint, 5-8 trained again
    assert not any(ckdir.rglob("*.ckpt"))


# --- a real kill -9 --------------------------------------------------------------------------------


def saved_epochs(folder: Path) -> int:
    """Completed epochs in the newest checkpoint under ``folder`` (0: none yet)."""
    found = 0
    for path in folder.rglob("fit-*.ckpt"):
        try:
            found = max(found, int(torch.load(path, weights_only=True)["deepflow"]["epochs"]))
        except (OSError, RuntimeError, EOFError, KeyError):  # replaced while read: the next look sees it
            continue
    return found


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_run_killed_mid_training_resumes_from_its_last_epoch(tmp_path) -> None:
    from mlflow import MlflowClient

    from tests.test_process_faults import command_env, deepflow, prepared, runs, stop

    checkpoints.source_fingerprint.cache_clear()
    source = checkpoints.source_fingerprint()  # part of the key: an edit between the two runs is other work
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**command_env(tmp_path, uri), "DEEPFLOW_CHECKPOINT_DIR": str(tmp_path / "ckpt")}
    args = ["train", "paysim", prepared(tmp_path), "candidates=[shallow]", "baselines=[]", "train.epochs=12",
            "train.patience=12", "train.batch_size=256"]
    first, out, err = deepflow(tmp_path, env, *args)
    try:
        deadline = time.monotonic() + 90
        while saved_epochs(tmp_path / "ckpt") < 1:
            assert first.poll() is None, f"the run ended before a checkpoint: {err.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 90 s"
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL) if os.getpgid(first.pid) == first.pid else first.kill()
        first.wait(timeout=10)
    finally:
        stop(first)
    at_kill = saved_epochs(tmp_path / "ckpt")  # the writer is dead: this file is final
    assert 1 <= at_kill < 12
    killed = [r for r in runs(uri) if r.data.tags.get("deepflow.member") == "shallow"]
    assert [r.info.status for r in killed] == ["RUNNING"]

    again, out2, err2 = deepflow(tmp_path, env, *args)
    try:
        assert again.wait(timeout=120) == 0, err2.read_text()[-3000:]
    finally:
        stop(again)
    c = MlflowClient(uri)
    assert c.get_run(killed[0].info.run_id).info.status == "FAILED"
    (new,) = [r for r in runs(uri) if r.data.tags.get("deepflow.member") == "shallow"
              and r.info.run_id != killed[0].info.run_id]
    assert new.info.status == "FINISHED"
    checkpoints.source_fingerprint.cache_clear()
    if checkpoints.source_fingerprint() != source and checkpoints.RESUMED_TAG not in new.data.tags:
        pytest.skip("deepflow's source was edited while this test ran: the second run was other work, by design")
    assert new.data.tags[checkpoints.RESUMED_TAG] == str(at_kill)
    assert f"paysim/shallow: resuming fit 0 from its checkpoint after epoch {at_kill}" in err2.read_text()
    assert new.data.metrics["info/epochs_run"] == 12  # all of them: the resumed ones on top of the killed run's
    assert [m.step for m in c.get_metric_history(new.info.run_id, "val/auprc")][:at_kill] == list(range(at_kill))
    assert not list((tmp_path / "ckpt").rglob("fit-*.ckpt")), "checkpoints left after the run finished"
