"""Drift statistics, detectors per kind, the built-in entries' batch generators and bad batches
(deepflow.drift). The generic generators and the dispatch: tests/test_drift_batches.py."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepflow import drift, settings
from deepflow.drift import DriftConfig, DriftInputError
from deepflow.usecases.fraud.prepare import FEATURES, add_features
from deepflow.usecases.fraud.simulate import SimulationParams, simulate
from deepflow.usecases.traffic.generate import CLASSES, GenerateParams, frame_row

SIM = SimulationParams(n_customers=400, n_terminals=2000, n_days=60, seed=1, terminals_per_day=1, customers_per_day=1)
FRAMES = GenerateParams(width=96, height=96, seed=5)

# --- statistics by hand ----------------------------------------------------------------------


def test_psi_of_identical_samples_is_zero():
    x = np.random.default_rng(0).normal(size=2000)
    assert drift.psi(x, x) == pytest.approx(0.0, abs=1e-12)


def test_psi_of_a_known_shift_matches_the_hand_computation():
    reference = np.arange(1000.0)  # deciles: ten bins of 100 values
    # 15 % in each of the lower five bins, 5 % in each of the upper five
    current = np.concatenate([b * 100 + np.arange(15 if b < 5 else 5) for b in range(10)]).astype(float)
    expected = 5 * (0.15 - 0.1) * math.log(0.15 / 0.1) + 5 * (0.05 - 0.1) * math.log(0.05 / 0.1)
    assert expected == pytest.approx(0.25 * math.log(3))
    assert drift.psi(reference, current) == pytest.approx(expected, rel=1e-9)


def test_psi_floors_empty_bins_at_epsilon():
    reference = np.arange(1000.0)
    current = np.arange(50.0)  # everything in the first decile
    eps = drift.EPS
    expected = (1 - 0.1) * math.log(1 / 0.1) + 9 * (eps - 0.1) * math.log(eps / 0.1)
    assert drift.psi(reference, current) == pytest.approx(expected, rel=1e-9)


def test_psi_bins_discrete_and_constant_columns_by_value():
    ref = np.array([0] * 80 + [1] * 20, dtype=float)
    cur = np.array([0] * 60 + [1] * 40, dtype=float)
    assert drift.bin_edges(ref).tolist() == [0.0]
    assert drift.psi(ref, cur) == pytest.approx(-0.2 * math.log(0.75) + 0.2 * math.log(2))
    const = np.full(100, 3.0)
    assert drift.psi(const, const) == pytest.approx(0.0)
    assert drift.psi(const, const + 1) == pytest.approx(2 * (1 - drift.EPS) * math.log(1 / drift.EPS))
    # a point mass (most values 0) is one bin, not several empty ones
    mass = np.concatenate([np.zeros(900), np.linspace(0.1, 1, 100)])
    assert drift.bin_edges(mass)[0] == 0.0 and len(set(drift.bin_edges(mass))) == len(drift.bin_edges(mass))


def test_psi_counts_missing_values_in_a_bin_of_their_own():
    ref = np.random.default_rng(1).normal(size=1000)
    cur = ref.copy()
    cur[:300] = np.nan
    assert drift.psi(ref, ref) == pytest.approx(0.0)
    assert drift.psi(ref, cur) > 1.0  # 30 % missing against none


def test_psi_pvalue_tells_sampling_noise_from_a_shift():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=500)
    value, p = drift.psi_test(ref, rng.normal(size=100))
    assert value > 0.02 and p > 0.01  # small samples: PSI is not 0, but not significant either
    value, p = drift.psi_test(ref, rng.normal(1.0, 1.0, size=100))
    assert value > 0.2 and p < 1e-6


def test_ks_and_jensen_shannon():
    from scipy import stats

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=400), rng.normal(0.5, 1, size=300)
    result = drift.ks(a, b)
    assert result.statistic == pytest.approx(stats.ks_2samp(a, b).statistic)
    assert result.pvalue < 1e-6 and drift.ks(a, a).statistic == 0
    assert drift.jensen_shannon([1, 2, 3], [1, 2, 3]) == pytest.approx(0.0)
    assert drift.jensen_shannon({"a": 5}, {"b": 2}) == pytest.approx(1.0)  # disjoint: 1 bit
    assert 0 < drift.jensen_shannon({"a": 1, "b": 1}, {"a": 1}) < 1


def test_config_overrides_and_checks():
    assert DriftConfig(**{"psi_threshold": 0.3}).psi_threshold == 0.3
    with pytest.raises(TypeError):
        DriftConfig(**{"no_such_knob": 1})
    with pytest.raises(ValueError, match="min_drifted_share"):
        DriftConfig(min_drifted_share=0)


# --- tabular (fraud) -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fraud_reference() -> pd.DataFrame:
    """The small simulator's featured transactions of one week, days 39-45 (as conftest's split)."""
    tx = add_features(simulate(SIM))
    return tx[(tx["TX_TIME_DAYS"] >= 39) & (tx["TX_TIME_DAYS"] < 46)].reset_index(drop=True)


@pytest.fixture(scope="module")
def fraud_scorer(fraud_reference):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from deepflow.scoring import SklearnScorer

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    model.fit(fraud_reference[FEATURES], fraud_reference["TX_FRAUD"])
    return SklearnScorer(model, FEATURES)


@pytest.fixture(scope="module")
def fraud_batches(tmp_path_factory) -> dict[float, Path]:
    out = tmp_path_factory.mktemp("incoming-fraud")
    return {d: drift.make_batch("fraud", out, rows=2000, drift=d, seed=4, base=SIM, delay_days=7) for d in (0.0, 1.0)}


def test_fraud_batch_without_drift_is_not_flagged_and_drifted_one_is(fraud_reference, fraud_scorer, fraud_batches):
    calm = drift.load_batch("tabular", fraud_batches[0.0], FEATURES)
    assert len(calm) == 2000 and set(FEATURES) <= set(calm.columns) and "TX_FRAUD" not in calm.columns
    report = drift.detect("tabular", fraud_reference, calm, DriftConfig(), scorer=fraud_scorer, features=FEATURES)
    assert not report.drifted, report.markdown()
    assert [s.name for s in report.signals] == [*FEATURES, "prediction"]

    shifted = drift.load_batch("tabular", fraud_batches[1.0], FEATURES)
    report = drift.detect("tabular", fraud_reference, shifted, DriftConfig(), scorer=fraud_scorer, use_case="fraud")
    assert report.drifted and report.score >= 0.5
    by_name = {s.name: s for s in report.signals}
    assert by_name["TX_AMOUNT"].drifted and by_name["TX_DURING_NIGHT"].drifted and by_name["prediction"].drifted
    assert not by_name["TX_DURING_WEEKEND"].drifted  # a whole week, like the reference


def test_report_markdown_dict_and_figures(fraud_reference, fraud_scorer, fraud_batches):
    import matplotlib.pyplot as plt

    cur = drift.load_batch("tabular", fraud_batches[1.0])
    report = drift.detect("tabular", fraud_reference, cur, scorer=fraud_scorer, use_case="fraud")
    text = report.markdown()
    assert text.startswith("**Verdict: DRIFT")
    assert "| **drifted** | TX_AMOUNT | psi |" in text and "| prediction |" in text
    rows = [line for line in text.splitlines() if line.startswith("| **drifted**") or line.startswith("| ok")]
    assert rows[0].startswith("| **drifted**") and rows[-1].startswith("| ok")  # by severity, drifted first
    body = json.loads(json.dumps(report.to_dict()))
    assert body["drifted"] is True and body["use_case"] == "fraud" and "samples" not in body
    assert {"name", "statistic", "value", "threshold", "drifted", "detail", "severity"} <= set(body["signals"][0])
    figs = report.figures()
    assert set(figs) == {"drift/signals.png", "drift/distributions.png"}
    for fig in figs.values():
        plt.close(fig)


def test_tabular_missing_and_unparsable_values(fraud_reference):
    cur = fraud_reference.sample(1000, random_state=0).reset_index(drop=True)
    cur["TX_AMOUNT"] = cur["TX_AMOUNT"].astype(object)
    cur.loc[:399, "TX_AMOUNT"] = "n/a"  # 40 % unparsable -> the missing bin
    report = drift.detect("tabular", fraud_reference, cur, features=FEATURES)
    amount = next(s for s in report.signals if s.name == "TX_AMOUNT")
    assert amount.drifted and "missing 0.0% -> 40.0%" in amount.detail
    assert not report.drifted  # one signal of fifteen


# --- bad batches ------------------------------------------------------------------------------


def test_bad_batches_are_named_with_file_and_column(tmp_path, fraud_batches, fraud_reference):
    frame = pd.read_parquet(fraud_batches[0.0]).drop(columns=["TX_AMOUNT"])
    missing = tmp_path / "no_amount.csv"
    frame.to_csv(missing, index=False)
    with pytest.raises(DriftInputError, match=r"no_amount\.csv: missing column\(s\) TX_AMOUNT"):
        drift.load_batch("tabular", missing, FEATURES)
    with pytest.raises(DriftInputError, match=r"no_amount\.csv: missing column\(s\) TX_AMOUNT"):
        drift.detect("tabular", fraud_reference, drift.load_batch("tabular", missing), features=FEATURES)

    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(DriftInputError, match=r"empty\.csv: empty file"):
        drift.load_batch("tabular", empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("text\n")
    with pytest.raises(DriftInputError, match=r"header\.csv: no rows"):
        drift.load_batch("text", header_only)

    latin = tmp_path / "latin1.csv"
    latin.write_bytes("text\nhello\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(DriftInputError, match=r"latin1\.csv: not valid UTF-8 at byte \d+ \(line 3\)"):
        drift.load_batch("text", latin)
    no_text = tmp_path / "messages.csv"
    no_text.write_text("message\nhello\n")
    with pytest.raises(DriftInputError, match=r"messages\.csv: missing column\(s\) text"):
        drift.load_batch("text", no_text)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DriftInputError, match="unsupported extension"):
        drift.load_batch("tabular", tmp_path / "x.json")
    with pytest.raises(DriftInputError, match="no such file"):
        drift.load_batch("text", tmp_path / "nope.csv")


def test_text_batch_formats_and_rows_without_text(tmp_path):
    tsv = tmp_path / "b.tsv"
    tsv.write_text('text\tid\nhello "there"\t1\n \t2\nNA\t3\n', encoding="utf-8")
    frame = drift.load_batch("text", tsv)
    assert frame["text"].tolist() == ['hello "there"', "NA"] and frame.attrs["dropped"] == 1
    lines = tmp_path / "b.txt"
    lines.write_text("one message\n\nanother 😀\n", encoding="utf-8")
    assert drift.load_batch("text", lines)["text"].tolist() == ["one message", "another 😀"]


# --- text (nlp) ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sms_splits(tmp_path_factory) -> Path:
    from deepflow.kinds.text.prepare import PrepareParams, prepare

    out = tmp_path_factory.mktemp("nlp-prepared")
    prepare(settings.PROJECT_ROOT / "data/external/sms_spam/SMSSpamCollection", out,
            PrepareParams(**settings.stage_params("nlp.prepare")))
    return out


class KeywordScorer:
    """A stand-in text champion: spam when a message has a URL, a £ or 'free'."""

    labels = ["ham", "spam"]

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        spam = frame["text"].str.contains(r"http|£|free", case=False, regex=True).to_numpy()
        return np.stack([1.0 - spam, spam.astype(float)], axis=1)


def test_text_batch_without_drift_is_not_flagged_and_drifted_one_is(sms_splits, tmp_path):
    reference = drift.reference_frame("nlp", overrides=[f"prepared_dir={sms_splits}"])
    assert reference.attrs["use_case"] == "nlp" and len(reference) > 3000
    cfg = DriftConfig(embedding_sample=0)  # MiniLM: see the slow test below
    calm = drift.load_batch("text", drift.make_batch("nlp", tmp_path, rows=300, drift=0.0, seed=2,
                                                     source=sms_splits / "test.parquet"))
    report = drift.detect("text", reference, calm, cfg, scorer=KeywordScorer())
    assert not report.drifted, report.markdown()
    assert [s.name for s in report.signals] == ["length_chars", "length_tokens", "oov_rate", "token_js",
                                                "predicted_labels"]
    shifted = drift.load_batch("text", drift.make_batch("nlp", tmp_path, rows=300, drift=1.0, seed=2,
                                                        source=sms_splits / "test.parquet"))
    report = drift.detect("text", reference, shifted, cfg, scorer=KeywordScorer())
    assert report.drifted and all(s.drifted for s in report.signals), report.markdown()
    oov = next(s for s in report.signals if s.name == "oov_rate")
    assert "https" in oov.detail and "embedding shift not measured" in report.markdown()


def test_text_tokens_keep_symbols_and_digit_shapes():
    from deepflow.kinds.text.drift import tokens

    assert tokens("WIN £100 now!! call 0800123456 👉 https://x.io ❤️") == [
        "win", "£", "<num>", "now", "!", "!", "call", "<longnum>", "👉", "https", ":", "/", "/", "x", ".", "io", "❤"]


def test_embedding_shift_statistic_on_synthetic_embeddings():
    from deepflow.kinds.text.drift import embedding_shift

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 16))
    same, p_same, _ = embedding_shift(ref, rng.normal(size=(200, 16)), permutations=200, seed=0)
    moved, p_moved, _ = embedding_shift(ref, rng.normal(size=(200, 16)) + 1.0, permutations=200, seed=0)
    assert same < 0.15 and p_same > 0.01
    # a shift of 1 on each of 16 unit-variance axes: |dmu| = 4, spread sqrt(16) = 4 -> about 1
    assert moved == pytest.approx(1.0, abs=0.15) and p_moved < 0.01


def test_transfer_champion_reuses_the_embedding_signals_embeddings():
    import torch

    from deepflow.kinds.text.drift import label_shares
    from deepflow.kinds.text.encoder import SentenceEncoder

    class Transfer:  # the shape of a TextScorer over the frozen encoder; never loads MiniLM here
        labels, featurizer = ["ham", "spam"], SentenceEncoder()
        net = torch.nn.Linear(SentenceEncoder.dim, 2)

        def predict(self, frame):
            raise AssertionError("the texts were encoded already")

    with torch.no_grad():
        Transfer.net.weight.zero_()
        Transfer.net.bias.zero_()  # nn.Linear's bias is random: the verdict must not depend on it
        Transfer.net.weight[1, 0] = 1.0  # spam when the first embedding dimension is positive
    texts = ["a", "b", "c"]
    embeddings = np.zeros((3, SentenceEncoder.dim), dtype=np.float32)
    embeddings[:2, 0] = 1.0
    assert label_shares(Transfer(), texts, (texts, embeddings)).tolist() == [1, 2]
    assert label_shares(KeywordScorer(), ["free £5", "hi"], (["free £5", "hi"], embeddings[:2])).tolist() == [1, 1]


@pytest.mark.slow
def test_text_embedding_shift_with_minilm(sms_splits, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFLOW_CACHE_DIR", str(tmp_path / "cache"))  # reference embeddings land here
    reference = drift.reference_frame("nlp", overrides=[f"prepared_dir={sms_splits}"])
    cfg = DriftConfig(embedding_sample=200)
    for level, expected in ((0.0, False), (1.0, True)):
        batch = drift.load_batch("text", drift.make_batch("nlp", tmp_path, rows=200, drift=level, seed=3,
                                                          source=sms_splits / "test.parquet"))
        embedding = next(s for s in drift.detect("text", reference, batch, cfg).signals if s.name == "embedding")
        assert embedding.drifted is expected, embedding


# --- detection (traffic) -------------------------------------------------------------------------


class BrightnessDetector:
    """A stand-in detector whose boxes follow the picture: more and surer ones in bright, contrasty
    frames (what a real detector does under night and fog), classes by the dominant channel."""

    max_det = 100

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        from deepflow.kinds.detection.drift import frame_stats

        rows = []
        for i, data in enumerate(frame["image"]):
            brightness, contrast, r, g, b, _ = frame_stats(bytes(data))
            for k in range(int(brightness // 25)):
                rows.append({"image": i, "x1": 0.0, "y1": 0.0, "x2": 5.0, "y2": 5.0,
                             "class": CLASSES[int(np.argmax([r, g, b])) + k % 2], "score": min(contrast / 50, 1.0)})
        columns = ["image", "x1", "y1", "x2", "y2", "class", "score"]
        return pd.DataFrame(rows, columns=columns)


@pytest.fixture(scope="module")
def traffic_reference() -> pd.DataFrame:
    return pd.DataFrame([frame_row(FRAMES, "train", i) for i in range(150)])


def test_detection_batch_without_drift_is_not_flagged_and_drifted_one_is(traffic_reference, tmp_path):
    calm = drift.load_batch("detection", drift.make_batch("traffic", tmp_path, rows=80, drift=0.0, seed=1,
                                                          params=FRAMES))
    report = drift.detect("detection", traffic_reference, calm, scorer=BrightnessDetector(), threshold=0.1)
    assert not report.drifted, report.markdown()
    assert {"brightness", "sharpness", "detections_per_frame", "detection_score", "detected_classes"} <= {
        s.name for s in report.signals}
    shifted = drift.load_batch("detection", drift.make_batch("traffic", tmp_path, rows=80, drift=1.0, seed=1,
                                                         params=FRAMES))
    assert shifted["shift"].str.len().gt(0).mean() > 0.5 and shifted["width"].eq(96).all()
    report = drift.detect("detection", traffic_reference, shifted, scorer=BrightnessDetector(), threshold=0.1)
    by_name = {s.name: s for s in report.signals}
    assert report.drifted and by_name["sharpness"].drifted and by_name["detections_per_frame"].drifted


def test_traffic_batch_without_drift_matches_the_generator(tmp_path):
    path = drift.make_batch("traffic", tmp_path, rows=2, drift=0.0, seed=0, params=FRAMES)
    batch = pd.read_parquet(path)
    expected = frame_row(replace(FRAMES, seed=FRAMES.seed + 1000), "test", 1)
    assert batch["image"][1] == expected["image"] and batch["labels"][1] == expected["labels"]


def test_image_folder_batch_drops_undecodable_files(traffic_reference, tmp_path):
    folder = tmp_path / "camera"
    folder.mkdir()
    for i, data in enumerate(traffic_reference["image"][:30]):
        (folder / f"f{i:03d}.jpg").write_bytes(data)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    frame = drift.load_batch("detection", folder)
    assert len(frame) == 30 and frame.attrs["dropped"] == 1 and "broken.jpg" in frame.attrs["rejected"][0]
    report = drift.detect("detection", traffic_reference, frame)
    assert not report.drifted and "broken.jpg" in report.markdown()
    (folder / "only").mkdir()
    (folder / "only" / "junk.png").write_bytes(b"\x89PNG nope")
    with pytest.raises(DriftInputError, match="junk.png"):
        drift.load_batch("detection", folder / "only")


def test_command_line_make_batch(tmp_path, capsys):
    from deepflow.drift.__main__ import main
    from deepflow.usecase import UnknownUseCase

    assert main(["make-batch", "traffic", str(tmp_path), "--rows", "2", "--drift", "1", "--seed", "3"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == tmp_path / "traffic-n2-drift1.00-seed3.parquet" and len(pd.read_parquet(path)) == 2
    with pytest.raises(ValueError, match="drift must be in"):
        drift.make_batch("nlp", tmp_path, rows=3, drift=2.0, seed=0)
    with pytest.raises(UnknownUseCase, match="spam"):
        drift.make_batch("spam", tmp_path, rows=3, drift=0.0, seed=0)
