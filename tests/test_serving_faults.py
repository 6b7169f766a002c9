"""Serving under faults: bad client input is a 422 that never costs the connection, error replies
are bounded strict JSON, API keys guard the predict routes, and a load test runs across a
promotion and a rollback.

The fast tests serve one entry of every kind (tabular ``fraud``, text ``nlp``, detection
``traffic``, table ``churn``) from a store whose versions are put in place by the test (no
registry), under a real uvicorn server on 127.0.0.1 in a thread, so keep-alive behaves as in
production. The load test starts ``deepflow serve`` as a process over a temporary registry.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from deepflow import guards, ledger, problems, serving, settings, steps, tracking
from deepflow.serving import ModelStore, ServeConfig, create_app, load_version
from tests.conftest import free_port
from tests.entries import private_datasets, write_entry
from tests.test_serving import FEATURES, FakeDetector, fraud_scorer, register_fraud, row
from tests.test_table_contract import prepared
from tests.test_table_parts import entry_config, fit_scorer

ENTRIES = ("fraud", "nlp", "traffic", "churn")
KEY = "k3y-for-tests-0123456789abcdef"
JSON = {"content-type": "application/json"}


class Store(ModelStore):
    """A store whose versions are put in place by the test (no registry to poll)."""

    def refresh(self) -> None:
        pass


def put(store: ModelStore, name: str, scorer, kind: str, version: str = "1") -> None:
    meta = SimpleNamespace(version=version, tags={"deepflow.threshold": "0.5"}, run_id="run")
    store.get(name).loaded = load_version(name, meta, lambda _uri: scorer, kind=kind)


def nlp_scorer():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from deepflow.kinds.text.usecase import TfidfScorer
    from tests.nlp_toy import toy_frame

    toy = toy_frame(n_per_class=30)
    labels = sorted(toy["label"].unique())
    pipe = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=200)).fit(toy["text"],
                                                                                  toy["label"].map(labels.index))
    return TfidfScorer(pipe, labels)


@pytest.fixture(scope="module")
def kinds_store(tmp_path_factory) -> Iterator[Store]:
    """One version of each entry in ENTRIES; ``churn`` is a table entry in a private datasets folder."""
    root = tmp_path_factory.mktemp("faults")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEPFLOW_DATASETS_DIR", str(private_datasets(root / "datasets")))
        cfg, splits = prepared("binary", n=600)
        directory = root / "prepared" / "churn"
        directory.mkdir(parents=True)
        for split, frame in splits.items():
            frame.to_parquet(directory / f"{split}.parquet", index=False)
        write_entry(root / "datasets", "churn", "table", entry_config(cfg, directory))
        store = Store(ENTRIES)
        put(store, "fraud", fraud_scorer(0), "tabular")
        put(store, "nlp", nlp_scorer(), "text")
        put(store, "traffic", FakeDetector(), "detection")
        put(store, "churn", fit_scorer(cfg, splits["train"]), "table")
        yield store


def app_for(store: ModelStore, **options) -> serving.FastAPI:
    return create_app(ServeConfig(reload_interval=0, warm_explain=False, max_json_bytes=6_000_000,
                                  use_cases=ENTRIES, **options), store)


@contextlib.contextmanager
def live(app) -> Iterator[tuple[str, int]]:
    """``app`` under a real uvicorn server on 127.0.0.1 (a thread of this process), stopped on exit."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(kinds_store) -> Iterator[tuple[str, int]]:
    with live(app_for(kinds_store)) as address:
        yield address


def strict_json(data: bytes):
    """The body as strict JSON: UTF-8 without lone surrogates, no NaN or Infinity."""
    def refuse(constant: str):
        raise AssertionError(f"non-standard JSON constant {constant} in the reply")

    return json.loads(data.decode("utf-8"), parse_constant=refuse)


