"""Real-time serving: the ``@champion`` of every dataset entry behind one FastAPI app.

``deepflow serve`` runs :func:`create_app` under uvicorn. Inference calls the plain scorer that
MLflow stored (``tracking.load_scorer``), which carries its own preprocessing; nothing from the
training side (data contracts, orchestration) is imported here.

This module is the kind-independent core: the served versions (:class:`ModelStore`), hot reload,
error handling and the operations endpoints (body limits and API keys: :mod:`deepflow.guards`;
error replies: :mod:`deepflow.problems`). What a request and a response look like belongs to the
entry's kind: ``deepflow.kinds.<kind>.serving`` (reached through ``kinds.part(kind, "serving")``)
provides

* ``DEFAULT_THRESHOLD: float``, used when a version has no ``deepflow.threshold`` tag;
* ``prepare(name, scorer) -> Any``: checks a freshly loaded scorer fits the kind and returns the
  per-version state its routes need (kept in :attr:`Loaded.prepared`); raising refuses the version,
  so the previous one keeps serving;
* ``body_limit(cfg) -> int``: the largest request body, in bytes, on the kind's routes;
* ``runtime(prepared) -> dict``: what scores a version's requests (``/v1/models`` shows it);
* ``add_routes(app, store, cfg, name)``: ``POST /v1/<name>/predict`` (and any other route under
  ``/v1/<name>/``); a handler takes the served version with :meth:`ModelStore.serving`.

Hot reload: a daemon thread polls the registry every ``reload_interval`` seconds. When an entry's
``@champion`` points at a new version, that version is loaded on the poller thread (off the
request path) and the slot's reference is replaced in one assignment; a request takes the
reference once, at its start, so in-flight requests finish on the version they started with. A
version that fails to load leaves the previous one serving and is reported in ``/readyz``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import anyio
from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from deepflow import guards, kinds, problems, settings, tracking, usecase

log = logging.getLogger("deepflow.serving")

NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")  # MLflow's codes for no model / no alias


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    reload_interval: float = 5.0  # seconds between registry polls; <= 0 turns hot reload off
    torch_threads: int = 1  # intra-op threads per inference call (see docs/serving.md)
    max_json_bytes: int = 1_000_000  # request bodies of the JSON endpoints -> 413 above
    max_image_bytes: int = 10_000_000  # an uploaded image -> 413 above
    max_rows: int = 1000  # items (rows, texts) per JSON request -> 422 above
    max_text_chars: int = 10_000
    max_batch: int = 64  # items (texts, images) one grouped call of a batched route scores (fastpath.batcher)
    max_explain_rows: int = 20  # rows (texts) per request with ?explain=true -> 422 above (see docs/explain.md)
    warm_explain: bool = True  # import shap and compile its kernels in the background at start-up
    api_key: str | None = field(default=None, repr=False)  # required on every route but the probes (guards.py)
    insecure_no_auth: bool = False  # allow a non-loopback host without a key (serve() refuses it otherwise)
    use_cases: tuple[str, ...] = field(default_factory=lambda: tuple(usecase.entries(usecase.warn_broken)))


def model_title(name: str, suffix: str) -> str:
    """An OpenAPI model name for entry ``name``: ``model_title("churn-risk", "Row") == "ChurnRiskRow"``."""
    return "".join(word[:1].upper() + word[1:] for word in re.split(r"[-_]+", name)) + suffix


def serving_part(kind: str) -> ModuleType:
    """The kind's serving module (its contract is in this module's docstring)."""
    return kinds.part(kind, "serving")


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
    prepared: Any = None  # the kind's per-version state from its ``prepare`` (tabular: the row model)

    @property
    def ref(self) -> dict[str, str]:
        return {"name": self.use_case, "version": self.version}


@dataclass
class Slot:
    """An entry's serving state. ``loaded`` is swapped by one assignment (atomic in CPython)."""

    use_case: str
    kind: str  # the entry's kind: picks the routes and the per-version preparation
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


def load_version(use_case: str, version: Any, loader: Callable[[str], Any] = tracking.load_scorer,
                 kind: str | None = None) -> Loaded:
    """Load one registered version (``version``: an MLflow ModelVersion) into a ``Loaded``.

    ``kind`` defaults to the entry's; the kind's ``prepare`` may refuse the scorer (it raises).
    """
    part = serving_part(kind or usecase.entry(use_case).kind)
    scorer = loader(f"models:/{use_case}/{version.version}")
    tags = dict(version.tags or {})
    try:
        threshold = float(tags["deepflow.threshold"])
    except (KeyError, ValueError):
        threshold = float(part.DEFAULT_THRESHOLD)
    prepared = part.prepare(use_case, scorer)
    return Loaded(use_case, str(version.version), scorer, threshold, tags, str(version.run_id or ""), _now(),
                  prepared)


class ModelStore:
    """The slots of every served entry, and the poller that keeps them on ``@champion``.

    ``loader`` turns a ``models:/<name>/<version>`` URI into a scorer (tests pass fakes).
    """

    def __init__(self, use_cases: tuple[str, ...], loader: Callable[[str], Any] = tracking.load_scorer) -> None:
        self.slots = {name: Slot(name, usecase.entry(name).kind) for name in use_cases}
        self.loader = loader
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refresh_lock = threading.Lock()

    def get(self, use_case: str) -> Slot:
        return self.slots[use_case]

    def serving(self, use_case: str) -> Loaded:
        """The version a request runs on, taken once (a reload mid-request does not affect it);
        503 when the entry has none loaded."""
        slot = self.get(use_case)
        loaded = slot.loaded
        if loaded is None:
            why = f" (last error: {slot.error})" if slot.error else ""
            raise HTTPException(503, f"{use_case}: no @champion loaded; register a version and move @champion "
                                     f"(`deepflow train {use_case}` / `deepflow promote {use_case}`){why}")
        return loaded

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
            loaded = load_version(slot.use_case, mv, self.loader, slot.kind)
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


