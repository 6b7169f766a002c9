"""NLP data: deduplication before a content-addressed stratified split, the tokeniser and
vocabulary (train only), and the data contract (each rule rejects a crafted bad frame)."""

from collections.abc import Callable

import pandas as pd
import pytest

from deepflow import validation
from deepflow.kinds.text import expectations
from deepflow.kinds.text.config import TextConfig
from deepflow.kinds.text.prepare import PrepareParams, dedup_key, deduplicate, normalise, prepare, read, split
from deepflow.kinds.text.text import HashedBag, Vocabulary, tokenize
from tests.nlp_toy import toy_frame

CSV = PrepareParams(sep=",", header=True, text_column="text", label_column="label")


def test_normalise_and_near_duplicate_key() -> None:
    assert normalise("  Hi &amp; bye\t\n there ") == "Hi & bye there"
    assert normalise("e\u0301") == "\u00e9"  # NFC
    a = "WINNER!! Call 09061701461 now to claim £900"
    b = "winner! call 08712402050 now to claim £250."
    assert dedup_key(a) == dedup_key(b)
    assert dedup_key("see you at 7") != dedup_key("see you at home")


def test_deduplicate_exact_near_and_conflicting() -> None:
    raw = pd.DataFrame({"text": ["Free prize call 0800", "Free  prize call 0800", "FREE PRIZE! call 0900",
                                 "lunch?", "Lunch.", "ok", "ok"],
                        "label": ["spam", "spam", "spam", "ham", "spam", "ham", "ham"]})
    out, counts = deduplicate(raw)
    assert counts == {"raw": 7, "empty_dropped": 0, "after_exact": 5, "conflicting_groups_dropped": 1,
                      "after_near": 2}
    assert sorted(out["text"]) == ["Free prize call 0800", "ok"]  # "lunch?" vs "Lunch." disagree: both dropped


def test_split_is_stratified_disjoint_and_stable_when_data_grows() -> None:
    frame, _ = deduplicate(toy_frame())
    parts = split(frame, CSV)
    assert sum(len(p) for p in parts.values()) == len(frame)
    keys = {s: set(p["text"].map(dedup_key)) for s, p in parts.items()}
    assert not (keys["train"] & keys["test"]) and not (keys["val"] & keys["test"]) and not (keys["train"] & keys["val"])
    for part in parts.values():  # every class in every split, in proportion
        assert part["label"].value_counts(normalize=True).between(0.28, 0.39).all()
    # Content-addressed: with 10 % more data, no old test message moves to train.
    grown, _ = deduplicate(pd.concat([toy_frame(), toy_frame(n_per_class=14, seed=99)]))
    new_train = set(split(grown, CSV)["train"]["text"])
    assert not (set(parts["test"]["text"]) & new_train)
    assert split(frame, CSV)["test"].equals(parts["test"])  # same data, same split


def test_prepare_reads_any_csv_and_reports_counts(tmp_path) -> None:
    src = tmp_path / "toy.csv"
    toy_frame().to_csv(src, index=False)
    counts = prepare(src, tmp_path / "out", CSV)
    assert counts["raw"] == 420 and counts["train"] + counts["val"] + counts["test"] == counts["after_near"]
    assert (tmp_path / "out" / "dedup.json").exists()
    with pytest.raises(ValueError, match="no column"):
        read(src, PrepareParams(sep=",", header=True, text_column="message"))


def test_invalid_utf8_file_is_refused_with_its_position(tmp_path) -> None:
    src = tmp_path / "bad.tsv"
    src.write_bytes(b"ham\thello\nspam\tfree \xff prize\n")
    with pytest.raises(ValueError, match=r"bad.tsv.*not valid UTF-8.*byte 20"):
        read(src, PrepareParams())


def test_tokenizer_and_train_only_vocabulary() -> None:
    assert tokenize("FREE £100!! call 09061701461") == ["free", "£", "<num>", "!", "!", "call", "<longnum>"]
    vocab = Vocabulary.build(["free prize", "free call", "call me"], min_freq=2)
    assert vocab.itos == ["<pad>", "<unk>", "call", "free"]
    ids = vocab.encode(["free lottery", ""], max_len=4)
    assert ids.tolist() == [[3, 1, 0, 0], [1, 0, 0, 0]]  # unseen word -> <unk>; empty keeps one <unk>


