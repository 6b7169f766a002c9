"""The GPU layer (marker ``gpu``; skipped without CUDA): every network member of every kind fits on
CUDA through its kind's own ``fit()``, in ``32-true`` and ``bf16-mixed``, with its parameters on the
GPU during training, and scores the test split with a finite primary metric.

Small data, two epochs (tests/device_members.py). Runs on an image with torch, Lightning, pandas,
pyarrow and scikit-learn only (no MLflow, Prefect, Great Expectations, DVC, no network):
``PYTHONPATH=src python -m pytest -p no:cacheprovider tests/test_gpu.py``, or ``bench/device_check.sh``
on the device machine (which falls back to ``bench/gpu_fit.py --check`` where pytest is missing).
"""

from __future__ import annotations

import pytest
import torch

from tests import device_members

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (torch sees no GPU)")]

MEMBERS = [("fraud", "shallow"), ("fraud", "deep"), ("fraud", "autoencoder"), ("fraud", "sequence"),
           ("nlp", "shallow"), ("nlp", "deep"), ("traffic", "shallow"), ("traffic", "deep"),
           ("table", "shallow"), ("table", "deep")]


def test_the_list_is_every_network_member() -> None:
    assert set(MEMBERS) == set(device_members.members())


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize(("entry", "member"), MEMBERS)
def test_member_trains_on_cuda(entry: str, member: str, precision: str) -> None:
    fitted = device_members.fit(entry, member, "gpu", precision)
    assert fitted.devices, f"{entry} {member}: no training epoch ended"
    assert all(d.startswith("cuda") for d in fitted.devices), fitted.devices
    assert set(fitted.precisions) == {precision}, fitted.precisions
    assert device_members.finite(fitted.metric), fitted
