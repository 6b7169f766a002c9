"""Serving part of the ``tabular`` kind: rows of numeric features in, a probability and a decision out.

``POST /v1/<name>/predict`` takes ``{"rows": [{feature: number, ...}, ...]}``. The row model is
built per loaded version from the scorer's ``features`` (one required, finite, strictly numeric
field each), so a reload that changes the feature set is enforced at once; the OpenAPI schema
shows the features of the version loaded at start-up.

The answer names the decision after the entry's positive class (``class_names[1]`` of its
config): ``{"probability": p, "churned": true}`` for an entry whose classes are ``[stayed, churned]``,
``{"probability": p, "positive": true}`` with the default class names. The decision is
``probability >= threshold`` (the version's ``deepflow.threshold`` tag, else ``DEFAULT_THRESHOLD``).

The fast path (docs/serving.md): the body is parsed once and checked once against the served
version's row model, the rows go to the model as one float32 array
(no DataFrame), a torch scorer runs in its compiled form (``deepflow.fastpath``: ONNX Runtime
when it matches eager torch), cheap calls run on the event loop (no thread hop) and the answer is
written by orjson. A scorer without a compiled form (scikit-learn, XGBoost) gets a DataFrame on a
worker thread, as before; ``?explain=true`` always takes that path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from deepflow import explain as explanations
from deepflow import fastpath
from deepflow.explaining import EXPLAIN, TOP, ColumnExplanation, explaining
from deepflow.kinds.tabular import batch
from deepflow.serving import ERRORS, Loaded, ModelRef, ModelStore, ServeConfig, json_body, model_title

DEFAULT_THRESHOLD = 0.5
FLOAT32_MAX = 3.4e38  # the scorers compute in float32: larger inputs would become inf
PROBABILITY = "probability"
INLINE_MS = 1.0  # a compiled call of one row at most this long runs on the event loop (no thread hop)


@dataclass(frozen=True)
class Prepared:
    """A loaded version's request checks and, for a torch scorer, its compiled form."""

    row: type[BaseModel]
    features: tuple[str, ...]
    compiled: fastpath.Compiled | None = None

    def describe(self) -> dict[str, Any]:
        return self.compiled.describe() if self.compiled else {"runtime": "scorer.predict (DataFrame)"}


def row_model(features: list[str], title: str) -> type[BaseModel]:
    """A pydantic model with one required, finite, strictly numeric field per feature."""
    fields: dict[str, Any] = {f: (float, Field(allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX))
                              for f in features}
    return create_model(title, __config__=ConfigDict(strict=True, extra="ignore"), **fields)


def prepare(name: str, scorer: Any) -> Prepared:
    """The row model of a loaded version (a tabular scorer must carry its ``features``), and the
    compiled form of a torch scorer (``scorer.net``, ``scorer.output``: :class:`deepflow.scoring.TorchScorer`)."""
    features = getattr(scorer, "features", None)
    if not features:
        raise TypeError(f"{name}: a tabular scorer must list its input `features` ({type(scorer).__name__} does not)")
    compiled = None
    if hasattr(scorer, "net") and getattr(scorer, "output", None) in ("logit", "score"):
        compiled = fastpath.compile_torch(scorer.net, len(features), scorer.output)
    return Prepared(row_model(list(features), model_title(name, "Row")), tuple(features), compiled)


def runtime(prepared: Prepared) -> dict[str, Any]:
    return prepared.describe()


def body_limit(cfg: ServeConfig) -> int:
    return cfg.max_json_bytes


def positive_class(name: str) -> str:
    """The entry's name for label 1 (``class_names[1]``): the decision field of its answers."""
    positive = batch.positive_class(name)
    if positive == PROBABILITY:
        raise ValueError(f"{name}: class name {positive!r} would clash with the response's probability field")
    return positive


def response_model(name: str, positive: str) -> type[BaseModel]:
    """``{model, threshold, predictions: [{probability, <positive>}]}`` for entry ``name``."""
    # The decision is stored under a fixed attribute and published under the class name (an
    # alias), so any class name works, even one that is not a Python identifier.
    prediction = create_model(
        model_title(name, "Prediction"), __config__=ConfigDict(populate_by_name=True),
        probability=(float, Field(description="the model's score for the row")),
        decision=(bool, Field(alias=positive, description=f"probability >= threshold: the row is {positive!r}")),
        explanation=(ColumnExplanation | None, Field(None, description="with ?explain=true: why (docs/explain.md)")))
    return create_model(model_title(name, "Response"), model=(ModelRef, ...), threshold=(float, ...),
                        predictions=(list[prediction], ...))


