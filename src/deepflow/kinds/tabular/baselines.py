"""Classical reference models (not Lightning): the one place that builds them.

:func:`build` makes an unfitted logistic regression (inputs standardised), random forest or
XGBoost from explicit hyperparameters, a seed and a thread count; every caller that needs one of
these models (the single-split pipeline's baselines, a benchmark's grid search) builds it here.
:func:`fit_baseline` trains the pipeline's references, with :func:`default_params`, on the same
split as the candidates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from deepflow.kinds.tabular.config import TabularConfig
from deepflow.scoring import SklearnScorer

KNOWN = ("logistic_regression", "random_forest", "xgboost")
PARAMS: dict[str, dict[str, type]] = {  # the hyperparameters each model takes, and their types
    "logistic_regression": {"C": float},
    "random_forest": {"n_estimators": int, "max_depth": int},
    "xgboost": {"n_estimators": int, "max_depth": int, "learning_rate": float, "subsample": float,
                "colsample_bytree": float, "max_bin": int, "tree_method": str},
}


def build(name: str, params: Mapping[str, Any], *, seed: int, threads: int = 0) -> Any:
    """An unfitted ``name`` (one of :data:`KNOWN`) with ``params``, seeded with ``seed``.

    ``params`` may hold only the keys of ``PARAMS[name]`` (cast to their types; a missing one
    takes the library's default, except XGBoost's ``tree_method``: ``hist``); another key is a
    ValueError, an unknown ``name`` a KeyError. ``threads``: jobs of the forest and XGBoost,
    0 = every core; it changes the speed, never the fitted model. The same name, params and
    seed give the same model on the same data.
    """
    if name not in PARAMS:
        raise KeyError(f"unknown baseline {name!r} (known: {', '.join(KNOWN)})")
    if unknown := sorted(set(params) - set(PARAMS[name])):
        raise ValueError(f"{name}: unknown hyperparameter {unknown[0]!r} (known: {', '.join(PARAMS[name])})")
    kw = {k: PARAMS[name][k](v) for k, v in params.items()}
    if name == "logistic_regression":
        return make_pipeline(StandardScaler(), LogisticRegression(**kw, max_iter=1000, random_state=seed))
    if name == "random_forest":
        return RandomForestClassifier(**kw, n_jobs=threads or -1, random_state=seed)
    from xgboost import XGBClassifier

    kw.setdefault("tree_method", "hist")
    return XGBClassifier(**kw, n_jobs=threads or None, random_state=seed, verbosity=0)


def default_params(name: str, cfg: TabularConfig) -> dict[str, Any]:
    """The single-split pipeline's hyperparameters of baseline ``name``."""
    return {
        "logistic_regression": {},
        "random_forest": {"n_estimators": 100, "max_depth": 20},
        "xgboost": {"n_estimators": cfg.model.xgb_trees, "max_depth": cfg.model.xgb_depth, "learning_rate": 0.05,
                    "subsample": 0.8, "colsample_bytree": 0.8},
    }.get(name, {})


def fit_baseline(name: str, cfg: TabularConfig, train: pd.DataFrame) -> SklearnScorer:
    """Baseline ``name`` trained on ``train`` (seed ``train.seed``, jobs ``train.threads``)."""
    model = build(name, default_params(name, cfg), seed=cfg.train.seed, threads=cfg.train.threads)
    model.fit(train[cfg.features], train[cfg.label])
    return SklearnScorer(model, cfg.features)
