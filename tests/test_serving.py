"""Serving: the @champion of each entry over HTTP, hot reload, bad input, and the real server.

Models are registered directly (a tiny torch net, a TF-IDF pipeline, a fake detector) so the
fast tests need no training data and no orchestration. Routes come from each entry's kind
(``deepflow.kinds.<kind>.serving``).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

from deepflow import ledger, settings, tracking
from deepflow.scoring import TorchScorer
from deepflow.serving import ModelStore, ServeConfig, create_app
from deepflow.usecases.traffic.generate import CLASSES
from tests.conftest import free_port
from tests.entries import write_entry

FEATURES = ["amount", "hour", "tx_count_7d"]
SMALL_LIMITS = {"max_json_bytes": 20_000, "max_image_bytes": 50_000}


class FakeDetector:
    """A stand-in for DetectorScorer: two fixed detections per image, one below 0.5."""

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        from deepflow.kinds.detection.scorer import detections_frame

        parts = [(i, np.array([[1.0, 2.0, 10.0, 12.0], [3.0, 3.0, 5.0, 5.0]]), np.array([0.9, 0.2]),
                  np.array([0, 0])) for i in range(len(frame))]
        return detections_frame(parts, CLASSES)


def register(use_case: str, scorer, example: pd.DataFrame, threshold: float, champion: bool = True) -> str:
    run_id = tracking.start_run(use_case, "serving-test")
    uri = tracking.log_scorer(run_id, scorer, example)
    version = tracking.register(use_case, uri, run_id, {
        "deepflow.threshold": threshold, "deepflow.data_version": "abc123", "test/auprc": 0.42})
    if champion:
        ledger.move_alias(use_case, tracking.CHAMPION, str(version), reason="test", evidence="test", actor="test")
    return str(version)


def fraud_scorer(seed: int) -> TorchScorer:
    torch.manual_seed(seed)
    return TorchScorer(torch.nn.Sequential(torch.nn.Linear(len(FEATURES), 1), torch.nn.Flatten(0)), FEATURES)


def register_fraud(seed: int = 0, champion: bool = True) -> str:
    return register("fraud", fraud_scorer(seed), pd.DataFrame([[1.0, 2.0, 3.0]], columns=FEATURES), 0.5, champion)


def register_nlp() -> str:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from deepflow.kinds.text.usecase import TfidfScorer
    from tests.nlp_toy import toy_frame

    toy = toy_frame(n_per_class=30)
    labels = sorted(toy["label"].unique())
    pipe = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=200))
    pipe.fit(toy["text"], toy["label"].map(labels.index))
    return register("nlp", TfidfScorer(pipe, labels), toy[["text"]].head(2), 0.5)


def png_bytes(size: tuple[int, int] = (32, 24)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def row(**overrides) -> dict:
    return {"amount": 12.5, "hour": 3, "tx_count_7d": 4.0, **overrides}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One store with fraud, nlp and traffic champions (no paysim), and an app serving it."""
    root = tmp_path_factory.mktemp("serving")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("DEEPFLOW_LOCK_DIR", str(root / "locks"))
        mp.delenv("DEEPFLOW_ARTIFACT_ROOT", raising=False)
        versions = {"fraud": register_fraud(), "nlp": register_nlp(),
                    "traffic": register("traffic", FakeDetector(), pd.DataFrame({"image": [png_bytes()]}), 0.5)}
        app = create_app(ServeConfig(reload_interval=0, **SMALL_LIMITS))
        with TestClient(app) as client:
            yield client, versions, root
    import mlflow

    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI"))


