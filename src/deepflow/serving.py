"""Real-time serving: the ``@champion`` of every use case behind one FastAPI app.

``deepflow serve`` runs :func:`create_app` under uvicorn. Inference calls the plain scorer that
MLflow stored (``tracking.load_scorer``), which carries its own preprocessing; nothing from the
training side (data contracts, orchestration) is imported here.

Hot reload: a daemon thread polls the registry every ``reload_interval`` seconds. When a use case's
``@champion`` points at a new version, that version is loaded on the poller thread (off the request
path) and the slot's reference is replaced in one assignment; a request takes the reference once,
at its start, so in-flight requests finish on the version they started with. A version that fails
to load leaves the previous one serving and is reported in ``/readyz``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, HTTPException, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, create_model

from deepflow import settings, tracking, usecase

log = logging.getLogger("deepflow.serving")

TABULAR, TEXT, IMAGE = "tabular", "text", "image"
DEFAULT_THRESHOLD = {TABULAR: 0.5, TEXT: 0.5, IMAGE: 0.25}
FLOAT32_MAX = 3.4e38  # the scorers compute in float32: larger inputs would become inf
NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")  # MLflow's codes for no model / no alias
MULTIPART_MARGIN = 64 * 1024  # form boundaries and headers around the image bytes


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    reload_interval: float = 5.0  # seconds between registry polls; <= 0 turns hot reload off
    torch_threads: int = 1  # intra-op threads per inference call (see docs/serving.md)
    max_json_bytes: int = 1_000_000  # request bodies of the JSON endpoints -> 413 above
    max_image_bytes: int = 10_000_000  # an uploaded image -> 413 above
    max_rows: int = 1000  # rows per fraud request, texts per nlp request -> 422 above
    max_text_chars: int = 10_000
    use_cases: tuple[str, ...] = field(default_factory=lambda: tuple(usecase.entries()))


def kind_of(use_case: str) -> str:
    """Which request shape an entry takes, from its kind."""
    return {"tabular": TABULAR, "text": TEXT, "detection": IMAGE}[usecase.entry(use_case).kind]


# --- the loaded models ---------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """One loaded version; never mutated, replaced as a whole."""

    use_case: str
    version: str
    scorer: Any
    threshold: float
    tags: dict[str, str]
    run_id: str
    loaded_at: str
    row_model: type[BaseModel] | None = None  # tabular: one field per scorer feature

    @property
    def ref(self) -> dict[str, str]:
        return {"name": self.use_case, "version": self.version}


@dataclass
class Slot:
    """A use case's serving state. ``loaded`` is swapped by one assignment (atomic in CPython)."""

    use_case: str
    kind: str
    loaded: Loaded | None = None
    champion: str | None = None  # the version @champion pointed to at the last poll
    aliases: list[str] = field(default_factory=list)  # of the loaded version, at the last poll
    error: str | None = None  # the last load (or registry) error, cleared by a good load
    checked_at: str | None = None

    def state(self) -> str:
        if self.loaded is None:
            return "failed" if self.error else "no_champion"
        if self.error:
            return "degraded"  # serving an older version; the newer one failed to load
        return "ready"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def row_model_for(features: list[str], title: str = "TransactionRow") -> type[BaseModel]:
    """A pydantic model with one required, finite, strictly numeric field per feature."""
    fields: dict[str, Any] = {f: (float, Field(allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX))
                              for f in features}
    return create_model(title, __config__=ConfigDict(strict=True, extra="ignore"), **fields)


def load_version(use_case: str, version, loader: Callable[[str], Any] = tracking.load_scorer) -> Loaded:
    """Load one registered version (``version``: an MLflow ModelVersion) into a ``Loaded``."""
    kind = kind_of(use_case)
    scorer = loader(f"models:/{use_case}/{version.version}")
    tags = dict(version.tags or {})
    try:
        threshold = float(tags["deepflow.threshold"])
    except (KeyError, ValueError):
        threshold = DEFAULT_THRESHOLD[kind]
    row_model = None
    if kind == TABULAR:
        row_model = row_model_for(list(scorer.features), f"{use_case.title()}Row")
    elif kind == TEXT and not getattr(scorer, "labels", None):
        raise TypeError(f"{use_case} v{version.version}: the scorer has no class labels")
    return Loaded(use_case, str(version.version), scorer, threshold, tags, str(version.run_id or ""), _now(),
                  row_model)


