"""DDP over two gloo processes on the CPU follows single-process training on the full batch."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from conta_core.checkpoint import EpochOrder
from conta_core.distributed import (DistributedContext, all_reduce_mean, is_main, launch,
                                    shard_batch, wrap_model)

STEPS, GLOBAL_BATCH = 5, 8


def _train(ctx: DistributedContext, out: str) -> None:
    """Module level so spawned ranks can import it; rank 0 writes losses and weights."""
    torch.manual_seed(0)  # same init everywhere (DDP also broadcasts rank 0's weights)
    data = torch.Generator().manual_seed(1)
    x_all = torch.randn(STEPS * GLOBAL_BATCH, 3, 12, 12, generator=data)
    y_all = torch.randint(0, 4, (STEPS * GLOBAL_BATCH,), generator=data)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    model = wrap_model(model, ctx)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    batches = EpochOrder(len(x_all), seed=3).batches(0, GLOBAL_BATCH)
    losses = []
    for step in range(STEPS):
        idx = shard_batch(batches[step], ctx.rank, ctx.world_size)
        loss = nn.functional.cross_entropy(model(x_all[idx].to(ctx.device)),
                                           y_all[idx].to(ctx.device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(all_reduce_mean(loss, ctx))
    if is_main(ctx):
        weights = getattr(model, "module", model).state_dict()
        torch.save({"losses": torch.stack(losses), "weights": weights, "init": init}, out)


def test_ddp_two_ranks_matches_single_process(tmp_path):
    single, multi = tmp_path / "single.pt", tmp_path / "ddp.pt"
    launch(_train, 1, args=(str(single),), device="cpu")
    launch(_train, 2, args=(str(multi),), device="cpu")
    a = torch.load(single, weights_only=True)
    b = torch.load(multi, weights_only=True)
    torch.testing.assert_close(b["losses"], a["losses"], rtol=0, atol=1e-5)
    assert not torch.equal(a["weights"]["6.weight"], a["init"]["6.weight"])  # it trained
    for name, value in a["weights"].items():
        torch.testing.assert_close(b["weights"][name], value, rtol=0, atol=1e-5, msg=name)


def test_shard_batch():
    batch = list(range(8))
    assert [shard_batch(batch, r, 2) for r in range(2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert torch.equal(shard_batch(torch.arange(6), 2, 3), torch.tensor([4, 5]))
    assert shard_batch(batch, 0, 1) == batch
    with pytest.raises(ValueError, match="evenly"):
        shard_batch(list(range(7)), 0, 2)
    with pytest.raises(ValueError, match="outside"):
        shard_batch(batch, 2, 2)


def test_single_rank_context():
    seen = []
    launch(lambda ctx, tag: seen.append((ctx, tag)), 1, args=("x",), device="cpu")
    ctx, tag = seen[0]
    assert tag == "x" and ctx == DistributedContext(0, 1, torch.device("cpu"), None)
    assert is_main(ctx)
    model = nn.Linear(2, 2)
    assert wrap_model(model, ctx) is model
    value = torch.tensor([1.0, 3.0])
    mean = all_reduce_mean(value, ctx)
    assert torch.equal(mean, value) and mean is not value
    with pytest.raises(ValueError):
        launch(lambda ctx: None, 0)
