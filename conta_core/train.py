"""The training loop shared by the classifier and DeepLab: poly lr, SGD or AdamW.

Data order: epoch e visits the items in a permutation drawn from (seed, e), in
fixed-size batches (the last partial batch is dropped, so every step sees the
configured batch size). Progress goes to stderr as a tqdm bar (the rule's log)
and one summary line per epoch.
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm


@dataclass
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"          # sgd | adamw
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    warmup_iters: int = 0
    seed: int = 0
    num_workers: int = 0
    precision: str = "fp32"         # fp32 | bf16 (autocast)

    @classmethod
    def from_config(cls, section: dict, seed: int) -> "TrainSettings":
        keys = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in section.items() if k in keys and k != "seed"}, seed=seed)


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
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {s.optimizer!r}")


def lr_factor(iteration: int, max_iters: int, s: TrainSettings) -> float:
    """Linear warm-up, then poly decay (1 - it / max_it) ^ power."""
    if iteration < s.warmup_iters:
        return (iteration + 1) / s.warmup_iters
    return (1.0 - iteration / max_iters) ** s.poly_power


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


def train(model: nn.Module, dataset, loss_fn: Callable[[nn.Module, dict], torch.Tensor],
          groups: list[dict], s: TrainSettings, device: torch.device, name: str) -> list[float]:
    """Train ``model`` in place; returns the mean loss of each epoch."""
    if len(dataset) < s.batch_size:
        raise ValueError(f"{name}: {len(dataset)} training images is fewer than one batch "
                         f"(batch_size {s.batch_size})")
    torch.manual_seed(s.seed)
    model.to(device).train()
    optimizer = build_optimizer(groups, s)
    per_epoch = len(dataset) // s.batch_size
    max_iters = s.epochs * per_epoch
    iteration = 0
    history = []
    for epoch in range(s.epochs):
        dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_sampler=epoch_batches(len(dataset), s.batch_size, s.seed, epoch),
                            num_workers=s.num_workers)
        start, total = time.time(), 0.0
        bar = tqdm(loader, desc=f"{name} epoch {epoch + 1}/{s.epochs}", file=sys.stderr,
                   mininterval=5.0, leave=False)
        for batch in bar:
            for group in optimizer.param_groups:
                group["lr"] = s.lr * group["lr_mult"] * lr_factor(iteration, max_iters, s)
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(s.precision, device):
                loss = loss_fn(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
            iteration += 1
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        history.append(total / per_epoch)
        print(f"[{name}] epoch {epoch + 1}/{s.epochs} iter {iteration}/{max_iters} "
              f"loss {history[-1]:.4f} lr {optimizer.param_groups[0]['lr']:.2e} "
              f"{time.time() - start:.1f}s", file=sys.stderr, flush=True)
    model.eval()
    return history