class ModelStore:
    """The slots of every served use case, and the poller that keeps them on ``@champion``."""

    def __init__(self, use_cases: tuple[str, ...], loader: Callable[[str], Any] = tracking.load_scorer) -> None:
        self.slots = {name: Slot(name, kind_of(name)) for name in use_cases}
        self.loader = loader
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refresh_lock = threading.Lock()

    def get(self, use_case: str) -> Slot:
        return self.slots[use_case]

    def refresh(self) -> None:
        """One poll: load what ``@champion`` now points to, where it moved."""
        with self._refresh_lock:
            for slot in self.slots.values():
                self._refresh_one(slot)

    def _refresh_one(self, slot: Slot) -> None:
        slot.checked_at = _now()
        try:
            mv = tracking.client().get_model_version_by_alias(slot.use_case, tracking.CHAMPION)
        except Exception as exc:
            if getattr(exc, "error_code", None) not in NOT_FOUND:  # registry unreachable: keep what is loaded
                slot.error = f"registry: {type(exc).__name__}: {exc}"[:2000]
                return
            mv = None  # no such model, or no @champion alias
        if mv is None:
            if slot.loaded is not None:
                log.warning("%s: @champion removed; no longer serving v%s", slot.use_case, slot.loaded.version)
            slot.loaded, slot.champion, slot.aliases, slot.error = None, None, [], None
            return
        version = str(mv.version)
        slot.champion = version
        if slot.loaded is not None and slot.loaded.version == version:
            slot.aliases = sorted(mv.aliases or [])
            slot.error = None
            return
        started = time.perf_counter()
        try:
            loaded = load_version(slot.use_case, mv, self.loader)
        except Exception as exc:  # a broken version must not take the served one down
            slot.error = f"v{version} failed to load: {type(exc).__name__}: {exc}"[:2000]
            log.error("%s: %s (still serving %s)", slot.use_case, slot.error,
                      f"v{slot.loaded.version}" if slot.loaded else "nothing")
            return
        previous = slot.loaded
        slot.loaded = loaded  # the swap: requests that already took `previous` finish on it
        slot.aliases, slot.error = sorted(mv.aliases or []), None
        log.info("%s: serving v%s (was %s), loaded in %.2f s", slot.use_case, version,
                 f"v{previous.version}" if previous else "none", time.perf_counter() - started)

    def start(self, interval: float) -> None:
        if interval <= 0 or self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.refresh()
                except Exception:  # never let the poller die
                    log.exception("registry poll failed")

        self._thread = threading.Thread(target=loop, name="deepflow-model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None


# --- request and response shapes -----------------------------------------------------------


class ModelRef(BaseModel):
    name: str
    version: str


class FraudPrediction(BaseModel):
    probability: float
    fraud: bool


class FraudResponse(BaseModel):
    model: ModelRef
    threshold: float
    predictions: list[FraudPrediction]


class TextPrediction(BaseModel):
    label: str
    probability: float
    probabilities: dict[str, float]


class TextResponse(BaseModel):
    model: ModelRef
    predictions: list[TextPrediction]


class Detection(BaseModel):
    x1: float
    y1: float
    x2: float
    y2: float
    class_: str = Field(alias="class")
    score: float

    model_config = ConfigDict(populate_by_name=True)


class DetectionResponse(BaseModel):
    model: ModelRef
    threshold: float
    width: int
    height: int
    detections: list[Detection]
    counts: dict[str, int]


class Problem(BaseModel):
    detail: Any


ERRORS = {404: {"model": Problem}, 413: {"model": Problem}, 503: {"model": Problem}}


# --- body size limit -------------------------------------------------------------------------


class BodyLimit:
    """ASGI middleware: 413 for request bodies over the limit of their path, before parsing."""

    def __init__(self, app, limit_for: Callable[[str], int]) -> None:
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _send_json(send, 400, {"detail": "invalid Content-Length"})
                return
            if int(declared) > limit:
                await _send_json(send, 413, {"detail": f"request body over the {limit}-byte limit"})
                return
        chunks, size = [], 0
        while True:  # buffer (at most `limit` bytes) so a body without Content-Length is bounded too
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _send_json(send, 413, {"detail": f"request body over the {limit}-byte limit"})
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _send_json(send, status: int, payload: dict) -> None:
    import json

    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


# --- the app -------------------------------------------------------------------------------


def _serving(store: ModelStore, use_case: str) -> Loaded:
    loaded = store.get(use_case).loaded  # taken once: a reload mid-request does not affect it
    if loaded is None:
        slot = store.get(use_case)
        why = f" (last error: {slot.error})" if slot.error else ""
        raise HTTPException(503, f"{use_case}: no @champion loaded; register a version and move @champion "
                                 f"(`deepflow train {use_case}` / `deepflow promote {use_case}`){why}")
    return loaded


def _check_rows(loaded: Loaded, rows: list[dict[str, Any]]):
    """Validate rows against the served version's own features (they may change on reload)."""
    import pandas as pd

    errors, clean = [], []
    for i, row in enumerate(rows):
        try:
            clean.append(loaded.row_model.model_validate(row).model_dump())
        except ValidationError as exc:
            errors += [{**e, "loc": ("body", "rows", i, *e["loc"])} for e in exc.errors(include_url=False)]
    if errors:
        raise RequestValidationError(errors)
    return pd.DataFrame(clean, columns=list(loaded.scorer.features))


def create_app(cfg: ServeConfig | None = None, store: ModelStore | None = None) -> FastAPI:
    """The serving app. Loads the current champions now; polls for new ones while it runs."""
    import contextlib

    import torch

    cfg = cfg or ServeConfig()
    settings.apply_env_defaults()
    torch.set_num_threads(max(1, cfg.torch_threads))
    store = store or ModelStore(cfg.use_cases)
    store.refresh()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        store.start(cfg.reload_interval)
        try:
            yield
        finally:
            store.stop()

    app = FastAPI(title="deepflow serving", version="1",
                  description="The @champion of every registered deepflow use case.", lifespan=lifespan)
    app.state.store, app.state.config = store, cfg
    image_paths = {f"/v1/{n}/predict" for n in cfg.use_cases if kind_of(n) == IMAGE}
    app.add_middleware(BodyLimit, limit_for=lambda path: cfg.max_image_bytes + MULTIPART_MARGIN
                       if path in image_paths else cfg.max_json_bytes)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """The process is alive (says nothing about models)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "no use case has a champion loaded"}})
    def readyz() -> JSONResponse:
        """Per use case: state (ready, degraded, no_champion, failed), served version, last error."""
        body = {
            name: {"state": s.state(), "version": s.loaded.version if s.loaded else None,
                   "champion": s.champion, "error": s.error, "checked_at": s.checked_at}
            for name, s in store.slots.items()
        }
        ready = any(s.loaded is not None for s in store.slots.values())
        return JSONResponse({"ready": ready, "use_cases": body}, status_code=200 if ready else 503)

    @app.get("/v1/models", tags=["ops"])
    def models() -> dict[str, Any]:
        """Served use cases: version, aliases, key test metrics and data version from the version's tags."""
        out = {}
        for name, slot in store.slots.items():
            loaded = slot.loaded
            if loaded is None:
                continue
            tags = loaded.tags
            out[name] = {
                "version": loaded.version, "aliases": slot.aliases, "kind": slot.kind,
                "threshold": loaded.threshold, "loaded_at": loaded.loaded_at, "run_id": loaded.run_id,
                "data_version": tags.get("deepflow.data_version"), "member": tags.get("deepflow.member"),
                "metrics": {k: _number(v) for k, v in sorted(tags.items()) if k.startswith("test/")},
            }
        return {"models": out}

    for name in cfg.use_cases:
        _add_route(app, store, cfg, name)

    @app.post("/v1/{use_case}/predict", include_in_schema=False)
    def unknown(use_case: str) -> None:
        raise HTTPException(404, f"unknown use case {use_case!r} (served: {', '.join(cfg.use_cases)})")

    return app


def _number(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def _add_route(app: FastAPI, store: ModelStore, cfg: ServeConfig, name: str) -> None:
    kind = kind_of(name)
    path = f"/v1/{name}/predict"
    if kind == TABULAR:
        loaded = store.get(name).loaded
        row = loaded.row_model if loaded else create_model(
            f"{name.title()}Row", __config__=ConfigDict(extra="allow"))  # no champion yet: checked per request
        body_model = create_model(f"{name.title()}Request", rows=(
            list[row], Field(min_length=1, max_length=cfg.max_rows,
                             description="one object per transaction, one number per model feature")))

        def predict_tabular(body) -> FraudResponse:
            served = _serving(store, name)
            frame = _check_rows(served, [r.model_dump() for r in body.rows])
            probs = np.asarray(served.scorer.predict(frame), dtype=np.float64)
            if not np.isfinite(probs).all():  # absurd but finite inputs can overflow inside the model
                bad = [i for i, p in enumerate(probs) if not np.isfinite(p)]
                raise RequestValidationError([{"type": "value_error", "loc": ("body", "rows", i),
                                               "msg": "the model gives no finite score for these values",
                                               "input": None} for i in bad])
            return FraudResponse(model=ModelRef(**served.ref), threshold=served.threshold, predictions=[
                FraudPrediction(probability=float(p), fraud=bool(p >= served.threshold)) for p in probs])

        predict_tabular.__annotations__["body"] = body_model  # a local class: resolve it here
        app.post(path, tags=["predict"], responses=ERRORS, summary=f"Score transactions ({name})")(predict_tabular)
    elif kind == TEXT:
        text = Annotated[str, StringConstraints(max_length=cfg.max_text_chars)]
        text_request = create_model(f"{name.title()}Request", texts=(
            list[text], Field(min_length=1, max_length=cfg.max_rows, description="the texts to classify")))

        def predict_text(body) -> TextResponse:
            import pandas as pd

            served = _serving(store, name)
            probs = served.scorer.predict(pd.DataFrame({"text": body.texts}))
            labels = [str(x) for x in served.scorer.labels]
            out = []
            for row in probs:
                best = int(row.argmax())
                out.append(TextPrediction(label=labels[best], probability=float(row[best]),
                                          probabilities={lab: float(p) for lab, p in zip(labels, row, strict=True)}))
            return TextResponse(model=ModelRef(**served.ref), predictions=out)

        predict_text.__annotations__["body"] = text_request
        app.post(path, tags=["predict"], responses=ERRORS, summary=f"Classify texts ({name})")(predict_text)
    else:

        def predict_image(image: Annotated[UploadFile, File(description="a JPEG or PNG image")]) -> DetectionResponse:
            import pandas as pd

            data = image.file.read(cfg.max_image_bytes + 1)  # the client's errors first, then availability
            if len(data) > cfg.max_image_bytes:
                raise HTTPException(413, f"image over the {cfg.max_image_bytes}-byte limit")
            width, height = _image_size(data)
            served = _serving(store, name)
            found = served.scorer.predict(pd.DataFrame({"image": [data]}))
            found = found[found["score"] >= served.threshold]
            detections = [Detection(x1=x1, y1=y1, x2=x2, y2=y2, class_=str(c), score=s) for x1, y1, x2, y2, c, s in
                          zip(found["x1"], found["y1"], found["x2"], found["y2"], found["class"], found["score"],
                              strict=True)]
            counts: dict[str, int] = {}
            for d in detections:
                counts[d.class_] = counts.get(d.class_, 0) + 1
            return DetectionResponse(model=ModelRef(**served.ref), threshold=served.threshold, width=width,
                                     height=height, detections=detections, counts=counts)

        app.post(path, tags=["predict"], responses={**ERRORS, 400: {"model": Problem}},
                 summary=f"Detect objects in an image ({name})", response_model_by_alias=True)(predict_image)


def _image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of encoded image bytes; 400 when they do not decode as an image."""
    import warnings

    from PIL import Image

    from deepflow.kinds.detection.labels import decode

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = decode(data)
    except Exception as exc:  # PIL raises many types for bad bytes; all are the client's
        raise HTTPException(400, f"not a decodable image: {type(exc).__name__}") from exc
    return image.size


def serve(cfg: ServeConfig) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(cfg), host=cfg.host, port=cfg.port, log_level="info")
