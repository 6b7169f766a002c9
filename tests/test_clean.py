"""``deepflow clean``: the checkpoints that failed or killed runs left (deepflow/cli_clean.py,
checkpoints.stored/in_use/remove). Folders are made the way runs make them: ``checkpoints.member``
in this process with an exception (what a failed run leaves), in a process killed with SIGKILL (a
killed run), and in a live process that holds its lock (a run in progress)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepflow import checkpoints
from deepflow.cli import app

ROOT = Path(__file__).parents[1]
runner = CliRunner()


def key(entry: str, member: str, **change) -> dict:
    """Key parts as a run of this code writes them (``change``: e.g. another ``source``)."""
    parts = {"entry": entry, "member": member, "kind": "candidate", "data_version": "files:abc",
             "data_fingerprint": "abc", "config_hash": "c0", "seed": 7, "source": checkpoints.source_fingerprint(),
             "torch": metadata.version("torch"), "lightning": metadata.version("lightning")}
    return {**parts, **change}


def failed_run(parts: dict, size: int = 3 * 2**20) -> Path:
    """What a run that failed mid-fit leaves: a folder with its key and one fit's checkpoint."""
    with pytest.raises(RuntimeError), checkpoints.member(parts) as m:
        m.next_fit().write(lambda tmp: tmp.write_bytes(b"x" * size))
        raise RuntimeError("training failed")
    return m.folder


HOLD = ("import json, sys, time\nfrom deepflow import checkpoints\n"
        "with checkpoints.member(json.loads(sys.argv[1])) as m:\n"
        "    m.next_fit().write(lambda tmp: tmp.write_bytes(b'x' * 1024))\n"
        "    print(m.folder, flush=True)\n    time.sleep(120)\n")


def running(parts: dict) -> tuple[subprocess.Popen, Path]:
    """A run in progress in another process: it holds its folder's lock until it ends."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, json.dumps(parts)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    return proc, Path(proc.stdout.readline().strip())


def clean(*args: str) -> str:
    result = runner.invoke(app, ["clean", *args])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


@pytest.fixture
def ckdir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "checkpoints"
    monkeypatch.setenv("DEEPFLOW_CHECKPOINT_DIR", str(folder))
    return folder


def test_clean_deletes_what_failed_and_killed_runs_left_and_never_a_running_ones(ckdir) -> None:
    failed = failed_run(key("churn", "deep"))
    stale = failed_run(key("churn", "shallow", source="0123456789abcdef"))
    killed, killed_folder = running(key("reviews", "deep"))
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    live, live_folder = running(key("reviews", "shallow"))
    foreign = ckdir / "plans" / "deep" / "k"
    foreign.mkdir(parents=True)
    (foreign / "key.json").write_text(json.dumps({"owner": {"host": "elsewhere", "pid": "12"}, "parts": {}}))
    try:
        listed = {s.folder: s for s in checkpoints.stored(ckdir)}
        assert set(listed) == {failed, stale, killed_folder, live_folder, foreign}
        assert listed[failed].fits == 1 and listed[failed].size > 3 * 2**20 and listed[failed].stale is None
        assert "deepflow source" in listed[stale].stale

        dry = clean("--dry-run")
        assert dry.count("would remove") == 3 and "would free 6.0 MiB" in dry
        assert "kept: in use" in dry and "host elsewhere" in dry
        assert all(f.exists() for f in listed)  # a dry run deletes nothing

        assert "kept: younger than 1 h" in clean("--older-than", "1") and all(f.exists() for f in listed)
        only_stale = clean("--stale")
        assert "removed (written by another deepflow source" in only_stale and not stale.exists()
        assert failed.exists() and killed_folder.exists()

        assert "freed 0.0 MiB" in clean("reviews", "--stale")  # the killed run's is resumable: kept
        clean("reviews")
        assert not killed_folder.exists() and live_folder.exists() and failed.exists()  # another entry's: kept
        everything = clean()
        assert not failed.exists() and not (ckdir / "churn").exists()  # empty member and entry folders go too
        assert live_folder.exists() and foreign.exists() and "in use" in everything

        live.kill()  # the run ends: its lock goes with it
        live.wait(timeout=30)
        clean()
        assert not live_folder.exists() and foreign.exists()
    finally:
        live.kill()
        live.wait(timeout=30)


def test_a_run_resumes_no_more_after_clean_and_clean_says_when_there_is_nothing(ckdir, monkeypatch) -> None:
    assert "no checkpoints under" in clean()
    failed_run(key("churn", "deep"))
    assert "no checkpoints under" in clean("reviews")
    clean()
    with checkpoints.member(key("churn", "deep")) as m:
        assert m.next_fit().resumable({}) is None  # the next run starts over
    monkeypatch.setenv("DEEPFLOW_CHECKPOINT_DIR", "off")
    assert "checkpoints are off" in clean()
    bad = runner.invoke(app, ["clean", "--older-than", "-1"])
    assert bad.exit_code == 2 and "--older-than" in bad.output


def test_a_folder_a_run_takes_between_listing_and_removing_is_kept(ckdir) -> None:
    folder = failed_run(key("churn", "deep"))
    (item,) = checkpoints.stored(ckdir)
    proc, same = running(key("churn", "deep"))  # the same command started again: it takes the folder
    try:
        assert same == folder
        assert checkpoints.remove(item) == "in use: a run took its lock" and folder.exists()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert checkpoints.remove(item) is None and not folder.exists()
