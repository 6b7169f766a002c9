"""`deepflow ui` starts a real MLflow server process on 127.0.0.1 against the embedded store."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import free_port


@pytest.mark.slow
def test_ui_serves_the_store(store) -> None:
    from deepflow import tracking

    tracking.experiment_id("fraud")  # something to see
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepflow.cli", "ui", "--port", str(port)],
        env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("MLflow UI did not come up within 90 s")
                time.sleep(0.5)
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search",
            data=json.dumps({"max_results": 10}).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            names = {e["name"] for e in json.load(r)["experiments"]}
        assert "fraud" in names
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.gpu
def test_training_runs_on_cuda(small_splits) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from deepflow import usecase

    scorer, info = usecase.get("fraud", ["train.epochs=1"]).fit("deep", "candidate", small_splits)
    assert info["steps"] > 0
