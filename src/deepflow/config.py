"""Typed configuration: dataclass defaults in code <- an entry's ``config:`` <- ``key=value`` overrides.

Unknown keys and wrong types fail at load with a ``ConfigError`` naming the key.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key that does not exist, or a value of the wrong type."""


def load(cls: type[T], yaml_path: Path | None = None, overrides: typing.Sequence[str] = ()) -> T:
    """Build ``cls`` from its defaults, then a YAML mapping file, then ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if yaml_path is not None and yaml_path.exists():
        data = yaml.safe_load(yaml_path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{yaml_path}: top level must be a mapping")
    return load_mapping(cls, data, overrides, source=str(yaml_path or cls.__name__))


def load_mapping(cls: type[T], data: dict[str, Any], overrides: typing.Sequence[str] = (),
                 source: str = "config") -> T:
    """Build ``cls`` from its defaults, then ``data`` (an entry's ``config:``), then overrides."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value")
        _set_dotted(data, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    try:
        return _build(cls, data, prefix="")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_hash(cfg: Any) -> str:
    """Stable short hash of a resolved config (for lineage tags)."""
    blob = json.dumps(to_dict(cfg), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train.epochs": 10, ...}``: the shape MLflow params want."""
    out: dict[str, Any] = {}
    for key, value in to_dict(cfg).items():
        if isinstance(value, dict):
            out.update({f"{prefix}{key}.{k}": v for k, v in _flat_dict(value).items()})
        else:
            out[f"{prefix}{key}"] = value
    return out


def _flat_dict(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in _flat_dict(v).items()})
        else:
            out[k] = v
    return out


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part!r} is not a section")
        node = child
    node[leaf] = value


def _build(cls: type[T], data: dict[str, Any], prefix: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r} (known: {known})")
    kwargs = {name: _coerce(hints[name], value, prefix + name) for name, value in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a section, got {value!r}")
        return _build(tp, value, prefix=key + ".")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {tp}, got {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: expected one of {typing.get_args(tp)}, got {value!r}")
        return value
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp) or (str, Any)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {_coerce(key_tp, k, f"{key}.{k}"): _coerce(val_tp, v, f"{key}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):  # key=a,b,c on the command line
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        items = [_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:  # YAML reads an unquoted 2018-07-11 as a date: keep it as the string it was
        if isinstance(value, str | int | float | datetime.date) and not isinstance(value, bool):
            return str(value)
    else:
        raise ConfigError(f"{key}: unsupported config type {tp}")
    raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
