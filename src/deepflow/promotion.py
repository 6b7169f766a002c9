"""Promotion as a pure decision over numbers measured in one run, on the same frozen test split.

Every gate yields a ``Check``; the challenger is promoted only if all checks pass. The primary
metric's gain must hold under a paired bootstrap: the lower end of its interval must clear the
margin (a seeded bootstrap, so the same evidence always gives the same decision).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from deepflow.stats import Interval


@dataclass(frozen=True)
class Policy:
    floor: float = 0.0  # primary metric must reach this
    margin: float = 0.0  # lower bound of the paired-bootstrap gain must be above this
    noninferiority: dict[str, float] = field(default_factory=dict)  # metric -> allowed loss
    max_latency_p95_ms: float | None = None  # batch 1, plain scorer
    max_size_mb: float | None = None


@dataclass
class PromotionConfig:
    """A use case's ``promotion:`` config block: the Policy's gates plus the bootstrap's settings."""

    floor: float = 0.0  # the primary test metric must reach this
    margin: float = 0.0  # lower end of the paired-bootstrap gain must be above this
    noninferiority: dict[str, float] = field(default_factory=dict)  # secondary metric -> allowed loss
    max_latency_p95_ms: float | None = 20.0  # batch 1, plain scorer
    max_size_mb: float | None = 50.0
    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class Evidence:
    metric: str
    challenger_version: str
    challenger: dict[str, float]
    latency_p95_ms: float
    size_mb: float
    champion_version: str | None = None  # the current champion, compared or not
    champion: dict[str, float] | None = None  # its metrics; None when not compared
    gain: Interval | None = None  # paired bootstrap of challenger - champion, primary metric
    latency_note: str = ""  # how latency_p95_ms was measured (deepflow.latency.note)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    promote: bool
    checks: list[Check] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        failed = [c.detail for c in self.checks if not c.passed]
        return failed or [c.detail for c in self.checks]

    def summary(self) -> str:
        return ("promote: " if self.promote else "keep champion: ") + "; ".join(self.reasons)

    def to_dict(self) -> dict:
        return {"promote": self.promote, "reasons": self.reasons, "checks": [asdict(c) for c in self.checks]}


@dataclass(frozen=True)
class SchemaVerdict:
    checks: list[Check]
    refused: bool  # refuse before scoring anything
    skip_champion: bool  # a schema change was accepted: the old champion is not compared


def check_schemas(entry: str, entry_path: str, entry_schema: str, challenger_version: str,
                  challenger_schema: str | None, champion_version: str | None, champion_schema: str | None,
                  accept_change: bool = False) -> SchemaVerdict:
    """Models of different schemas are never compared with, or promoted over, each other.

    The challenger must carry the entry's current schema hash. A champion of another schema
    refuses the challenger, unless ``accept_change`` (then it is not compared at all); a champion
    registered before schemas were recorded (no hash) is compared as before, with a note.
    """
    checks = []
    if challenger_schema != entry_schema:
        checks.append(Check("schema", False, f"challenger v{challenger_version} was trained on schema "
                            f"{challenger_schema or 'unrecorded'}, entry {entry!r} now has {entry_schema} "
                            f"({entry_path})"))
        return SchemaVerdict(checks, refused=True, skip_champion=False)
    if champion_version is None or champion_version == challenger_version:
        return SchemaVerdict([Check("schema", True, f"schema {entry_schema}")], False, False)
    if champion_schema is None:
        return SchemaVerdict([Check("schema", True, f"champion v{champion_version} has no schema record "
                                    "(registered before entries): compared as before")], False, False)
    if champion_schema == challenger_schema:
        return SchemaVerdict([Check("schema", True, f"same schema {entry_schema} as champion "
                                    f"v{champion_version}")], False, False)
    if accept_change:
        return SchemaVerdict([Check("schema", True, f"schema change {champion_schema} -> {challenger_schema} "
                                    f"accepted: champion v{champion_version} not compared")], False, True)
    checks.append(Check("schema", False, f"champion v{champion_version} (schema {champion_schema}) and challenger "
                        f"v{challenger_version} (schema {challenger_schema}) were trained on data of different "
                        f"schemas: not comparable; `deepflow promote {entry} --accept-schema-change` replaces "
                        "the champion if that is intended"))
    return SchemaVerdict(checks, refused=True, skip_champion=False)


def decide(policy: Policy, ev: Evidence) -> Decision:
    m, value = ev.metric, ev.challenger[ev.metric]
    ok = value >= policy.floor
    checks = [Check("floor", ok, f"{m} {value:.4f} {'>=' if ok else '<'} floor {policy.floor:.4f}")]
    if policy.max_latency_p95_ms is not None:
        ok = ev.latency_p95_ms <= policy.max_latency_p95_ms
        how = f" ({ev.latency_note})" if ev.latency_note else ""
        checks.append(Check("latency", ok, f"p95 latency {ev.latency_p95_ms:.2f} ms {'<=' if ok else '>'} "
                                           f"ceiling {policy.max_latency_p95_ms:.2f} ms{how}"))
    if policy.max_size_mb is not None:
        ok = ev.size_mb <= policy.max_size_mb
        checks.append(Check("size", ok, f"model size {ev.size_mb:.2f} MB {'<=' if ok else '>'} "
                                        f"ceiling {policy.max_size_mb:.2f} MB"))
    if ev.champion_version == ev.challenger_version:  # before "no champion": it is one, not none
        checks.append(Check("distinct", False, f"v{ev.challenger_version} is already the champion"))
        return Decision(False, checks)
    if ev.champion_version is None or ev.champion is None:
        checks.append(Check("champion", True, "no champion yet" if ev.champion_version is None else
                            f"champion v{ev.champion_version} not compared: floors and ceilings only"))
        return Decision(all(c.passed for c in checks), checks)
    if ev.gain is None:
        raise ValueError("a challenger with a champion needs the paired-bootstrap gain")
    ok = ev.gain.low > policy.margin
    checks.append(Check("improvement", ok,
                        f"{m} gain over v{ev.champion_version} {ev.gain.estimate:+.4f}, "
                        f"{ev.gain.confidence:.0%} interval [{ev.gain.low:+.4f}, {ev.gain.high:+.4f}]: "
                        f"lower end {'above' if ok else 'not above'} margin {policy.margin:+.4f}"))
    for name, allowed in sorted(policy.noninferiority.items()):
        ours, theirs = ev.challenger.get(name), ev.champion.get(name)
        if ours is None or theirs is None:  # fail closed: a gate that cannot be checked does not pass
            who = "challenger" if ours is None else f"champion v{ev.champion_version}"
            checks.append(Check(f"noninferior:{name}", False, f"{name} was not measured for the {who}"))
            continue
        ok = ours >= theirs - allowed
        checks.append(Check(f"noninferior:{name}", ok,
                            f"{name} {ours:.4f} vs champion {theirs:.4f} "
                            f"({'within' if ok else 'beyond'} allowed loss {allowed:.4f})"))
    return Decision(all(c.passed for c in checks), checks)
