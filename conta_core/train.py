"""The training loop shared by the classifier and DeepLab: poly lr, SGD or AdamW.

Data order: epoch e visits the items in a permutation drawn from (seed, e), in
fixed-size batches (the last partial batch is dropped, so every step sees the
configured batch size). Progress goes to stderr as a tqdm bar (the rule's log)
and one summary line per epoch.

Checkpoints and resume: with a :class:`Checkpointing`, the loop saves the
training state every ``every`` iterations (model, optimizer, RNG states and
the data-order position (epoch, batch in epoch); see
:mod:`conta_core.checkpoint`) into a folder the workflow does not declare as
an output, so a killed job leaves it behind. A restart finds the newest
readable checkpoint whose ``digest`` (settings and inputs of the step) matches
and continues from it: the (seed, epoch) batch order and the (seed, epoch,
item) augmentation make the continued run take exactly the steps the
uninterrupted one would have. Checkpoints of other settings or inputs are
deleted, never resumed. A checkpoint whose checksum fails is skipped with a log
line and the previous one is resumed.

Non-finite loss: every step's loss is checked before the optimizer step; a NaN
or infinite loss stops the job with :class:`NonFiniteLossError` naming the
iteration (and the weights are checked before every checkpoint and at the end,
so neither a checkpoint nor the final model ever holds a NaN). The stop leaves
a ``nonfinite.json`` marker beside the checkpoints: a rerun with the same
settings then refuses to resume silently (the same state would diverge again)
until the user chooses with ``CONTA_NONFINITE_RESTART=resume`` (continue from
the last checkpoint, all of which are finite) or ``=fresh`` (discard the
checkpoints and start over). Changing the step's settings (say a lower lr)
starts afresh as always.

Data-parallel training: :func:`train_job` runs the loop on ``world_size``
ranks with torch DDP (:mod:`conta_core.distributed`). Every rank walks the same
global batches and trains on its equal slice of each; gradients are averaged,
so the weights follow single-process training on the same global batch (up to
float rounding) as long as the loss is a mean over the global batch (the
segmentation loss normalises by the global pixel count for that) and BatchNorm
is frozen, or synchronised (SyncBatchNorm, CUDA only).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import tempfile
import time
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import checkpoint as ckpt
from .devices import resolve_precision
from .distributed import DistributedContext, all_reduce_mean, is_main, launch, shard_batch, wrap_model
from .scalars import ScalarLog

log = logging.getLogger(__name__)

# Test hook: seconds to sleep after every optimisation step, so a test can kill a
# run in the middle of training. It changes timing only, never results.
STEP_DELAY_ENV = "CONTA_TEST_STEP_DELAY_S"
# What a rerun does after a non-finite loss stopped the step: resume | fresh (unset: stop and ask).
NONFINITE_RESTART_ENV = "CONTA_NONFINITE_RESTART"
NONFINITE_MARKER = "nonfinite.json"
# Test hook: the loss of this iteration (1-based) becomes NaN, so a test can watch the stop.
NAN_AT_ENV = "CONTA_TEST_NAN_AT_ITERATION"


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss or weights; nothing non-finite was saved."""


@dataclass
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"          # sgd | adam | adamw
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    warmup_iters: int = 0
    lr_policy: str = "poly"         # poly | step (Caffe's: lr * lr_gamma ** (iteration // lr_step); SEC, DSRG)
    lr_step: int = 2000
    lr_gamma: float = 0.1
    iterations: int | None = None   # train this many steps (SEC, DSRG) instead of whole epochs
    seed: int = 0
    num_workers: int = 0
    precision: str = "fp32"         # fp32 | bf16 (autocast) | auto (devices.resolve_precision)

    @classmethod
    def from_config(cls, section: dict, seed: int) -> "TrainSettings":
        keys = cls.__dataclass_fields__.keys()
        values = {k: v for k, v in section.items() if k in keys and k != "seed"}
        if values.get("iterations") is not None:
            values.setdefault("epochs", 0)  # counted from the iterations (see schedule)
        return cls(**values, seed=seed)


