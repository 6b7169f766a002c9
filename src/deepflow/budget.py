"""A pipeline run's wall-clock budget: which members start, and how long each may train.

An entry whose config has ``budget_s`` promises that a whole run (validation, training every
member, registration, promotion, the bake-off report) ends within that many seconds, measured
from the flow's start. The flow asks :meth:`Budget.plan` before each member, cheapest first:

* a **reserve** stays for what comes after training (registration, promotion, the report):
  ``max(10 % of the budget, 10 s, 2 x the largest after-fit cost measured so far)``;
* a member's **after-fit cost** (loading the splits, evaluating, plots, logging the model) is
  measured on every member that ran (:meth:`Budget.record`); before any ran it is taken as
  :data:`FIRST_AFTER_FIT_S`, or as the entry's own estimate when its use case gives one
  (``estimate(member)``: e.g. images' latency probes whose cost grows with their size); an
  estimate above what was measured (a slower member next) is used instead;
* the member may **fit** for what is left minus the reserve and its after-fit cost; below
  :data:`MIN_FIT_S` it is skipped (said why) and the ones after it are still asked: a later,
  cheaper member may fit where an expensive one did not.

Only the decision to skip depends on the clock; nothing measured here reaches a promotion gate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

RESERVE_SHARE = 0.10
RESERVE_MIN_S = 10.0
RESERVE_AFTER_FITS = 2.0  # the reserve covers at least two members' after-fit cost (challenger, champion)
FIRST_AFTER_FIT_S = 10.0  # after-fit cost assumed before any member has been measured
AFTER_FIT_MARGIN = 1.25  # measured after-fit costs vary between members: keep a quarter more
MIN_FIT_S = 5.0  # a member that cannot fit for this long is skipped


@dataclass(frozen=True)
class Plan:
    """The decision for one member: train within ``time_limit_s`` or skip for ``reason``."""

    member: str
    time_limit_s: float | None  # None: no budget (train without a limit)
    reason: str | None = None  # set when skipped

    @property
    def skipped(self) -> bool:
        return self.reason is not None


def reserve_s(budget_s: float, after_fit_s: float) -> float:
    """Seconds kept back for registration, promotion and the report."""
    return max(RESERVE_SHARE * budget_s, RESERVE_MIN_S, RESERVE_AFTER_FITS * after_fit_s)


def plan(member: str, *, budget_s: float | None, elapsed_s: float, after_fit_s: float = FIRST_AFTER_FIT_S,
         min_fit_s: float = MIN_FIT_S) -> Plan:
    """Pure: whether ``member`` starts ``elapsed_s`` into a run of ``budget_s`` seconds, and its fit's limit."""
    if budget_s is None:
        return Plan(member, None)
    reserve = reserve_s(budget_s, after_fit_s)
    fit_s = budget_s - elapsed_s - reserve - after_fit_s
    if fit_s < min_fit_s:
        return Plan(member, None, f"budget: {max(budget_s - elapsed_s, 0):.0f} s of {budget_s:.0f} s left at "
                                  f"{elapsed_s:.0f} s; {reserve:.0f} s are kept for registration, promotion and the "
                                  f"report and ~{after_fit_s:.0f} s for evaluating and logging a member, which leaves "
                                  f"{max(fit_s, 0):.0f} s to fit (at least {min_fit_s:.0f} s needed)")
    return Plan(member, fit_s)


@dataclass
class Budget:
    """The clock of one run: ``budget_s`` (None: unlimited) from ``started`` (a ``clock()`` value)."""

    budget_s: float | None
    started: float = field(default_factory=time.perf_counter)
    clock: Callable[[], float] = time.perf_counter
    after_fit_s: float = FIRST_AFTER_FIT_S
    measured: list[float] = field(default_factory=list)  # after-fit seconds of each member that ran
    skipped: list[dict[str, str]] = field(default_factory=list)
    members: list[dict[str, float | str | None]] = field(default_factory=list)  # how the time went
    # the use case's after-fit estimate for a member (seconds), asked before it starts; None: none
    estimate: Callable[[str], float] | None = None

    def elapsed(self) -> float:
        return self.clock() - self.started

    def plan(self, member: str) -> Plan:
        """Decide for ``member`` now; a skip is remembered (:attr:`skipped`)."""
        after = self.after_fit_s
        if self.budget_s is not None and self.estimate is not None:
            try:
                guess = float(self.estimate(member))
            except Exception:  # an estimate is advice: without it, the measured cost or the first guess
                guess = after
            after = max(after, guess) if self.measured else guess
        decided = plan(member, budget_s=self.budget_s, elapsed_s=self.elapsed(), after_fit_s=after)
        if decided.skipped:
            self.skipped.append({"member": member, "reason": str(decided.reason)})
        return decided

    def record(self, member: str, time_limit_s: float | None, timings: dict[str, float]) -> None:
        """What one member's step measured (its ``timings``): training vs everything after it."""
        after = sum(v for k, v in timings.items() if k != "training")
        self.measured.append(after)
        self.after_fit_s = AFTER_FIT_MARGIN * max(self.measured)
        self.members.append({"member": member, "time_limit_s": time_limit_s,
                             "training_s": timings.get("training", 0.0), "after_fit_s": after})

    def summary(self) -> dict:
        """For the run summary: the budget, the reserve, the time spent so far, per member, skipped."""
        return {"budget_s": self.budget_s, "spent_s": self.elapsed(),
                "reserve_s": None if self.budget_s is None else reserve_s(self.budget_s, self.after_fit_s),
                "members": list(self.members), "skipped": list(self.skipped)}
