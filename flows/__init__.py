"""Prefect flows: sequencing only; the work lives in ``deepflow`` (``steps``, ``batch``, ...).

Installed with deepflow as the top-level package ``flows`` (pyproject.toml), so ``import
flows.pipeline`` works from any directory; deployments name the files by path
(``flows/pipeline.py:train_pipeline``, see ``flows/deployments.py``).

The environment: importing a flow module changes nothing. Each flow's first statement is
``settings.apply_env_defaults()`` (idempotent; never overrides what is set), because a Prefect
worker or runner loads the file by path and runs the flow without any deepflow entry point
before it: MLflow's store, offline Hugging Face, quiet telemetry are then set before any step
runs. Prefect itself reads its settings once, when first imported: the ``deepflow`` command,
the tests (conftest) and ``bench/`` apply the defaults before importing a flow, and a worker's
own environment or profile decides its Prefect settings. A Python caller who wants the same
defaults calls ``deepflow.settings.apply_env_defaults()`` before importing ``flows``.
"""