@dataclass
class Checkpointing:
    """Where and how often a training loop saves its state, and what it resumes from.

    ``digest`` identifies what is being trained (settings, inputs); a checkpoint
    carrying another digest is stale. ``every`` <= 0 disables saving (a
    matching checkpoint is still resumed). Build with :meth:`prepare`.
    """
    directory: Path
    every: int
    digest: str
    keep: int = 2
    resume_from: Path | None = None

    @classmethod
    def prepare(cls, directory: str | os.PathLike, every: int, digest: str, keep: int = 2) -> "Checkpointing":
        """Find the checkpoint to resume from; delete checkpoints of other settings or inputs.

        Raises :class:`NonFiniteLossError` when the last run of these settings
        stopped on a non-finite loss and the user has not chosen (see the module doc).
        """
        directory = Path(directory)
        found = ckpt.newest_valid_state(directory)
        marker = _read_marker(directory)
        resume_from = None
        if found is not None and found[1]["extra"].get("digest") != digest:
            log.warning("checkpoints in %s are from other settings or inputs; deleting them", directory)
            _delete_all(directory)
            found = None
        if marker is not None and marker.get("digest") != digest:
            (directory / NONFINITE_MARKER).unlink(missing_ok=True)  # settings changed: a new attempt
            marker = None
        if marker is not None:
            choice = os.environ.get(NONFINITE_RESTART_ENV, "").strip().lower()
            where = f"iteration {marker.get('iteration')} (loss {marker.get('loss')})"
            if found is None:
                log.warning("the last run stopped on a non-finite loss at %s with no checkpoint to resume; "
                            "starting afresh", where)
            elif choice == "resume":
                log.warning("%s=resume: resuming from %s although the last run stopped on a non-finite loss "
                            "at %s", NONFINITE_RESTART_ENV, found[0], where)
            elif choice == "fresh":
                log.warning("%s=fresh: deleting the checkpoints in %s and starting afresh",
                            NONFINITE_RESTART_ENV, directory)
                _delete_all(directory)
                found = None
            else:
                raise NonFiniteLossError(
                    f"the last run of this step stopped on a non-finite loss at {where}; its newest finite "
                    f"checkpoint is {found[0]}. Resuming it unchanged would likely diverge again, so choose: "
                    f"{NONFINITE_RESTART_ENV}=resume (continue from it), {NONFINITE_RESTART_ENV}=fresh "
                    "(delete the checkpoints and start over), or change the step's settings (e.g. a lower lr), "
                    "which starts afresh")
            (directory / NONFINITE_MARKER).unlink(missing_ok=True)
        if found is not None:
            resume_from = found[0]
        return cls(directory, int(every), digest, keep, resume_from)

    def mark_nonfinite(self, iteration: int, loss: float) -> None:
        """Record the stop so a rerun of the same settings does not resume silently."""
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {"digest": self.digest, "iteration": iteration, "loss": repr(loss),
                  "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (self.directory / NONFINITE_MARKER).write_text(json.dumps(record) + "\n")

    def clear(self) -> None:
        """Remove the step's checkpoints once its final model is saved."""
        _delete_all(self.directory)
        with contextlib.suppress(OSError):  # the folder, then empty parents (round, checkpoints)
            self.directory.rmdir()
            self.directory.parent.rmdir()
            self.directory.parent.parent.rmdir()


def _read_marker(directory: Path) -> dict | None:
    try:
        return json.loads((directory / NONFINITE_MARKER).read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return {"iteration": "?", "loss": "?", "digest": None}  # unreadable: treated as stale


def _delete_all(directory: Path) -> None:
    for _, path in ckpt.list_checkpoints(directory):
        path.unlink(missing_ok=True)
    (directory / NONFINITE_MARKER).unlink(missing_ok=True)


def non_finite_tensors(state: dict) -> list[str]:
    """Names of the floating-point entries of a state dict holding a NaN or an infinity."""
    return [name for name, value in state.items()
            if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all()]


@dataclass
class TrainJob:
    """What one process needs to train: built afresh in every DDP rank."""
    model: nn.Module
    dataset: object                  # a torch Dataset with set_epoch(epoch)
    loss_fn: Callable[[nn.Module, dict], torch.Tensor]
    groups: list[dict]               # optimizer groups: params, lr_mult (, weight_decay)


@dataclass
class TrainResult:
    state_dict: dict
    history: list[float]             # mean loss of each epoch
    step_losses: list[float] = field(default_factory=list)


def build_optimizer(groups: list[dict], s: TrainSettings) -> torch.optim.Optimizer:
    """``groups``: dicts with ``params`` and ``lr_mult`` (and optionally ``weight_decay``)."""
    param_groups = []
    for group in groups:
        if not group["params"]:
            continue
        param_groups.append({"params": group["params"], "lr": s.lr * group["lr_mult"],
                             "lr_mult": group["lr_mult"],
                             "weight_decay": group.get("weight_decay", s.weight_decay)})
    if s.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=s.lr, weight_decay=s.weight_decay)
    if s.optimizer == "adam":  # SEAM + CONTA (paper, Appendix 3.1): L2 weight decay inside Adam
        return torch.optim.Adam(param_groups, lr=s.lr, weight_decay=s.weight_decay)
    raise ValueError(f"optimizer must be 'sgd', 'adam' or 'adamw', got {s.optimizer!r}")


def lr_factor(iteration: int, max_iters: int, s: TrainSettings) -> float:
    """Linear warm-up, then poly decay (1 - it / max_it) ^ power, or Caffe's step policy
    gamma ^ floor(it / step) (``lr_policy: step``, as :func:`conta_core.expand.sec.step_lr_factor`)."""
    if iteration < s.warmup_iters:
        return (iteration + 1) / s.warmup_iters
    if s.lr_policy == "step":
        return s.lr_gamma ** (iteration // s.lr_step)
    if s.lr_policy == "poly":
        return (1.0 - iteration / max_iters) ** s.poly_power
    raise ValueError(f"lr_policy must be 'poly' or 'step', got {s.lr_policy!r}")


def schedule(num_items: int, s: TrainSettings) -> tuple[int, int, int]:
    """(batches per epoch, epochs, total iterations): whole epochs, or ``s.iterations`` steps
    over as many epochs as they need (the last one cut short)."""
    per_epoch = num_items // s.batch_size
    if s.iterations is None:
        return per_epoch, s.epochs, s.epochs * per_epoch
    if s.iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {s.iterations}")
    return per_epoch, math.ceil(s.iterations / per_epoch), s.iterations


def epoch_batches(num_items: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(num_items, generator=generator).tolist()
    return [order[i:i + batch_size] for i in range(0, num_items - batch_size + 1, batch_size)]


def autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def train(model: nn.Module, dataset, loss_fn: Callable[[nn.Module, dict], torch.Tensor],
          groups: list[dict], s: TrainSettings, device: torch.device, name: str, *,
          checkpoint: Checkpointing | None = None, ctx: DistributedContext | None = None,
          step_losses: list[float] | None = None, scalars: ScalarLog | None = None) -> list[float]:
    """Train ``model`` in place; returns the mean loss of each epoch.

    ``checkpoint``: save every ``checkpoint.every`` iterations and resume from
    ``checkpoint.resume_from``. ``ctx``: this process's rank in a DDP group
    (None: one process); the model is wrapped here, rank 0 saves checkpoints.
    ``step_losses`` collects the (global-batch) loss of every step.
    ``scalars``: TensorBoard loss and lr per iteration and epoch (main rank only).
    """
    ctx = ctx or DistributedContext(0, 1, device, None)
    if len(dataset) < s.batch_size:
        raise ValueError(f"{name}: {len(dataset)} training images is fewer than one batch "
                         f"(batch_size {s.batch_size})")
    if s.batch_size % ctx.world_size:
        raise ValueError(f"{name}: batch_size {s.batch_size} cannot be split over {ctx.world_size} "
                         "devices; choose a batch size divisible by resources.train_gpus")
    torch.manual_seed(s.seed)
    model.to(device).train()
    net = wrap_model(model, ctx)
    optimizer = build_optimizer(groups, s)
    per_epoch, epochs, max_iters = schedule(len(dataset), s)
    lr_factor(0, max_iters, s)  # an unknown lr_policy fails before the first step
    iteration, start_epoch, start_batch, carried = 0, 0, 0, 0.0
    history: list[float] = []
    if checkpoint is not None and checkpoint.resume_from is not None:
        state = ckpt.load_training_state(checkpoint.resume_from, model, optimizer)
        iteration, start_epoch, start_batch = state["iteration"], state["epoch"], state["batch_in_epoch"]
        history = list(state["extra"]["history"])
        carried = float(state["extra"]["epoch_loss_sum"])
        if is_main(ctx):
            print(f"[{name}] resuming from {checkpoint.resume_from} at iteration {iteration}",
                  file=sys.stderr, flush=True)
    delay = float(os.environ.get(STEP_DELAY_ENV) or 0)
    nan_at = int(os.environ.get(NAN_AT_ENV) or 0)
    main = is_main(ctx)
    scalars = scalars if main else None
    if scalars is not None:
        scalars.open(resume_iteration=iteration)
    for epoch in range(start_epoch, epochs):
        if iteration >= max_iters:
            break
        dataset.set_epoch(epoch)
        first = start_batch if epoch == start_epoch else 0
        total = carried if epoch == start_epoch else 0.0
        batches = epoch_batches(len(dataset), s.batch_size, s.seed, epoch)[first:]
        sampler = [shard_batch(b, ctx.rank, ctx.world_size) for b in batches]
        # Its own generator: a loader draws its base seed when iterated, and from torch's global
        # stream that draw would shift the dropout of every later step on resume.
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=s.num_workers,
                            generator=torch.Generator().manual_seed(s.seed * 100_003 + epoch))
        start = time.time()
        bar = tqdm(loader, desc=f"{name} epoch {epoch + 1}/{epochs}", file=sys.stderr,
                   mininterval=5.0, leave=False, disable=not main, initial=first, total=per_epoch)
        for position, batch in enumerate(bar, start=first):
            for group in optimizer.param_groups:
                group["lr"] = s.lr * group["lr_mult"] * lr_factor(iteration, max_iters, s)
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(s.precision, device):
                loss = loss_fn(net, batch)
            # Reduced before backward, so every DDP rank sees the same value and stops together.
            if nan_at == iteration + 1:
                loss = loss * float("nan")
            value = all_reduce_mean(loss.detach(), ctx).item() if ctx.world_size > 1 else loss.item()
            if not math.isfinite(value):
                _stop_non_finite(name, checkpoint, main, iteration + 1, value,
                                 f"the loss is {value} at iteration {iteration + 1} (epoch {epoch + 1}, "
                                 f"batch {position + 1} of {per_epoch}); the step was not taken")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += value
            iteration += 1
            if step_losses is not None:
                step_losses.append(value)
            bar.set_postfix(loss=f"{value:.4f}", refresh=False)
            if scalars is not None:
                scalars.iteration(iteration, value, optimizer.param_groups[0]["lr"])
            end_of_epoch = position + 1 == per_epoch or iteration == max_iters
            if end_of_epoch:
                history.append(total / (position + 1))
                if scalars is not None:
                    scalars.epoch(epoch + 1, history[-1], optimizer.param_groups[0]["lr"])
                if main:
                    # tqdm.write: the line lands on a line of its own, not glued to the bar.
                    tqdm.write(f"[{name}] epoch {epoch + 1}/{epochs} iter {iteration}/{max_iters} "
                               f"loss {history[-1]:.4f} lr {optimizer.param_groups[0]['lr']:.2e} "
                               f"{time.time() - start:.1f}s", file=sys.stderr)
            if (checkpoint is not None and checkpoint.every > 0 and iteration % checkpoint.every == 0
                    and iteration < max_iters and main):
                _check_weights(model, name, checkpoint, main, iteration)
                path = ckpt.save_training_state(
                    checkpoint.directory, model=model, optimizer=optimizer, scheduler_state=None,
                    iteration=iteration, epoch=epoch + 1 if end_of_epoch else epoch,
                    batch_in_epoch=0 if end_of_epoch else position + 1, keep=checkpoint.keep,
                    extra={"digest": checkpoint.digest, "history": list(history),
                           "epoch_loss_sum": 0.0 if end_of_epoch else total})
                print(f"[{name}] saved checkpoint {path} at iteration {iteration}", file=sys.stderr, flush=True)
            if delay:
                time.sleep(delay)
            if iteration >= max_iters:
                break
    _check_weights(model, name, checkpoint, main, iteration)
    if scalars is not None:
        scalars.close()
    model.eval()
    return history


def _stop_non_finite(name: str, checkpoint: Checkpointing | None, main: bool, iteration: int,
                     value: float, what: str) -> None:
    # Rank 0 alone looks at (and may clean up) the checkpoint folder; the others only stop.
    resumable = ckpt.latest_valid_checkpoint(checkpoint.directory) if checkpoint is not None and main else None
    if main and checkpoint is not None:
        checkpoint.mark_nonfinite(iteration, value)
    if not main:
        then = "see rank 0 for the checkpoints"
    elif resumable is not None:
        then = (f"the newest checkpoint ({resumable}) holds finite weights; a rerun resumes from it only "
                f"with {NONFINITE_RESTART_ENV}=resume ({NONFINITE_RESTART_ENV}=fresh starts over)")
    else:
        then = "there is no checkpoint to resume from"
    raise NonFiniteLossError(f"{name}: {what}. Training stopped and nothing non-finite was saved; {then}. "
                             "Usual causes: a learning rate too high for the batch size, bf16 overflow, "
                             "an empty or corrupt input")


def _check_weights(model: nn.Module, name: str, checkpoint: Checkpointing | None, main: bool,
                   iteration: int) -> None:
    bad = non_finite_tensors(_unwrap(model).state_dict())
    if bad:
        _stop_non_finite(name, checkpoint, main, iteration, float("nan"),
                         f"{len(bad)} weight tensor(s) are non-finite after iteration {iteration} "
                         f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")


def _sync_batchnorm(model: nn.Module) -> nn.Module:
    """Replace BatchNorm layers that train (not frozen) by SyncBatchNorm, in place."""
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm2d) and child.training:
            sync = nn.SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats)
            if child.affine:
                sync.weight, sync.bias = child.weight, child.bias  # same Parameters: optimizer groups stay valid
            sync.running_mean, sync.running_var = child.running_mean, child.running_var
            sync.num_batches_tracked = child.num_batches_tracked
            setattr(model, name, sync)
        else:
            _sync_batchnorm(child)
    return model


def _rank_main(ctx: DistributedContext, build: Callable[[DistributedContext], TrainJob], s: TrainSettings,
               name: str, checkpoint: Checkpointing | None, out: str | None,
               scalars: ScalarLog | None = None) -> TrainResult | None:
    job = build(ctx)
    model = job.model
    if ctx.world_size > 1:
        model.train()
        if any(isinstance(m, nn.BatchNorm2d) and m.training for m in model.modules()):
            if ctx.device.type == "cuda":
                _sync_batchnorm(model)
            elif is_main(ctx):
                print(f"[{name}] warning: BatchNorm is not frozen and SyncBatchNorm needs CUDA; "
                      "each rank normalises with its own share of the batch, so results differ "
                      "slightly from single-process training", file=sys.stderr, flush=True)
    steps: list[float] = []
    history = train(model, job.dataset, job.loss_fn, job.groups, s, ctx.device, name,
                    checkpoint=checkpoint, ctx=ctx, step_losses=steps, scalars=scalars)
    result = TrainResult({k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()},
                         history, steps)
    if out is not None and is_main(ctx):
        torch.save({"state_dict": result.state_dict, "history": result.history, "steps": result.step_losses},
                   out)
    return result


def train_job(build: Callable[[DistributedContext], TrainJob], s: TrainSettings, device: torch.device, name: str,
              *, world_size: int = 1, checkpoint: Checkpointing | None = None,
              scalars: ScalarLog | None = None) -> TrainResult:
    """Build and train a model on ``world_size`` ranks; returns rank 0's weights and losses.

    ``build(ctx)`` makes the model, dataset, loss and optimizer groups; with
    several ranks it runs in each spawned process, so it must be picklable
    (a module-level function or a ``functools.partial`` of one). ``device``:
    the device of single-process training; with several ranks, rank r uses
    ``cuda:r`` of the job's (claimed) GPUs, or the CPU with gloo.
    """
    if s.batch_size % world_size:
        raise ValueError(f"{name}: batch_size {s.batch_size} cannot be split over {world_size} "
                         "devices; choose a batch size divisible by resources.train_gpus")
    precision = resolve_precision(s.precision, device)
    if precision != s.precision:
        print(f"[{name}] precision auto: {precision} on this {device.type}", file=sys.stderr, flush=True)
        s = dataclasses.replace(s, precision=precision)
    if world_size == 1:
        return _rank_main(DistributedContext(0, 1, device, None), build, s, name, checkpoint, None, scalars)
    print(f"[{name}] data-parallel training on {world_size} {device.type} rank(s), "
          f"global batch {s.batch_size}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="conta-ddp-") as tmp:
        out = str(Path(tmp) / "result.pt")
        launch(_rank_main, world_size, args=(build, s, name, checkpoint, out, scalars), device=device.type)
        state = torch.load(out, map_location="cpu", weights_only=True)
    return TrainResult(state["state_dict"], state["history"], state["steps"])
