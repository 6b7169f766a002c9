"""The ``text`` kind's data contract as Great Expectations suites, one per validated frame.

``rows``: every message of every split (text, label, UTF-8 check). ``classes``: one row per
(split, class) with its share. ``splits``: one row per split (how many classes it holds).
``overlap``: one row per near-duplicate key with the number of splits it occurs in, so that
"no text in two splits" is an expectation like any other.
"""

from __future__ import annotations

import great_expectations.expectations as gxe
import pandas as pd

from deepflow import validation
from deepflow.kinds.text.config import TextConfig
from deepflow.kinds.text.prepare import SPLITS, dedup_key


def _utf8(text) -> bool:
    try:
        text.encode("utf-8")
    except (UnicodeEncodeError, AttributeError):  # a lone surrogate (bad bytes decoded leniently), not a str
        return False
    return "\ufffd" not in text  # the replacement character: bytes were lost before we saw them


def _printable(text):
    return text.encode("utf-8", "backslashreplace").decode() if isinstance(text, str) else text


def frames(splits: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    rows = validation.rows_of(splits)
    # A missing column fails the table rule on ``rows``; the other frames are still computed (on blanks).
    rows = rows.assign(**dict.fromkeys({"text", "label"} - set(rows.columns), ""))
    rows["utf8"] = rows["text"].map(_utf8)
    # Make bad strings printable (a lone surrogate becomes "\\udcff"), or GX could not even load them.
    rows["text"] = rows["text"].map(_printable)
    shares = (rows.groupby("split")["label"].value_counts(normalize=True).rename("share").reset_index())
    per_split = rows.groupby("split")["label"].nunique().rename("classes").reset_index()
    keys = rows.assign(key=rows["text"].map(lambda t: dedup_key(t) if isinstance(t, str) else ""))
    overlap = keys.groupby("key")["split"].nunique().rename("splits").reset_index()
    kept = ("split", "_row", "utf8")
    present = [c for c in rows.columns if all(c in df.columns for df in splits.values()) or c in kept]
    return {"rows": rows[present], "classes": shares, "splits": per_split, "overlap": overlap}


def suites(cfg: TextConfig) -> dict[str, list]:
    n = len(cfg.labels)
    return {
        "rows": [
            gxe.ExpectTableColumnsToMatchSet(column_set=["text", "label"], exact_match=False),
            gxe.ExpectColumnValuesToNotBeNull(column="text"),
            gxe.ExpectColumnValuesToNotBeNull(column="label"),
            gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=max(cfg.min_chars, 1),
                                                    max_value=cfg.max_chars),
            gxe.ExpectColumnValuesToNotMatchRegex(column="text", regex=r"^\s*$"),
            gxe.ExpectColumnValuesToBeInSet(column="utf8", value_set=[True]),
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(cfg.labels)),
            gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        ],
        "classes": [gxe.ExpectColumnValuesToBeBetween(column="share", min_value=cfg.min_class_share,
                                                      max_value=cfg.max_class_share)],
        "splits": [
            gxe.ExpectColumnDistinctValuesToEqualSet(column="split", value_set=list(SPLITS)),
            gxe.ExpectColumnValuesToBeBetween(column="classes", min_value=n, max_value=n),
        ],
        "overlap": [gxe.ExpectColumnValuesToBeBetween(column="splits", min_value=1, max_value=1)],
    }
