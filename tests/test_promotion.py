"""Table-driven promotion policy: every gate, alone and together."""

import math

import pytest

from deepflow.promotion import Evidence, Policy, decide
from deepflow.stats import Interval

POLICY = Policy(floor=0.3, margin=0.0, noninferiority={"roc_auc": 0.01}, max_latency_p95_ms=20.0,
                max_size_mb=50.0)


def ev(ap=0.70, auc=0.88, champ=None, gain=None, latency=2.0, size=1.0, champ_version="1", version="2"):
    return Evidence(
        metric="auprc", challenger_version=version, challenger={"auprc": ap, "roc_auc": auc},
        latency_p95_ms=latency, size_mb=size,
        champion_version=champ_version if champ else None, champion=champ,
        gain=Interval(*gain, 0.95, 1000) if gain else None,
    )


CHAMP = {"auprc": 0.68, "roc_auc": 0.88}
CASES = [
    # name, evidence, promote, failing check
    ("no champion yet", ev(), True, None),
    ("no champion, floor missed", ev(ap=0.2), False, "floor"),
    ("clear win", ev(champ=CHAMP, gain=(0.02, 0.01, 0.03)), True, None),
    ("tie", ev(ap=0.68, champ=CHAMP, gain=(0.0, 0.0, 0.0)), False, "improvement"),
    ("interval straddles the margin", ev(champ=CHAMP, gain=(0.02, -0.005, 0.045)), False, "improvement"),
    ("above zero but not above margin",
     ev(champ=CHAMP, gain=(0.02, 0.004, 0.03)), False, "improvement"),  # with margin 0.005 below
    ("latency ceiling breached", ev(champ=CHAMP, gain=(0.02, 0.01, 0.03), latency=25.0), False, "latency"),
    ("size ceiling breached", ev(size=80.0), False, "size"),
    ("secondary metric inferior", ev(auc=0.86, champ=CHAMP, gain=(0.02, 0.01, 0.03)), False, "noninferior:roc_auc"),
    ("secondary within allowed loss", ev(auc=0.875, champ=CHAMP, gain=(0.02, 0.01, 0.03)), True, None),
    ("secondary metric not measured for the champion (fail closed)",
     ev(champ={"auprc": 0.68}, gain=(0.02, 0.01, 0.03)), False, "noninferior:roc_auc"),
    ("comparing a version with itself", ev(champ=CHAMP, gain=(0.0, 0.0, 0.0), champ_version="2"), False, "distinct"),
]


@pytest.mark.parametrize(("name", "evidence", "promote", "failing"), CASES, ids=[c[0] for c in CASES])
def test_policy(name, evidence, promote, failing) -> None:
    policy = Policy(**{**POLICY.__dict__, "margin": 0.005}) if "margin" in name else POLICY
    decision = decide(policy, evidence)
    assert decision.promote is promote, decision.summary()
    failed = [c.name for c in decision.checks if not c.passed]
    assert failed == ([failing] if failing else [])
    assert decision.reasons and all(isinstance(r, str) for r in decision.reasons)


def test_nan_never_promotes() -> None:
    assert not decide(POLICY, ev(ap=math.nan)).promote


def test_champion_without_gain_is_a_bug() -> None:
    with pytest.raises(ValueError, match="paired-bootstrap"):
        decide(POLICY, ev(champ=CHAMP))


def test_decision_serialises_every_check() -> None:
    d = decide(POLICY, ev(champ=CHAMP, gain=(0.02, 0.01, 0.03))).to_dict()
    assert d["promote"] and {c["name"] for c in d["checks"]} == {
        "floor", "latency", "size", "improvement", "noninferior:roc_auc"}


@pytest.mark.parametrize(("challenger", "champion", "accept", "refused", "skip"), [
    ("aaa", None, False, False, False),  # no champion version: nothing to compare
    ("aaa", "aaa", False, False, False),  # same schema: compared as usual
    ("aaa", "bbb", False, True, False),  # another schema: refused before scoring
    ("aaa", "bbb", True, False, True),  # accepted change: the old champion is not compared
    ("aaa", "", False, False, False),  # champion from before schemas were recorded: compared as before
    ("zzz", "aaa", True, True, False),  # the challenger is not of the entry's schema: never
])
def test_schema_checks(challenger, champion, accept, refused, skip) -> None:
    from deepflow.promotion import check_schemas

    version = None if champion is None else "1"
    verdict = check_schemas("e", "datasets/e.yaml", "aaa", "2", challenger, version, champion or None, accept)
    assert (verdict.refused, verdict.skip_champion) == (refused, skip), verdict
    assert all(c.name == "schema" for c in verdict.checks) and verdict.checks
    if refused:
        assert not all(c.passed for c in verdict.checks)
