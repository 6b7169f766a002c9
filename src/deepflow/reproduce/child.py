"""The rebuild itself, run by ``deepflow reproduce`` as a script in a fresh process.

It imports the ``deepflow`` of the code being reproduced (the recorded commit's ``src/`` comes
first on ``PYTHONPATH``), never the checkout that started it, so it uses only the parts of the use
case contract every version has: ``kinds.usecase_class``/``config_class``, ``config.load_mapping``,
the use case's ``load_splits``/``fit``/``evaluate``/``extra_metrics``, ``tracking.load_scorer`` and
``certificate.hardware``.

    python child.py SPEC.json OUT_DIR

SPEC (JSON): name, kind, member, config (the recorded resolved config), config_hash,
version, prepared_dir (where the restored data is), time_limit_s, sample (None, or the rows of a
seeded training sample for ``--quick``), epochs_cap (None or an epoch cap for ``--quick``),
score_original (whether to score the registered model too).

OUT_DIR receives ``result.json`` (metrics, config hash, hardware, timings) and pickles of the
predictions on the test split: ``reproduced.pkl`` and, when asked, ``original.pkl``.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import platform
import sys
import time
import traceback
import types
import typing
from pathlib import Path


def main(spec_path: str, out_dir: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"ok": False}
    try:
        result.update(rebuild(spec, out))
        result["ok"] = True
    except Exception as exc:  # the parent reports it in one line; the traceback goes to the file
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))
    return 0 if result["ok"] else 1


def rebuild(spec: dict, out: Path) -> dict:
    import numpy as np
    import pandas as pd
    import torch

    import deepflow
    from deepflow import certificate, config, kinds, tracking, usecase

    cls = kinds.config_class(spec["kind"])
    cfg = config.load_mapping(cls, typed_keys(cls, spec["config"]), (), source="the recorded config")
    rebuilt_hash = config.config_hash(cfg)
    overrides = {"prepared_dir": spec["prepared_dir"]}
    if spec.get("epochs_cap") and hasattr(cfg, "train") and hasattr(cfg.train, "epochs"):
        overrides["train"] = dataclasses.replace(cfg.train, epochs=min(cfg.train.epochs, spec["epochs_cap"]))
    cfg = dataclasses.replace(cfg, **overrides)
    entry = usecase.Entry(name=spec["name"], kind=spec["kind"],
                          path=usecase.settings.datasets_dir() / f"{spec['name']}.yaml", config=spec["config"])
    uc = kinds.usecase_class(spec["kind"])(entry, cfg)
    splits = uc.load_splits()
    if spec.get("sample"):
        train = splits["train"]
        splits["train"] = train.sample(n=min(spec["sample"], len(train)), random_state=0).sort_index()
    test = splits["test"]

    started = time.perf_counter()
    member_kind = dict(uc.members()).get(spec["member"])
    if member_kind is None:
        raise LookupError(f"{spec['name']} has no member {spec['member']!r} at this code "
                          f"(members: {', '.join(m for m, _ in uc.members())})")
    scorer, info = uc.fit(spec["member"], member_kind, splits, time_limit_s=spec.get("time_limit_s"))
    fit_s = time.perf_counter() - started

    def test_metrics(model, name: str) -> dict[str, float]:
        """The test metrics as the pipeline records them (with the ``test/`` extras); predictions to OUT_DIR."""
        scores = model.predict(test)
        _dump(out / f"{name}.pkl", scores)
        found = uc.evaluate(scores, test) | {k.removeprefix("test/"): v for k, v in uc.extra_metrics(model).items()
                                             if k.startswith("test/")}
        return {k: float(v) for k, v in found.items()}

    metrics = test_metrics(scorer, "reproduced")
    original_metrics = None
    if spec.get("score_original"):
        original_metrics = test_metrics(tracking.load_scorer(f"models:/{spec['name']}/{spec['version']}"), "original")
    return {
        "config_hash": rebuilt_hash,
        "metrics": metrics,
        "original_metrics": original_metrics,
        "info": {k: v for k, v in info.items() if isinstance(v, int | float | str)},
        "fit_seconds": round(fit_s, 3),
        "test_rows": len(test),
        "train_rows": len(splits["train"]),
        "deepflow": str(Path(deepflow.__file__).parent),
        # the recorded commit's own hardware record; older ones lack the vector ISA
        "hardware": {"cpu_capability": torch.backends.cpu.get_cpu_capability(), **certificate.hardware()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "numpy": np.__version__, "pandas": pd.__version__},
    }


def typed_keys(cls, data):
    """The recorded config as its dataclass wants it: JSON made every mapping key a string, so a
    ``dict[int, ...]`` field (e.g. a class map) gets its integer keys back, at any depth."""
    if not dataclasses.is_dataclass(cls) or not isinstance(data, dict):
        return data
    hints = typing.get_type_hints(cls)
    return {k: _by_type(hints[k], v) if k in hints else v for k, v in data.items()}


def _by_type(tp, value):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return typed_keys(tp, value)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _by_type(inner[0], value) if len(inner) == 1 else value
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        key_type, value_type = args
        return {(int(k) if key_type is int and isinstance(k, str) and k.lstrip("-").isdigit() else k):
                _by_type(value_type, v) for k, v in value.items()}
    if origin is list and isinstance(value, list) and args:
        return [_by_type(args[0], v) for v in value]
    return value


def _dump(path: Path, predictions) -> None:
    with path.open("wb") as f:
        pickle.dump(predictions, f, protocol=pickle.HIGHEST_PROTOCOL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
