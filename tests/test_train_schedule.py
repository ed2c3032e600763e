"""Training length by iterations and Caffe's step learning-rate policy (SEC, DSRG)."""
import pytest
import torch
from torch import nn

from conta_core.expand.sec import step_lr_factor
from conta_core.train import TrainSettings, lr_factor, schedule, train


class Items(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, item):
        return {"x": torch.ones(1)}

    def set_epoch(self, epoch):
        pass


def test_step_policy_is_secs():
    s = TrainSettings(epochs=0, batch_size=1, lr=1e-3, lr_policy="step", lr_step=2000, lr_gamma=0.1,
                      iterations=8000)
    for it in (0, 1, 1999, 2000, 2001, 3999, 4000, 7999):
        assert lr_factor(it, 8000, s) == pytest.approx(step_lr_factor(it, 2000, 0.1), rel=1e-12)
    assert lr_factor(1999, 8000, s) == 1.0 and lr_factor(2000, 8000, s) == pytest.approx(0.1)
    assert lr_factor(6000, 8000, s) == pytest.approx(1e-3)
    poly = TrainSettings(epochs=1, batch_size=1, lr=1.0, poly_power=0.9)
    assert lr_factor(50, 100, poly) == pytest.approx(0.5 ** 0.9)
    with pytest.raises(ValueError, match="lr_policy"):
        lr_factor(0, 1, TrainSettings(epochs=1, batch_size=1, lr=1.0, lr_policy="cosine"))


def test_schedule_counts():
    assert schedule(10, TrainSettings(epochs=3, batch_size=4, lr=1.0)) == (2, 3, 6)
    assert schedule(10, TrainSettings(epochs=0, batch_size=4, lr=1.0, iterations=5)) == (2, 3, 5)
    assert TrainSettings.from_config({"iterations": 7, "batch_size": 2, "lr": 0.1}, seed=3).epochs == 0


def test_iterations_and_step_lr_in_the_loop():
    # loss = w has gradient 1: plain SGD moves w by -lr * factor(it) per step, so after 5 steps
    # with step 2, gamma 0.5: w = 1 - 0.1 * (1 + 1 + 0.5 + 0.5 + 0.25).
    model = nn.Linear(1, 1, bias=False)
    nn.init.ones_(model.weight)
    s = TrainSettings(epochs=0, batch_size=2, lr=0.1, momentum=0.0, weight_decay=0.0, lr_policy="step",
                      lr_step=2, lr_gamma=0.5, iterations=5)
    steps = []
    history = train(model, Items(4), lambda m, b: m.weight.sum() + 0 * b["x"].sum(),
                    [{"params": list(model.parameters()), "lr_mult": 1.0}], s, torch.device("cpu"), "t",
                    step_losses=steps)
    assert len(steps) == 5 and len(history) == 3  # epochs of 2, 2 and 1 steps
    assert model.weight.item() == pytest.approx(1 - 0.1 * 3.25, abs=1e-6)