def exchange(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn.request(method, path, body=body, headers=headers or {})
    reply = conn.getresponse()
    return reply.status, reply.read()


def multipart(field: str, value: bytes, filename: str | None = None) -> tuple[bytes, dict[str, str]]:
    disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
    body = b"--b\r\nContent-Disposition: " + disposition.encode() + b"\r\n\r\n" + value + b"\r\n--b--\r\n"
    return body, {"content-type": "multipart/form-data; boundary=b"}


def fraud(*rows: str) -> bytes:
    return ('{"rows": [' + ", ".join(rows) + "]}").encode()


GOOD_FRAUD = '{"amount": 12.5, "hour": 3, "tx_count_7d": 4}'
DEEP = "[" * 900 + "]" * 900  # within json's nesting limit, deeper than any echo should go

# (path, raw body, headers, where the 422 must point). Raw bytes: Python's json (FastAPI's parser)
# accepts NaN, Infinity and escaped lone surrogates, which a strict JSON reply cannot carry.
BAD_INPUT = [
    ("fraud", fraud('{"amount": NaN, "hour": 3, "tx_count_7d": 4}'), JSON, ["body", "rows", 0, "amount"]),
    ("fraud", fraud('{"amount": Infinity, "hour": 3, "tx_count_7d": 4}'), JSON, ["body", "rows", 0, "amount"]),
    ("fraud", fraud(GOOD_FRAUD, '{"amount": 1, "hour": -Infinity, "tx_count_7d": 4}'), JSON,
     ["body", "rows", 1, "hour"]),
    ("fraud", fraud('{"amount": null, "hour": 3, "tx_count_7d": 4}'), JSON, ["body", "rows", 0, "amount"]),
    ("fraud", fraud('{"amount": 1e400, "hour": 3, "tx_count_7d": 4}'), JSON, ["body", "rows", 0, "amount"]),
    ("fraud", fraud('{"\\ud800": NaN, "hour": 3, "tx_count_7d": 4}'), JSON, ["body", "rows", 0, "amount"]),
    ("fraud", fraud(DEEP), JSON, ["body", "rows", 0]),
    ("fraud", b'{"rows": [{"amount": %s, "hour": 3, "tx_count_7d": 4}]}' % DEEP.encode(), JSON,
     ["body", "rows", 0, "amount"]),
    ("nlp", b'{"texts": ["\\ud800 hello"]}', JSON, ["body", "texts", 0]),
    ("nlp", b'{"texts": ["fine", "bad \\udc80"]}', JSON, ["body", "texts", 1]),
    ("nlp", b'{"texts": ["bad \xed\xa0\x80 bytes"]}', JSON, ["body", "texts", 0]),  # a surrogate, UTF-8-encoded
    ("nlp", b'{"texts": [NaN]}', JSON, ["body", "texts", 0]),
    ("nlp", b'{"texts": [%s]}' % DEEP.encode(), JSON, ["body", "texts", 0]),
    ("churn", b'{"rows": [{"tenure_months": NaN}]}', JSON, ["body", "rows", 0, "tenure_months"]),
    ("churn", b'{"rows": [{"monthly_charges": -Infinity}]}', JSON, ["body", "rows", 0, "monthly_charges"]),
    ("churn", b'{"rows": [{"region": "\\ud800"}]}', JSON, ["body", "rows", 0, "region"]),
    ("churn", b'{"rows": [{"\\udc80": 1}]}', JSON, ["body", "rows", 0]),
    ("churn", b'{"rows": [{"region": %s}]}' % DEEP.encode(), JSON, ["body", "rows", 0, "region"]),
    ("traffic", *multipart("image", b"\xed\xa0\x80\xff not a file"), ["body", "image"]),
]


@pytest.mark.parametrize("explain", ["", "?explain=true"])
@pytest.mark.parametrize(("name", "raw", "headers", "loc"), BAD_INPUT,
                         ids=[f"{case[0]}-{i}" for i, case in enumerate(BAD_INPUT)])
def test_bad_input_is_a_422_and_the_connection_survives(server, name, raw, headers, loc, explain) -> None:
    conn = http.client.HTTPConnection(*server, timeout=30)
    try:
        status, data = exchange(conn, "POST", f"/v1/{name}/predict{explain}", raw, headers)
        assert status == 422, data[:500]
        detail = strict_json(data)["detail"]
        assert any(d["loc"][: len(loc)] == loc for d in detail), detail
        sock = conn.sock
        assert sock is not None, "the server closed the connection after a client error"
        status, data = exchange(conn, "POST", f"/v1/fraud/predict{explain}", fraud(GOOD_FRAUD), JSON)
        assert status in (200, 409), data[:500]  # 409: the test's fraud scorer has no explanation background
        assert conn.sock is sock  # the same keep-alive connection answered
    finally:
        conn.close()


def test_echoed_input_is_cut_to_size(server) -> None:
    """A 5 MB text, an over-long list and a thousand bad rows each get a short 422."""
    conn = http.client.HTTPConnection(*server, timeout=60)
    try:
        status, data = exchange(conn, "POST", "/v1/nlp/predict", json.dumps({"texts": ["x" * 5_000_000]}).encode(),
                                JSON)
        assert status == 422 and len(data) < 2_000, (status, len(data))
        [error] = strict_json(data)["detail"]
        assert error["loc"] == ["body", "texts", 0] and error["type"] == "string_too_long"
        assert error["input"] == "x" * problems.ECHO_CHARS + f"... (+{5_000_000 - problems.ECHO_CHARS:,} characters)"

        status, data = exchange(conn, "POST", "/v1/nlp/predict", json.dumps({"texts": ["a b"] * 1001}).encode(), JSON)
        assert status == 422 and len(data) < 2_000, (status, len(data))
        [error] = strict_json(data)["detail"]
        assert error["loc"] == ["body", "texts"] and "1001" in error["msg"]
        assert error["input"][-1] == f"... {1001 - problems.ECHO_ITEMS} more items"

        rows = [{"amount": "x" * 2000, "hour": 3, "tx_count_7d": i} for i in range(1000)]
        status, data = exchange(conn, "POST", "/v1/fraud/predict", json.dumps({"rows": rows}).encode(), JSON)
        assert status == 422 and len(data) < 30_000, (status, len(data))
        detail = strict_json(data)["detail"]
        listed = problems.MAX_ERRORS
        assert len(detail) == listed + 1 and detail[0]["loc"] == ["body", "rows", 0, "amount"]
        assert detail[-1]["type"] == "too_many_errors" and f"{1000 - listed} more" in detail[-1]["msg"]

        status, data = exchange(conn, "POST", "/v1/" + "x" * 30_000 + "/predict", b"{}", JSON)
        assert status == 404 and len(data) < 3_000, (status, len(data))
        assert "unknown dataset entry" in strict_json(data)["detail"]
        assert exchange(conn, "GET", "/healthz")[0] == 200
    finally:
        conn.close()


def test_error_echo_is_json_safe_and_bounded() -> None:
    from deepflow.problems import ECHO_CHARS, ECHO_DEPTH, json_safe

    nested: list = []
    for _ in range(5000):
        nested = [nested]
    odd = [b"\xff\xfe", float("-inf"), 10**400, ValueError("no")]
    safe = json_safe({"a": float("nan"), "\udc80": odd, "n": nested})
    text = json.dumps(safe, allow_nan=False, ensure_ascii=False).encode("utf-8")  # raises on NaN or a surrogate
    assert len(text) < 2_000
    assert safe["a"] == "nan" and safe["\\udc80"][0] == "\\xff\\xfe" and safe["\\udc80"][3] == "no"
    assert safe["\\udc80"][2] == "1" + "0" * (ECHO_CHARS - 1) + f"... (+{401 - ECHO_CHARS} characters)"
    depth, level = 0, safe["n"]
    while isinstance(level, list):
        depth, level = depth + 1, level[0]
    assert level == "..." and depth == ECHO_DEPTH - 1
    assert json_safe("y" * 10_000) == "y" * ECHO_CHARS + f"... (+{10_000 - ECHO_CHARS:,} characters)"


# --- API keys ------------------------------------------------------------------------------------


def test_an_api_key_guards_every_route_but_the_probes(kinds_store) -> None:
    body = {"rows": [row()]}
    with TestClient(app_for(kinds_store, api_key=KEY)) as client:
        for headers in ({}, {"Authorization": f"Bearer {KEY[:-1]}x"}, {"X-API-Key": KEY.upper()},
                        {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY}):
            r = client.post("/v1/fraud/predict", json=body, headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert ("wrong" if "X-API-Key" in headers or "Bearer" in str(headers) else "missing") in r.json()["detail"]
            assert "X-API-Key" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
        for headers in ({"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer  {KEY}"}, {"X-API-Key": KEY},
                        {"X-API-Key": "wrong", "Authorization": f"Bearer {KEY}"}):
            r = client.post("/v1/fraud/predict", json=body, headers=headers)
            assert r.status_code == 200, (headers, r.text)
        assert client.post("/v1/nlp/predict", json={"texts": ["rain"]}, headers={"X-API-Key": KEY}).status_code == 200
        for path in ("/v1/models", "/openapi.json", "/docs", "/v1/nope/predict"):
            assert client.get(path).status_code == 401, path
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200

        spec = client.get("/openapi.json", headers={"X-API-Key": KEY}).json()
        assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
        assert spec["components"]["securitySchemes"]["apiKey"]["name"] == "X-API-Key"
        predict = spec["paths"]["/v1/fraud/predict"]["post"]
        assert predict["security"] == [{"bearer": []}, {"apiKey": []}] and "401" in predict["responses"]
        assert "security" not in spec["paths"]["/healthz"]["get"] and "security" not in spec["paths"]["/readyz"]["get"]

    with TestClient(app_for(kinds_store)) as client:  # no key configured: nothing asked, nothing declared
        assert client.post("/v1/fraud/predict", json=body).status_code == 200
        spec = client.get("/openapi.json").json()
        assert "securitySchemes" not in spec.get("components", {})
        assert "security" not in spec["paths"]["/v1/fraud/predict"]["post"]


def test_a_wrong_key_keeps_the_connection(kinds_store) -> None:
    with live(app_for(kinds_store, api_key=KEY)) as address:
        conn = http.client.HTTPConnection(*address, timeout=30)
        try:
            status, data = exchange(conn, "POST", "/v1/fraud/predict", fraud(GOOD_FRAUD), {**JSON, "X-API-Key": "no"})
            assert status == 401 and "wrong API key" in strict_json(data)["detail"]
            sock = conn.sock
            status, data = exchange(conn, "POST", "/v1/fraud/predict", fraud(GOOD_FRAUD), {**JSON, "X-API-Key": KEY})
            assert status == 200 and conn.sock is sock, data[:300]
        finally:
            conn.close()


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                                ("[::1]", True), ("127.1.2.3", True), ("0.0.0.0", False),
                                                ("::", False), ("10.0.0.5", False), ("my-host", False)])
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert guards.is_loopback(host) is loopback


