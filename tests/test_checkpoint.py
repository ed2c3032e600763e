"""Checkpoints: exact resume in a fresh process, corrupt-file skipping, pruning, EpochOrder."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from conta_core.checkpoint import (EpochOrder, checkpoint_path, latest_valid_checkpoint,
                                   list_checkpoints, load_training_state, save_training_state)

REPO = Path(__file__).resolve().parents[1]

# Ten AdamW steps of a tiny conv net with dropout, a poly LambdaLR and noise drawn
# from python `random`, numpy and torch, so every restored state matters.
# argv: ckpt_dir out_file mode, mode "full" (save at step 5) or "resume".
TRAIN = textwrap.dedent("""
    import random, sys
    import numpy as np
    import torch
    from torch import nn
    from conta_core.checkpoint import (EpochOrder, latest_valid_checkpoint,
                                       load_training_state, save_training_state)

    ckpt_dir, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    torch.set_num_threads(1)
    steps, batch_size, save_at = 10, 4, 5
    data = torch.Generator().manual_seed(0)
    X = torch.randn(24, 3, 8, 8, generator=data)
    Y = torch.randint(0, 3, (24,), generator=data)

    seed = 1 if mode == "full" else 999  # the resumed run must not depend on its own seed
    random.seed(seed); np.random.seed(seed); torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.3),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: (1 - i / steps) ** 0.9)
    order = EpochOrder(len(X), seed=7)
    per_epoch = order.num_batches(batch_size)

    it, epoch, b = 0, 0, 0
    if mode == "resume":
        state = load_training_state(latest_valid_checkpoint(ckpt_dir), model, opt)
        sched.load_state_dict(state["scheduler_state"])
        it, epoch, b = state["iteration"], state["epoch"], state["batch_in_epoch"]
        assert state["extra"] == {"note": "half way"}
    losses = {}
    while it < steps:
        if b == per_epoch:
            epoch, b = epoch + 1, 0
        idx = order.batches(epoch, batch_size, start_batch=b)[0]
        noise = torch.randn(X[idx].shape) + np.random.normal() + random.random()
        x = X[idx] + 0.1 * noise
        loss = nn.functional.cross_entropy(model(x), Y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        it, b = it + 1, b + 1
        losses[it] = loss.detach()
        if mode == "full" and it == save_at:
            save_training_state(ckpt_dir, model=model, optimizer=opt,
                                scheduler_state=sched.state_dict(), iteration=it,
                                epoch=epoch, batch_in_epoch=b, extra={"note": "half way"})
    torch.save({"losses": losses, "weights": model.state_dict()}, out)
""")


def _run(tmp_path: Path, mode: str) -> dict:
    out = tmp_path / f"{mode}.pt"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-c", TRAIN, str(tmp_path / "ckpt"), str(out), mode],
                   check=True, env=env, timeout=120)
    return torch.load(out, weights_only=True)


def test_resume_in_fresh_process_is_exact(tmp_path):
    full = _run(tmp_path, "full")
    assert [i for i, _ in list_checkpoints(tmp_path / "ckpt")] == [5]
    resumed = _run(tmp_path, "resume")
    assert sorted(resumed["losses"]) == list(range(6, 11))
    for step in range(6, 11):
        assert torch.equal(resumed["losses"][step], full["losses"][step]), step
    for name, value in full["weights"].items():
        assert torch.equal(resumed["weights"][name], value), name


def _tiny() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Linear(3, 2)
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def _save(directory: Path, iteration: int, keep: int = 2) -> Path:
    model, opt = _tiny()
    return save_training_state(directory, model=model, optimizer=opt, scheduler_state=None,
                               iteration=iteration, epoch=0, batch_in_epoch=iteration,
                               extra={"i": iteration}, keep=keep)


def test_truncated_and_foreign_files_are_skipped(tmp_path, caplog):
    good = _save(tmp_path, 1, keep=5)
    bad = _save(tmp_path, 2, keep=5)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    torch.save({"model": {}}, checkpoint_path(tmp_path, 3))  # loads, but not ours
    (tmp_path / ".iter00000009.pt.tmp-123").write_bytes(b"partial")  # an interrupted write
    with caplog.at_level(logging.WARNING, logger="conta_core.checkpoint"):
        assert latest_valid_checkpoint(tmp_path) == good
    assert "iter00000002.pt" in caplog.text and "iter00000003.pt" in caplog.text
    model, opt = _tiny()
    state = load_training_state(good, model, opt)
    assert state["iteration"] == 1 and state["extra"] == {"i": 1}


def test_empty_or_missing_folder(tmp_path):
    assert latest_valid_checkpoint(tmp_path) is None
    assert latest_valid_checkpoint(tmp_path / "nope") is None


def test_pruning_keeps_newest_k(tmp_path):
    for i in (3, 10, 7, 12):
        _save(tmp_path, i, keep=2)
    assert [i for i, _ in list_checkpoints(tmp_path)] == [10, 12]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter00000010.pt", "iter00000012.pt"]
    _save(tmp_path, 13, keep=1)
    assert [i for i, _ in list_checkpoints(tmp_path)] == [13]


def test_checkpoint_loads_weights_only_and_restores_state(tmp_path):
    model, opt = _tiny()
    model(torch.randn(4, 3)).sum().backward()
    opt.step()  # momentum buffers now exist
    torch.manual_seed(5)
    path = save_training_state(tmp_path, model=model, optimizer=opt,
                               scheduler_state={"last_epoch": 4}, iteration=4, epoch=1,
                               batch_in_epoch=2, extra=None)
    expected_draw = torch.rand(3)
    raw = torch.load(path, weights_only=True)
    assert raw["iteration"] == 4
    fresh, fresh_opt = _tiny()
    torch.manual_seed(77)
    state = load_training_state(path, fresh, fresh_opt)
    assert state == {"iteration": 4, "epoch": 1, "batch_in_epoch": 2,
                     "scheduler_state": {"last_epoch": 4}, "extra": {}}
    assert torch.equal(torch.rand(3), expected_draw)
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    buf = opt.state[next(model.parameters())]["momentum_buffer"]
    assert torch.equal(fresh_opt.state[next(fresh.parameters())]["momentum_buffer"], buf)


def test_epoch_order():
    order = EpochOrder(10, seed=3)
    p0 = order.permutation(0)
    assert sorted(p0.tolist()) == list(range(10))
    assert torch.equal(p0, EpochOrder(10, seed=3).permutation(0))
    assert not torch.equal(p0, order.permutation(1))
    assert not torch.equal(p0, EpochOrder(10, seed=4).permutation(0))

    assert order.num_batches(3) == 3 and order.num_batches(3, drop_last=False) == 4
    full = order.batches(2, 3)
    assert [len(b) for b in full] == [3, 3, 3]
    assert sum(full, []) == order.permutation(2).tolist()[:9]
    assert order.batches(2, 3, start_batch=1) == full[1:]
    assert order.batches(2, 3, start_batch=3) == []
    assert [len(b) for b in order.batches(2, 3, drop_last=False)] == [3, 3, 3, 1]
    with pytest.raises(ValueError):
        EpochOrder(0, seed=1)
