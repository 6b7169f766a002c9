"""Batch scoring: a CSV or parquet file (or a folder of images) through a registered version.

Plain functions, no Prefect (``flows/score.py`` sequences them). The version (``@champion`` by
default) is resolved and loaded once; the input is read in chunks (parquet ``iter_batches``, CSV
``chunksize``, a folder's files as ``file`` and ``image`` columns: only for a kind that reads
``image``), validated row by row, scored and appended to a temporary output renamed into place only
when every chunk went through. Rows that fail validation go to ``<output stem>.rejects.<ext>`` with a reason.

This module is the kind-independent core. What a row must hold and what its scores are belongs to
the entry's kind (``Model.kind``): ``deepflow.kinds.<kind>.batch`` (``kinds.part(kind, "batch")``) provides

* ``NEEDS_THRESHOLD: bool``: without a threshold (tag or argument) :func:`load_model` refuses;
* ``OUTPUTS: tuple[str, ...]``: the columns it adds to each output row (an input column so named
  is refused), or ``outputs(model)`` where they depend on the model (:func:`output_columns`);
* ``inputs(model) -> list[str]``: the columns the model reads; the input must have them, and
  they are not copied to the output (every other column passes through: ids);
* ``validate(frame, model) -> (clean, rejects)``: the rows that can be scored, their inputs
  parsed, and ``rejects`` in the shape of :func:`rejects_frame`;
* ``score(model, frame) -> (scores, rejects)``: ``validate`` then the scorer; ``scores`` is
  indexed by the scored rows' index in ``frame`` and holds exactly the output columns. Every
  row of ``frame`` is in ``scores`` or ``rejects``, never both (:func:`score_chunk` checks it).
* optionally ``read_input(model, path, chunk_size)``: how the kind reads input files (table,
  text: as the entry's source was read), in :func:`open_input`'s shape (else :func:`default_input`).
* optionally ``explain(model, clean, top) -> pd.Series``: per validated row (``validate``'s
  ``clean``, same index), its explanation as one JSON string (``deepflow.explain``); without it
  ``--explain`` is refused before anything is read, and so is a version without the background
  rows ``deepflow.explain`` stores with a model when the kind sets ``EXPLAIN_NEEDS_BACKGROUND``.

The core adds to each scored row its position in the input (``row``), the pass-through columns,
and ``model`` and ``version``; each kind's batch module says what it scores.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from deepflow import kinds, settings, tracking, usecase
from deepflow.atomic_table import AtomicTableWriter
from deepflow.problems import clip

DEFAULT_CHUNK_SIZE = 100_000
ROW = "row"  # the input row's 0-based position in the file, carried to output and rejects
REJECT_COLUMNS = (ROW, "column", "reason")
STAMPS = (ROW, "model", "version")  # what the core adds to every output row
IMAGE, FILE = "image", "file"  # the columns of a folder's rows: encoded bytes, path in the folder
IMAGE_CHUNK = 256  # images read per chunk from a folder
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


class BatchError(RuntimeError):
    """The batch cannot run or cannot finish (no such entry or version, bad input schema, a kind
    that lost track of rows); no output is left behind."""


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
            f"# Batch scoring: {self.use_case}", "", f"Model **{self.model}** {via}", "",
            "| rows | scored | rejected | chunks | seconds |", "|---:|---:|---:|---:|---:|",
            f"| {self.rows:,} | {self.scored:,} | {self.rejected:,} | {self.chunks} | {self.seconds:.1f} |", "",
            f"- input: `{self.input}`", f"- output: `{self.output}`", f"- rejects: `{self.rejects}`",
        ])


# --- model -----------------------------------------------------------------------------------


@dataclass
class Model:
    """One loaded version, fixed for the whole batch."""

    name: str  # the entry, which is also the registered model's name
    kind: str  # the entry's kind: picks deepflow.kinds.<kind>.batch
    version: str
    alias: str | None  # the alias it was resolved through; None when a version was asked for
    scorer: Any
    threshold: float | None


def batch_part(kind: str) -> ModuleType:
    """The kind's batch module (its contract is in this module's docstring)."""
    return kinds.part(kind, "batch")


def output_columns(model: Model, part: ModuleType | None = None) -> tuple[str, ...]:
    """The columns the model's kind adds: ``outputs(model)`` where the kind has it, else ``OUTPUTS``."""
    part = part or batch_part(model.kind)
    return tuple(part.outputs(model)) if hasattr(part, "outputs") else tuple(part.OUTPUTS)


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
    try:
        kind = usecase.entry(name).kind
    except usecase.UnknownUseCase as exc:
        raise BatchError(str(exc)) from exc
    ver, mv = resolve_version(name, alias, version)
    if threshold is None and (tag := (mv.tags or {}).get("deepflow.threshold")) is not None:
        threshold = float(tag)
    if threshold is None and batch_part(kind).NEEDS_THRESHOLD:
        raise BatchError(f"{name} v{ver} has no deepflow.threshold tag; pass a threshold")
    scorer = tracking.load_scorer(f"models:/{name}/{ver}")
    return Model(name, kind, ver, None if version is not None else (alias or tracking.CHAMPION), scorer, threshold)


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


