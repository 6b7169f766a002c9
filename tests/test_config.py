from dataclasses import dataclass, field
from pathlib import Path

import pytest

from deepflow import config, usecase
from deepflow.kinds.tabular.config import TabularConfig


@dataclass
class Inner:
    epochs: int = 3
    lr: float = 0.1


@dataclass
class Outer:
    name: str = "x"
    flag: bool = False
    items: list[str] = field(default_factory=lambda: ["a"])
    threshold: float | None = None
    inner: Inner = field(default_factory=Inner)


def test_defaults_then_yaml_then_overrides(tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("name: fromyaml\ninner:\n  epochs: 5\n")
    cfg = config.load(Outer, y, ["inner.lr=2", "flag=true", "items=b,c", "threshold=0.3"])
    assert (cfg.name, cfg.inner.epochs, cfg.inner.lr, cfg.flag) == ("fromyaml", 5, 2.0, True)
    assert cfg.items == ["b", "c"] and cfg.threshold == 0.3
    assert config.load(Outer).inner.epochs == 3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("nope=1", "unknown config key 'nope'"),
        ("inner.nope=1", "unknown config key 'inner.nope'"),
        ("inner.epochs=abc", "inner.epochs: expected int"),
        ("inner.epochs=1.5", "inner.epochs: expected int"),
        ("flag=3", "flag: expected bool"),
        ("inner=3", "inner: expected a section"),
        ("noequals", "is not key=value"),
    ],
)
def test_bad_overrides_fail_at_load(override: str, message: str) -> None:
    with pytest.raises(config.ConfigError, match=message):
        config.load(Outer, None, [override])


def test_yaml_wrong_type_fails(tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("inner:\n  epochs: [1, 2]\n")
    with pytest.raises(config.ConfigError, match="inner.epochs"):
        config.load(Outer, y)


def test_shipped_entries_load() -> None:
    assert {"fraud", "paysim", "nlp", "traffic"} <= set(usecase.entries())
    for name in usecase.entries():
        uc = usecase.get(name)
        assert isinstance(uc, usecase.UseCase) and uc.name == name and uc.cfg.promotion.resamples > 0
        assert uc.primary_metric and "deep" in uc.families.values() and "shallow" in uc.families.values()
    assert usecase.get("fraud", ["train.epochs=3"]).cfg.train.epochs == 3


def test_hash_is_stable_and_sensitive() -> None:
    a, b = config.load(TabularConfig), config.load(TabularConfig, None, ["train.seed=1"])
    assert config.config_hash(a) == config.config_hash(config.load(TabularConfig))
    assert config.config_hash(a) != config.config_hash(b)
    assert config.flatten(a)["train.epochs"] == a.train.epochs


def test_unknown_use_case() -> None:
    with pytest.raises(usecase.UnknownUseCase, match="known: fraud"):
        usecase.get("weather")
