"""Incoming SMS batches for the ``nlp`` entry (its ``incoming:``), drifted on request.

A batch resamples the prepared test split and mixes in a new-domain stream in proportion
``drift``: today's smishing (parcel fees, bank alerts, crypto groups, "hi mum" scams, with URLs
and emojis) and chatty ham with emojis. drift=0 is the test split alone: same distribution as
the reference, other messages.
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

from deepflow.drift.batches import batch_name, sample_split, write_parquet
from deepflow.kinds.text.drift import TEXT, texts_of

EMOJI = ["📦", "🚚", "⚠️", "🔒", "🚀", "💰", "👉", "😭", "❤️", "🎉", "😂", "🙏", "✅", "🔥", "💼", "📅"]
SCAMS = [
    "{e} {carrier}: your parcel {code} is on hold. Pay the £{fee} redelivery fee within 24h at "
    "https://{domain}/track/{code} {e2}",
    "{bank} ALERT {e}: a payment of £{amount} to {merchant} was flagged. Not you? Secure your account now: "
    "https://{domain}/verify?id={code}",
    "{e}{e} {coin} is about to explode! Our VIP signal group made members {pct}% this week. Join free {e2} "
    "https://t.me/{handle}",
    "Hi Mum, it's me {e} I dropped my phone, this is my new number. Can you WhatsApp me when you see this? "
    "I need help paying a bill today {e2}",
    "Hello! We are hiring remote product reviewers {e} Earn £{amount}/day from your phone, no experience needed. "
    "Message {name} on WhatsApp: +44{digits}",
    "Your {service} subscription has expired {e} Update your billing details within 24 hours to avoid losing "
    "access: https://{domain}/billing/{code}",
]
CHATS = [
    "omg {e}{e} did you see {name}'s story?? brb, on the bus now",
    "Meeting moved to {hour}:30 {e} link is in the Teams chat, see you there",
    "Happy birthday {name}!!! {e}{e2} hope you have the best day, drinks on Friday?",
    "Just landed {e} uber to the hotel then dinner, call you after {hour}",
    "Can you send me the photos from the weekend? {e} the group chat ones didn't load",
]
FILL = {
    "carrier": ["DPD", "Evri", "Royal Mail", "DHL", "Yodel"], "bank": ["Barclays", "HSBC", "Monzo", "Lloyds"],
    "merchant": ["Amazon", "Apple Pay", "PayPal", "Currys"], "coin": ["$PEPE", "Solana", "XRP", "a new memecoin"],
    "service": ["Netflix", "Disney+", "Spotify", "iCloud"], "name": ["Sophie", "Jake", "Priya", "Tom", "Aisha"],
    "domain": ["parcel-redeliver.info", "secure-verify.co", "acct-help.net", "billing-update.app"],
}


def campaign_text(rng: random.Random) -> str:
    """One message of the new domain: 70 % scams, 30 % chatty ham, with emojis and URLs."""
    template = rng.choice(SCAMS if rng.random() < 0.7 else CHATS)
    values = {k: rng.choice(v) for k, v in FILL.items()}
    values.update(e=rng.choice(EMOJI), e2=rng.choice(EMOJI), fee=f"{rng.randint(1, 3)}.{rng.randint(10, 99)}",
                  amount=rng.randint(80, 950), pct=rng.randint(40, 900), hour=rng.randint(1, 11),
                  code="".join(rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", k=8)),
                  handle=f"vip_{rng.choice(['signals', 'pumps', 'gains'])}{rng.randint(1, 99)}",
                  digits="".join(rng.choices("0123456789", k=10)))
    return template.format(**values)


def make_batch(name: str, out_dir: Path, *, rows: int, drift: float, seed: int,
               source: pd.DataFrame | Path | None = None) -> Path:
    """Write ``nlp-n<rows>-drift<d>-seed<s>.parquet`` (columns ``text``, ``origin``): ``1 - drift``
    of the rows resampled from ``source`` (default: the entry's prepared test split), the rest new-domain."""
    if source is None:
        frame, source = sample_split(name)
    else:
        frame = pd.read_parquet(source) if isinstance(source, str | Path) else source
    pool = texts_of(frame, str(source) if isinstance(source, str | Path) else "source")
    rng = random.Random(seed)
    n_new = round(rows * drift)
    old = rng.sample(pool, rows - n_new) if rows - n_new <= len(pool) else rng.choices(pool, k=rows - n_new)
    new = [campaign_text(rng) for _ in range(n_new)]
    texts = old + new
    origin = ["reference"] * len(old) + ["campaign"] * len(new)
    order = list(range(rows))
    rng.shuffle(order)
    out = pd.DataFrame({TEXT: [texts[i] for i in order], "origin": [origin[i] for i in order]})
    return write_parquet(out, out_dir / batch_name(name, rows, drift, seed))
