"""The handbook's prequential protocol (issue 8): folds, the fold table, and each fold's rows.

Protocol (the handbook, chapter 5.2-5.3): a fold trains on ``train_days`` from its training start,
skips ``delay_days`` (labels arrive late) and assesses the ``assessment_days`` after that, with the
cards already known to be compromised removed day by day (``prepare.split``). Fold ``i`` starts
``i * assessment_days`` before fold 0. Hyperparameters are chosen on the validation folds
(``val_start``) and reported, mean and std over folds, on the test folds (``test_start``).

The fold table is built once on the whole transaction table (features and each row's history
index) and cached; a fold is a cut of it (:func:`cut`), with history columns added on demand
(:func:`with_history`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deepflow import usecase
from deepflow.kinds.tabular import sequences
from deepflow.kinds.tabular.config import TabularConfig
from deepflow.usecases.fraud.prepare import SplitParams, add_features, split

HISTORY = 10  # previous transactions per row kept in the fold table (the sequence search reads <= this)
HIST = "_HIST_"  # columns of the fold table: positions of each row's previous transactions


@dataclass(frozen=True)
class Fold:
    kind: str  # "val" or "test"
    index: int  # 0 = the latest fold
    train_start: str  # YYYY-MM-DD

    @property
    def name(self) -> str:
        return f"{self.kind}{self.index}"


FoldData = list[tuple[Fold, pd.DataFrame, pd.DataFrame]]  # (fold, training rows, assessment rows)


def folds(cfg: TabularConfig, kind: str) -> list[Fold]:
    """The handbook's ``prequentialSplit``: fold ``i`` starts ``i * assessment_days`` earlier."""
    p = cfg.prequential
    start = pd.Timestamp(p.val_start if kind == "val" else p.test_start)
    return [Fold(kind, i, (start - pd.Timedelta(days=i * p.assessment_days)).strftime("%Y-%m-%d"))
            for i in range(p.n_folds)]


def fold_end(cfg: TabularConfig, fold: Fold) -> pd.Timestamp:
    """The first day after ``fold``'s assessment days."""
    p = cfg.prequential
    return pd.Timestamp(fold.train_start) + pd.Timedelta(days=p.train_days + p.delay_days + p.assessment_days)


# --- the fold table: features and history index, built once on the whole transaction table -------


def table_path(cfg: TabularConfig) -> Path:
    """Where the fold table is cached; the name changes with the source file and the protocol."""
    p = cfg.prequential
    src = usecase.project_path(p.transactions)
    stat = src.stat()
    key = json.dumps([str(src.resolve()), stat.st_size, stat.st_mtime_ns, p.delay_days, HISTORY,
                      cfg.features, cfg.entity_column, cfg.time_column, _last_day(cfg).isoformat()])
    return usecase.project_path(p.cache_dir) / f"table-{hashlib.sha256(key.encode()).hexdigest()[:12]}.parquet"


def _last_day(cfg: TabularConfig) -> pd.Timestamp:
    return max(fold_end(cfg, f) for kind in ("val", "test") for f in folds(cfg, kind))


def build_table(cfg: TabularConfig) -> pd.DataFrame:
    """Features of every transaction up to the last assessment day, plus ``HISTORY`` columns giving
    the positions (in this table) of each row's previous transactions of the card (-1: none).

    Features and history are computed on the whole table before any fold is cut, so history
    crosses fold boundaries; rows before the first fold are kept as history only.
    """
    p = cfg.prequential
    tx = pd.read_parquet(usecase.project_path(p.transactions))
    feats = add_features(tx, delay_days=p.delay_days)
    feats = feats[feats[cfg.time_column] < _last_day(cfg)].reset_index(drop=True)
    index = sequences.history_index(feats[cfg.entity_column].to_numpy(), feats[cfg.time_column].to_numpy(),
                                    HISTORY)
    keep = [c for c in (cfg.id_column, cfg.time_column, cfg.entity_column, "TERMINAL_ID", cfg.label,
                        "TX_FRAUD_SCENARIO", *cfg.features) if c in feats.columns]
    out = feats[keep].copy()
    for k in range(HISTORY):
        out[f"{HIST}{k + 1}"] = index[:, k].astype(np.int32)
    return out


def load_table(path: str | Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def cut(cfg: TabularConfig, table: pd.DataFrame, fold: Fold) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, assessment rows) of a fold: the handbook's ``get_train_test_set``."""
    p = cfg.prequential
    parts = split(table, SplitParams(train_start=fold.train_start, train_days=p.train_days,
                                     delay_days=p.delay_days, test_days=p.assessment_days, history=0))
    return parts["train"], parts["test"]


def with_history(cfg: TabularConfig, table: pd.DataFrame, part: pd.DataFrame, length: int,
                 scope: str = "full") -> pd.DataFrame:
    """``part`` plus its ``length`` history steps. ``scope="full"``: the card's whole prior
    history (the table's index); ``"split"``: only earlier rows inside ``part`` itself, as the
    handbook's sequence models had them."""
    if length <= 0:
        return part
    if length > HISTORY:
        raise ValueError(f"history length {length} > {HISTORY} kept in the fold table")
    if scope == "full":
        index = table[[f"{HIST}{k + 1}" for k in range(length)]].to_numpy().astype(np.int64)
        hist = sequences.history_frame(table, part.index.to_numpy(), index, cfg.features, cfg.time_column)
    elif scope == "split":
        local = part.reset_index(drop=True)
        index = sequences.history_index(local[cfg.entity_column].to_numpy(), local[cfg.time_column].to_numpy(),
                                        length)
        hist = sequences.history_frame(local, np.arange(len(local)), index, cfg.features, cfg.time_column)
        hist.index = part.index
    else:
        raise ValueError(f"history scope {scope!r} (known: full, split)")
    return pd.concat([part, hist], axis=1)


def fold_data(cfg: TabularConfig, table: pd.DataFrame, kind: str, length: int = 0, scope: str = "full") -> FoldData:
    """Every ``kind`` fold's (fold, training rows, assessment rows), each with ``length`` history steps."""
    out = []
    for fold in folds(cfg, kind):
        train, assess = cut(cfg, table, fold)
        out.append((fold, with_history(cfg, table, train, length, scope),
                    with_history(cfg, table, assess, length, scope)))
    return out
