"""A detection run within its budget: the LR schedule follows the time limit, and the budget
knows beforehand what evaluating a detector costs (its latency probes grow with the image size)."""

from __future__ import annotations

import math

import pytest
import torch

from deepflow import budget
from deepflow.kinds.detection import system as detection_system
from deepflow.kinds.detection.system import TimedOneCycle, epochs_that_fit
from tests.test_detection_classes import shape_splits, shapes  # noqa: F401 (fixtures)


def _lrs(sched, opt, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        opt.step()
        sched.step()
        out.append(opt.param_groups[0]["lr"])
    return out


def _opt() -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)


def test_the_timed_schedule_is_one_cycle_until_resized_then_anneals_by_the_new_end_and_holds() -> None:
    opt_a, opt_b = _opt(), _opt()
    plain = torch.optim.lr_scheduler.OneCycleLR(opt_a, max_lr=1e-2, total_steps=100, pct_start=0.15)
    timed = TimedOneCycle(opt_b, max_lr=1e-2, total_steps=100, pct_start=0.15)
    assert _lrs(plain, opt_a, 30) == pytest.approx(_lrs(timed, opt_b, 30))  # identical before a re-size
    assert timed.resize(40) and timed.total_steps == 40
    lrs = _lrs(timed, opt_b, 9)
    assert lrs == sorted(lrs, reverse=True)  # annealing, ends at the floor by step 39
    floor = 1e-2 / 25 / 1e4
    assert lrs[-1] == pytest.approx(floor, rel=1e-3)
    assert _lrs(timed, opt_b, 5) == pytest.approx([floor] * 5, rel=1e-3)  # past the end: holds, no error
    assert not timed.resize(10) or timed.total_steps >= timed.last_epoch + 1  # never ends behind its step


def test_a_resize_during_warm_up_still_leaves_steps_to_anneal() -> None:
    opt = _opt()
    timed = TimedOneCycle(opt, max_lr=1e-2, total_steps=1000, pct_start=0.15)
    _lrs(timed, opt, 5)
    timed.resize(7)
    lrs = _lrs(timed, opt, 4)
    assert lrs[-1] == pytest.approx(1e-2 / 25 / 1e4, rel=1e-3) and all(math.isfinite(v) for v in lrs)


def test_epochs_that_fit_use_the_pace_after_the_first_epoch() -> None:
    assert epochs_that_fit(34.0, [10.0]) == 3  # a tenth of margin: 11 s an epoch
    assert epochs_that_fit(34.0, [20.0, 5.0, 5.0]) == 6  # the first epoch's start-up is left out
    assert epochs_that_fit(-1.0, [5.0]) == 0


def test_without_a_time_limit_the_schedule_is_plain_one_cycle(shapes) -> None:  # noqa: F811
    from deepflow.kinds.detection.models import build_net

    sys_ = detection_system.DetectorSystem(
        build_net("shallow", 2, shapes.cfg.model), shapes.load_splits()["val"], 64, ["cat", "kite"], lr=1e-3,
        weight_decay=0.0, total_steps=20, augment_cfg=shapes.cfg.augment, box_weight=5.0, iou_kind="ciou", seed=0)
    assert type(sys_.configure_optimizers()["lr_scheduler"]["scheduler"]) is torch.optim.lr_scheduler.OneCycleLR


@pytest.mark.slow  # several seconds: in the slow layer (CI runs it), the default run stays fast
def test_a_time_limited_fit_sizes_its_schedule_to_the_epochs_that_fit(shapes, monkeypatch) -> None:  # noqa: F811
    from deepflow import usecase

    uc = usecase.get("shapes", ["train.epochs=10000", "train.patience=10000"])
    seen: list[TimedOneCycle] = []
    original = TimedOneCycle.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self)

    monkeypatch.setattr(TimedOneCycle, "__init__", spy)
    _, info = uc.fit("shallow", "candidate", uc.load_splits(), time_limit_s=4.0)
    steps = math.ceil(16 / 8)
    assert info["epochs_run"] < 10000 and 1 <= info["schedule_epochs"] < 10000
    (sched,) = seen
    assert sched.total_steps == info["schedule_epochs"] * steps
    assert sched.get_last_lr()[0] < 0.05 * uc.cfg.train.lr  # it annealed before the clock stopped it


def test_the_budget_asks_the_use_case_for_its_after_fit_cost() -> None:
    now = [0.0]
    asked: list[str] = []

    def estimate(member: str) -> float:
        asked.append(member)
        return {"shallow": 20.0, "deep": 40.0}[member]

    clock = budget.Budget(200.0, started=0.0, clock=lambda: now[0], estimate=estimate)
    first = clock.plan("shallow")
    assert first.time_limit_s == pytest.approx(200 - 40 - 20)  # reserve 2 x 20, its own 20: not the 10-s guess
    clock.record("shallow", first.time_limit_s, {"training": 50.0, "evaluation": 12.0})
    now[0] = 70.0
    second = clock.plan("deep")  # measured 15 (12 + a quarter) < the deep's estimate: the estimate
    assert second.time_limit_s == pytest.approx(200 - 70 - 80 - 40)
    assert asked == ["shallow", "deep"]
    assert budget.Budget(None, estimate=estimate).plan("deep").time_limit_s is None and asked == ["shallow", "deep"]


def test_the_after_fit_estimate_grows_with_the_probes_and_the_images(shapes) -> None:  # noqa: F811
    from deepflow.kinds.detection import usecase as detection

    per_image = shapes.single_image_s("shallow", shapes.load_splits()["test"]["image"].iloc[0])
    estimate = shapes.after_fit_estimate_s("shallow")
    assert per_image > 0
    assert estimate >= detection.AFTER_FIT_FIXED_S + (detection.LATENCY_PROBES + 4 + 4 + 8) * per_image * 0.5
