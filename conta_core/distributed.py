"""Multi-process data-parallel training: one process per device, torch DDP.

The contract that makes DDP a drop-in for single-process training: every rank
walks the same *global* batch order (e.g. :class:`conta_core.checkpoint.EpochOrder`
with one seed) and takes an equal slice of each global batch
(:func:`shard_batch`). DDP averages gradients over ranks, so the mean of the
per-rank mean losses equals the single-process mean over the global batch and
the weights follow the same path. Layers that look across a batch (unfrozen
BatchNorm) break that equality; the backbones here freeze BN.

Backends: ``nccl`` between CUDA devices, ``gloo`` on the CPU (tests). Device
choice stays in :mod:`conta_core.devices`: claim GPUs there first, so rank ``r``
uses ``cuda:r`` of the claimed set.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .devices import resolve_device, set_threads

T = TypeVar("T")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits: its rank among ``world_size`` and its device.

    ``backend`` is None when ``world_size == 1`` (no process group exists).
    """
    rank: int
    world_size: int
    device: torch.device
    backend: str | None


def _free_port() -> int:
    # The OS hands out an unused port; a tiny race remains until rank 0 binds it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, fn: Callable, world_size: int, backend: str, device_type: str,
            port: int, threads: int, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    if device_type == "cuda":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    else:
        device = torch.device("cpu")
        set_threads(threads)
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    try:
        fn(DistributedContext(rank, world_size, device, backend), *args)
    finally:
        dist.destroy_process_group()


def launch(fn: Callable[..., Any], world_size: int, backend: str | None = None,
           args: Sequence = (), *, device: str = "auto") -> None:
    """Run ``fn(ctx, *args)`` on ``world_size`` ranks and wait for all of them.

    ``world_size == 1`` calls ``fn`` in this process, with no process group, so
    the single-device path has no spawn cost. Otherwise ranks are spawned
    processes (``fn`` and ``args`` must be picklable, i.e. ``fn`` defined at
    module level) meeting on a free localhost port. ``device`` is the config
    value ``device``: on CUDA rank ``r`` uses ``cuda:r`` and the default backend
    is ``nccl``; on the CPU it is ``gloo`` and this process's thread budget is
    split among the ranks. Results travel through files written by the main
    rank (:func:`is_main`); an exception in any rank is raised here.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    resolved = resolve_device(device)
    if world_size == 1:
        fn(DistributedContext(0, 1, resolved, None), *args)
        return
    if resolved.type == "cuda" and world_size > torch.cuda.device_count():
        raise ValueError(f"world_size {world_size} needs as many GPUs, "
                         f"{torch.cuda.device_count()} visible")
    if backend is None:
        backend = "nccl" if resolved.type == "cuda" else "gloo"
    threads = max(1, torch.get_num_threads() // world_size)
    mp.spawn(_worker, nprocs=world_size, join=True,
             args=(fn, world_size, backend, resolved.type, _free_port(), threads, tuple(args)))


def is_main(ctx: DistributedContext) -> bool:
    """True on the one rank that logs, evaluates and writes checkpoints."""
    return ctx.rank == 0


def shard_batch(indices: T, rank: int, world_size: int) -> T:
    """Rank ``rank``'s contiguous, equal share of a global batch (list, tensor, array).

    Unequal shares would weight samples unequally after DDP's gradient
    averaging, so a batch size not divisible by ``world_size`` is an error.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of size {world_size}")
    size = len(indices)
    if size % world_size:
        raise ValueError(f"global batch of {size} cannot be split evenly over {world_size} "
                         "ranks; choose a batch size divisible by the number of devices")
    share = size // world_size
    return indices[rank * share:(rank + 1) * share]


def wrap_model(model: nn.Module, ctx: DistributedContext) -> nn.Module:
    """Move ``model`` to the rank's device and, with several ranks, wrap it in DDP.

    ``find_unused_parameters=False`` (every parameter must get a gradient each
    step) avoids an extra graph traversal per step; frozen layers are fine as
    long as their parameters have ``requires_grad=False``.
    """
    model = model.to(ctx.device)
    if ctx.world_size == 1:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=False)


def all_reduce_mean(tensor: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Mean of ``tensor`` over ranks (a detached copy; the input is left untouched).

    Used for logging losses and metrics that every rank computed on its shard.
    """
    out = tensor.detach().to(ctx.device, copy=True)
    if ctx.world_size > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return (out / ctx.world_size).to(tensor.device)