def open_input(model: Model, path: Path, chunk_size: int) -> tuple[list[str], int | None, Iterator[pd.DataFrame]]:
    """(column names, row count if known without a pass over the file, frames by :func:`read_chunks`,
    or by the kind's ``read_input`` where its batch part has one) of the input. A folder is read as
    images (``file``, ``image`` rows), only for a kind that reads ``image``: for others it is refused."""
    part = batch_part(model.kind)
    if path.is_dir() and IMAGE not in part.inputs(model):
        raise BatchError(f"{path}: a folder; {model.name} (a {model.kind} entry) scores a file, not a folder")
    if hasattr(part, "read_input"):
        return part.read_input(model, path, chunk_size)
    return default_input(path, chunk_size)


def default_input(path: Path, chunk_size: int) -> tuple[list[str], int | None, Iterator[pd.DataFrame]]:
    """:func:`open_input` without a kind's reader: Parquet, CSV or a folder of images."""
    fmt = file_format(path)
    if fmt == "folder":
        return [FILE, IMAGE], len(image_files(path)), read_chunks(path, chunk_size)
    with _unreadable(path, fmt):
        if fmt == "parquet":
            file = pq.ParquetFile(path)
            return list(file.schema_arrow.names), file.metadata.num_rows, read_chunks(path, chunk_size)
        return list(pd.read_csv(path, nrows=0).columns), None, read_chunks(path, chunk_size)


@contextmanager
def _unreadable(path: Path, fmt: str) -> Iterator[None]:
    """A damaged, cut or foreign file (pyarrow's and pandas' errors are ValueErrors or OSErrors): a BatchError."""
    try:
        yield
    except (OSError, ValueError) as exc:
        what = "a readable Parquet file" if fmt == "parquet" else "a readable CSV file (UTF-8, comma-separated)"
        raise BatchError(f"{path}: not {what}: {clip(' '.join(str(exc).split()) or type(exc).__name__, 200)}") from None


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
        with _unreadable(path, "parquet"):
            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_size):
                frame = batch.to_pandas()
                frame.index = pd.RangeIndex(start, start + len(frame))
                start += len(frame)
                yield frame
    else:
        with _unreadable(path, "csv"), pd.read_csv(path, chunksize=chunk_size, dtype=str, keep_default_na=False,
                                                   na_values=[""]) as reader:
            for frame in reader:
                frame.index = pd.RangeIndex(start, start + len(frame))
                start += len(frame)
                yield frame


# --- rejects --------------------------------------------------------------------------------


def rejects_frame(problems: dict[Any, list[tuple[str, str]]]) -> pd.DataFrame:
    """The rejects of one chunk, one row per failed input row: ``row``, the failing ``column``(s)
    and the ``reason``(s), from ``{row: [(column, reason), ...]}``."""
    rows = sorted(problems)
    return pd.DataFrame({
        ROW: pd.Series(rows, dtype="int64"),
        "column": pd.Series([",".join(c for c, _ in problems[r]) for r in rows], dtype=str),
        "reason": pd.Series(["; ".join(f"{c}: {why}" for c, why in problems[r]) for r in rows], dtype=str),
    })


# --- scoring ---------------------------------------------------------------------------------


EXPLANATION = "explanation"  # the output column of --explain: one JSON object per row


