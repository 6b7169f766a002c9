"""Serving part of the ``tabular`` kind: rows of numeric features in, a probability and a decision out.

``POST /v1/<name>/predict`` takes ``{"rows": [{feature: number, ...}, ...]}``. The row model is
built per loaded version from the scorer's ``features`` (one required, finite, strictly numeric
field each), so a reload that changes the feature set is enforced at once; the OpenAPI schema
shows the features of the version loaded at start-up.

The answer names the decision after the entry's positive class (``class_names[1]`` of its
config): ``{"probability": p, "churned": true}`` for an entry whose classes are ``[stayed, churned]``,
``{"probability": p, "positive": true}`` with the default class names. The decision is
``probability >= threshold`` (the version's ``deepflow.threshold`` tag, else ``DEFAULT_THRESHOLD``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from deepflow import explain as explanations
from deepflow.explaining import EXPLAIN, TOP, ColumnExplanation, explaining
from deepflow.kinds.tabular import batch
from deepflow.serving import ERRORS, Loaded, ModelRef, ModelStore, ServeConfig, model_title

DEFAULT_THRESHOLD = 0.5
FLOAT32_MAX = 3.4e38  # the scorers compute in float32: larger inputs would become inf
PROBABILITY = "probability"


def row_model(features: list[str], title: str) -> type[BaseModel]:
    """A pydantic model with one required, finite, strictly numeric field per feature."""
    fields: dict[str, Any] = {f: (float, Field(allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX))
                              for f in features}
    return create_model(title, __config__=ConfigDict(strict=True, extra="ignore"), **fields)


def prepare(name: str, scorer: Any) -> type[BaseModel]:
    """The row model of a loaded version: a tabular scorer must carry its ``features``."""
    features = getattr(scorer, "features", None)
    if not features:
        raise TypeError(f"{name}: a tabular scorer must list its input `features` ({type(scorer).__name__} does not)")
    return row_model(list(features), model_title(name, "Row"))


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


def check_rows(loaded: Loaded, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Validate rows against the served version's own features (they may change on reload)."""
    errors, clean = [], []
    for i, row in enumerate(rows):
        try:
            clean.append(loaded.prepared.model_validate(row).model_dump())
        except ValidationError as exc:
            errors += [{**e, "loc": ("body", "rows", i, *e["loc"])} for e in exc.errors(include_url=False)]
    if errors:
        raise RequestValidationError(errors)
    return pd.DataFrame(clean, columns=list(loaded.scorer.features))


def add_routes(app: FastAPI, store: ModelStore, cfg: ServeConfig, name: str) -> None:
    """``POST /v1/<name>/predict``: score rows with the served version."""
    loaded = store.get(name).loaded
    # Without a champion at start-up any object is accepted here; rows are checked per request
    # against the version that serves them (so the answer is the 503, not a guess at a schema).
    row = loaded.prepared if loaded else create_model(model_title(name, "Row"), __config__=ConfigDict(extra="allow"))
    body_model = create_model(model_title(name, "Request"), rows=(
        list[row], Field(min_length=1, max_length=cfg.max_rows,
                         description="one object per row, one number per model feature")))
    positive = positive_class(name)
    response = response_model(name, positive)

    def predict(body, explain: bool = EXPLAIN, top: int = TOP) -> dict[str, Any]:
        served = store.serving(name)
        frame = check_rows(served, [r.model_dump() for r in body.rows])
        probs = np.asarray(served.scorer.predict(frame), dtype=np.float64)
        if not np.isfinite(probs).all():  # absurd but finite inputs can overflow inside the model
            bad = [i for i, p in enumerate(probs) if not np.isfinite(p)]
            raise RequestValidationError([{"type": "value_error", "loc": ("body", "rows", i),
                                           "msg": "the model gives no finite score for these values",
                                           "input": None} for i in bad])
        predictions = [{PROBABILITY: float(p), positive: bool(p >= served.threshold)} for p in probs]
        if explain:
            why = explaining(cfg, len(frame), "rows", lambda: explanations.explain_scorer(
                served.scorer, frame, f"v{served.version}", target=positive, top=top), served)
            for prediction, explanation in zip(predictions, why, strict=True):
                prediction["explanation"] = explanation
        return {"model": served.ref, "threshold": served.threshold, "predictions": predictions}

    predict.__annotations__["body"] = body_model  # a class made here: resolve it here, not by name
    app.post(f"/v1/{name}/predict", tags=["predict"], responses=ERRORS, response_model=response,
             response_model_exclude_unset=True,  # no "explanation": null unless asked for
             summary=f"Score rows ({name}): probability of {positive!r}")(predict)
