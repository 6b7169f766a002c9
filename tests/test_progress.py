"""Live progress (deepflow.progress): steps and epochs reach the reporter, plain output stays
line-based and bounded, library log noise goes to a file, and nothing happens when it is off."""

import contextvars
import io
import logging
import re
import sys
import threading
import time

import lightning as L
import pytest
import torch
from rich.console import Console

from deepflow import progress, training

LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] [\w.-]+: \S.*$")


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x).squeeze(-1), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val/score", -torch.nn.functional.mse_loss(self.layer(x).squeeze(-1), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def plain() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=False, width=200), buffer


def tiny_fit(epochs: int) -> training.FitResult:
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    loader = training.batches(x, x.sum(-1), batch_size=16, shuffle=False)
    return training.fit(Tiny(), loader, loader, max_epochs=epochs, monitor="val/score", patience=epochs)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_real_fit_reports_each_epoch_and_its_end_to_the_step_that_started_it(tmp_path, monkeypatch,
                                                                              capsys) -> None:
    monkeypatch.setenv("DEEPFLOW_ACCELERATOR", "cpu")
    console, out = plain()

    def pipeline() -> training.FitResult:  # what steps.train_member does around uc.fit
        progress.step("toy", "validate")
        progress.step("toy", "train", "tiny")
        assert progress.current() == ("toy", "tiny")
        result = tiny_fit(3)
        progress.step("toy", "evaluate", "tiny")
        progress.finish("toy")
        return result

    with progress.reporting(console, log_dir=tmp_path, live=False, interval=0.0) as log:
        result = contextvars.Context().run(pipeline)  # its own context, as a Prefect task has
    lines = out.getvalue().splitlines()
    assert lines[0] == f"library logs: {log}" and log.parent == tmp_path
    body = [line.split("] ", 1)[1] for line in lines[1:]]
    assert body[:2] == ["toy: validate", "toy: train tiny"]
    assert body[2:5] == [b for b in body if ": epoch " in b]
    assert [b.split(",")[0] for b in body[2:5]] == [f"toy: train tiny: epoch {i}/3" for i in (1, 2, 3)]
    assert "left (early stopping may end it sooner)" in body[2]  # the time left, from the mean epoch
    assert body[5].startswith(f"toy: train tiny: {result.epochs_run}/3 epochs in ")
    assert body[6:] == ["toy: evaluate tiny", body[7]] and re.fullmatch(r"toy: done in \d+s", body[7])
    assert all(LINE.match(line) for line in lines[1:])
    # Lightning's banner went to the log file, not the terminal.
    assert "GPU available" in log.read_text()
    captured = capsys.readouterr()
    assert "GPU available" not in captured.out + captured.err


def test_a_fit_outside_any_step_is_still_reported(monkeypatch) -> None:
    monkeypatch.setenv("DEEPFLOW_ACCELERATOR", "cpu")
    console, out = plain()
    with progress.reporting(console, live=False, interval=0.0):
        contextvars.Context().run(tiny_fit, 1)  # a fresh context: no step in it
    assert "] deepflow: train fit: 1/1 epochs in " in out.getvalue()


def test_plain_lines_are_bounded_per_member_and_interval() -> None:
    clock = FakeClock()
    console, out = plain()
    with progress.reporting(console, live=False, interval=10.0, clock=clock):
        for member in ("a", "b"):
            progress.step("big", "train", member)
            for done in range(1, 101):  # 100 epochs of 1 s each
                clock.now += 1.0
                progress.epoch("big", member, done, 100, seconds=float(done), may_stop_early=False)
            progress.fitted("big", member, 100, 100, seconds=100.0)
        progress.finish("big")
    lines = out.getvalue().splitlines()
    assert all(LINE.match(line) and "\x1b" not in line for line in lines)
    for member in ("a", "b"):
        epochs = [line for line in lines if f"train {member}: epoch" in line]
        assert 9 <= len(epochs) <= 10  # one per 10 s of a 100 s fit
        assert f"train {member}: epoch 10/100, 10s so far, ~1m 30s left" in epochs[0]
    assert len(lines) <= 2 * (1 + 10 + 1) + 1
    assert lines[-1] == "[00:03:20] big: done in 3m 20s"


def test_the_live_display_shows_steps_epochs_and_folds_members_away_at_the_end() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=140)
    with progress.reporting(console, live=True):
        progress.step("toy", "train", "tiny")
        progress.epoch("toy", "tiny", 2, 8, seconds=4.0, may_stop_early=True)
        time.sleep(0.6)  # two refreshes
        frame = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue())
        assert "toy train tiny" in frame and "2/8 epochs" in frame and "~12s left" in frame
        progress.fitted("toy", "tiny", 5, 8, seconds=10.0)
        progress.finish("toy")
    final = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue()).rstrip().splitlines()[-1]
    assert "toy done" in final and "1 member" in final


@pytest.mark.filterwarnings("ignore:Logger 'prefect.task_runs' attempted to send logs")  # no flow run here
def test_library_noise_goes_to_the_file_warnings_and_errors_to_stderr(tmp_path, capsys) -> None:
    chatty = logging.getLogger("deepflow_test.chatty")  # like MLflow's: its own terminal handler
    own = logging.StreamHandler(sys.stderr)
    chatty.addHandler(own)
    chatty.propagate = False
    chatty.setLevel(logging.INFO)
    try:
        with progress.reporting(plain()[0], log_dir=tmp_path, live=False) as log:
            assert progress.logs_routed()
            chatty.info("Creating initial database tables...")
            logging.getLogger("mlflow.store.db.utils").info("Updating database tables")
            logging.getLogger("great_expectations._docs_decorators").info("Skipping registering function")
            chatty.warning("disk almost full")
            logging.getLogger("prefect.task_runs").error("Task run failed: Traceback ...")
        assert not progress.logs_routed()
        assert chatty.handlers == [own] and chatty.propagate is False  # put back
    finally:
        chatty.removeHandler(own)
    text = log.read_text()
    assert "Creating initial database tables" in text and "Updating database tables" in text
    assert "disk almost full" in text and "Task run failed" in text
    assert "Skipping registering" not in text
    err = capsys.readouterr().err
    assert "disk almost full" in err
    assert "Creating initial" not in err and "Updating database" not in err and "Task run failed" not in err


def test_off_by_default_and_thread_safe_when_on() -> None:
    assert not progress.enabled()
    progress.step("x", "validate")  # no reporter: nothing happens, nothing fails
    progress.epoch("x", "m", 1, 2, seconds=1.0)
    progress.fitted("x", "m", 2, 2, seconds=2.0)
    progress.finish("x")
    console, out = plain()
    with progress.reporting(console, live=False, interval=0.0):
        def work(i: int) -> None:
            for e in range(1, 51):
                progress.epoch(f"e{i}", "m", e, 50, seconds=float(e))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with pytest.raises(RuntimeError, match="already enabled"), progress.reporting(console):
            pass
    lines = out.getvalue().splitlines()
    assert len(lines) == 200 and all(LINE.match(line) for line in lines)
