"""Serving part of the ``text`` kind: texts in, a label and the class probabilities out.

``POST /v1/<name>/predict`` takes ``{"texts": [...]}`` and answers, per text, the arg-max label,
its probability and every class's probability, the classes being the served scorer's ``labels``.
A blank text, one over ``max_text_chars`` and one that is not valid Unicode (a lone surrogate) are
422s naming the text's index (``["body", "texts", i]``).
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import FastAPI, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, BeforeValidator, Field, StringConstraints, create_model
from pydantic_core import PydanticCustomError

from deepflow import fastpath
from deepflow.explaining import EXPLAIN, TOP, TokenExplanation, explaining
from deepflow.serving import ERRORS, Loaded, ModelRef, ModelStore, ServeConfig, model_title

DEFAULT_THRESHOLD = 0.5  # reported in /v1/models; the answer is the arg-max class, not a cut


class TextPrediction(BaseModel):
    label: str
    probability: float
    probabilities: dict[str, float]
    explanation: TokenExplanation | None = Field(None, description="with ?explain=true: the words that made the "
                                                                   "label (docs/explain.md)")


class TextResponse(BaseModel):
    model: ModelRef
    predictions: list[TextPrediction]


def prepare(name: str, scorer: Any) -> None:
    """A text scorer must name its classes (``labels``), in the order of its probability columns."""
    if not getattr(scorer, "labels", None):
        raise TypeError(f"{name}: the scorer has no class labels")


def runtime(prepared: Any) -> dict[str, Any]:
    return {"runtime": "the scorer, concurrent requests grouped (micro-batching)"}


def body_limit(cfg: ServeConfig) -> int:
    return cfg.max_json_bytes


def unicode_text(value: Any) -> Any:
    """A text must be valid Unicode: a lone surrogate (``"\\ud800"`` in the JSON, or its UTF-8 bytes)
    is refused, naming where it is, rather than guessed at; other types go on to pydantic's checks."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise PydanticCustomError("string_unicode", "not valid Unicode text: a lone surrogate at character "
                                      "{at}; send UTF-8 text", {"at": exc.start}) from None
    return value


def add_routes(app: FastAPI, store: ModelStore, cfg: ServeConfig, name: str) -> None:
    """``POST /v1/<name>/predict``: classify texts with the served version."""
    # an empty or blank text is refused (422), as batch scoring rejects it: it has nothing to classify
    # a text that is not valid Unicode is refused (422 naming it), as the table kind refuses such a value
    text = Annotated[str, StringConstraints(max_length=cfg.max_text_chars, pattern=r"\S"),
                     BeforeValidator(unicode_text)]
    body_model = create_model(model_title(name, "Request"), texts=(
        list[text], Field(min_length=1, max_length=cfg.max_rows, description="the texts to classify")))

    def classify(served: Loaded, texts: list[str]) -> list[list[float]]:
        import pandas as pd

        return np.asarray(served.scorer.predict(pd.DataFrame({"text": texts})), dtype=np.float64).tolist()

    batcher = fastpath.batcher(cfg.max_batch, name, classify)  # concurrent requests share one forward

    def explained(served: Loaded, texts: list[str], top: int) -> list[Any]:
        import pandas as pd

        from deepflow import explain as explanations

        labels = [str(x) for x in served.scorer.labels]
        return explaining(cfg, len(texts), "texts", lambda: explanations.tokens(
            lambda batch: served.scorer.predict(pd.DataFrame({"text": batch})), texts, labels, top=top), served)

    async def predict(body, explain: bool = EXPLAIN, top: int = TOP) -> Any:
        served = store.serving(name)
        labels = [str(x) for x in served.scorer.labels]
        why: list[Any] = [None] * len(body.texts)
        if explain:  # seconds per text: on a worker thread, never grouped with plain requests
            why = await run_in_threadpool(explained, served, body.texts, top)
        probs = await batcher.submit([(served, text) for text in body.texts])
        out = []
        for row, explanation in zip(probs, why, strict=True):
            best = max(range(len(row)), key=row.__getitem__)
            prediction = {"label": labels[best], "probability": row[best],
                          "probabilities": dict(zip(labels, row, strict=True))}
            if explanation is not None:
                prediction["explanation"] = explanation
            out.append(prediction)
        if explain:  # checked and written by the response model, as the explanation's fields vary
            return {"model": served.ref, "predictions": out}
        return Response(orjson.dumps({"model": served.ref, "predictions": out}), media_type="application/json")

    predict.__annotations__["body"] = body_model  # a class made here: resolve it here, not by name
    app.post(f"/v1/{name}/predict", tags=["predict"], responses=ERRORS, response_model=TextResponse,
             response_model_exclude_unset=True,  # no "explanation": null unless asked for
             summary=f"Classify texts ({name})")(predict)
