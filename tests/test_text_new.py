"""``deepflow new`` for labelled texts: any file (CSV with a header, TSV without, CRLF and stray
quotes, UTF-16, Latin-1, JSON lines; binary or multiclass) becomes a text entry whose splits the
entry-driven prepare reproduces; bad input is one line, exit code 2 and nothing written."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from deepflow import usecase
from deepflow.cli import app
from deepflow.kinds.table.read import read_table
from deepflow.kinds.text import infer, prepare
from deepflow.kinds.text.new import chance_f1, choose_positive
from deepflow.kinds.text.prepare import label_text, prepare_entry

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
WORDS = {
    "pos": ["great", "loved", "wonderful", "excellent", "enjoyed", "superb", "charming", "brilliant", "delightful"],
    "neg": ["awful", "boring", "hated", "terrible", "dull", "waste", "poor", "clumsy", "tedious"],
    "mixed": ["uneven", "partly", "average", "okay", "mediocre", "passable", "middling", "fine", "so-so"],
}
FILLER = ["the", "film", "plot", "acting", "story", "really", "was", "and", "cast", "music", "ending", "scenes",
          "director", "very", "quite", "a", "it", "with", "script", "camera", "pace", "dialogue", "hero", "villain"]
NOUNS = ["castle", "harbour", "garden", "desert", "station", "forest", "kitchen", "bridge", "market", "island",
         "library", "tunnel", "meadow", "palace", "canyon", "village", "lighthouse", "orchard", "glacier", "temple"]


def reviews(n_per_class: dict[str, int], seed: int = 0) -> pd.DataFrame:
    """``text``, ``label`` rows, n per label (a key of :data:`WORDS`), shuffled: the words depend on
    the label (learnable, not by one token), every sentence distinct even as a near-duplicate key."""
    rng = random.Random(seed)
    rows = []
    for label, n in n_per_class.items():
        for _ in range(n):
            words = rng.sample(WORDS[label], 2) + rng.sample(FILLER, rng.randint(4, 9)) + rng.sample(NOUNS, 2)
            rng.shuffle(words)
            rows.append({"text": " ".join(words).capitalize() + rng.choice([".", "!", "..."]), "label": label})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.fixture
def places(tmp_path: Path, datasets: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv("DEEPFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DEEPFLOW_REPORTS_DIR", str(tmp_path / "reports"))
    (tmp_path / "in").mkdir()
    return {"datasets": datasets, "data": tmp_path / "data", "reports": tmp_path / "reports", "in": tmp_path / "in"}


def new(name: str, path: Path, *args: str, code: int = 0) -> str:
    result = runner.invoke(app, ["new", name, "--data", str(path), "--no-dvc", *args])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.split())


def splits_of(name: str) -> dict[str, pd.DataFrame]:
    cfg = usecase.resolve_config(usecase.entry(name))
    return {s: pd.read_parquet(usecase.project_path(cfg.prepared_dir) / f"{s}.parquet") for s in ("train", "val",
                                                                                                  "test")}


def test_csv_with_header_becomes_an_entry_and_prepare_reproduces_it(places, tmp_path, monkeypatch, capsys) -> None:
    frame = reviews({"pos": 120, "neg": 40})
    frame.insert(0, "review_id", range(1000, 1000 + len(frame)))
    frame["source"] = "web"
    frame.to_csv(places["in"] / "reviews.csv", index=False)
    out = new("reviews", places["in"] / "reviews.csv", "--budget", "2m")
    for part in ("kind text:", "text text (the free-text column", "label label (named like a label",
                 "metric F1 of 'neg' (the minority class, 25.0% of texts)", "floor 0.400",
                 "next deepflow run reviews"):
        assert part in out, out
    e = usecase.entry("reviews")
    cfg = usecase.resolve_config(e)
    assert e.kind == "text" and cfg.labels == ["pos", "neg"] and cfg.positive == "neg" and cfg.budget_s == 120
    assert (cfg.text_column, cfg.label_column, cfg.read.quoting, cfg.behaviour.enabled) == ("text", "label", True, True)
    assert not cfg.behaviour.phrases and cfg.behaviour.target is None and cfg.promotion.noninferiority["mcc"] == 0.02
    assert 0 < cfg.min_class_share < 0.25 and 0.75 < cfg.max_class_share <= 1.0
    parts = splits_of("reviews")
    assert sum(len(p) for p in parts.values()) == 160 and all(set(p["label"]) == {"pos", "neg"} for p in parts.values())
    again = prepare_entry(cfg, tmp_path / "again")  # the DVC stage's code, from the entry alone
    assert again["train"] == len(parts["train"])
    for s, part in parts.items():
        assert pd.read_parquet(tmp_path / "again" / f"{s}.parquet").equals(part)
    profile = (places["reports"] / "reviews" / "profile.md").read_text()
    assert profile.startswith("# reviews: profile") and "## Texts per split and class" in profile
    assert "| test |" in profile and "## Examples (training split)" in profile
    monkeypatch.setattr(sys, "argv", ["prepare", "reviews", "--out", str(tmp_path / "stage")])  # the stage's command
    prepare.main()
    assert "reviews: read 160, unlabelled_dropped 0" in capsys.readouterr().out
    assert pd.read_parquet(tmp_path / "stage" / "test.parquet").equals(parts["test"])


def test_tsv_without_header_is_positional(places) -> None:
    frame = reviews({"pos": 60, "neg": 60}, seed=1)[["label", "text"]]
    frame.to_csv(places["in"] / "plain.tsv", sep="\t", header=False, index=False)
    out = new("plain", places["in"] / "plain.tsv")
    assert "no header" in out and "text column_2" in out and "label column_1" in out
    assert "F1 of 'pos' (named like the positive class, 50.0% of texts)" in out
    cfg = usecase.resolve_config(usecase.entry("plain"))
    assert cfg.read.header is False and cfg.positive == "pos" and cfg.labels == ["neg", "pos"]
    assert cfg.promotion.floor == pytest.approx(0.667)  # always answering 'pos': 2 * 0.5 / 1.5
    new("plain2", places["in"] / "plain.tsv", "--text-column", "2", "--target", "1")


def test_crlf_and_stray_quotes_need_no_options(places) -> None:
    frame = reviews({"pos": 50, "neg": 50}, seed=2)
    texts = frame["text"].tolist()
    texts[3] = '"Loved it: the hero was great and the plot'  # an opening quote never closed
    texts[10] = 'The "director" was awful; a waste'
    texts[20] = 'Dull "story and boring scenes'
    body = "sentence,label\r\n" + "".join(f"{t},{lab}\r\n" for t, lab in zip(texts, frame["label"], strict=True))
    (places["in"] / "sentiment.csv").write_bytes(body.encode())
    out = new("sentiment", places["in"] / "sentiment.csv")
    assert "quoting off" in out and "stray quotes swallow" in out
    cfg = usecase.resolve_config(usecase.entry("sentiment"))
    assert cfg.read.quoting is False and cfg.read.header is True and cfg.text_column == "sentence"
    parts = splits_of("sentiment")
    assert sum(len(p) for p in parts.values()) == 100
    kept = pd.concat(parts.values())["text"].tolist()
    assert '"Loved it: the hero was great and the plot' in kept and 'Dull "story and boring scenes' in kept


def test_quoting_stays_on_for_quoted_commas_and_line_breaks(tmp_path) -> None:
    frame = reviews({"pos": 30, "neg": 30}, seed=3)
    frame.loc[5, "text"] = "Two lines,\nwith a comma inside quotes"
    frame.loc[9, "text"] = 'Three "lines",\nthe middle one, with a comma,\nand "quotes"'
    frame.to_csv(tmp_path / "quoted.csv", index=False)
    read, cfg, notes = read_table(tmp_path / "quoted.csv", na_values=[], strip=False)
    assert cfg.quoting and len(read) == 60 and read.loc[5, "text"] == "Two lines,\nwith a comma inside quotes"
    assert read.loc[9, "text"] == 'Three "lines",\nthe middle one, with a comma,\nand "quotes"'


@pytest.mark.parametrize("encoding", ["utf-16", "latin-1"])
def test_encodings(places, encoding) -> None:
    frame = reviews({"pos": 40, "neg": 40}, seed=4)
    frame.loc[0, "text"] = "Café crème at the château was great"
    frame.to_csv(places["in"] / "enc.csv", index=False, encoding=encoding)
    out = new("enc", places["in"] / "enc.csv")
    assert ("not UTF-8" in out) == (encoding == "latin-1")
    assert "Café crème at the château was great" in pd.concat(splits_of("enc").values())["text"].tolist()


def test_json_lines_multiclass_with_integer_labels(places) -> None:
    frame = reviews({"pos": 50, "neg": 50, "mixed": 50}, seed=5)
    frame["stars"] = frame["label"].map({"neg": 1, "mixed": 3, "pos": 5})
    with (places["in"] / "stars.jsonl").open("w") as f:
        for row in frame[["text", "stars"]].to_dict("records"):
            f.write(json.dumps(row) + "\n")
    out = new("stars", places["in"] / "stars.jsonl")
    assert "label stars" in out and "macro-F1 over the 3 classes" in out
    cfg = usecase.resolve_config(usecase.entry("stars"))
    assert cfg.labels == ["1", "3", "5"] and cfg.positive is None
    assert cfg.promotion.floor == pytest.approx(0.334)  # guessing in proportion to three equal classes
    assert set(splits_of("stars")["train"]["label"]) == {"1", "3", "5"}


def test_zero_one_labels_stay_text_and_one_is_positive(places) -> None:
    frame = reviews({"pos": 60, "neg": 60}, seed=6)
    frame["label"] = (frame["label"] == "pos").astype(int)
    frame.to_csv(places["in"] / "bin.csv", index=False)
    out = new("bin", places["in"] / "bin.csv")
    cfg = usecase.resolve_config(usecase.entry("bin"))
    assert cfg.labels == ["0", "1"] and cfg.positive == "1" and "named like the positive class" in out
    assert label_text(pd.Series([1.0, 0.0, None])).tolist() == ["1", "0", None]


def test_some_empty_texts_are_dropped_and_counted(places) -> None:
    frame = reviews({"pos": 40, "neg": 40}, seed=7)
    frame.loc[[1, 2, 3], "text"] = ["", "   ", None]
    frame.to_csv(places["in"] / "gaps.csv", index=False)
    out = new("gaps", places["in"] / "gaps.csv")
    assert "3 empty dropped" in out
    assert sum(len(p) for p in splits_of("gaps").values()) == 77


def test_fold_labels_merges_case_and_spaces_and_is_recorded(places) -> None:
    frame = reviews({"pos": 50, "neg": 50}, seed=8)
    frame.loc[frame.index[:5], "label"] = frame.loc[frame.index[:5], "label"].str.upper()
    frame.loc[frame.index[5:8], "label"] = frame.loc[frame.index[5:8], "label"] + " "
    frame[["label", "text"]].to_csv(places["in"] / "case.tsv", sep="\t", index=False)
    out = new("case", places["in"] / "case.tsv", "--kind", "text", code=2)
    assert "differ only in case or surrounding spaces" in out and "--fold-labels" in out
    assert not (places["datasets"] / "case.yaml").exists()
    out = new("case", places["in"] / "case.tsv", "--fold-labels")
    cfg = usecase.resolve_config(usecase.entry("case"))
    assert cfg.fold_labels and sorted(cfg.labels) == ["neg", "pos"] and "folded labels" in out
    assert set(pd.concat(splits_of("case").values())["label"]) == {"neg", "pos"}


def _bad(places: dict[str, Path], kind: str) -> tuple[Path, list[str]]:
    frame = reviews({"pos": 40, "neg": 40}, seed=9)
    path = places["in"] / "bad.csv"
    args: list[str] = []
    if kind == "one label":
        frame["label"] = "pos"
    elif kind == "case":
        frame.loc[frame["label"] == "pos", "label"] = ["Pos", "pos "] * 20
    elif kind == "all empty":
        frame["text"] = ""
        frame["note"] = [f"n{i}" for i in range(len(frame))]
        args = ["--text-column", "text"]
    elif kind == "huge text":
        frame.loc[7, "text"] = "word " * 1_048_576  # a 5 MB text
    elif kind == "free-text label":
        frame["comment"] = [f"{t} (as noted)" for t in frame["text"]]
        args = ["--target", "comment"]
    elif kind == "rare class":
        frame = pd.concat([frame, reviews({"mixed": 2}, seed=10)], ignore_index=True)
    frame.to_csv(path, index=False)
    return path, ["--kind", "text", *args]


@pytest.mark.parametrize(("kind", "message"), [
    ("one label", "one label only ('pos' in column 'label', 80 rows)"),
    ("case", "differ only in case or surrounding spaces:"),
    ("all empty", "every text in column 'text' is empty"),
    ("huge text", "the text in row 8 (line 9) has 5,242,880 characters; the limit is 100,000"),
    ("free-text label", "--target 'comment' looks like free text, not a label"),
    ("rare class", "class 'mixed' (2 distinct texts of 2 rows) is too small to appear in train, validation "
                   "and test"),
])
def test_bad_input_is_one_line_and_nothing_written(places, kind, message) -> None:
    path, args = _bad(places, kind)
    out = runner.invoke(app, ["new", "bad", "--data", str(path), "--no-dvc", *args])
    assert out.exit_code == 2, out.output
    assert message in " ".join(out.output.split()) and len(out.output.strip().splitlines()) == 1, out.output
    assert not (places["datasets"] / "bad.yaml").exists() and not places["data"].exists()
    assert not places["reports"].exists()


def test_looks_like_text() -> None:
    frame = reviews({"pos": 30, "neg": 30})
    assert infer.looks_like_text(frame.assign(id=range(60), site="web"))[0]
    wide = frame.assign(a=[i % 7 for i in range(60)], b=[i % 5 for i in range(60)], c=[i % 3 * 1.5 for i in range(60)])
    is_text, why = infer.looks_like_text(wide)
    assert not is_text and "3 other columns" in why
    assert not infer.looks_like_text(pd.DataFrame({"x": range(60), "y": [i % 2 for i in range(60)]}))[0]


def test_metric_and_floor_rules() -> None:
    assert choose_positive({"ham": 0.88, "junk": 0.12})[0] == "junk"
    assert choose_positive({"negative": 0.5, "positive": 0.5})[0] == "positive"
    assert choose_positive({"a": 0.5, "b": 0.5})[0] is None
    assert chance_f1({"a": 0.8, "b": 0.2}, "b")[0] == pytest.approx(2 * 0.2 / 1.2)
    assert chance_f1({"a": 0.9, "b": 0.05, "c": 0.05}, None)[0] == pytest.approx(1 / 3)
    assert choose_positive({"a": 0.4, "b": 0.3, "c": 0.3})[0] is None


def test_behaviour_runs_with_invariance_only() -> None:
    import numpy as np

    from deepflow.kinds.text import behaviour
    from deepflow.kinds.text.config import BehaviourConfig

    def predict(texts: list[str]) -> np.ndarray:
        return np.array([[0.2, 0.8] if "great" in t.lower() else [0.7, 0.3] for t in texts])

    result = behaviour.run(predict, ["neg", "pos"], BehaviourConfig(enabled=True), ["A great film.", "Dull."], [])
    metrics = result.metrics()
    assert metrics["test/behaviour_pass_rate"] == 1.0 and set(result.cases["kind"]) == {"invariance"}


@pytest.mark.slow
def test_new_tracks_the_source_and_prepares_with_dvc(tmp_path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPFLOW_")}
    env.update(DEEPFLOW_ROOT=str(project), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    bin_dir = Path(sys.executable).parent
    for cmd in (["git", "init", "-q"], [str(bin_dir / "dvc"), "init", "-q"]):
        subprocess.run(cmd, cwd=project, env=env, check=True)
    (tmp_path / "in").mkdir()
    reviews({"pos": 60, "neg": 30}).to_csv(tmp_path / "in" / "reviews.csv", index=False)
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "deepflow"), "new", "reviews", "--data",
                           str(tmp_path / "in" / "reviews.csv")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stage     reviews_prepare in dvc.yaml" in done.stdout
    stage = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]["reviews_prepare"]
    assert stage["cmd"] == "python -m deepflow.kinds.text.prepare reviews"
    assert stage["deps"][:2] == ["data/sources/reviews/reviews.csv", "datasets/reviews.yaml"]
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["reviews_prepare"]
    assert lock["outs"][0]["path"] == "data/prepared/reviews" and lock["outs"][0]["md5"].endswith(".dir")
    prepared = project / "data/prepared/reviews"
    assert sum(len(pd.read_parquet(prepared / f"{s}.parquet")) for s in ("train", "val", "test")) == 90


def test_quoted_commas_mixed_with_stray_quotes_are_read_line_by_line(places, tmp_path) -> None:
    """A sentiment file as found: most texts quoted around their commas, a few with a quote never
    closed or an inch mark inside a quoted text, CRLF. Neither quoting on nor off reads it; one row
    per line with the extra commas in the text does, and prepare reads it the same way."""
    frame = reviews({"pos": 60, "neg": 60}, seed=5)
    lines = []
    for i, (t, lab) in enumerate(zip(frame["text"], frame["label"], strict=True)):
        t = t.replace(" ", ", ", 1)
        if i % 20 == 0:
            lines.append(f'"{t},{lab}')  # an opening quote never closed
        elif i % 20 == 7:
            lines.append(f'"{t} on a 5" screen, sadly",{lab}')  # a quote inside a quoted text
        else:
            lines.append(f'"{t}",{lab}')
    (places["in"] / "mixed.csv").write_bytes(("Sentence,Sentiment\r\n" + "\r\n".join(lines) + "\r\n").encode())
    out = new("mixed", places["in"] / "mixed.csv")
    assert "kind text:" in out and "loose rows" in out and "text Sentence" in out and "label Sentiment" in out, out
    cfg = usecase.resolve_config(usecase.entry("mixed"))
    assert cfg.loose_rows is True and set(cfg.labels) == {"pos", "neg"}
    parts = splits_of("mixed")
    every = pd.concat(parts.values())
    assert len(every) == 120 and set(every["label"]) == {"pos", "neg"}
    assert every["text"].str.contains('5" screen, sadly', regex=False).sum() == 6
    assert not every["text"].str.endswith(("pos", "neg")).any()  # no label glued to a text
    prepare_entry(cfg, tmp_path / "again")
    for s, part in parts.items():
        assert pd.read_parquet(tmp_path / "again" / f"{s}.parquet").equals(part)


def test_loose_rows_refuse_lines_with_too_few_fields(tmp_path) -> None:
    from deepflow.kinds.table.read import TableError
    from deepflow.kinds.text.loose import read_text_file

    body = "text,label,source\n" + "".join(f'"a long, rambling text number {i}",pos,web\n' for i in range(20))
    (tmp_path / "short.csv").write_text(body + '"broken, text\n' + "plain text with, a comma,neg,web,x\n")
    with pytest.raises(TableError):
        read_text_file(tmp_path / "short.csv")


def test_a_templated_class_says_its_rows_are_near_duplicates(places) -> None:
    frame = reviews({"pos": 60}, seed=6)
    rows = [*zip(frame["text"], frame["label"], strict=True)]
    rows += [(f"Your account {1000 + i} is suspended, call {5550000 + 7 * i} now", "alert") for i in range(40)]
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(places["in"] / "tpl.csv", index=False)
    out = new("tpl", places["in"] / "tpl.csv", code=2)
    assert "'alert' (1 distinct texts of 40 rows)" in out and "near duplicates" in out, out
    assert not (places["datasets"] / "tpl.yaml").exists()


def test_a_small_file_is_an_entry_with_a_noise_note(places) -> None:
    reviews({"pos": 30, "neg": 20}, seed=7).to_csv(places["in"] / "tiny.csv", index=False)
    out = new("tiny", places["in"] / "tiny.csv")
    assert "small data: the test split has 7 texts" in out and "noisy" in out, out


def test_rows_longer_than_the_header_are_refused_not_cut(tmp_path) -> None:
    """pandas cuts a row's extra fields with only a warning (``index_col=False``): the reader says so."""
    from deepflow.kinds.table.read import TableError

    rows = "".join(f"{i},{i % 3},x{i}\n" for i in range(30))
    (tmp_path / "long.csv").write_text("a,b,c\n7,1,x,lost\n" + rows)  # the first row: pandas only warns
    with pytest.raises(TableError, match="more fields than the header"):
        read_table(tmp_path / "long.csv")
    (tmp_path / "later.csv").write_text("a,b,c\n" + rows + "7,1,x,lost\n")
    with pytest.raises(TableError, match="not a well-formed table"):
        read_table(tmp_path / "later.csv")


def test_serving_refuses_empty_and_blank_texts() -> None:
    """Batch scoring rejects an empty text; the API must not answer it with a confident label."""
    from types import SimpleNamespace

    import numpy as np
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from deepflow.kinds.text import serving
    from deepflow.serving import ServeConfig

    scorer = SimpleNamespace(labels=["neg", "pos"], predict=lambda frame: np.tile([0.3, 0.7], (len(frame), 1)))
    store = SimpleNamespace(serving=lambda name: SimpleNamespace(scorer=scorer, ref={"name": name, "version": "1"}))
    api = FastAPI()
    serving.add_routes(api, store, ServeConfig(), "opinions")
    with TestClient(api) as client:
        assert client.post("/v1/opinions/predict", json={"texts": ["fine words"]}).status_code == 200
        for blank in ("", "  \n "):
            assert client.post("/v1/opinions/predict", json={"texts": ["fine", blank]}).status_code == 422