def test_predictions_name_the_version(served) -> None:
    client, versions, _ = served
    r = client.post("/v1/fraud/predict", json={"rows": [row(), row(amount=900.0)]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == {"name": "fraud", "version": versions["fraud"]}
    assert len(body["predictions"]) == 2
    expected = fraud_scorer(0).predict(pd.DataFrame([row(), row(amount=900.0)]))
    for p, e in zip(body["predictions"], expected, strict=True):
        assert p["probability"] == pytest.approx(e, abs=1e-6) and p["fraud"] == (e >= 0.5)

    r = client.post("/v1/nlp/predict", json={"texts": ["Storm and rain in the forecast", "league match goal"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == {"name": "nlp", "version": versions["nlp"]}
    assert [p["label"] for p in body["predictions"]] == ["weather", "sport"]
    for p in body["predictions"]:
        assert set(p["probabilities"]) == {"money", "sport", "weather"}
        assert p["probability"] == max(p["probabilities"].values())

    r = client.post("/v1/traffic/predict", files={"image": ("x.png", png_bytes((40, 30)), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == {"name": "traffic", "version": versions["traffic"]}
    assert (body["width"], body["height"]) == (40, 30)
    first = CLASSES[0]
    assert body["detections"] == [{"x1": 1.0, "y1": 2.0, "x2": 10.0, "y2": 12.0, "class": first, "score": 0.9}]
    assert body["counts"] == {first: 1}  # the 0.2 detection is under the version's threshold


def test_bad_input_is_a_client_error(served) -> None:
    client, _, _ = served
    missing = client.post("/v1/fraud/predict", json={"rows": [{"amount": 1.0, "hour": 2.0}]})
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "rows", 0, "tx_count_7d"]
    wrong = client.post("/v1/fraud/predict", json={"rows": [row(hour="three")]})
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"][-1] == "hour"
    for bad in ({"rows": []}, {}, {"rows": "x"}, {"rows": [row(amount=True)]}, {"rows": [row(amount=1e39)]}):
        assert client.post("/v1/fraud/predict", json=bad).status_code == 422, bad
    assert client.post("/v1/fraud/predict", content=b"{not json", headers={"content-type": "application/json"}
                       ).status_code == 422
    assert client.post("/v1/nlp/predict", json={"texts": [1]}).json()["detail"][0]["loc"] == ["body", "texts", 0]
    assert client.post("/v1/nlp/predict", json={"text": ["a"]}).status_code == 422

    big = {"rows": [row() for _ in range(500)]}  # > 20 kB
    assert client.post("/v1/fraud/predict", json=big).status_code == 413
    chunked = (c for c in [json.dumps(big).encode()[i : i + 4096] for i in range(0, 40_000, 4096)])
    assert client.post("/v1/fraud/predict", content=chunked, headers={"content-type": "application/json"}
                       ).status_code == 413  # no Content-Length: counted as it streams
    assert client.post("/v1/traffic/predict", files={"image": ("x.png", b"\0" * 60_000)}).status_code == 413
    not_image = client.post("/v1/traffic/predict", files={"image": ("x.png", b"plain text, not a PNG")})
    assert not_image.status_code == 400 and "image" in not_image.json()["detail"]
    truncated = client.post("/v1/traffic/predict", files={"image": ("x.png", png_bytes()[:40])})
    assert truncated.status_code == 400
    assert client.post("/v1/traffic/predict", data={"other": "x"}).status_code == 422

    unknown = client.post("/v1/spam/predict", json={"texts": ["x"]})
    assert unknown.status_code == 404 and "spam" in unknown.json()["detail"]
    no_champion = client.post("/v1/paysim/predict", json={"rows": [{"amount": 1.0}]})
    assert no_champion.status_code == 503 and "no @champion" in no_champion.json()["detail"]


def test_models_readyz_and_docs(served) -> None:
    client, versions, _ = served
    assert client.get("/healthz").json() == {"status": "ok"}
    models = client.get("/v1/models").json()["models"]
    assert set(models) == {"fraud", "nlp", "traffic"}
    fraud = models["fraud"]
    assert fraud["version"] == versions["fraud"] and fraud["aliases"] == ["champion"]
    assert fraud["data_version"] == "abc123" and fraud["metrics"] == {"test/auprc": 0.42}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    states = {k: v["state"] for k, v in ready.json()["use_cases"].items()}
    assert states == {"fraud": "ready", "nlp": "ready", "traffic": "ready", "paysim": "no_champion"}
    assert {name: m["kind"] for name, m in models.items()} == {"fraud": "tabular", "nlp": "text",
                                                                 "traffic": "detection"}
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    # the row model comes from the served scorer's features; the decision is named after the entry's
    # positive class (fraud.yaml: class_names [genuine, fraud])
    assert list(schemas["FraudRow"]["properties"]) == FEATURES and schemas["FraudRow"]["required"] == FEATURES
    assert set(schemas["FraudPrediction"]["properties"]) == {"probability", "fraud", "explanation"}
    assert client.get("/docs").status_code == 200


def test_a_scorer_that_does_not_fit_the_kind_is_refused(served) -> None:
    """Each kind checks a loaded scorer (fake loaders here): a tabular one needs `features`, a
    text one `labels`; a refused version leaves the slot failed, with the reason."""
    store = ModelStore(("fraud", "nlp", "traffic"), loader=lambda uri: object())
    store.refresh()
    states = {name: (slot.state(), slot.error) for name, slot in store.slots.items()}
    assert states["fraud"][0] == "failed" and "features" in states["fraud"][1]
    assert states["nlp"][0] == "failed" and "no class labels" in states["nlp"][1]
    assert states["traffic"] == ("ready", None)  # a detector needs nothing prepared
    assert store.get("traffic").loaded.threshold == 0.5 and store.get("traffic").kind == "detection"


def test_readyz_is_503_when_nothing_is_loaded(store) -> None:
    with TestClient(create_app(ServeConfig(reload_interval=0))) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and not r.json()["ready"]
        assert client.get("/healthz").status_code == 200
        assert client.post("/v1/fraud/predict", json={"rows": [row()]}).status_code == 503


def test_a_stopped_server_leaves_no_warm_up_thread_behind(store, monkeypatch) -> None:
    """The explainer warms up in a thread while the server runs, and shutdown waits for it. One
    left importing shap after a test changed the process's global warnings filters under the next
    test (``catch_warnings`` is not thread-safe): CI lost a ``pytest.warns`` that way."""
    from deepflow import explaining

    done = []
    monkeypatch.setattr(explaining, "warm", lambda: (time.sleep(1.0), done.append(1)))
    app = create_app(ServeConfig(reload_interval=0))
    assert not done and not _warm_threads()  # created, not running: nothing started yet
    with TestClient(app) as client:
        assert client.get("/readyz").json()["explainer"] == "warming"
        with TestClient(app):  # a second lifespan on the same app (schemathesis runs one), its own warm-up
            assert len(_warm_threads()) == 2
        assert done and len(_warm_threads()) <= 1  # the inner one's shutdown waited for its own
    assert done == [1, 1] and not _warm_threads()


def _warm_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "deepflow-explain-warm" and t.is_alive()]


def test_an_entry_with_default_class_names_answers_positive(store, datasets, tmp_path, monkeypatch) -> None:
    """A new tabular entry serves with no code: its decision field is its positive class
    (``positive`` by default), and OpenAPI lists each of its features as a field."""
    monkeypatch.setenv("DEEPFLOW_LOCK_DIR", str(tmp_path / "locks"))
    features = ["tenure", "monthly_spend"]
    write_entry(datasets, "churn-risk", "tabular", {"label": "churned", "features": features})
    torch.manual_seed(0)
    scorer = TorchScorer(torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.Flatten(0)), features)
    version = register("churn-risk", scorer, pd.DataFrame([[1.0, 2.0]], columns=features), 0.5)
    with TestClient(create_app(ServeConfig(reload_interval=0, use_cases=("churn-risk",)))) as client:
        r = client.post("/v1/churn-risk/predict", json={"rows": [{"tenure": 3.0, "monthly_spend": 40.0}]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == {"name": "churn-risk", "version": version}
        [prediction] = body["predictions"]
        assert set(prediction) == {"probability", "positive"}
        assert prediction["positive"] == (prediction["probability"] >= 0.5)
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
        assert list(schemas["ChurnRiskRow"]["properties"]) == features
        assert schemas["ChurnRiskRow"]["required"] == features
        assert set(schemas["ChurnRiskPrediction"]["properties"]) == {"probability", "positive", "explanation"}
        missing = client.post("/v1/churn-risk/predict", json={"rows": [{"tenure": 3.0}]})
        assert missing.status_code == 422 and missing.json()["detail"][0]["loc"][-1] == "monthly_spend"


@pytest.mark.slow  # several seconds: in the slow layer (CI runs it), the default run stays fast
def test_serving_imports_neither_great_expectations_nor_prefect(served) -> None:
    _, _, root = served
    code = ("import sys\nfrom deepflow import serving\n"
            "app = serving.create_app(serving.ServeConfig(reload_interval=0, use_cases=('fraud',)))\n"
            "assert app.state.store.get('fraud').loaded is not None\n"
            "bad = [m for m in ('great_expectations', 'prefect') if m in sys.modules]\n"
            "assert not bad, bad\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow  # several seconds: in the slow layer (CI runs it), the default run stays fast
def test_openapi_fuzzing_finds_no_server_error(served) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    client, _, _ = served
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    operations = [r.ok() for r in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/fraud/predict", "POST /v1/traffic/predict", "GET /readyz"}
    calls: list[int] = []
    for op, mode in itertools.product(operations, schemathesis.GenerationMode):
        if op.label == "POST /v1/paysim/predict":
            continue  # no champion in this store: its 503 is by design
        if op.method.upper() == "GET" and mode == schemathesis.GenerationMode.NEGATIVE:
            continue  # nothing to break in a GET without parameters

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:
            calls.append(case.call_and_validate(checks=[not_a_server_error]).status_code)

        fuzz()
    assert len(calls) > 150 and any(c == 200 for c in calls) and any(400 <= c < 500 for c in calls), calls


@pytest.mark.slow  # several seconds: in the slow layer (CI runs it), the default run stays fast
def test_hot_reload_swaps_without_failures_and_survives_a_broken_version(store, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DEEPFLOW_LOCK_DIR", str(tmp_path / "locks"))
    v1 = register_fraud(seed=0)
    app = create_app(ServeConfig(reload_interval=0.3, use_cases=("fraud",)))
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()
    with TestClient(app) as client:
        def hammer() -> None:
            while not stop.is_set():
                r = client.post("/v1/fraud/predict", json={"rows": [row()]})
                seen.append((r.status_code, r.json()["model"]["version"] if r.status_code == 200 else r.text))

        worker = threading.Thread(target=hammer)
        worker.start()
        try:
            v2 = register_fraud(seed=1, champion=False)
            ledger.move_alias("fraud", tracking.CHAMPION, v2, reason="test", evidence="test", actor="test")
            moved = time.monotonic()
            while time.monotonic() < moved + 20 and (not seen or seen[-1][1] != v2):
                time.sleep(0.05)
            took = time.monotonic() - moved
            assert seen and seen[-1][1] == v2, seen[-3:]
            assert took < 5, took  # one 0.3 s poll plus loading the version, on a loaded 2-core box
            print(f"switched to v{v2} {took:.2f} s after the alias moved")
            switched_at = len(seen)
            time.sleep(0.5)
            assert {v for _, v in seen[switched_at:]} == {v2}  # stays on the new version

            # `deepflow rollback`: the server follows @champion back to v1, then forward to v2 again.
            from deepflow import steps

            for target, move in ((v1, lambda: steps.rollback("fraud", reason="test rollback", to_version=v1)),
                                 (v2, lambda: ledger.move_alias("fraud", tracking.CHAMPION, v2, reason="re-promote",
                                                                evidence="test", actor="test"))):
                move()
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and seen[-1][1] != target:
                    time.sleep(0.05)
                assert seen[-1][1] == target, seen[-3:]

            # v3's artifact is broken: v2 keeps serving and /readyz says why.
            v3 = register_fraud(seed=2, champion=False)
            local = tracking.client().get_model_version_download_uri("fraud", v3).removeprefix("file://")
            (Path(local) / "python_model.pkl").write_bytes(b"not a pickle")
            ledger.move_alias("fraud", tracking.CHAMPION, v3, reason="test", evidence="test", actor="test")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not client.get("/readyz").json()["use_cases"]["fraud"]["error"]:
                time.sleep(0.1)
            fraud = client.get("/readyz").json()["use_cases"]["fraud"]
            assert fraud["state"] == "degraded" and fraud["version"] == v2 and fraud["champion"] == v3
            assert f"v{v3} failed to load" in fraud["error"]

            # The registry goes away: keep serving v2, say so in /readyz.
            def down():
                raise ConnectionError("registry down")

            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(tracking, "client", down)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and "registry down" not in str(
                        client.get("/readyz").json()["use_cases"]["fraud"]["error"]):
                    time.sleep(0.1)
                fraud = client.get("/readyz").json()["use_cases"]["fraud"]
                assert "registry down" in fraud["error"] and fraud["version"] == v2
                time.sleep(0.5)
        finally:
            stop.set()
            worker.join(timeout=30)

        # @champion removed: the use case stops serving, following the registry.
        tracking.delete_alias("fraud", tracking.CHAMPION)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and client.get("/readyz").status_code != 503:
            time.sleep(0.1)
        assert client.get("/readyz").json()["use_cases"]["fraud"]["state"] == "no_champion"
        assert client.post("/v1/fraud/predict", json={"rows": [row()]}).status_code == 503
    assert seen and all(code == 200 for code, _ in seen), [s for s in seen if s[0] != 200][:3]
    assert {v for _, v in seen} == {v1, v2}
    assert seen[-1][1] == v2


def test_traffic_with_a_real_detector_scorer(store, tmp_path, monkeypatch) -> None:
    """The real DetectorScorer (an untrained ShallowNet): boxes within the image, counts agree."""
    from deepflow.kinds.detection.models import ShallowNet
    from deepflow.kinds.detection.scorer import DetectorScorer

    monkeypatch.setenv("DEEPFLOW_LOCK_DIR", str(tmp_path / "locks"))
    torch.manual_seed(0)
    scorer = DetectorScorer(ShallowNet(len(CLASSES), width=8), 64, CLASSES, min_score=0.0, max_det=20)
    version = register("traffic", scorer, pd.DataFrame({"image": [png_bytes()]}), 0.0)
    with TestClient(create_app(ServeConfig(reload_interval=0, use_cases=("traffic",)))) as client:
        r = client.post("/v1/traffic/predict", files={"image": ("x.png", png_bytes((80, 50)), "image/png")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == {"name": "traffic", "version": version} and (body["width"], body["height"]) == (80, 50)
        assert body["detections"], body  # threshold 0: every kept box comes back
        for d in body["detections"]:
            assert 0 <= d["x1"] <= d["x2"] <= 80 and 0 <= d["y1"] <= d["y2"] <= 50 and d["class"] in CLASSES
        assert sum(body["counts"].values()) == len(body["detections"])
        assert client.post("/v1/traffic/predict", files={"image": ("x.jpg", b"GIF89a broken")}).status_code == 400


@pytest.mark.slow
def test_deepflow_serve_runs_under_uvicorn(store, tmp_path, monkeypatch) -> None:
    import httpx

    monkeypatch.setenv("DEEPFLOW_LOCK_DIR", str(tmp_path / "locks"))
    version = register_fraud()
    port = free_port()
    exe = Path(sys.executable).with_name("deepflow")
    proc = subprocess.Popen([str(exe), "serve", "--host", "127.0.0.1", "--port", str(port), "--reload-interval", "1"],
                            env={**os.environ}, cwd=settings.PROJECT_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("the server never became ready")
        r = httpx.post(f"{base}/v1/fraud/predict", json={"rows": [row()]}, timeout=10)
        assert r.status_code == 200 and r.json()["model"] == {"name": "fraud", "version": version}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    output = proc.stdout.read()
    # uvicorn shuts down cleanly, then re-raises the SIGTERM it handled (so the exit status says so)
    assert proc.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in output, output[-2000:]
