"""Prefect flow: batch scoring with a registered version. Sequencing only; the work lives in
``deepflow.batch``.

``score_batch(use_case, input_path, output_path)``: load ``@champion`` once -> score the file in
chunks -> predictions + rejects written atomically -> a markdown artifact with the counts.
"""

from __future__ import annotations

import re

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from deepflow import batch, settings, tracking


@task(name="score-file")
def score_file(use_case: str, input_path: str, output_path: str, chunk_size: int, alias: str | None,
               version: str | None, threshold: float | None, progress: bool | None,
               explain_top: int | None = None) -> dict:
    return batch.score_file(use_case, input_path, output_path, chunk_size=chunk_size, alias=alias,
                            version=version, threshold=threshold, progress=progress, explain_top=explain_top).to_dict()


@flow(name="score-batch")
def score_batch(use_case: str, input_path: str, output_path: str,
                chunk_size: int = batch.DEFAULT_CHUNK_SIZE, alias: str | None = tracking.CHAMPION,
                version: str | None = None, threshold: float | None = None,
                progress: bool | None = None, explain_top: int | None = None) -> dict:
    """Score ``input_path`` with ``use_case``'s ``@alias`` (or ``version``) into ``output_path``;
    ``explain_top``: add each row's top contributions (docs/explain.md)."""
    settings.apply_env_defaults()  # first thing: see flows/__init__.py
    result = batch.BatchResult(**score_file(use_case, str(input_path), str(output_path), chunk_size,
                                            alias, None if version is None else str(version), threshold,
                                            progress, explain_top))
    get_run_logger().info(result.summary())  # the counts, in the flow run's log
    key = re.sub(r"[^a-z0-9-]+", "-", f"{use_case}-batch-score".lower())
    create_markdown_artifact(result.markdown(), key=key,
                             description=f"{result.scored} scored, {result.rejected} rejected")
    return result.to_dict()