def parse_rows(body_model: type[BaseModel], raw: bytes) -> list[dict[str, Any]]:
    """The request's rows, checked against the served version's row model; a 422 naming
    ``["body", "rows", i, feature]`` otherwise. Parsed by Python's json, as FastAPI parses a body
    (NaN, Infinity and escaped lone surrogates parse, then fail the checks by name)."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        where = exc.pos if isinstance(exc, json.JSONDecodeError) else getattr(exc, "start", 0)
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body", where), "msg": "JSON decode error",
                                       "input": {}, "ctx": {"error": str(exc)[:200]}}]) from None
    try:
        return [row.model_dump() for row in body_model.model_validate(data).rows]
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
                                     ) from None


def finite(probs: np.ndarray) -> np.ndarray:
    """The scores, or a 422 naming the rows without a finite one (absurd but finite inputs can
    overflow inside the model)."""
    if not np.isfinite(probs).all():
        raise RequestValidationError([{"type": "value_error", "loc": ("body", "rows", i), "input": None,
                                       "msg": "the model gives no finite score for these values"}
                                      for i, p in enumerate(probs) if not np.isfinite(p)])
    return probs


def add_routes(app: FastAPI, store: ModelStore, cfg: ServeConfig, name: str) -> None:
    """``POST /v1/<name>/predict``: score rows with the served version."""
    loaded = store.get(name).loaded
    # Without a champion at start-up any object is accepted here; rows are checked per request
    # against the version that serves them (so the answer is the 503, not a guess at a schema).
    positive = positive_class(name)
    response = response_model(name, positive)
    bodies: dict[type[BaseModel], type[BaseModel]] = {}  # row model of a version -> its request model

    def body_for(row: type[BaseModel]) -> type[BaseModel]:
        if row not in bodies:
            bodies[row] = create_model(model_title(name, "Request"), rows=(
                list[row], Field(min_length=1, max_length=cfg.max_rows,
                                 description="one object per row, one number per model feature")))
        return bodies[row]

    documented = body_for(loaded.prepared.row if loaded else
                          create_model(model_title(name, "Row"), __config__=ConfigDict(extra="allow")))

    def scores(served: Loaded, values: list[list[float]]) -> np.ndarray:
        compiled = served.prepared.compiled
        if compiled is not None:
            return compiled.run(np.asarray(values, dtype=np.float32))
        frame = pd.DataFrame(values, columns=list(served.prepared.features))
        return np.asarray(served.scorer.predict(frame), dtype=np.float64)

    def explained(served: Loaded, values: list[list[float]], top: int) -> dict[str, Any]:
        frame = pd.DataFrame(values, columns=list(served.prepared.features))
        probs = finite(np.asarray(served.scorer.predict(frame), dtype=np.float64))
        why = explaining(cfg, len(frame), "rows", lambda: explanations.explain_scorer(
            served.scorer, frame, f"v{served.version}", target=positive, top=top), served)
        predictions = [{PROBABILITY: float(p), positive: bool(p >= served.threshold), "explanation": e}
                       for p, e in zip(probs, why, strict=True)]
        return {"model": served.ref, "threshold": served.threshold, "predictions": predictions}

    async def predict(request: Request, explain: bool = EXPLAIN, top: int = TOP) -> Any:
        served = store.serving(name)
        features = served.prepared.features
        values = [[row[f] for f in features] for row in parse_rows(body_for(served.prepared.row),
                                                                    await request.body())]
        if explain:
            return await run_in_threadpool(explained, served, values, top)
        compiled = served.prepared.compiled
        if compiled is not None and compiled.single_ms * len(values) <= INLINE_MS:
            probs = scores(served, values)  # a few tens of microseconds: cheaper than a thread hop
        else:
            probs = await run_in_threadpool(scores, served, values)
        threshold = served.threshold
        out = {"model": served.ref, "threshold": threshold,
               "predictions": [{PROBABILITY: p, positive: p >= threshold} for p in finite(probs).tolist()]}
        return Response(orjson.dumps(out), media_type="application/json")

    app.post(f"/v1/{name}/predict", tags=["predict"], responses=ERRORS, response_model=response,
             response_model_exclude_unset=True,  # no "explanation": null unless asked for
             openapi_extra=json_body(app, documented),
             summary=f"Score rows ({name}): probability of {positive!r}")(predict)
