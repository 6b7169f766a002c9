"""The kinds of data deepflow learns from, and the parts each one registers.

A kind is a package ``deepflow.kinds.<kind>`` whose ``__init__`` declares ``PARTS``: where its use
case class and config class live, and the modules that serve, batch-score and monitor its models.
The core (``serving``, ``batch``, ``drift``, ``cli``) reaches a kind only through :func:`part`,
so adding a dataset never touches them, and adding a kind touches only its own package.

Each part module has a fixed shape (the core module that uses it states the full contract):

* ``serving`` (see ``deepflow/serving.py``): ``DEFAULT_THRESHOLD``, ``prepare(name, scorer)``,
  ``body_limit(cfg)``, ``add_routes(app, store, cfg, name)``: the kind's request/response models.
* ``batch`` (see ``deepflow/batch.py``): ``NEEDS_THRESHOLD``, ``OUTPUTS``, ``inputs(model)``,
  ``validate(frame, model)`` -> (clean, rejects), ``score(model, frame)`` -> output columns;
  optionally ``outputs(model)`` (outputs by the model's task) and ``read_input(model, path,
  chunk_size)`` (read files as the entry's source was read; else the core's CSV/Parquet readers).
* ``drift`` (see ``deepflow/drift/``): ``detect(reference, current, cfg, scorer, ...)`` -> DriftReport,
  ``load_batch(path, features)``, and a generic ``make_batch(name, out_dir, *, rows, drift, seed)``
  for entries without an ``incoming:`` generator; optionally ``read_batch(entry, path, features)``.

Parts are imported lazily: naming a kind costs nothing; its models load torch only when used.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class Parts:
    """What one kind registers: ``module:Class`` strings and module paths, imported on use."""

    kind: str
    usecase: str  # "module:Class" implementing deepflow.usecase.UseCase
    config: str  # "module:Class", the typed config dataclass
    serving: str  # module with add_routes(...)
    batch: str  # module with validate(...) and score(...)
    drift: str  # module with detect(...) and make_batch(...)


@cache
def registry() -> dict[str, Parts]:
    found: dict[str, Parts] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.ispkg:
            parts = getattr(importlib.import_module(f"{__name__}.{info.name}"), "PARTS", None)
            if isinstance(parts, Parts):
                found[parts.kind] = parts
    return found


def names() -> tuple[str, ...]:
    return tuple(registry())


def parts(kind: str) -> Parts:
    try:
        return registry()[kind]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r} (known: {', '.join(names())})") from None


def _attr(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def usecase_class(kind: str) -> Any:
    return _attr(parts(kind).usecase)


def config_class(kind: str) -> Any:
    return _attr(parts(kind).config)


def part(kind: str, name: str) -> ModuleType:
    """One of a kind's part modules: ``part("text", "serving")``."""
    return importlib.import_module(getattr(parts(kind), name))
