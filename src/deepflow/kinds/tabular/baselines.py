"""Classical reference models (not Lightning), trained on the same split as the candidates."""

from __future__ import annotations

import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from deepflow.kinds.tabular.config import TabularConfig
from deepflow.scoring import SklearnScorer

KNOWN = ("logistic_regression", "random_forest", "xgboost")


def fit_baseline(name: str, cfg: TabularConfig, train: pd.DataFrame) -> SklearnScorer:
    x, y = train[cfg.features], train[cfg.label]
    seed = cfg.train.seed
    if name == "logistic_regression":
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    elif name == "random_forest":
        model = RandomForestClassifier(
            n_estimators=100, max_depth=20, n_jobs=-1, random_state=seed
        )
    elif name == "xgboost":
        from xgboost import XGBClassifier

        model = XGBClassifier(
            n_estimators=cfg.model.xgb_trees,
            max_depth=cfg.model.xgb_depth,
            learning_rate=0.05,
            subsample=0.8,
            colsample_bytree=0.8,
            tree_method="hist",
            n_jobs=cfg.train.threads or None,
            random_state=seed,
        )
    else:
        raise KeyError(f"unknown fraud baseline {name!r} (known: {', '.join(KNOWN)})")
    model.fit(x, y)
    return SklearnScorer(model, cfg.features)
