"""Behavioural tests of a text classifier (after Ribeiro et al.'s CheckList, as taught in
Made-With-ML): a model that scores well can still fail cases anyone would call obvious.

- invariance: case, punctuation and whitespace changes must not change the predicted label;
- directional: appending a phrase typical of the target class (the entry's ``behaviour.phrases``) to
  a message of another class must raise the target class's probability;
- minimum functionality: hand-written messages with an obvious label.

The pass rate over all cases is ``test/behaviour_pass_rate``, which promotion can gate on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

PERTURBATIONS: dict[str, Callable[[str], str]] = {
    "upper": str.upper,
    "lower": str.lower,
    "trailing punctuation": lambda t: t.rstrip(".!? ") + ".",
    "no final punctuation": lambda t: t.rstrip(".!? "),
    "extra whitespace": lambda t: "  " + t.replace(" ", "  ") + " \n",
}


@dataclass
class BehaviourResult:
    cases: pd.DataFrame = field(repr=False)  # one row per case: test, kind, text, expected, got, passed

    def metrics(self) -> dict[str, float]:
        out = {"test/behaviour_pass_rate": float(self.cases["passed"].mean())}
        for kind, group in self.cases.groupby("kind"):
            out[f"test/behaviour_{kind}"] = float(group["passed"].mean())
        return out

    def failures_markdown(self, limit: int = 50) -> str:
        failed = self.cases[~self.cases["passed"]]
        lines = [f"# Behavioural tests: {len(self.cases) - len(failed)}/{len(self.cases)} passed", ""]
        if failed.empty:
            return "\n".join(lines) + "\n"
        lines += ["| kind | test | text | expected | got |", "|---|---|---|---|---|"]
        for r in failed.head(limit).itertuples():
            text = r.text.replace("|", "\\|").replace("\n", " ")[:120]
            lines.append(f"| {r.kind} | {r.test} | {text} | {r.expected} | {r.got} |")
        return "\n".join(lines) + "\n"


def run(predict: Callable[[list[str]], np.ndarray], labels: list[str], cfg, sample: list[str],
        ham: list[str]) -> BehaviourResult:
    """``predict(texts) -> (N, C) probabilities``; ``sample``: test texts; ``ham``: test texts of
    a class other than ``cfg.target`` (for the directional tests)."""
    rows: list[dict] = []

    base = predict(sample).argmax(1) if sample else np.array([], dtype=int)
    for name, fn in PERTURBATIONS.items():
        got = predict([fn(t) for t in sample]).argmax(1) if sample else base
        rows += [{"kind": "invariance", "test": name, "text": t, "expected": labels[b], "got": labels[g],
                  "passed": b == g} for t, b, g in zip(sample, base, got, strict=True)]

    if ham and cfg.phrases and cfg.target is not None:  # directional: only where the entry says which way
        target = labels.index(cfg.target)
        before = predict(ham)[:, target]
        for phrase in cfg.phrases:
            after = predict([f"{t} {phrase}" for t in ham])[:, target]
            rows += [{"kind": "directional", "test": f"+ {phrase!r}", "text": t, "expected": f"p>{b:.3f}",
                      "got": f"p={a:.3f}", "passed": a > b} for t, b, a in zip(ham, before, after, strict=True)]

    for label, texts in cfg.examples.items():  # minimum functionality: the entry's own examples
        got = predict(list(texts)).argmax(1)
        rows += [{"kind": "mft", "test": f"is {label}", "text": t, "expected": label, "got": labels[g],
                  "passed": labels[g] == label} for t, g in zip(texts, got, strict=True)]
    return BehaviourResult(pd.DataFrame(rows))
