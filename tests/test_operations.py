"""Operations rules without servers: config, catch-up, retraining decision, inbox state, typed
deployment parameters. (tests/test_schedule.py runs the same against a real Prefect server.)"""

import re
from datetime import UTC, datetime, timedelta

import pytest

from deepflow import config, operations, usecase

NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_shipped_config_loads_with_nightly_schedules() -> None:
    ops = operations.load()
    assert set(ops.pipelines) == {"fraud", "nlp", "traffic"}
    assert all(s.cron and not s.interval_seconds for s in ops.pipelines.values())
    assert ops.catch_up == "latest" and ops.monitor.cooldown_minutes > 0


def test_schedules_and_min_rows_come_from_the_entries() -> None:
    from deepflow import usecase

    ops, entries = operations.load(), usecase.entries()
    scheduled = {name for name, e in entries.items() if e.schedule is not None}
    assert set(ops.pipelines) == scheduled and "paysim" not in scheduled  # schedule: null
    assert {name: s.cron for name, s in ops.pipelines.items()} == {name: entries[name].schedule["cron"]
                                                                   for name in scheduled}
    assert ops.monitor.use_cases == list(entries)  # null: every entry
    assert ops.monitor.min_rows == {name: e.monitor.get("min_rows", 0) for name, e in entries.items()}
    assert ops.monitor.min_rows["paysim"] == 500


def test_operations_overrides_win_over_the_entries() -> None:
    ops = operations.load(overrides=["pipelines.fraud.interval_seconds=60", "pipelines.nlp.enabled=false",
                                     "pipelines.paysim.cron=0 5 * * *", "monitor.min_rows.fraud=10"])
    fraud, nlp, paysim = ops.pipelines["fraud"], ops.pipelines["nlp"], ops.pipelines["paysim"]
    assert (fraud.cron, fraud.interval_seconds) == (None, 60)  # an ops timing replaces the entry's
    assert (nlp.cron, nlp.enabled) == ("30 2 * * *", False)  # no ops timing: the entry's stays
    assert paysim.cron == "0 5 * * *"  # an entry without a schedule gets one
    assert ops.monitor.min_rows["fraud"] == 10 and ops.monitor.min_rows["nlp"] == 200
    on_request = operations.load(overrides=["pipelines={paysim: {enabled: false}}"]).pipelines["paysim"]
    assert (on_request.cron, on_request.interval_seconds) == (None, None)  # a deployment without a timetable


def test_a_new_entry_brings_its_schedule_and_a_bad_one_is_named(datasets, caplog) -> None:
    """A broken entry is left out of the schedule, its file and key logged as an error; the
    other entries stay scheduled (one typo must not stop every pipeline)."""
    from tests.entries import write_entry

    write_entry(datasets, "loans", "tabular", {}, schedule={"interval_s": 30}, monitor={"min_rows": 7})
    ops = operations.load()
    assert ops.pipelines["loans"].interval_seconds == 30 and ops.monitor.min_rows["loans"] == 7
    for schedule, monitor, message in (
            ({"every": "day"}, {}, r"loans\.yaml: schedule: unknown key 'every'"),
            ({"cron": "0 1 * * *", "interval_s": 5}, {}, r"loans\.yaml: schedule needs cron or interval_s"),
            ({"interval_s": 30}, {"min_rows": "many"}, r"loans\.yaml: monitor.min_rows must be"),
            ({"interval_s": 30}, {"rows": 3}, r"loans\.yaml: monitor: unknown key 'rows'")):
        write_entry(datasets, "loans", "tabular", {}, schedule=schedule, monitor=monitor)
        caplog.clear()
        with caplog.at_level("ERROR", logger="deepflow.entries"):
            ops = operations.load()
        assert "loans" not in ops.pipelines and "fraud" in ops.pipelines
        assert re.search(message, caplog.text), caplog.text
        with pytest.raises(config.ConfigError, match=message):  # where it is used, it fails loudly
            usecase.entry("loans")


@pytest.mark.parametrize("override, message", [
    ("pipelines.spam.cron=0 1 * * *", "unknown dataset entry 'spam'"),
    ("monitor.min_rows.spam=3", "unknown dataset entry 'spam'"),
    ("catch_up=some", "catch_up: expected one of"),
    ("monitor.schedule.interval_seconds=60", "cron or interval_seconds, not both"),
    ("monitor.cooldown=5", "unknown config key 'monitor.cooldown'"),
])
def test_bad_operations_config_names_the_key(override, message) -> None:
    with pytest.raises(config.ConfigError, match=message):
        operations.load(overrides=[override])


