import pickle

import numpy as np
import pytest
import torch

from deepflow import training, usecase
from deepflow.kinds.tabular.config import ModelConfig
from deepflow.kinds.tabular.models import Standardize, TabularSystem, build_net
from deepflow.scoring import TorchScorer

F = 15


def scaler() -> Standardize:
    return Standardize(np.arange(F, dtype=np.float32), np.full(F, 2.0, dtype=np.float32))


@pytest.mark.parametrize("name", ["shallow", "deep", "autoencoder"])
def test_shapes_and_finite_loss(name: str) -> None:
    net, objective = build_net(name, scaler(), ModelConfig())
    x, y = torch.randn(32, F) * 10, (torch.rand(32) < 0.1).float()
    assert net(x).shape == (32,)
    loss = TabularSystem(net, objective).loss(x, y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_standardize_is_part_of_the_network() -> None:
    s = scaler()
    assert torch.allclose(s(torch.arange(F, dtype=torch.float32)[None]), torch.zeros(1, F))
    net, _ = build_net("shallow", s, ModelConfig())
    assert "scaler.mean" in net.state_dict()


def test_unknown_candidate() -> None:
    with pytest.raises(KeyError, match="unknown tabular candidate"):
        build_net("transformer", scaler(), ModelConfig())


@pytest.mark.parametrize("name", ["shallow", "deep", "autoencoder"])
def test_fast_dev_run(small_splits, name: str) -> None:
    uc = usecase.get("fraud")
    scorer, info = uc.fit(name, "candidate", small_splits, fast_dev_run=True)
    scores = scorer.predict(small_splits["test"])
    assert scores.shape == (len(small_splits["test"]),) and np.isfinite(scores).all()
    if name != "autoencoder":
        assert ((scores >= 0) & (scores <= 1)).all()
    restored = pickle.loads(pickle.dumps(scorer))
    np.testing.assert_allclose(restored.predict(small_splits["test"].head(10)), scores[:10], rtol=1e-6)


def test_training_is_reproducible_on_cpu(small_splits) -> None:
    # Same seed and thread count, same results: pinned threads (auto picks per fit from the load of the moment).
    uc = usecase.get("fraud", ["train.epochs=2", "model.deep_width=16", "train.threads=1"])
    a, _ = uc.fit("deep", "candidate", small_splits)
    b, _ = uc.fit("deep", "candidate", small_splits)
    x = small_splits["test"].head(50)
    np.testing.assert_array_equal(a.predict(x), b.predict(x))


def test_batches_cover_every_row_once() -> None:
    x = torch.arange(10, dtype=torch.float32)
    seen = torch.cat([b[0] for b in training.batches(x, batch_size=4, shuffle=True, seed=0)])
    assert sorted(seen.tolist()) == list(range(10))


def test_torch_scorer_sigmoid() -> None:
    class Zero(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(len(x))

    import pandas as pd

    s = TorchScorer(Zero(), ["a"], "logit")
    assert s.predict(pd.DataFrame({"a": [1.0, 2.0]})).tolist() == [0.5, 0.5]
