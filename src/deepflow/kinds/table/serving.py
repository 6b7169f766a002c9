"""Serving part of the ``table`` kind: typed raw rows in; a decision, class probabilities or a value out.

``POST /v1/<name>/predict`` takes ``{"rows": [{column: value, ...}, ...]}``, one field per model
input (the scorer's ``features``), typed by the column's role in the scorer's ``columns``:

* numeric: a JSON number (finite, within +-3.4e38: the networks compute in float32) or null;
* boolean: true/false, 0/1, or "true"/"false", "yes"/"no", "y"/"n", "t"/"f", "1"/"0", or null;
* categorical: a string or null. An unseen category follows the column's policy: ``other``
  passes it to the model's "other" bucket, ``reject`` answers 422 naming the field and the
  known values (the OpenAPI schema lists them either way);
* datetime: an ISO 8601 date or date-time string (an offset is converted to UTC), or null:
  ISO 8601 whatever format the source file wrote its dates in (a batch file's ``31/12/2024`` is
  read with the column's recorded format; JSON is always ISO), the same instant the scorer reads
  from that text. A date outside 1677-09-21..2262-04-11 (what the model's datetime64[ns] can
  hold, and the scorer would read as missing) is a 422 naming the field.

Strings are trimmed; "" is null, and so are the tokens the entry's source reader took for
missing (its ``read.na_values``, e.g. "NA" in a CSV source); any other text is a value (from a
Parquet or JSON-lines source ``"NA"`` is a category). A field left out is null: the model
imputes it as it was fitted on train. A field the model does not read is refused (a typo must
not silently become a missing value). Bad input is always a 422 with a JSON body, never a 500:
non-finite or huge numbers, wrong types, strings that are not valid Unicode (lone surrogates).

The answer, per row, by the entry's task: binary ``{"label", "probability", "probabilities"}``
(``probability`` is that of ``classes[1]``; ``label`` is ``classes[1]`` when it reaches the
version's ``deepflow.threshold`` tag, else ``classes[0]``); multiclass ``{"label" (arg max),
"probabilities"}``; regression ``{"value"}``. The row model is built per loaded version from its
scorer, so a reload is enforced at once; the OpenAPI schema shows the version loaded at start-up.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from deepflow import explain as explanations
from deepflow import usecase
from deepflow.explaining import EXPLAIN, TOP, ColumnExplanation, explaining
from deepflow.kinds.table.batch import DEFAULT_THRESHOLD, FALSE, FLOAT32_MAX, TRUE
from deepflow.kinds.table.features import EARLIEST as _EARLIEST
from deepflow.kinds.table.features import LATEST as _LATEST
from deepflow.kinds.table.inputs import entry_config, missing_tokens
from deepflow.serving import ERRORS, ModelRef, ModelStore, ServeConfig, model_title

TASKS = ("binary", "multiclass", "regression")
__all__ = ["DEFAULT_THRESHOLD", "add_routes", "body_limit", "prepare"]  # the part contract
LISTED = 40  # known categories named in a description or an error (the schema's enum has them all)
EARLIEST, LATEST = _EARLIEST.item(), _LATEST.item()  # the scorer's span of dates, as datetimes
NONE: frozenset[str] = frozenset()


def _error(kind: str, message: str) -> PydanticCustomError:
    # the message goes in as context: a field name or value with braces is not a template
    return PydanticCustomError(kind, "{message}", {"message": message})


def _text(value: Any, what: str, missing: frozenset[str] = NONE) -> str | None:
    """A trimmed string, or None for null, "" and the ``missing`` tokens; valid Unicode only."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _error("string_type", f"expected {what} (a string) or null, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _error("string_unicode", "not valid Unicode text (a lone surrogate)") from None
    value = value.strip()
    return None if not value or value in missing else value


def number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _error("number_type", f"expected a number or null, got {type(value).__name__}")
    try:
        x = float(value)
    except OverflowError:
        x = math.inf
    if not math.isfinite(x) or abs(x) > FLOAT32_MAX:
        raise _error("number_range", "expected a finite number within +-3.4e38")
    return x