@pytest.fixture
def no_serving(monkeypatch):
    """serving.serve and uvicorn replaced: a test sees the config it would serve, nothing is bound."""
    import uvicorn

    served: list[ServeConfig] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("uvicorn.run must not be reached"))
    monkeypatch.setattr(serving, "serve", served.append)
    monkeypatch.delenv(guards.API_KEY_ENV, raising=False)
    return served


def test_serve_refuses_a_public_host_without_a_key(no_serving, monkeypatch, tmp_path) -> None:
    from deepflow.cli import app

    runner = CliRunner()
    refused = runner.invoke(app, ["serve", "--host", "0.0.0.0"])
    assert refused.exit_code == 2 and not no_serving, refused.output
    text = " ".join(refused.output.split())
    assert "refusing to serve on 0.0.0.0 without an API key" in text
    assert guards.API_KEY_ENV in text and "--api-key-file" in text and "--insecure-no-auth" in text

    assert runner.invoke(app, ["serve"]).exit_code == 0  # loopback: no key needed
    assert no_serving[-1].host == "127.0.0.1" and no_serving[-1].api_key is None

    assert runner.invoke(app, ["serve", "--host", "0.0.0.0", "--insecure-no-auth"]).exit_code == 0
    assert no_serving[-1].api_key is None and no_serving[-1].insecure_no_auth

    monkeypatch.setenv(guards.API_KEY_ENV, KEY)
    assert runner.invoke(app, ["serve", "--host", "0.0.0.0"]).exit_code == 0
    assert no_serving[-1].api_key == KEY and KEY not in repr(no_serving[-1])  # never logged with the config
    assert runner.invoke(app, ["serve"]).exit_code == 0 and no_serving[-1].api_key == KEY  # loopback: enforced too

    key_file = tmp_path / "key"
    key_file.write_text(f"{KEY[::-1]}\n")
    assert runner.invoke(app, ["serve", "--host", "0.0.0.0", "--api-key-file", str(key_file)]).exit_code == 0
    assert no_serving[-1].api_key == KEY[::-1]  # the file wins over the environment

    for content, message in (("", "the file is empty"), ("short", "at least 16"), ("two words" * 3, "one word")):
        key_file.write_text(content)
        bad = runner.invoke(app, ["serve", "--api-key-file", str(key_file)])
        assert bad.exit_code == 2 and message in " ".join(bad.output.split()), bad.output
    missing = runner.invoke(app, ["serve", "--api-key-file", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "cannot read it" in missing.output


def test_serve_itself_refuses_before_loading_or_binding(monkeypatch) -> None:
    """The refusal is in serving.serve too (not only the CLI), before the app is built."""
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("uvicorn.run must not be reached"))
    monkeypatch.setattr(serving, "create_app", lambda *a, **k: pytest.fail("create_app must not be reached"))
    with pytest.raises(guards.ExposureError, match="refusing to serve on 0.0.0.0"):
        serving.serve(ServeConfig(host="0.0.0.0", use_cases=("fraud",)))


# --- load across a promotion and a rollback ------------------------------------------------------


@pytest.mark.slow
def test_thousands_of_requests_across_a_promotion_and_a_rollback(store, tmp_path, monkeypatch) -> None:
    """`deepflow serve` (a process, API key from the environment) answers 8 concurrent clients while
    @champion moves v1 -> v2 -> v1: every answer is a 200, its scores are those of the version it
    names, and a request sent after another saw a version never gets an older one."""
    import httpx

    monkeypatch.setenv("DEEPFLOW_LOCK_DIR", str(tmp_path / "locks"))
    v1, v2 = register_fraud(seed=0), register_fraud(seed=1, champion=False)
    rows = [row(amount=float(10 * i)) for i in range(4)]
    expected = {v: fraud_scorer(seed).predict(pd.DataFrame(rows)[FEATURES]) for v, seed in ((v1, 0), (v2, 1))}
    port, log_path = free_port(), tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log_file:  # a file, not a pipe: thousands of access-log lines must not block it
        proc = subprocess.Popen([str(Path(sys.executable).with_name("deepflow")), "serve", "--port", str(port),
                                 "--reload-interval", "0.2"], env={**os.environ, guards.API_KEY_ENV: KEY},
                                cwd=settings.PROJECT_ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    answers: list[tuple[float, float, int, str]] = []  # (sent, answered, status, version), as they end
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=30) as http:
            while not stop.is_set() and len(answers) < 6000:
                sent = time.monotonic()
                r = http.post("/v1/fraud/predict", json={"rows": rows})
                status, version = r.status_code, r.json()["model"]["version"] if r.status_code == 200 else r.text
                if status == 200 and not np.allclose([p["probability"] for p in r.json()["predictions"]],
                                                     expected[version], atol=1e-6):
                    status = -1  # the scores of another version than the one the answer names
                answers.append((sent, time.monotonic(), status, version[:300]))

    def wait_for(count: int, version: str | None = None, after: float = 0.0) -> float:
        """Until ``count`` answers in all (and one from ``version`` sent after ``after``); when that one came."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and all(w.is_alive() for w in workers):
            seen = [a for a in list(answers) if a[3] == version and a[0] > after] if version else [(0, 0.0)]
            if len(answers) >= count and seen:
                return min(a[1] for a in seen) if version else time.monotonic()
            time.sleep(0.02)
        pytest.fail(f"stuck at {len(answers)} answers waiting for v{version}; last: {answers[-3:]}")

    workers: list[threading.Thread] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:  # a probe: no key needed
                    break
            time.sleep(0.3)
        else:
            pytest.fail("the server never became ready")
        assert httpx.post(f"{base}/v1/fraud/predict", json={"rows": rows}).status_code == 401  # the key is on

        workers = [threading.Thread(target=client, name=f"client-{i}") for i in range(8)]
        for w in workers:
            w.start()
        wait_for(500)
        promoted = time.monotonic()
        ledger.move_alias("fraud", tracking.CHAMPION, v2, reason="load test", evidence="test", actor="test")
        on_v2 = wait_for(len(answers) + 500, v2, after=promoted)
        rolled_back = time.monotonic()
        steps.rollback("fraud", reason="load test rollback", to_version=v1)
        back_on_v1 = wait_for(len(answers) + 500, v1, after=rolled_back)
        wait_for(max(len(answers) + 300, 2400))
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=60)
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    assert 2000 <= len(answers) <= 6000, len(answers)
    failed = [a for a in answers if a[2] != 200]
    assert not failed, failed[:5]
    assert {a[3] for a in answers if a[1] < promoted} == {v1}
    # sent after a v2 answer came back and answered before the rollback: v2 only, and likewise v1 after it
    assert {a[3] for a in answers if on_v2 < a[0] and a[1] < rolled_back} == {v2}
    assert {a[3] for a in answers if a[0] > back_on_v1} == {v1}
    assert [a[3] for a in sorted(answers, key=lambda a: a[1])][-1] == v1
    print(f"{len(answers)} answers at 8 clients, v{v1} -> v{v2} -> v{v1}, no failure")