def score_chunk(model: Model, frame: pd.DataFrame, explain_top: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predictions, rejects) for one chunk. Predictions carry the row index, the input's other
    columns (ids), the model name and version, then the kind's scores (and, with ``explain_top``,
    an ``explanation`` of the top contributions); a kind that drops or doubles a row raises
    :class:`BatchError`."""
    part = batch_part(model.kind)
    scores, rejects = part.score(model, frame)
    if explain_top is not None and len(scores):
        clean, _ = part.validate(frame, model)
        scores = scores.assign(**{EXPLANATION: part.explain(model, clean.loc[scores.index], explain_top)})
    covered = np.concatenate([scores.index.to_numpy(), rejects[ROW].to_numpy()])
    if len(covered) != len(frame) or not frame.index.isin(covered).all():
        raise BatchError(f"{model.name} v{model.version}: the {model.kind} kind scored {len(scores)} and rejected "
                         f"{len(rejects)} of {len(frame)} rows in a chunk (each row must be in exactly one); "
                         f"a bug in {part.__name__}")
    out = frame.drop(columns=part.inputs(model))  # the pass-through columns (ids)
    if not out.index.equals(scores.index):
        out = out.loc[scores.index]
    out.insert(0, ROW, scores.index.to_numpy(dtype=np.int64))
    out["model"] = pd.Series(model.name, index=scores.index, dtype=str)
    out["version"] = pd.Series(model.version, index=scores.index, dtype=str)
    out = pd.concat([out, scores], axis=1)
    return out.reset_index(drop=True), rejects


def check_explainable(model: Model, top: int) -> None:
    """--explain needs a kind that explains in batch and, for input fields, the version's background."""
    from deepflow import explain

    if top < 1:
        raise BatchError(f"--top must be at least 1, got {top}")
    if not hasattr(batch_part(model.kind), "explain"):
        raise BatchError(f"{model.name}: the {model.kind} kind has no batch explanation (a detector's boxes are its "
                         f"answer; `deepflow serve` adds per-class scores with ?explain=true)")
    if getattr(batch_part(model.kind), "EXPLAIN_NEEDS_BACKGROUND", False):
        try:
            explain.background_of(model.scorer, f"{model.name} v{model.version}")
        except explain.NotExplainable as exc:
            raise BatchError(str(exc)) from exc


def rejects_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.rejects{output.suffix}")


def check_schema(model: Model, columns: list[str], path: Path) -> None:
    """The whole file's problems, before anything is written: a missing input column, or an
    input column named like an output column."""
    part = batch_part(model.kind)
    needed = list(part.inputs(model))
    if missing := [c for c in needed if c not in columns]:
        raise BatchError(f"{path}: missing column(s) {', '.join(missing)} needed by {model.name} v{model.version}")
    clash = {*STAMPS, *output_columns(model, part)} & (set(columns) - set(needed))
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
               progress: bool | None = None, model: Model | None = None,
               explain_top: int | None = None) -> BatchResult:
    """Score ``input_path`` with ``use_case``'s registered version (``@alias`` or ``version``);
    write predictions to ``output_path`` and failed rows to ``<stem>.rejects.<ext>`` beside it.
    ``explain_top``: add each row's ``explanation`` (its top contributions, docs/explain.md).

    Fails before writing anything when the model or a needed column is missing; a failure later
    leaves no output (the temporary files are removed).
    """
    t0 = time.perf_counter()
    source, target = Path(input_path), Path(output_path)
    if not source.exists():
        raise BatchError(f"{source}: no such input file or folder")
    if file_format(target) == "folder":
        raise BatchError(f"{target}: the output must be a .parquet or .csv file, not a folder")
    if source.resolve() == target.resolve():
        raise BatchError("the output must not overwrite the input")
    model = model or load_model(use_case, alias, version, threshold)
    if explain_top is not None:
        check_explainable(model, explain_top)
    columns, total, frames = open_input(model, source, chunk_size)
    check_schema(model, columns, source)
    target.parent.mkdir(parents=True, exist_ok=True)
    out = AtomicTableWriter(target, file_format(target))
    rej = AtomicTableWriter(rejects_path(target), file_format(target))
    rows = scored = rejected = chunks = 0
    advance, close = _progress(total, progress)
    try:
        for frame in frames:
            predictions, rejects = score_chunk(model, frame, explain_top)
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
