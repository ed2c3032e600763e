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


# --- integrity: checksums, damaged files, non-finite losses (issue 10, item 2) -------------

import zipfile  # noqa: E402

from conta_core import train as train_mod  # noqa: E402
from conta_core.checkpoint import load_model_file, save_model_file  # noqa: E402
from conta_core.integrity import DamagedArtifact  # noqa: E402
from conta_core.train import Checkpointing, NonFiniteLossError, TrainSettings, train  # noqa: E402


class _Points(torch.utils.data.Dataset):
    """32 fixed points of a 2-class problem; no augmentation (set_epoch is a no-op)."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(32, 64, generator=g)
        self.y = (self.x[:, 0] > 0).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}

    def set_epoch(self, epoch):
        pass


def _ce(net, batch):
    return nn.functional.cross_entropy(net(batch["x"]), batch["y"])


class _Interrupt(Exception):
    pass


def _train(ckpt_dir: Path | None, loss_fn=_ce, resume: bool = True) -> nn.Module:
    """3 epochs x 4 steps of AdamW on a 64x64 linear layer (weights dominate the checkpoint)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    s = TrainSettings(epochs=3, batch_size=8, lr=0.01, optimizer="adamw", seed=3)
    checkpoint = Checkpointing.prepare(ckpt_dir, every=1, digest="d") if ckpt_dir is not None else None
    if checkpoint is not None and not resume:
        checkpoint.resume_from = None
    train(model, _Points(), loss_fn, [{"params": list(model.parameters()), "lr_mult": 1.0}], s,
          torch.device("cpu"), "toy", checkpoint=checkpoint)
    return model


def _stop_at(iteration: int, exc=_Interrupt):
    calls = {"n": 0}

    def loss_fn(net, batch):
        calls["n"] += 1
        if calls["n"] == iteration:
            raise exc("stop")
        return _ce(net, batch)
    return loss_fn