# --- shapes every kind shares ----------------------------------------------------------------


class ModelRef(BaseModel):
    """The version that produced a response; every prediction response carries one."""

    name: str
    version: str


class Problem(BaseModel):
    detail: Any


ERRORS = {404: {"model": Problem}, 409: {"model": Problem}, 413: {"model": Problem}, 503: {"model": Problem}}


def json_body(app: FastAPI, model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` as the JSON body of a route that reads its body itself
    (the fast paths parse the raw bytes with the served version's model); the model's schema joins
    the spec's components when the spec is built."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    app.state.schemas.update(schema.pop("$defs", {}))
    app.state.schemas[model.__name__] = schema
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def _with_schemas(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        spec = build()  # FastAPI caches the spec; the update below is the same every call
        spec.setdefault("components", {}).setdefault("schemas", {}).update(app.state.schemas)
        return spec

    app.openapi = openapi


# --- the app -------------------------------------------------------------------------------


def create_app(cfg: ServeConfig | None = None, store: ModelStore | None = None) -> FastAPI:
    """The serving app. Loads the current champions now; polls for new ones while it runs.

    ``store`` (default: a :class:`ModelStore` of ``cfg.use_cases``) decides what is served: one
    set of routes per slot, from the slot's kind.
    """
    import contextlib

    import torch

    cfg = cfg or ServeConfig()
    settings.apply_env_defaults()
    torch.set_num_threads(max(1, cfg.torch_threads))
    store = store or ModelStore(cfg.use_cases)
    store.refresh()
    warming: list[threading.Thread] = []  # the explainer's warm-up while the server runs

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        mine = None  # this lifespan's (a test harness may run a second one on the same app)
        if cfg.warm_explain:
            from deepflow.explaining import warm

            mine = threading.Thread(target=warm, name="deepflow-explain-warm", daemon=True)
            warming.append(mine)
            mine.start()
        store.start(cfg.reload_interval)
        try:
            yield
        finally:
            store.stop()
            # a stopped server leaves no thread behind: one still importing shap would go on
            # changing the process's global warnings filters under whatever runs next
            if mine is not None:
                await anyio.to_thread.run_sync(mine.join, 120)
                warming.remove(mine)

    app = FastAPI(title="deepflow serving", version="1",
                  description="The @champion of every registered deepflow dataset entry.", lifespan=lifespan)
    app.state.store, app.state.config, app.state.schemas = store, cfg, {}
    limits = {name: serving_part(slot.kind).body_limit(cfg) for name, slot in store.slots.items()}

    def limit_for(path: str) -> int:
        segments = path.split("/")  # "/v1/<name>/predict" -> ["", "v1", "<name>", "predict"]
        served = segments[2] if len(segments) > 2 and segments[1] == "v1" else None
        return limits.get(served, cfg.max_json_bytes)

    app.add_middleware(guards.BodyLimit, limit_for=limit_for)
    _with_schemas(app)
    if cfg.api_key:  # added last, so it runs first: a request without the key is not even read
        app.add_middleware(guards.ApiKey, key=cfg.api_key)
        guards.declare_security(app)
    # every error reply is strict, bounded JSON (problems.py): a client error is never a 500
    app.add_exception_handler(RequestValidationError, problems.unprocessable)
    app.add_exception_handler(StarletteHTTPException, problems.http_error)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """The process is alive (says nothing about models)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "no entry has a champion loaded"}})
    def readyz() -> JSONResponse:
        """Per entry: state (ready, degraded, no_champion, failed), served version, last error."""
        body = {
            name: {"state": s.state(), "version": s.loaded.version if s.loaded else None,
                   "champion": s.champion, "error": s.error, "checked_at": s.checked_at}
            for name, s in store.slots.items()
        }
        ready = any(s.loaded is not None for s in store.slots.values())
        # "warming": the explainer still imports in the background (it takes the GIL from requests meanwhile)
        explainer = "warming" if any(t.is_alive() for t in warming) else "ready"
        return JSONResponse({"ready": ready, "explainer": explainer, "use_cases": body},
                            status_code=200 if ready else 503)

    @app.get("/v1/models", tags=["ops"])
    def models() -> dict[str, Any]:
        """Served entries: kind, version, aliases, key test metrics and data version from the version's tags."""
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
                "runtime": serving_part(slot.kind).runtime(loaded.prepared),
            }
        return {"models": out}

    for name, slot in store.slots.items():
        serving_part(slot.kind).add_routes(app, store, cfg, name)

    @app.post("/v1/{use_case}/predict", include_in_schema=False)
    def unknown(use_case: str) -> None:
        raise HTTPException(404, f"unknown dataset entry {use_case!r} (served: {', '.join(store.slots)})")

    return app


def _number(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def serve(cfg: ServeConfig) -> None:
    """Run the app under uvicorn; :class:`guards.ExposureError` (before anything is loaded or bound)
    for a non-loopback host without an API key, unless ``cfg.insecure_no_auth``."""
    import uvicorn

    warning = guards.check_exposure(cfg.host, cfg.api_key, cfg.insecure_no_auth)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if warning:
        log.warning(warning)
    log.info("API key: %s", "required on every route but /healthz and /readyz" if cfg.api_key else "off")
    uvicorn.run(create_app(cfg), host=cfg.host, port=cfg.port, log_level="info")
