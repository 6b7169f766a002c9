"""What the bad-input suites of the table and text kinds share (tests/test_table_faults.py,
tests/test_text_faults.py): files written as users bring them, ``deepflow new`` as they type it,
an entry made once from good data and pointed at a next version of it."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from deepflow.cli import app
from tests.entries import private_datasets

runner = CliRunner()


def csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


def crashed_not(result) -> bool:
    """The command ended by its own exit (a one-line error, or success), not by an uncaught exception.
    (Its output may hold another test's library log noise, so it is not searched for a traceback.)"""
    return result.exception is None or isinstance(result.exception, SystemExit)


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def new(name: str, path: Path, *args: str, code: int = 2) -> str:
    """``deepflow new`` as a user types it; its output as one line."""
    result = runner.invoke(app, ["new", name, "--data", str(path), "--no-dvc", *args])
    assert result.exit_code == code, result.output
    assert crashed_not(result)
    return " ".join(result.output.split())


def nothing_written(places: dict[str, Path], name: str) -> bool:
    return not (places["datasets"] / f"{name}.yaml").exists() and not places["data"].exists()


def make_entry(factory: pytest.TempPathFactory, name: str, create: Callable, data: str, **options) -> Path:
    """The entry file ``deepflow new`` (``create``) makes of ``data`` (good data, as CSV text), in a
    folder of its own."""
    root = factory.mktemp(f"{name}-entry")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEPFLOW_DATASETS_DIR", str(private_datasets(root / "datasets")))
        mp.setenv("DEEPFLOW_DATA_DIR", str(root / "data"))
        mp.setenv("DEEPFLOW_REPORTS_DIR", str(root / "reports"))
        made = create(name, write(root / "in" / f"{name}.csv", data), dvc=False, echo=lambda line: None, **options)
    return made.entry


def next_version(made: Path, places: dict[str, Path], data: pd.DataFrame | str) -> Path:
    """The entry ``made`` (as ``deepflow new`` made it) in this test's datasets folder, its source the
    next version of the data, ``data``; returns that source file."""
    name = made.stem
    source = write(places["in"] / f"{name}-v2.csv", data if isinstance(data, str) else csv_text(data))
    mapping = yaml.safe_load(made.read_text())
    mapping["config"] |= {"source": str(source), "prepared_dir": str(places["data"] / "prepared" / name)}
    (places["datasets"] / f"{name}.yaml").write_text(yaml.safe_dump(mapping, sort_keys=False))
    return source


def wait_for(what: str, check, timeout: float, interval: float = 0.2, detail=None):
    """``check()``'s first truthy result, polled every ``interval`` s; the test fails after ``timeout``
    (its message ends with ``detail()`` when given: what the machine shows at that moment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}" + (f"; {detail()}" if detail else ""))


def refused(port: int) -> bool:
    """Nothing listens on 127.0.0.1:``port`` (a connection is refused within 2 s)."""
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0
