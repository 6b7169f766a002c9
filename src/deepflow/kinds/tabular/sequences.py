"""Each row's entity history: the entity's previous rows, as flat columns.

A row is one time-stamped event of an entity (the entry's ``entity_column``). The history is
built on the *whole* table, before any split, so a test-week row sees its entity's rows from the
weeks before (the handbook's sequence models only saw rows inside the same split). "Previous"
means a strictly earlier timestamp: a row never sees itself, a later one, or another one of the
same second.

A step holds the previous row's own features (the entry's ``features``; any that depend on
labels must already be shifted back by the label delay) and how many hours before the current
row it happened. No label of any past row is a step feature, so no undelayed label can leak in.

Flat columns ``PREV{k}_{feature}`` and ``PREV{k}_HOURS_AGO`` (``k = 1`` is the most recent
previous row) are what a sequence scorer takes, next to the current row's features: the serving
API and the batch scorer stay "one row in, one score out", and whoever calls them supplies the
entity's history (a feature store would). A missing step (an entity with a shorter history) is
all zeros; ``HOURS_AGO > 0`` holds exactly for present steps. The column defaults below are the
handbook's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

HOURS_AGO = "HOURS_AGO"


def step_columns(features: list[str]) -> list[str]:
    """The per-step feature names, in the order a sequence network reads them."""
    return [*features, HOURS_AGO]


def columns(features: list[str], length: int) -> list[str]:
    """Flat history column names, most recent previous row first."""
    return [f"PREV{k}_{f}" for k in range(1, length + 1) for f in step_columns(features)]


def history_index(entity: np.ndarray, time: np.ndarray, length: int) -> np.ndarray:
    """(R, length) positions of each row's previous ``length`` rows of the same entity, most
    recent first; -1 where the entity has fewer. ``time``: any sortable per-row timestamp."""
    n = len(entity)
    codes = pd.factorize(np.asarray(entity))[0]
    order = np.lexsort((np.arange(n), np.asarray(time), codes))  # by entity, time, position
    c, t = codes[order], np.asarray(time)[order]
    pos = np.arange(n)
    new_entity = np.r_[True, c[1:] != c[:-1]]
    new_time = new_entity | np.r_[True, t[1:] != t[:-1]]
    entity_start = np.maximum.accumulate(np.where(new_entity, pos, 0))  # first row of the entity
    time_start = np.maximum.accumulate(np.where(new_time, pos, 0))  # first row of this timestamp
    out = np.full((n, length), -1, dtype=np.int64)
    for k in range(1, length + 1):
        prev = time_start - k  # k-th row before the first row sharing this entity and time
        found = prev >= entity_start
        out[order, k - 1] = np.where(found, order[np.maximum(prev, 0)], -1)
    return out


def history_frame(table: pd.DataFrame, rows: np.ndarray, index: np.ndarray, features: list[str],
                  time_column: str = "TX_DATETIME") -> pd.DataFrame:
    """Flat history columns for ``rows`` (positions in ``table``), from ``history_index(table)``.

    Returns float32 columns named by ``columns(features, index.shape[1])``, indexed like ``rows``.
    """
    length = index.shape[1]
    values = table[features].to_numpy(dtype=np.float32)
    seconds = (table[time_column] - pd.Timestamp(0)).dt.total_seconds().to_numpy()
    idx = index[rows]  # (R, L)
    present = idx >= 0
    safe = np.where(present, idx, 0)
    steps = np.where(present[..., None], values[safe], 0.0).astype(np.float32)  # (R, L, F)
    hours = np.where(present, (seconds[rows][:, None] - seconds[safe]) / 3600.0, 0.0)  # (R, L)
    wide = np.concatenate([steps, hours[..., None].astype(np.float32)], axis=2)  # (R, L, F + 1)
    return pd.DataFrame(wide.reshape(len(rows), -1), columns=columns(features, length),
                        index=table.index[rows])


def with_history(table: pd.DataFrame, parts: dict[str, pd.DataFrame], features: list[str], length: int,
                 *, entity: str = "CUSTOMER_ID", time_column: str = "TX_DATETIME") -> dict[str, pd.DataFrame]:
    """``parts`` (row subsets of ``table``, same index) with each row's history from all of ``table``."""
    if length <= 0:
        return parts
    index = history_index(table[entity].to_numpy(), table[time_column].to_numpy(), length)
    where = pd.Series(np.arange(len(table)), index=table.index)
    out = {}
    for name, part in parts.items():
        rows = where.loc[part.index].to_numpy()
        out[name] = pd.concat([part, history_frame(table, rows, index, features, time_column)], axis=1)
    return out
