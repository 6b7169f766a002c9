"""Where Lightning trains: the env knobs default to what the pipeline always did (docs/team.md)."""

import lightning as L
import pytest
import torch

from deepflow import training


def test_defaults_are_one_device_auto_accelerator_full_precision(monkeypatch) -> None:
    monkeypatch.delenv("DEEPFLOW_ACCELERATOR", raising=False)
    monkeypatch.delenv("DEEPFLOW_PRECISION", raising=False)
    assert training.trainer_options() == {"accelerator": "auto", "devices": 1, "precision": "32-true"}


def test_env_picks_accelerator_and_precision(monkeypatch) -> None:
    monkeypatch.setenv("DEEPFLOW_ACCELERATOR", " GPU ")
    monkeypatch.setenv("DEEPFLOW_PRECISION", "bf16-mixed")
    assert training.trainer_options() == {"accelerator": "gpu", "devices": 1, "precision": "bf16-mixed"}


@pytest.mark.parametrize(("var", "value"), [("DEEPFLOW_ACCELERATOR", "tpu"), ("DEEPFLOW_PRECISION", "64")])
def test_unknown_values_fail_naming_the_variable(monkeypatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=var):
        training.trainer_options()


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.ran_on: tuple[str, str] | None = None

    def on_fit_start(self) -> None:
        self.ran_on = (type(self.trainer.accelerator).__name__, self.trainer.precision)

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x).squeeze(-1), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val/score", -torch.nn.functional.mse_loss(self.layer(x).squeeze(-1), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_fit_trains_where_the_env_says(monkeypatch) -> None:
    monkeypatch.setenv("DEEPFLOW_ACCELERATOR", "cpu")
    monkeypatch.setenv("DEEPFLOW_PRECISION", "bf16-mixed")  # Lightning's mixed precision on CPU
    x = torch.randn(64, 3)
    y = x.sum(-1)
    loader = training.batches(x, y, batch_size=16, shuffle=False)
    module = Tiny()
    result = training.fit(module, loader, loader, max_epochs=2, monitor="val/score", patience=2)
    assert module.ran_on == ("CPUAccelerator", "bf16-mixed")
    assert result.epochs_run == 2 and result.best_value is not None
