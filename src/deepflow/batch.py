"""Batch scoring: a CSV or parquet file through a registered version (``@champion`` by default).

Plain functions, no Prefect (``flows/score.py`` sequences them). The model is resolved to one
version and loaded once; the input is read in chunks (parquet: ``iter_batches``; CSV: pandas
``chunksize``); each chunk is validated row by row, scored, and appended to a temporary output
that is renamed into place only when every chunk went through. Rows that fail validation go to
``<output stem>.rejects.<ext>`` with their row index and a reason naming the column.

Two scorer shapes are supported, told apart by what the scorer carries:

* tabular (fraud): ``scorer.features`` -> one probability per row, decided at the version's
  ``deepflow.threshold`` tag;
* text (nlp): ``scorer.labels`` and a ``text`` column -> (N, C) class probabilities; the
  output holds the arg-max label and its probability.
* image (traffic): a folder of image files (or a table with an ``image`` column of encoded
  bytes) -> one output row per image: the detections above the version's threshold as JSON, and
  the count of objects per class (the traffic-flow numbers). Files that do not decode as images
  are rejected with their name.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from deepflow import settings, tracking

DEFAULT_CHUNK_SIZE = 100_000
ROW = "row"  # the input row's 0-based position in the file, carried to output and rejects
REJECT_COLUMNS = (ROW, "column", "reason")
TEXT = "text"
IMAGE, FILE = "image", "file"
IMAGE_CHUNK = 256  # images read per chunk from a folder
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


class BatchError(RuntimeError):
    """The batch cannot run (no such model version, bad input schema); nothing is written."""


@dataclass
class BatchResult:
    use_case: str
    model: str
    version: str
    alias: str | None
    input: str
    output: str
    rejects: str
    rows: int
    scored: int
    rejected: int
    chunks: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        via = f"@{self.alias} = v{self.version}" if self.alias else f"v{self.version}"
        rate = self.rows / self.seconds if self.seconds > 0 else float("nan")
        return (f"{self.model} {via}: {self.scored:,} scored, {self.rejected:,} rejected of {self.rows:,} rows "
                f"in {self.seconds:.1f} s ({rate:,.0f} rows/s) -> {self.output} (rejects: {self.rejects})")

    def markdown(self) -> str:
        via = f"`@{self.alias}` = v{self.version}" if self.alias else f"v{self.version}"
        return "\n".join([
            f"# Batch scoring: {self.use_case}",
            "",
            f"Model **{self.model}** {via}",
            "",
            "| rows | scored | rejected | chunks | seconds |",
            "|---:|---:|---:|---:|---:|",
            f"| {self.rows:,} | {self.scored:,} | {self.rejected:,} | {self.chunks} | {self.seconds:.1f} |",
            "",
            f"- input: `{self.input}`",
            f"- output: `{self.output}`",
            f"- rejects: `{self.rejects}`",
        ])


# --- model -----------------------------------------------------------------------------------


@dataclass
class Model:
    name: str
    version: str
    alias: str | None
    scorer: Any
    threshold: float | None

    @property
    def kind(self) -> str:
        if hasattr(self.scorer, "features"):
            return "tabular"
        if hasattr(self.scorer, "labels"):
            return "text"
        if hasattr(self.scorer, "max_det"):  # a detector: encoded images in, boxes out
            return "image"
        raise BatchError(f"{self.name} v{self.version}: batch scoring supports tabular scorers (with "
                         f"`features`), text scorers (with `labels`) and detectors, not {type(self.scorer).__name__}")


def resolve_version(name: str, alias: str | None = tracking.CHAMPION, version: str | None = None) -> tuple[str, Any]:
    """The registered version to score with: ``version`` if given, else the one behind ``@alias``."""
    if version is not None:
        try:
            return str(version), tracking.get_version(name, str(version))
        except Exception as exc:  # MlflowException: no such model or version
            raise BatchError(f"{name}: no registered version {version} (store {settings.tracking_uri()})") from exc
    alias = alias or tracking.CHAMPION
    mv = tracking.version_by_alias(name, alias)
    if mv is None:
        raise BatchError(f"{name}: no @{alias} in the registry (store {settings.tracking_uri()}); "
                         f"train and promote one first (`deepflow train {name}`)")
    return str(mv.version), mv


def load_model(name: str, alias: str | None = tracking.CHAMPION, version: str | None = None,
               threshold: float | None = None) -> Model:
    """Resolve the alias to a version once and load that version (so a moving alias cannot mix
    two versions in one batch)."""
    ver, mv = resolve_version(name, alias, version)
    scorer = tracking.load_scorer(f"models:/{name}/{ver}")
    if threshold is None and (tag := (mv.tags or {}).get("deepflow.threshold")) is not None:
        threshold = float(tag)
    model = Model(name, ver, None if version is not None else (alias or tracking.CHAMPION), scorer, threshold)
    if model.kind == "tabular" and model.threshold is None:
        raise BatchError(f"{name} v{ver} has no deepflow.threshold tag; pass a threshold")
    return model


# --- input -----------------------------------------------------------------------------------


def image_files(folder: Path) -> list[Path]:
    """Every regular, non-hidden file below ``folder``, sorted (a non-image is rejected, not skipped)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(folder).parts))


