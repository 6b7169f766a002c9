"""The dashboards: `deepflow ui`'s MLflow process on a store the pipeline filled, checked in headless
Chromium (screenshots under reports/screenshots/); and the GPU check."""

import os
import re
import time
from pathlib import Path

import pytest

from tests.conftest import free_port

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def _browser():
    """Debian's headless chromium through its chromedriver (nothing is downloaded)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs Debian's chromium and chromium-driver (.ci/run installs them)")
        pytest.skip("no /usr/bin/chromium + /usr/bin/chromedriver (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,900"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


def _wait_for_text(driver, text: str, timeout: float = 60) -> str:
    """The page's visible text once ``text`` (a regular expression) shows on it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = driver.find_element("tag name", "body").text
        if re.search(text, body):
            return body
        time.sleep(0.5)
    pytest.fail(f"{text!r} not on {driver.current_url} after {timeout:.0f} s; page shows:\n{body[:1500]}")


@pytest.mark.slow
def test_mlflow_dashboard_shows_experiments_models_and_champion(store, datasets, fast_overrides, tmp_path) -> None:
    """`deepflow ui`'s MLflow process on a store the pipeline filled, seen through a real browser."""
    from deepflow import dashboards, settings
    from deepflow.kinds.text.prepare import PrepareParams, prepare
    from flows.pipeline import train_pipeline
    from tests.entries import TOPICS_CONFIG, write_entry
    from tests.nlp_toy import write_toy_csv

    fraud = train_pipeline("fraud", [*fast_overrides, "candidates=[shallow]", "baselines=[logistic_regression]",
                                     "promotion.floor=0.0"])
    assert fraud["promotion"]["promoted"], fraud["promotion"]
    toy = tmp_path / "toy"
    prepare(write_toy_csv(tmp_path / "toy.csv"), toy,
            PrepareParams(sep=",", header=True, text_column="text", label_column="label"))
    write_entry(datasets, "topics", "text", {**TOPICS_CONFIG, "prepared_dir": str(toy)})  # a second entry
    train_pipeline("topics", ["baselines=[]", "train.epochs=2"])

    shots = settings.PROJECT_ROOT / "reports" / "screenshots"  # kept after the run (the store is in tmp)
    shots.mkdir(parents=True, exist_ok=True)
    driver = _browser()  # first: a skip for a missing browser must not leave a server running
    try:
        server = dashboards.start_mlflow_ui(free_port())
    except BaseException:
        driver.quit()
        raise
    try:
        driver.get(f"{server.url}/#/experiments")
        body = _wait_for_text(driver, "fraud")
        assert "topics" in body
        driver.save_screenshot(str(shots / "mlflow-experiments.png"))

        driver.get(f"{server.url}/#/models")
        body = _wait_for_text(driver, "fraud")
        assert "topics" in body
        driver.save_screenshot(str(shots / "mlflow-models.png"))

        driver.get(f"{server.url}/#/models/fraud")
        _wait_for_text(driver, r"@\s*champion")  # the alias chip in the versions table
        shot = shots / "mlflow-fraud-champion.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    finally:
        driver.quit()
        server.stop()


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA device (torch.cuda.is_available() is False)")
def test_training_runs_on_cuda(small_splits, monkeypatch) -> None:
    """With ``DEEPFLOW_ACCELERATOR=cuda`` the Trainer must use the GPU (Lightning refuses otherwise);
    the trained network comes back on the CPU, ready to be logged and served."""
    from deepflow import usecase

    monkeypatch.setenv("DEEPFLOW_ACCELERATOR", "cuda")
    scorer, info = usecase.get("fraud", ["train.epochs=1"]).fit("deep", "candidate", small_splits)
    assert info["steps"] > 0
    assert {p.device.type for p in scorer.net.parameters()} == {"cpu"}


@pytest.mark.slow
def test_deepflow_ui_opens_both_dashboards_and_ctrl_c_stops_them(store, tmp_path) -> None:
    """`deepflow ui` prints the MLflow and Prefect URLs, both answer, the Prefect UI renders in
    chromium, and Ctrl-C stops both processes."""
    import signal
    import subprocess
    import sys
    import urllib.request

    from deepflow import dashboards

    mlflow_port, prefect_port = free_port(), free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "DEEPFLOW_REPORTS_DIR": str(tmp_path)}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "deepflow.cli", "ui", "--port", str(mlflow_port),
                             "--prefect-port", str(prefect_port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 240
        while not any(line.startswith("Ctrl-C") for line in lines):
            line = proc.stdout.readline()
            if not line and proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("deepflow ui did not start both dashboards:\n" + "".join(lines))
            lines.append(line)
        text = "".join(lines)
        assert f"MLflow UI:  http://127.0.0.1:{mlflow_port}" in text
        assert f"Prefect UI: http://127.0.0.1:{prefect_port}" in text
        assert dashboards.healthy(f"http://127.0.0.1:{mlflow_port}/health")
        assert dashboards.healthy(f"http://127.0.0.1:{prefect_port}/api/health")
        with urllib.request.urlopen(f"http://127.0.0.1:{prefect_port}/", timeout=10) as r:
            assert "<html" in r.read().decode().lower()  # the UI is served, not just the API
        driver = _browser()
        try:
            driver.get(f"http://127.0.0.1:{prefect_port}/deployments")
            _wait_for_text(driver, "Deployments")
            driver.save_screenshot(str(tmp_path / "prefect-deployments.png"))
        finally:
            driver.quit()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # Ctrl-C was not honoured: still stop the servers, then fail
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
            raise
    assert not dashboards.healthy(f"http://127.0.0.1:{mlflow_port}/health", timeout=1)
    assert not dashboards.healthy(f"http://127.0.0.1:{prefect_port}/api/health", timeout=1)
