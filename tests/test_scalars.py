"""logging.tensorboard: loss and lr per iteration and epoch; no tensorboard import when off; clear error when missing."""
import subprocess
import sys

import pytest
import torch
from torch import nn

from conta_core import scalars as scalars_module
from conta_core.scalars import ScalarLog
from conta_core.train import TrainSettings, lr_factor, train


class Points(torch.utils.data.Dataset):
    def __init__(self, n=12):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 3, generator=g), torch.randn(n, 1, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}

    def set_epoch(self, epoch):
        pass


def _loss(model, batch):
    return ((model(batch["x"]) - batch["y"]) ** 2).mean()


def _train(scalars=None):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    s = TrainSettings(epochs=2, batch_size=4, lr=0.1, optimizer="sgd", warmup_iters=1)
    steps = []
    history = train(model, Points(), _loss, [{"params": list(model.parameters()), "lr_mult": 1.0}], s,
                    torch.device("cpu"), "toy", step_losses=steps, scalars=scalars)
    return s, steps, history


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_scalars_per_iteration_and_epoch(tmp_path):
    pytest.importorskip("tensorboard")
    folder = tmp_path / "tb" / "round0" / "segmenter"
    s, steps, history = _train(ScalarLog(str(folder)))
    events = _events(folder)
    assert set(events) == {"loss/iteration", "lr/iteration", "loss/epoch", "lr/epoch"}
    assert [step for step, _ in events["loss/iteration"]] == list(range(1, 7))  # 2 epochs x 3 batches
    assert [v for _, v in events["loss/iteration"]] == pytest.approx(steps, rel=1e-6)
    # The lr a step used: warm-up then poly decay, iteration k uses lr_factor(k - 1).
    assert [v for _, v in events["lr/iteration"]] == pytest.approx(
        [0.1 * lr_factor(k, 6, s) for k in range(6)], rel=1e-6)
    assert events["loss/epoch"] == [(1, pytest.approx(history[0], rel=1e-6)), (2, pytest.approx(history[1], rel=1e-6))]
    assert [step for step, _ in events["lr/epoch"]] == [1, 2]

    # A fresh run in the same folder replaces the old curves instead of adding a second one.
    _train(ScalarLog(str(folder)))
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1
    assert len(_events(folder)["loss/iteration"]) == 6


def test_logging_off_imports_no_tensorboard():
    code = ("import sys; sys.path.insert(0, 'tests'); from test_scalars import _train; _train(); "
            "bad = [m for m in sys.modules if 'tensorboard' in m]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))


def test_missing_package_fails_before_training(monkeypatch):
    real = scalars_module.importlib.util.find_spec
    monkeypatch.setattr(scalars_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(RuntimeError, match=r"logging.tensorboard is true .* pip install 'conta-core\[tensorboard\]'"):
        ScalarLog("unused")