def file_format(path: Path) -> str:
    if path.is_dir():
        return "folder"
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise BatchError(f"{path}: unsupported extension {path.suffix!r} (use .parquet or .csv)")
    return fmt


def input_columns(path: Path) -> list[str]:
    if file_format(path) == "folder":
        return [FILE, IMAGE]
    if file_format(path) == "parquet":
        return list(pq.ParquetFile(path).schema_arrow.names)
    return list(pd.read_csv(path, nrows=0).columns)


def count_rows(path: Path) -> int | None:
    """Rows in a parquet file from its footer; None for CSV (not worth a pass over the file)."""
    fmt = file_format(path)
    if fmt == "folder":
        return len(image_files(path))
    return pq.ParquetFile(path).metadata.num_rows if fmt == "parquet" else None


def read_chunks(path: Path, chunk_size: int) -> Iterator[pd.DataFrame]:
    """The file in frames of at most ``chunk_size`` rows, indexed by row position in the file.

    CSV columns are read as strings (empty field = missing), so ids keep their exact spelling and
    every chunk has the same types; feature columns are parsed when they are validated.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    start = 0
    if file_format(path) == "folder":  # a folder of images: (file, bytes) rows
        files = image_files(path)
        chunk_size = min(chunk_size, IMAGE_CHUNK)  # encoded frames, not rows of numbers: keep memory small
        for i in range(0, len(files), chunk_size):
            part = files[i:i + chunk_size]
            yield pd.DataFrame({FILE: [str(f.relative_to(path)) for f in part],
                                IMAGE: [f.read_bytes() for f in part]}, index=pd.RangeIndex(i, i + len(part)))
    elif file_format(path) == "parquet":
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_size):
            frame = batch.to_pandas()
            frame.index = pd.RangeIndex(start, start + len(frame))
            start += len(frame)
            yield frame
    else:
        with pd.read_csv(path, chunksize=chunk_size, dtype=str, keep_default_na=False, na_values=[""]) as reader:
            for frame in reader:
                frame.index = pd.RangeIndex(start, start + len(frame))
                start += len(frame)
                yield frame


# --- validation ------------------------------------------------------------------------------


def numeric_problems(values: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """(float64 values, reason per bad row) for one feature column; reasons only for bad rows."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        parsed = values.to_numpy(dtype=np.float64, na_value=np.nan)
        raw_missing = values.isna().to_numpy()
    else:
        parsed = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        raw_missing = values.isna().to_numpy()
    bad = ~np.isfinite(parsed)
    if not bad.any():
        return parsed, pd.Series(dtype=str)
    reasons = {}
    for pos in np.flatnonzero(bad):
        if raw_missing[pos]:
            reasons[values.index[pos]] = "missing value"
        elif np.isinf(parsed[pos]):
            reasons[values.index[pos]] = "infinite value"
        else:
            reasons[values.index[pos]] = f"non-numeric value {str(values.iloc[pos])[:40]!r}"
    return parsed, pd.Series(reasons, dtype=str)


