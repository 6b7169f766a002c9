"""Promotion as a pure decision over numbers measured on the same test data."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return ("promote: " if self.promote else "keep champion: ") + "; ".join(self.reasons)


def decide(metric: str, challenger: float, champion: float | None, *, margin: float = 0.0,
           floor: float = 0.0) -> Decision:
    """Promote when the challenger clears the floor and beats the champion by ``margin``.

    Both values must be measured on the same test split in the same run.
    """
    if challenger != challenger:  # NaN
        return Decision(False, [f"challenger {metric} is NaN"])
    if challenger < floor:
        return Decision(False, [f"challenger {metric} {challenger:.4f} is below the floor {floor:.4f}"])
    if champion is None:
        return Decision(True, [f"no champion yet; challenger {metric} {challenger:.4f} >= floor {floor:.4f}"])
    gain = challenger - champion
    if gain > margin:
        return Decision(True, [
            f"challenger {metric} {challenger:.4f} beats champion {champion:.4f} "
            f"by {gain:+.4f} > margin {margin:.4f}"
        ])
    return Decision(False, [
        f"challenger {metric} {challenger:.4f} vs champion {champion:.4f}: "
        f"gain {gain:+.4f} is not above margin {margin:.4f}"
    ])
