import math

from deepflow.promotion import decide


def test_first_model_becomes_champion_if_above_floor() -> None:
    assert decide("auprc", 0.6, None, floor=0.3).promote
    assert not decide("auprc", 0.2, None, floor=0.3).promote


def test_must_beat_champion_by_margin() -> None:
    assert decide("auprc", 0.71, 0.70, margin=0.005).promote
    d = decide("auprc", 0.703, 0.70, margin=0.005)
    assert not d.promote and "not above margin" in d.reasons[0]
    assert not decide("auprc", 0.70, 0.70).promote  # a tie keeps the champion


def test_nan_never_promotes() -> None:
    assert not decide("auprc", math.nan, None).promote