def boolean(value: Any, missing: frozenset[str] = NONE) -> float | None:
    """1.0 / 0.0 (the prepared data's encoding), None for null (and the ``missing`` tokens)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and value in (0, 1):
        return float(value)
    if isinstance(value, str):
        word = (_text(value, "a boolean", missing) or "").lower()
        if word in TRUE or word in FALSE:
            return float(word in TRUE)
        if not word:
            return None
    raise _error("bool_type", "expected true/false, 0/1, 'yes'/'no' or null")


def timestamp(value: Any, missing: frozenset[str] = NONE) -> datetime | None:
    """A naive UTC datetime from an ISO 8601 date or date-time (or a datetime: a row re-checked
    against a reloaded version's model), None for null (and the ``missing`` tokens)."""
    if isinstance(value, datetime):
        when = value
    elif (text := _text(value, "an ISO 8601 date or date-time", missing)) is None:
        return None
    else:
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise _error("datetime_parsing", f"not an ISO 8601 date or date-time: {text[:40]!r}") from None
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    if not EARLIEST <= when <= LATEST:
        raise _error("datetime_range", f"outside {EARLIEST:%Y-%m-%d}..{LATEST:%Y-%m-%d}")
    return when


def category(name: str, known: list[str], policy: str, missing: frozenset[str] = NONE):
    """The validator of one categorical field (an int is taken as its decimal string)."""
    allowed = set(known)
    listed = ", ".join(map(repr, known[:LISTED])) + (f" (+{len(known) - LISTED} more)" if len(known) > LISTED else "")

    def check(value: Any) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        text = _text(value, "a category", missing)
        if text is not None and policy == "reject" and text not in allowed:
            raise _error("unknown_category", f"unknown category {text[:60]!r} for {name!r}; allowed: {listed}")
        return text

    return check


def field_for(name: str, spec: dict[str, Any], missing: frozenset[str] = NONE) -> tuple[Any, Any]:
    """(annotation, FieldInfo) of one input column, with its JSON schema (type, known values);
    ``missing``: the text read as null (the entry's ``read.na_values``)."""
    role = spec.get("role", "numeric")
    blank = " Null or left out: imputed by the model."
    if role == "numeric":
        schema = {"anyOf": [{"type": "number"}, {"type": "null"}], "description": "a number." + blank,
                  "examples": [1.5]}
        fn = number
    elif role == "boolean":
        schema = {"anyOf": [{"type": "boolean"}, {"type": "integer", "enum": [0, 1]},
                            {"type": "string", "enum": [*TRUE, *FALSE]}, {"type": "null"}],
                  "description": "true/false (also 0/1 and 'yes'/'no')." + blank, "examples": [True]}
        fn = partial(boolean, missing=missing)
    elif role == "categorical":
        known = [str(c) for c in spec.get("categories") or []]
        policy = spec.get("unknown", "other")
        listed = ", ".join(known[:LISTED]) + (f" (+{len(known) - LISTED} more)" if len(known) > LISTED else "")
        rule = ("an unknown value is refused (422)" if policy == "reject"
                else "an unknown value is scored as 'other'")
        string: dict[str, Any] = {"type": "string", "enum": known} if policy == "reject" else {"type": "string"}
        schema = {"anyOf": [string, {"type": "null"}], "examples": known[:3],
                  "description": f"a category; known: {listed}; {rule}.{blank}"}
        fn = category(name, known, policy, missing)
    elif role == "datetime":
        schema = {"anyOf": [{"type": "string"}, {"type": "null"}], "examples": ["2024-05-01", "2024-05-01T13:45:00"],
                  "description": "an ISO 8601 date or date-time (an offset is converted to UTC), whatever "
                                 "format the source file used." + blank}
        fn = partial(timestamp, missing=missing)
    else:
        raise TypeError(f"column {name!r}: unknown role {role!r}")
    return Annotated[Any, BeforeValidator(fn), WithJsonSchema(schema)], Field(default=None, alias=name)


class _Row(BaseModel):
    """Base of every row model: fields by alias (any column name), unknown fields refused by name."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False)

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            names = [f.alias for f in cls.model_fields.values()]
            unknown = [str(k) for k in data if k not in names]
            if unknown:
                bad = unknown[0].encode("utf-8", "backslashreplace").decode()  # printable, even a surrogate
                near = difflib.get_close_matches(bad, names, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise _error("unknown_field", f"unknown field {bad[:60]!r}{hint}; the model reads: {', '.join(names)}")
        return data


@dataclass(frozen=True)
class Schema:
    """What the routes need of one loaded version (``Loaded.prepared``)."""

    task: str
    classes: list[str]
    features: list[str]
    roles: dict[str, str]
    row: type[BaseModel]

    def frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        """Validated rows (by column name) as the prepared dtypes the scorer reads."""
        columns: dict[str, Any] = {}
        for name in self.features:
            values = [r.get(name) for r in rows]
            role = self.roles[name]
            if role in ("numeric", "boolean"):
                columns[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
            elif role == "datetime":
                columns[name] = pd.to_datetime(pd.Series(values, dtype=object)).astype("datetime64[ns]")
            else:
                columns[name] = pd.Series(values, dtype=object)
        return pd.DataFrame(columns, index=pd.RangeIndex(len(rows)))


def prepare(name: str, scorer: Any) -> Schema:
    """Check a loaded scorer has the table scorer's shape; its row model and answer's shape."""
    task, classes = getattr(scorer, "task", None), [str(c) for c in getattr(scorer, "classes", None) or []]
    features, columns = list(getattr(scorer, "features", None) or []), getattr(scorer, "columns", None) or {}
    if task not in TASKS:
        raise TypeError(f"{name}: the scorer's task must be one of {TASKS}, got {task!r}")
    if not features or any(f not in columns for f in features):
        raise TypeError(f"{name}: a table scorer needs `features` and a `columns` entry for each")
    if (task == "binary" and len(classes) != 2) or (task == "multiclass" and len(classes) < 2):
        raise TypeError(f"{name}: a {task} scorer needs its class names, got {classes}")
    missing = missing_tokens(entry_config(name))  # the entry's source: what its text means by missing
    fields = {f"f{i}": field_for(col, columns[col], missing) for i, col in enumerate(features)}
    row = create_model(model_title(name, "Row"), __base__=_Row, **fields)
    return Schema(task, classes, features, {f: columns[f].get("role", "numeric") for f in features}, row)


def runtime(prepared: Any) -> dict[str, Any]:
    return {"runtime": "the scorer on a DataFrame"}


def body_limit(cfg: ServeConfig) -> int:
    return cfg.max_json_bytes


def response_model(name: str, task: str, classes: list[str]) -> type[BaseModel]:
    """The answer's shape for the entry's task (module docstring)."""
    if task == "binary" and len(classes) != 2:  # a broken entry: describe the answer without names
        classes = ["classes[0]", "classes[1]"]
    named = ", ".join(map(repr, classes))
    probabilities = (dict[str, float], Field(description=f"the probability of each class ({named})"))
    if task == "binary":
        fields = {"label": (str, Field(description=f"{classes[1]!r} when probability >= threshold, else "
                                                   f"{classes[0]!r}")),
                  "probability": (float, Field(description=f"the probability of {classes[1]!r}")),
                  "probabilities": probabilities}
    elif task == "multiclass":
        fields = {"label": (str, Field(description=f"the most probable class ({named})")),
                  "probabilities": probabilities}
    else:
        fields = {"value": (float, Field(description="the predicted value, in the target's units"))}
    fields["explanation"] = (ColumnExplanation | None, Field(None, description="with ?explain=true: why "
                                                                              "(docs/explain.md)"))
    prediction = create_model(model_title(name, "Prediction"), **fields)
    top: dict[str, Any] = {"model": (ModelRef, ...)}
    if task == "binary":
        top["threshold"] = (float, Field(description="the served version's decision threshold"))
    return create_model(model_title(name, "Response"), **top, predictions=(list[prediction], ...))


def answers(schema: Schema, scores: np.ndarray, threshold: float) -> list[dict[str, Any]]:
    """One answer per row from the scorer's output (module docstring)."""
    if schema.task == "regression":
        return [{"value": float(v)} for v in scores.reshape(-1)]
    if schema.task == "binary":
        neg, pos = schema.classes
        return [{"label": pos if p >= threshold else neg, "probability": float(p),
                 "probabilities": {neg: float(1 - p), pos: float(p)}} for p in scores.reshape(-1)]
    best = scores.argmax(axis=1)
    return [{"label": schema.classes[b], "probabilities": dict(zip(schema.classes, map(float, row), strict=True))}
            for b, row in zip(best, scores, strict=True)]


def check_rows(schema: Schema, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows (by column name) validated against a version's own row model (it may change on reload)."""
    errors, clean = [], []
    for i, row in enumerate(rows):
        try:
            clean.append(schema.row.model_validate(row).model_dump(by_alias=True))
        except ValidationError as exc:
            errors += [{**e, "loc": ("body", "rows", i, *e["loc"])} for e in exc.errors(include_url=False)]
    if errors:
        raise RequestValidationError(errors)
    return clean


def add_routes(app: FastAPI, store: ModelStore, cfg: ServeConfig, name: str) -> None:
    """``POST /v1/<name>/predict``: score raw rows with the served version."""
    entry_cfg = usecase.resolve_config(usecase.entry(name))
    task, classes = entry_cfg.task, [str(c) for c in entry_cfg.classes]
    loaded = store.get(name).loaded
    # Without a champion at start-up any object is accepted here; rows are checked per request
    # against the version that serves them (so the answer is the 503, not a guess at a schema).
    startup = loaded.prepared.row if loaded else create_model(model_title(name, "Row"),
                                                              __config__=ConfigDict(extra="allow"))
    body_model = create_model(model_title(name, "Request"), rows=(
        list[startup], Field(min_length=1, max_length=cfg.max_rows,
                             description="one object per row: the model's input columns, raw values")))
    response = response_model(name, task, classes if task != "regression" else [])

    def predict(body, explain: bool = EXPLAIN, top: int = TOP) -> dict[str, Any]:
        served = store.serving(name)
        schema: Schema = served.prepared
        if schema.task != task:
            raise HTTPException(503, f"{name}: the served version answers {schema.task}, the entry is {task}")
        if schema.row is startup:
            rows = [r.model_dump(by_alias=True) for r in body.rows]
        else:
            rows = check_rows(schema, [r.model_dump(by_alias=True, exclude_unset=True) for r in body.rows])
        frame = schema.frame(rows)
        scores = np.asarray(served.scorer.predict(frame), dtype=np.float64)
        per_row = np.isfinite(scores).reshape(len(rows), -1).all(axis=1)
        if not per_row.all():  # absurd but finite inputs can overflow inside the model
            raise RequestValidationError([{"type": "value_error", "loc": ("body", "rows", int(i)),
                                           "msg": "the model gives no finite answer for these values",
                                           "input": None} for i in np.flatnonzero(~per_row)])
        out = {"model": served.ref, "predictions": answers(schema, scores, served.threshold)}
        if explain:
            why = explaining(cfg, len(frame), "rows", lambda: explanations.explain_scorer(
                served.scorer, frame, f"v{served.version}", classes=schema.classes,
                target=schema.classes[1] if task == "binary" else None, top=top), served)
            for prediction, explanation in zip(out["predictions"], why, strict=True):
                prediction["explanation"] = explanation
        if task == "binary":
            out["threshold"] = served.threshold
        return out

    predict.__annotations__["body"] = body_model  # a class made here: resolve it here, not by name
    what = {"binary": f"probability of {classes[-1]!r} and a decision" if classes else "a decision",
            "multiclass": "class probabilities", "regression": "a value"}[task]
    app.post(f"/v1/{name}/predict", tags=["predict"], responses=ERRORS, response_model=response,
             response_model_exclude_unset=True,  # no "explanation": null unless asked for
             summary=f"Score raw rows ({name}): {what}")(predict)