def test_hashed_bag_is_stable_and_shares_subwords() -> None:
    vocab = Vocabulary.build(["text me"] * 2, min_freq=1)
    a, b = HashedBag(vocab, buckets=1000), HashedBag(vocab, buckets=1000)
    assert a.features("txt me now") == b.features("txt me now")  # crc32, not Python's salted hash()
    shared = set(a.features("texting")) & set(a.features("text"))
    assert len(shared) >= 3  # "<te", "tex", "ext", ...


# --- the contract ---------------------------------------------------------------------------

CFG = TextConfig(labels=["ham", "spam"], positive="spam")  # the SMS entry's label set
Splits = dict[str, pd.DataFrame]


@pytest.fixture(scope="module")
def sms_like() -> Splits:
    rows = [(f"hello friend number {i} see you", "ham") for i in range(80)]
    rows += [(f"win a free prize now claim code {chr(97 + i % 26)}{i}", "spam") for i in range(20)]
    frame, _ = deduplicate(pd.DataFrame(rows, columns=["text", "label"]).assign(
        text=lambda d: d.text + " " + d.index.map(lambda i: "abcdefghij"[i % 10] * (1 + i // 10))))
    return split(frame, PrepareParams())


def run(splits: Splits) -> validation.ValidationReport:
    return validation.validate("nlp.test", expectations.frames(splits), expectations.suites(CFG))


def test_clean_data_passes(sms_like: Splits) -> None:
    report = run(sms_like)
    assert report.success, report.to_markdown()


def _set(split_name: str, column: str, value) -> Callable[[Splits], None]:
    def mutate(s: Splits) -> None:
        s[split_name].loc[s[split_name].index[0], column] = value
    mutate.__name__ = f"{split_name}_{column}_{str(value)[:12]!r}"
    return mutate


def _lone_surrogate(s: Splits) -> None:
    """Bytes that were not UTF-8, decoded leniently (surrogateescape) into an object column."""
    s["train"]["text"] = s["train"]["text"].astype(object)
    s["train"].loc[s["train"].index[0], "text"] = b"bad \xff bytes".decode("utf-8", "surrogateescape")


def _too_long(s: Splits) -> None:
    s["train"].loc[s["train"].index[1], "text"] = "a" * (CFG.max_chars + 1)


def _imbalanced(s: Splits) -> None:
    ham, spam = s["val"][s["val"].label == "ham"], s["val"][s["val"].label == "spam"]
    s["val"] = pd.concat([ham] * 10 + [spam.head(1)], ignore_index=True)  # spam share < 1 %


def _missing_class(s: Splits) -> None:
    s["test"] = s["test"][s["test"]["label"] == "ham"]


def _text_in_two_splits(s: Splits) -> None:
    leaked = s["train"].head(1).assign(text=lambda d: d.text.str.upper() + "!!")  # a near-duplicate
    s["test"] = pd.concat([s["test"], leaked], ignore_index=True)


def _missing_column(s: Splits) -> None:
    for k in s:
        s[k] = s[k].drop(columns=["label"])


CASES = [
    (_set("train", "text", ""), "expect_column_value_lengths_to_be_between", "text"),
    (_set("train", "text", "   "), "expect_column_values_to_not_match_regex", "text"),
    (_set("val", "text", None), "expect_column_values_to_not_be_null", "text"),
    (_too_long, "expect_column_value_lengths_to_be_between", "text"),
    (_lone_surrogate, "expect_column_values_to_be_in_set", "utf8"),
    (_set("train", "text", "mojibake \ufffd here"), "expect_column_values_to_be_in_set", "utf8"),
    (_set("test", "label", "eggs"), "expect_column_values_to_be_in_set", "label"),
    (_imbalanced, "expect_column_values_to_be_between", "share"),
    (_missing_class, "expect_column_values_to_be_between", "classes"),
    (_text_in_two_splits, "expect_column_values_to_be_between", "splits"),
    (_missing_column, "expect_table_columns_to_match_set", None),
]


@pytest.mark.parametrize(("mutate", "expectation", "column"), CASES, ids=[c[0].__name__ for c in CASES])
def test_rule_rejects_crafted_bad_frame(sms_like: Splits, mutate, expectation: str, column) -> None:
    bad = {k: v.copy() for k, v in sms_like.items()}
    mutate(bad)
    report = run(bad)
    assert not report.success
    hits = [f for f in report.failures if f.expectation == expectation and (column is None or f.column == column)]
    assert hits, report.to_markdown()