def test_catch_up_latest_skips_all_missed_runs_but_the_most_recent() -> None:
    due = [("a", NOW - 3 * HOUR), ("b", NOW - HOUR), ("c", NOW - 2 * HOUR), ("future", NOW + HOUR)]
    assert sorted(operations.superseded(due, NOW, "latest")) == ["a", "c"]
    assert operations.superseded(due, NOW, "all") == []
    assert operations.superseded([("only", NOW - HOUR)], NOW, "latest") == []
    assert operations.superseded([("future", NOW + HOUR)], NOW, "latest") == []


CASES = {  # name: (kwargs, trigger, reason fragment, final)
    "drift triggers": ({}, True, "retraining triggered", True),
    "no drift": ({"drifted": False}, False, "no drift", True),
    "too little data waits": ({"rows": 10}, False, "waiting for more data", False),
    "in flight": ({"in_flight": ["fraud-nightly (Running)"]}, False, "already in flight", True),
    "cooldown": ({"last_triggered": NOW - HOUR}, False, "in cooldown", True),
    "after cooldown": ({"last_triggered": NOW - 7 * HOUR}, True, "retraining triggered", True),
    "no deployment": ({"deployment_exists": False}, False, "no retraining deployment", False),
    "little data, no drift": ({"rows": 10, "drifted": False}, False, "waiting for more data", False),
}


@pytest.mark.parametrize("case", CASES)
def test_retraining_decision(case) -> None:
    kwargs, trigger, reason, final = CASES[case]
    args = dict(drifted=True, rows=5000, min_rows=2000, in_flight=[], last_triggered=None, now=NOW,
                cooldown=6 * HOUR) | kwargs
    decision = operations.decide_retraining(**args)
    assert (decision.trigger, decision.final) == (trigger, final)
    assert reason in decision.reason


def test_inbox_marks_batches_by_content(tmp_path) -> None:
    (tmp_path / "a.csv").write_text("x\n1\n")
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "0.jpg").write_bytes(b"jpeg")
    assert {p.name for p in operations.pending_batches(tmp_path)} == {"a.csv", "frames"}
    operations.mark_processed(tmp_path, [tmp_path / "a.csv"], {"drifted": True})
    assert [p.name for p in operations.pending_batches(tmp_path)] == ["frames"]
    (tmp_path / "copy-of-a.csv").write_text("x\n1\n")  # same content, new name: already seen
    assert [p.name for p in operations.pending_batches(tmp_path)] == ["frames"]
    (tmp_path / "frames" / "1.jpg").write_bytes(b"more")  # a folder that changed is a new batch
    operations.mark_processed(tmp_path, [], {})
    assert not list(tmp_path.glob(".processed.json.tmp-*"))
    assert operations.processed(tmp_path)[operations.batch_id(tmp_path / "a.csv")]["drifted"] is True
    assert operations.pending_batches(tmp_path / "missing") == []


def test_pipeline_deployment_parameters_are_typed() -> None:
    """What the Prefect UI's Run form and `prefect deployment run` validate against."""
    from prefect.utilities.callables import parameter_schema

    from flows.pipeline import train_pipeline

    props = parameter_schema(train_pipeline).model_dump()["properties"]
    assert set(props["use_case"]["enum"]) >= {"fraud", "nlp", "traffic"}
    assert props["promote_challenger"]["type"] == "boolean"
    assert props["overrides"]["anyOf"][0] == {"items": {"type": "string"}, "type": "array"}


def test_deployment_specs_follow_the_config() -> None:
    from flows import deployments

    ops = operations.load(overrides=["pipelines.nlp.enabled=false", "pipelines.fraud.overrides=[train.epochs=1]"])
    specs = {s["name"]: s for s in deployments._specs(ops)}
    assert set(specs) == {"fraud", "nlp", "traffic", operations.MONITOR_DEPLOYMENT, operations.SELF_CHECK_DEPLOYMENT}
    assert specs["fraud"]["parameters"] == {"use_case": "fraud", "overrides": ["train.epochs=1"],
                                            "promote_challenger": True}
    assert specs["fraud"]["schedules"][0].cron == "0 2 * * *" and specs["fraud"]["active"]
    assert not specs["nlp"]["active"]
    assert specs[operations.MONITOR_DEPLOYMENT]["entrypoint"] == "flows/monitor.py:monitor"
    check = specs[operations.SELF_CHECK_DEPLOYMENT]
    assert check["entrypoint"] == "flows/self_check.py:self_check" and check["schedules"][0].cron == "30 4 * * *"
    assert check["parameters"] == {"use_cases": ["fraud", "nlp", "paysim", "traffic"]} and check["active"]