def _garbage_in_tensor_data(path: Path, nbytes: int = 4096) -> None:
    """Overwrite the middle of the largest tensor storage in a torch zip file with random bytes."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    n = min(nbytes, info.file_size // 2)
    middle = start + info.file_size // 2 - n // 2
    raw[middle:middle + n] = np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(raw))


import numpy as np  # noqa: E402


def test_garbage_inside_newest_checkpoint_is_skipped_and_previous_resumed(tmp_path, caplog):
    """Issue 10.2: 4 KB of garbage in the newest iter*.pt was resumed silently (NaN weights after)."""
    reference = _train(None)
    with pytest.raises(_Interrupt):
        _train(tmp_path, _stop_at(7))  # killed during step 7: checkpoints of steps 5 and 6 remain
    assert [i for i, _ in list_checkpoints(tmp_path)] == [5, 6]
    _garbage_in_tensor_data(checkpoint_path(tmp_path, 6))
    with caplog.at_level(logging.WARNING):
        prepared = Checkpointing.prepare(tmp_path, every=1, digest="d")
    assert prepared.resume_from == checkpoint_path(tmp_path, 5)
    assert "iter00000006.pt" in caplog.text and "checksum mismatch" in caplog.text
    assert not checkpoint_path(tmp_path, 6).exists()  # deleted: it can never be resumed
    resumed = _train(tmp_path)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.isfinite(b).all(), name
        assert torch.equal(a, b), name


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_model_file_is_deleted_with_a_clear_error(tmp_path, damage):
    path = tmp_path / "classifier.pt"
    model = nn.Linear(64, 64)
    save_model_file(path, {"model": model.state_dict(), "meta": {"round": 0, "loss": [0.5, float("nan")]}})
    state = load_model_file(path)
    assert torch.equal(state["model"]["weight"], model.weight) and state["meta"]["round"] == 0
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    else:
        _garbage_in_tensor_data(path)
    with pytest.raises(DamagedArtifact) as err:
        load_model_file(path)
    message = str(err.value)
    assert str(path) in message and "deleted" in message and "rerun the same command" in message
    assert not path.exists()


def test_model_file_without_checksum_is_refused(tmp_path):
    path = tmp_path / "segmenter.pt"
    torch.save({"model": nn.Linear(2, 2).state_dict(), "meta": {}}, path)  # what the old save_model wrote
    with pytest.raises(DamagedArtifact, match="payload_sha256"):
        load_model_file(path)
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError):  # not damage: nothing is deleted or blamed
        load_model_file(missing)


def test_checksum_covers_every_value():
    from conta_core.checkpoint import payload_digest
    base = {"model": {"w": torch.zeros(3), "b": torch.ones(1, dtype=torch.bfloat16)}, "meta": {"round": 0},
            "opt": {"state": {0: {"step": torch.tensor(1.0)}}, "param_groups": [{"betas": (0.9, 0.99)}]}}
    digest = payload_digest(base)
    assert payload_digest({**base, "payload_sha256": "x"}) == digest  # its own entry is excluded
    variants = [
        {**base, "model": {"w": torch.tensor([0.0, 0.0, 1e-30]), "b": base["model"]["b"]}},
        {**base, "model": {"w": torch.zeros(1, 3), "b": base["model"]["b"]}},            # shape
        {**base, "model": {"w": torch.zeros(3, dtype=torch.float64), "b": base["model"]["b"]}},  # dtype
        {**base, "meta": {"round": 1}},
        {**base, "meta": {"round": True}},                                                # bool vs int
        {**base, "opt": {"state": {1: {"step": torch.tensor(1.0)}}, "param_groups": [{"betas": (0.9, 0.99)}]}},
        {**base, "opt": {"state": {0: {"step": torch.tensor(1.0)}}, "param_groups": [{"betas": [0.9, 0.99]}]}},
    ]
    assert len({payload_digest(v) for v in variants} | {digest}) == len(variants) + 1


def _nan_at(iteration: int):
    calls = {"n": 0}

    def loss_fn(net, batch):
        calls["n"] += 1
        loss = _ce(net, batch)
        return loss * float("nan") if calls["n"] == iteration else loss
    return loss_fn


def test_non_finite_loss_stops_naming_the_iteration(tmp_path, monkeypatch):
    monkeypatch.delenv(train_mod.NONFINITE_RESTART_ENV, raising=False)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at iteration 6 \(epoch 2, batch 2 of 4\)") as err:
        _train(tmp_path, _nan_at(6))
    assert "iter00000005.pt" in str(err.value) and train_mod.NONFINITE_RESTART_ENV in str(err.value)
    assert [i for i, _ in list_checkpoints(tmp_path)] == [4, 5]  # nothing saved at or after the NaN
    for _, path in list_checkpoints(tmp_path):
        for name, value in torch.load(path, weights_only=True)["model"].items():
            assert torch.isfinite(value).all(), (path, name)

    # The rerun does not resume silently: it asks the user to choose.
    with pytest.raises(NonFiniteLossError, match=train_mod.NONFINITE_RESTART_ENV):
        Checkpointing.prepare(tmp_path, every=1, digest="d")
    assert (tmp_path / train_mod.NONFINITE_MARKER).exists()

    # resume: continues from the last finite checkpoint and ends where an uninterrupted run ends.
    monkeypatch.setenv(train_mod.NONFINITE_RESTART_ENV, "resume")
    resumed = _train(tmp_path)
    reference = _train(None)
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert not (tmp_path / train_mod.NONFINITE_MARKER).exists()


def test_non_finite_restart_fresh_and_changed_settings(tmp_path, monkeypatch):
    monkeypatch.delenv(train_mod.NONFINITE_RESTART_ENV, raising=False)
    with pytest.raises(NonFiniteLossError):
        _train(tmp_path, _nan_at(3))
    assert (tmp_path / train_mod.NONFINITE_MARKER).exists()
    # Other settings (another digest): a new attempt, no question asked.
    other = Checkpointing.prepare(tmp_path, every=1, digest="other lr")
    assert other.resume_from is None and not (tmp_path / train_mod.NONFINITE_MARKER).exists()

    with pytest.raises(NonFiniteLossError):
        _train(tmp_path, _nan_at(3))
    monkeypatch.setenv(train_mod.NONFINITE_RESTART_ENV, "fresh")
    fresh = Checkpointing.prepare(tmp_path, every=1, digest="d")
    assert fresh.resume_from is None and list_checkpoints(tmp_path) == []


def test_non_finite_weights_after_the_last_step_are_not_returned(tmp_path):
    calls = {"n": 0}

    def loss_fn(net, batch):
        calls["n"] += 1
        loss = _ce(net, batch)
        if calls["n"] == 12:  # the last step: finite loss, infinite gradients
            loss.register_hook(lambda g: g * float("inf"))
        return loss
    with pytest.raises(NonFiniteLossError, match="non-finite after iteration 12"):
        _train(None, loss_fn)