def validate_tabular(frame: pd.DataFrame, features: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(valid rows with float feature columns, rejects[row, column, reason])."""
    problems: dict[Any, list[tuple[str, str]]] = {}
    parsed = {}
    for col in features:
        parsed[col], reasons = numeric_problems(frame[col])
        for row, reason in reasons.items():
            problems.setdefault(row, []).append((col, reason))
    clean = frame.copy() if not problems else frame.drop(index=list(problems))
    if problems:
        keep = ~frame.index.isin(list(problems))
        for col in features:
            clean[col] = parsed[col][keep]
    else:
        for col in features:
            clean[col] = parsed[col]
    return clean, rejects_frame(problems)


def validate_text(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows whose ``text`` is a non-empty string, rejects[row, column, reason])."""
    problems: dict[Any, list[tuple[str, str]]] = {}
    values = frame[TEXT]
    for row, value in values.items():
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            problems[row] = [(TEXT, "missing text")]
        elif not isinstance(value, str):
            problems[row] = [(TEXT, f"text is not a string ({type(value).__name__})")]
        elif not value.strip():
            problems[row] = [(TEXT, "empty text")]
    clean = frame.drop(index=list(problems)) if problems else frame
    return clean, rejects_frame(problems)


def validate_image(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows whose ``image`` decodes, rejects[row, column, reason]); the reason names the file."""
    from deepflow.kinds.detection.labels import decode

    problems: dict[Any, list[tuple[str, str]]] = {}
    for row, data in frame[IMAGE].items():
        where = f" ({frame.at[row, FILE]})" if FILE in frame.columns else ""
        if not isinstance(data, bytes | bytearray) or not data:
            problems[row] = [(IMAGE, f"no image bytes{where}")]
            continue
        try:
            decode(data)  # the scorer's own full decode: a truncated file fails here, not at scoring time
        except Exception as exc:  # PIL raises several types for bad bytes
            problems[row] = [(IMAGE, f"not a decodable image{where}: {type(exc).__name__}")]
    clean = frame.drop(index=list(problems)) if problems else frame
    return clean, rejects_frame(problems)


def rejects_frame(problems: dict[Any, list[tuple[str, str]]]) -> pd.DataFrame:
    rows = sorted(problems)
    return pd.DataFrame({
        ROW: pd.Series(rows, dtype="int64"),
        "column": pd.Series([",".join(c for c, _ in problems[r]) for r in rows], dtype=str),
        "reason": pd.Series(["; ".join(f"{c}: {why}" for c, why in problems[r]) for r in rows], dtype=str),
    })


# --- scoring ---------------------------------------------------------------------------------


def _stamped(clean: pd.DataFrame, inputs: list[str], model: Model) -> pd.DataFrame:
    """The output frame of the valid rows: their row index, the pass-through columns (everything
    but the model's ``inputs``), and the model name and version that scored them."""
    out = clean.drop(columns=inputs)
    out.insert(0, ROW, clean.index.to_numpy(dtype=np.int64))
    out["model"] = pd.Series(model.name, index=clean.index, dtype=str)
    out["version"] = pd.Series(model.version, index=clean.index, dtype=str)
    return out


def score_chunk(model: Model, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predictions, rejects) for one chunk. Predictions carry the row index, the input's other
    columns (ids), the model name and version, and the scores."""
    if model.kind == "tabular":
        features = model.scorer.features
        clean, rejects = validate_tabular(frame, features)
        scores = model.scorer.predict(clean) if len(clean) else np.empty(0)
        out = _stamped(clean, features, model)
        out["probability"] = np.asarray(scores, dtype=np.float64).reshape(-1)
        out["decision"] = out["probability"].to_numpy() >= model.threshold
        out["threshold"] = float(model.threshold)
    elif model.kind == "image":
        return score_images(model, frame)
    else:
        clean, rejects = validate_text(frame)
        width = len(model.scorer.labels)
        proba = np.asarray(model.scorer.predict(clean[[TEXT]])) if len(clean) else np.empty((0, width))
        labels = np.asarray(model.scorer.labels, dtype=object)
        best = proba.argmax(axis=1) if len(proba) else np.empty(0, dtype=int)
        out = _stamped(clean, [TEXT], model)
        out["label"] = pd.Series(labels[best], index=clean.index, dtype=str)
        out["probability"] = proba[np.arange(len(proba)), best].astype(np.float64) if len(proba) else np.empty(0)
    return out.reset_index(drop=True), rejects


def score_images(model: Model, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One output row per decodable image: detections at or above the threshold (JSON) and counts per class."""
    import json

    from deepflow.kinds.detection.labels import CLASSES

    clean, rejects = validate_image(frame)
    threshold = model.threshold if model.threshold is not None else 0.0
    found = model.scorer.predict(clean[[IMAGE]].reset_index(drop=True)) if len(clean) else None
    out = _stamped(clean, [IMAGE], model)
    kept = found[found["score"] >= threshold] if found is not None else None
    boxes, counts = [], {c: [] for c in CLASSES}
    for pos in range(len(clean)):
        mine = kept[kept["image"] == pos] if kept is not None else pd.DataFrame()
        boxes.append(json.dumps([{k: (round(float(r[k]), 2) if k != "class" else r[k]) for k in
                                  ("x1", "y1", "x2", "y2", "class", "score")} for _, r in mine.iterrows()]))
        for c in CLASSES:
            counts[c].append(int((mine["class"] == c).sum()) if len(mine) else 0)
    out["threshold"] = float(threshold)
    out["detections"] = pd.Series(boxes, index=clean.index, dtype=str)
    for c in CLASSES:
        out[f"count_{c}"] = pd.Series(counts[c], index=clean.index, dtype="int64")
    return out.reset_index(drop=True), rejects


class AtomicTableWriter:
    """Appends frames to ``<dir>/.<name>.tmp-<pid>`` (parquet via ParquetWriter, CSV by appending);
    ``commit()`` renames it onto ``path``, ``abort()`` deletes it. The first frame fixes the schema."""

    def __init__(self, path: Path) -> None:
        self.path, self.format = path, file_format(path)
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self.schema: pa.Schema | None = None
        self.template: pd.DataFrame | None = None
        self._pq: pq.ParquetWriter | None = None
        self._started = False

    def write(self, frame: pd.DataFrame) -> None:
        if self.template is None:
            self.template = frame.iloc[:0]
        if frame.empty:
            return
        if self.format == "parquet":
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._pq is None:
                self.schema = table.schema
                self._pq = pq.ParquetWriter(self.tmp, self.schema)
            elif not table.schema.equals(self.schema):
                table = table.cast(self.schema)
            self._pq.write_table(table)
        else:
            frame.to_csv(self.tmp, mode="a" if self._started else "w", header=not self._started, index=False)
        self._started = True

    def commit(self) -> None:
        if not self._started:  # nothing written: an empty file with the columns
            empty = self.template if self.template is not None else pd.DataFrame()
            if self.format == "parquet":
                pq.write_table(pa.Table.from_pandas(empty, preserve_index=False), self.tmp)
            else:
                empty.to_csv(self.tmp, index=False)
        if self._pq is not None:
            self._pq.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self._pq is not None:
            try:
                self._pq.close()
            except Exception:  # already broken: we are deleting it anyway
                pass
        self.tmp.unlink(missing_ok=True)


def rejects_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.rejects{output.suffix}")


def check_schema(model: Model, columns: list[str], path: Path) -> None:
    needed = {"tabular": lambda: list(model.scorer.features), "text": lambda: [TEXT],
              "image": lambda: [IMAGE]}[model.kind]()
    if missing := [c for c in needed if c not in columns]:
        raise BatchError(f"{path}: missing column(s) {', '.join(missing)} needed by {model.name} v{model.version}")
    outputs = {ROW, "model", "version", "probability", "decision", "threshold", "label", "detections"}
    clash = outputs & (set(columns) - set(needed))
    if clash:
        raise BatchError(f"{path}: input column(s) {', '.join(sorted(clash))} clash with output columns; rename them")


def _progress(total: int | None, enabled: bool | None) -> tuple[Callable[[int], None], Callable[[], None]]:
    """(advance(n), close()) of a rich progress bar on stderr; a no-op when not a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not (console.is_terminal if enabled is None else enabled):
        return (lambda n: None), (lambda: None)
    progress = Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, transient=False)
    progress.start()
    task = progress.add_task("rows", total=total)
    return (lambda n: progress.advance(task, n)), progress.stop


def score_file(use_case: str, input_path: str | Path, output_path: str | Path, *,
               chunk_size: int = DEFAULT_CHUNK_SIZE, alias: str | None = tracking.CHAMPION,
               version: str | None = None, threshold: float | None = None,
               progress: bool | None = None, model: Model | None = None) -> BatchResult:
    """Score ``input_path`` with ``use_case``'s registered version (``@alias`` or ``version``);
    write predictions to ``output_path`` and failed rows to ``<stem>.rejects.<ext>`` beside it.

    Fails before writing anything when the model or a needed column is missing; a failure later
    leaves no output (the temporary files are removed).
    """
    t0 = time.perf_counter()
    source, target = Path(input_path), Path(output_path)
    if not source.exists():
        raise BatchError(f"{source}: no such input file or folder")
    file_format(source), file_format(target)
    if file_format(target) == "folder":
        raise BatchError(f"{target}: the output must be a .parquet or .csv file, not a folder")
    if source.resolve() == target.resolve():
        raise BatchError("the output must not overwrite the input")
    model = model or load_model(use_case, alias, version, threshold)
    check_schema(model, input_columns(source), source)
    target.parent.mkdir(parents=True, exist_ok=True)
    out, rej = AtomicTableWriter(target), AtomicTableWriter(rejects_path(target))
    rows = scored = rejected = chunks = 0
    advance, close = _progress(count_rows(source), progress)
    try:
        for frame in read_chunks(source, chunk_size):
            predictions, rejects = score_chunk(model, frame)
            out.write(predictions)
            rej.write(rejects)
            rows += len(frame)
            scored += len(predictions)
            rejected += len(rejects)
            chunks += 1
            advance(len(frame))
        if rej.template is None:
            rej.template = rejects_frame({})
        out.commit()
        rej.commit()
    except BaseException:
        out.abort()
        rej.abort()
        raise
    finally:
        close()
    assert scored + rejected == rows, (scored, rejected, rows)
    return BatchResult(use_case=use_case, model=model.name, version=model.version, alias=model.alias,
                       input=str(source), output=str(target), rejects=str(rejects_path(target)),
                       rows=rows, scored=scored, rejected=rejected, chunks=chunks,
                       seconds=round(time.perf_counter() - t0, 3))


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - a thin manual entry point
    """``python -m deepflow.batch USE_CASE INPUT OUTPUT [CHUNK_SIZE]`` without Prefect."""
    args = list(sys.argv[1:] if argv is None else argv)
    result = score_file(args[0], args[1], args[2], chunk_size=int(args[3]) if len(args) > 3 else DEFAULT_CHUNK_SIZE)
    print(result.summary())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
