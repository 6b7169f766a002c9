"""The HTTP side of explanations: what ``?explain=true`` adds to a kind's answers.

The maths is in :mod:`deepflow.explain`; this module holds the shapes every kind's serving part
shares (:class:`ColumnExplanation` for input fields, :class:`TokenExplanation` for words), the two
query parameters (:data:`EXPLAIN`, :data:`TOP`), the guard that bounds an explained request
(:func:`explaining`: 422 over ``ServeConfig.max_explain_rows``, 409 for a version that cannot be
explained) and :func:`warm`, which ``create_app`` runs in a daemon thread so the first explained
request does not pay for importing shap and compiling its kernels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from deepflow.serving import Loaded, ServeConfig

log = logging.getLogger("deepflow.serving")


class Contribution(BaseModel):
    feature: str = Field(description="an input field, as the request names it")
    value: Any = Field(description="the value the request sent (null: missing)")
    contribution: float = Field(description="how much this value moved the score from the baseline")


class ColumnExplanation(BaseModel):
    """Shapley values of the input fields: ``baseline + sum(all contributions) = score``."""

    target: str | None = Field(description="the class whose probability is explained (multiclass), else null")
    baseline: float = Field(description="the mean score over the training rows stored with the model")
    score: float = Field(description="the score explained (a probability, or the predicted value)")
    contributions: list[Contribution] = Field(description="the largest contributions, largest first")
    rest: float = Field(description="the sum of the contributions not listed")
    method: str = Field(description="how the contributions were computed (docs/explain.md)")


class TokenContribution(BaseModel):
    token: str
    start: int = Field(description="the character offset of the word in the text sent")
    contribution: float = Field(description="how much the word moved the class's probability")


class TokenExplanation(BaseModel):
    """Word attributions for the predicted class: ``baseline + sum(all contributions) = score``."""

    target: str = Field(description="the class explained (the predicted one)")
    baseline: float = Field(description="the class's probability for the text with every word removed")
    score: float = Field(description="the class's probability for the text")
    contributions: list[TokenContribution] = Field(description="the words that moved it most, largest first")
    rest: float = Field(description="the sum of the contributions not listed")
    method: str = Field(description="how the contributions were computed (docs/explain.md)")


EXPLAIN = Query(False, description="add an explanation to each prediction (slower: see docs/explain.md)")
TOP = Query(5, ge=1, le=50, description="contributions listed per explained prediction")


def explaining(cfg: ServeConfig, count: int, what: str, run: Callable[[], Any], loaded: Loaded) -> Any:
    """Run an explanation of ``count`` items (``what``: "rows", "texts"): 422 above the per-request
    limit, 409 when the served version cannot be explained."""
    from deepflow.explain import NotExplainable

    if count > cfg.max_explain_rows:
        raise RequestValidationError([{"type": "too_long", "loc": ("query", "explain"), "input": None,
                                       "msg": f"explain at most {cfg.max_explain_rows} {what} per request "
                                              f"(got {count}); batch scoring explains whole files"}])
    try:
        return run()
    except NotExplainable as exc:
        raise HTTPException(409, f"{loaded.use_case} v{loaded.version}: {exc}") from exc


def warm() -> None:
    """Import shap and compile its kernels once (a daemon thread at start-up), so the first
    explained request does not pay seconds for it; a failure only leaves that cost in place."""
    try:
        import numpy as np
        import pandas as pd

        from deepflow import explain

        frame = pd.DataFrame({"a": np.arange(8.0), "b": list("xyxyxyxy")})
        explain.columns(lambda f: f["a"].to_numpy(float), frame.head(1), frame)
    except Exception:  # pragma: no cover - warming is an optimisation
        log.exception("warming the explainer failed")
