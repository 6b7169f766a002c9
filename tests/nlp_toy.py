"""A made-up three-class text dataset (not spam): proves any ``text,label`` file goes through the
NLP use case by config alone. Seeded templates with shared filler words, so it is learnable but
not trivially separable by one token."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

TOPICS = {
    "weather": ["rain", "sunny", "storm", "forecast", "cloudy", "wind", "snow", "temperature"],
    "sport": ["match", "goal", "team", "league", "coach", "score", "season", "striker"],
    "money": ["bank", "loan", "interest", "savings", "budget", "invoice", "salary", "mortgage"],
}
FILLER = ["today", "really", "the", "we", "think", "about", "tomorrow", "again", "big", "news", "on", "so"]


def toy_frame(n_per_class: int = 140, seed: int = 3) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for label, words in TOPICS.items():
        for i in range(n_per_class):
            tokens = rng.sample(words, 2) + rng.sample(FILLER, 4) + [str(rng.randint(1, 99)), f"w{i}"]
            rng.shuffle(tokens)
            rows.append({"text": " ".join(tokens).capitalize() + rng.choice([".", "!", "?"]), "label": label})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def write_toy_csv(path: Path, **kwargs) -> Path:
    toy_frame(**kwargs).to_csv(path, index=False)
    return path

