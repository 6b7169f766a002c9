"""Dataset entries: discovered from files, validated with the file and key named, and each one's
identity (schema) fixed by its file alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepflow import config, kinds, usecase
from tests.entries import TOPICS_CONFIG, write_entry


def test_shipped_entries_and_kinds() -> None:
    found = usecase.entries()
    assert {n: e.kind for n, e in found.items() if n in ("fraud", "paysim", "nlp", "traffic")} == {
        "fraud": "tabular", "paysim": "tabular", "nlp": "text", "traffic": "detection"}
    assert set(kinds.names()) == {"tabular", "table", "text", "detection"}
    assert usecase.default_names() == ["fraud", "nlp", "traffic"]
    for name in found:
        uc = usecase.get(name)
        assert uc.kind == found[name].kind and uc.schema()["kind"] == uc.kind


def test_a_new_file_is_a_new_entry(datasets: Path, tmp_path: Path) -> None:
    write_entry(datasets, "topics", "text", {**TOPICS_CONFIG, "prepared_dir": str(tmp_path)})
    uc = usecase.get("topics")
    assert (uc.name, uc.kind, uc.cfg.labels) == ("topics", "text", ["weather", "sport", "money"])
    assert "topics" in usecase.entries() and "topics" not in usecase.default_names()


@pytest.mark.parametrize(("text", "message"), [
    ("kind: tabular\nconfig: {}\nwhat: 1\n", "unknown key 'what'"),
    ("kind: audio\n", "kind must be one of detection, table, tabular, text"),
    ("- a list\n", "top level must be a mapping"),
    ("kind: text\nconfig: [1]\n", "'config' has the wrong type"),
    ("kind: text\nconfig: {labels: [a, b], prepared_dir: x, nope: 1}\n", "unknown config key 'nope'"),
    ("kind: text\nconfig: {labels: [a], prepared_dir: x}\n", "at least two classes"),
    ("kind: tabular\nconfig: {prepared_dir: x}\n", "config.features is empty"),
    ("kind: text\nconfig: {labels: [a, b], prepared_dir: x\n", "not valid YAML"),
])
def test_bad_entry_files_name_the_file_and_the_key(datasets: Path, text: str, message: str) -> None:
    path = datasets / "broken.yaml"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=message) as info:
        usecase.get("broken")
    assert str(path) in str(info.value)


def test_entry_names_are_model_and_url_safe(datasets: Path) -> None:
    (datasets / "Bad Name.yaml").write_text("kind: text\n")
    with pytest.raises(config.ConfigError, match="must be lower-case"):
        usecase.entries()


def test_unknown_entry_lists_the_known_ones(datasets: Path) -> None:
    with pytest.raises(usecase.UnknownUseCase, match="known: fraud, nlp, paysim, traffic"):
        usecase.get("weather")


@pytest.mark.parametrize(("name", "override"), [
    ("nlp", "labels=[negative,positive]"),
    ("fraud", "features=[a,b]"),
    ("fraud", "label=is_bad"),
    ("paysim", "class_names=[ok,bad]"),
])
def test_identity_keys_come_from_the_entry_file_only(name: str, override: str) -> None:
    with pytest.raises(config.ConfigError, match="identity") as info:
        usecase.get(name, [override])
    assert f"datasets/{name}.yaml" in str(info.value) and "new entry" in str(info.value)


def test_the_cli_refuses_another_dataset_under_an_entry_name(tmp_path: Path) -> None:
    """The reported accident: `deepflow run nlp --set prepared_dir=<reviews> --set labels=[...]`
    trained reviews into the SMS model. Now it stops before anything runs, exit code 2."""
    from deepflow.cli import app

    result = CliRunner().invoke(app, ["run", "nlp", "--set", f"prepared_dir={tmp_path}",
                                      "--set", "labels=[negative,positive]"])
    assert result.exit_code == 2, result.output
    assert "identity" in result.output and "datasets/nlp.yaml" in result.output


def test_schema_hash_is_stable_and_sensitive() -> None:
    a = usecase.get("fraud").schema()
    assert usecase.schema_hash(a) == usecase.schema_hash(dict(a))
    assert usecase.schema_hash(a) != usecase.schema_hash({**a, "features": a["features"][:-1]})
    assert usecase.schema_hash(usecase.get("fraud").schema()) != usecase.schema_hash(usecase.get("paysim").schema())


def _edit_entry(path: Path, **config_changes) -> None:
    import yaml

    data = yaml.safe_load(path.read_text())
    data["config"].update(config_changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.slow  # two full pipeline runs (~20-30 s): CI runs it
def test_promotion_refuses_a_champion_of_another_schema(store, datasets, prepared_dir) -> None:
    """A challenger trained after the entry's schema changed is not compared with (or promoted over)
    the champion of the old schema; an explicit, recorded decision can replace it."""
    from deepflow import ledger, steps, tracking
    from flows.pipeline import train_pipeline

    small = [f"prepared_dir={prepared_dir}", "candidates=[shallow]", "baselines=[logistic_regression]",
             "train.epochs=2", "promotion.floor=0.0"]
    first = train_pipeline("fraud", small)
    assert first["promotion"]["promoted"]
    schema_v1 = tracking.get_version("fraud", "1").tags["deepflow.schema"]

    fewer = usecase.get("fraud").cfg.features[:-3]  # the entry file now names fewer features
    _edit_entry(datasets / "fraud.yaml", features=fewer)
    second = train_pipeline("fraud", small)
    assert second["registered"]["version"] == "2" and not second["promotion"]["promoted"]
    assert any("different schemas" in r for r in second["promotion"]["reasons"])
    v2 = tracking.get_version("fraud", "2")
    assert v2.tags["deepflow.schema"] != schema_v1 and v2.tags["deepflow.decision"] == "rejected"
    assert str(tracking.version_by_alias("fraud", tracking.CHAMPION).version) == "1"
    assert ledger.previous_champions("fraud") == []  # only the first move: nothing else moved @champion

    promoted = steps.promote_challenger("fraud", small, actor="test", accept_schema_change=True)
    assert promoted["promoted"] and promoted["champion"] == "2"


def test_deepflow_entries_lists_them_and_names_a_broken_file(datasets: Path) -> None:
    from deepflow.cli import app

    result = CliRunner().invoke(app, ["entries"])
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in ("fraud", "paysim", "nlp", "traffic", "detection"))
    (datasets / "broken.yaml").write_text("kind: audio\n")
    result = CliRunner().invoke(app, ["entries"])
    assert result.exit_code == 1 and "broken.yaml" in result.output and "fraud" in result.output
    assert "broken" not in usecase.entries(usecase.warn_broken)  # the others stay usable


REQUIRED_PARTS = {
    "serving": ("DEFAULT_THRESHOLD", "prepare", "body_limit", "add_routes"),
    "batch": ("NEEDS_THRESHOLD", "OUTPUTS", "inputs", "validate", "score"),
    "drift": ("detect", "load_batch", "make_batch"),
}


@pytest.mark.parametrize("kind", ["tabular", "table", "text", "detection"])
def test_every_kind_provides_every_part(kind: str) -> None:
    """The contract the core dispatches on: a kind missing a part would break serving, batch
    scoring or monitoring for every entry, so it is checked here, not at a user's first request."""
    for part, names in REQUIRED_PARTS.items():
        module = kinds.part(kind, part)
        assert not [n for n in names if not hasattr(module, n)], f"{kind}.{part} lacks part of {names}"
    cls = kinds.usecase_class(kind)
    assert issubclass(cls, usecase.UseCase) and not getattr(cls, "__abstractmethods__", None)
    assert cls.kind == kind and kinds.config_class(kind).IDENTITY_KEYS is not None
