"""Serving part of the ``text`` kind: texts in, a label and the class probabilities out.

``POST /v1/<name>/predict`` takes ``{"texts": [...]}`` and answers, per text, the arg-max label,
its probability and every class's probability, the classes being the served scorer's ``labels``.
A blank text, one over ``max_text_chars`` and one that is not valid Unicode (a lone surrogate) are
422s naming the text's index (``["body", "texts", i]``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI
from pydantic import BaseModel, BeforeValidator, Field, StringConstraints, create_model
from pydantic_core import PydanticCustomError

from deepflow.explaining import EXPLAIN, TOP, TokenExplanation, explaining
from deepflow.serving import ERRORS, ModelRef, ModelStore, ServeConfig, model_title

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

    def predict(body, explain: bool = EXPLAIN, top: int = TOP) -> TextResponse:
        import pandas as pd

        served = store.serving(name)
        probs = served.scorer.predict(pd.DataFrame({"text": body.texts}))
        labels = [str(x) for x in served.scorer.labels]
        why: list[Any] = [None] * len(body.texts)
        if explain:
            from deepflow import explain as explanations

            why = explaining(cfg, len(body.texts), "texts", lambda: explanations.tokens(
                lambda texts: served.scorer.predict(pd.DataFrame({"text": texts})), body.texts, labels, top=top),
                served)
        out = []
        for row, explanation in zip(probs, why, strict=True):
            best = int(row.argmax())
            extra = {"explanation": explanation} if explanation is not None else {}
            out.append(TextPrediction(label=labels[best], probability=float(row[best]),
                                      probabilities={lab: float(p) for lab, p in zip(labels, row, strict=True)},
                                      **extra))
        return TextResponse(model=ModelRef(**served.ref), predictions=out)

    predict.__annotations__["body"] = body_model  # a class made here: resolve it here, not by name
    app.post(f"/v1/{name}/predict", tags=["predict"], responses=ERRORS, response_model=TextResponse,
             response_model_exclude_unset=True,  # no "explanation": null unless asked for
             summary=f"Classify texts ({name})")(predict)
