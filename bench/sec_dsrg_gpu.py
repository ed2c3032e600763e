"""Time one training step of SEC's and DSRG's networks at the paper's sizes (Appendix 3.3, 3.4).

SEC: VGG-16 LargeFOV, batch 15, 321 crops, seed + expand + constrain losses;
DSRG: ResNet-101 OS 16 + ASPP, batch 20, 321 crops, region growing + balanced
seeding + constrain losses. Random init and random inputs (timing only).
Reports seconds per step (mean of ``--iters`` after 2 warm-up steps), the part
spent in the dense CRF and region growing (CPU, per image), the peak GPU memory,
and the paper's full trainings (8,000 / 10,000 steps) extrapolated.

Without pydensecrf (``--no-crf`` or not importable) the CRF is replaced by the
identity (Q = f) and its time reported as 0: add the CPU CRF time measured where
pydensecrf is installed.

    python bench/sec_dsrg_gpu.py --out OUT [--iters 10] [--dry-run]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from conta_core.expand import dsrg, sec


def fake_batch(batch: int, size: int, num_classes: int, device: torch.device, rng: np.random.Generator) -> dict:
    labels = torch.zeros(batch, num_classes - 1)
    seeds = torch.full((batch, size, size), 255, dtype=torch.uint8)
    for b in range(batch):
        cls = rng.choice(num_classes - 1, 2, replace=False)
        labels[b, cls] = 1
        seeds[b, : size // 8] = 0
        for k, c in enumerate(cls):
            y = size // 3 + k * size // 4
            seeds[b, y:y + size // 8, size // 3:size // 3 + size // 6] = int(c) + 1
    return {"image": torch.randn(batch, 3, size, size, device=device),
            "rgb": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
            "seeds": seeds.to(device), "labels": labels.to(device)}


class Timer:
    def __init__(self):
        self.total = 0.0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total += time.perf_counter() - start
        return timed


def run(method: str, args, device: torch.device, use_crf: bool) -> dict:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    size, classes = args.size, 21
    if method == "sec":
        net = sec.SecNet(sec.VGG16Trunk(width=args.width), classes).to(device)
        opt = sec.sec_optimizer(net)
        batch, steps, loss_fn = args.sec_batch, sec.SEC_TRAINING["iterations"], sec.sec_loss
    else:
        net = dsrg.DsrgNet(dsrg.build_resnet(args.depth, 16), classes).to(device)
        groups = dsrg.optimizer_groups(net)
        opt = torch.optim.SGD([{"params": g["params"], "lr": 5e-4 * g["lr_mult"],
                                "weight_decay": g.get("weight_decay", 5e-4)} for g in groups], momentum=0.9)
        batch, steps, loss_fn = args.dsrg_batch, dsrg.DSRG_TRAINING["iterations"], dsrg.dsrg_loss
    cpu = Timer()
    original_crf, original_grow = sec.crf_targets, dsrg.grow_batch
    crf = original_crf if use_crf else (lambda probs, images, **kw: probs.detach())
    sec.crf_targets = dsrg.crf_targets = cpu.wrap(crf)
    dsrg.grow_batch = cpu.wrap(original_grow)
    try:
        data = fake_batch(batch, size, classes, device, rng)
        net.train()
        times, losses = [], []
        for it in range(args.iters + 2):
            if it == 2:
                cpu.total = 0.0
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            loss = loss_fn(net, data)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if it >= 2:
                times.append(time.perf_counter() - start)
                losses.append(loss.item())
    finally:
        sec.crf_targets, dsrg.crf_targets, dsrg.grow_batch = original_crf, original_crf, original_grow
    step = float(np.mean(times))
    return {"method": method, "batch": batch, "size": size, "crf": use_crf,
            "step_s": step, "step_s_min": float(np.min(times)), "cpu_crf_grow_s_per_step": cpu.total / len(times),
            "peak_gpu_gib": (torch.cuda.max_memory_allocated() / 2 ** 30) if device.type == "cuda" else None,
            "paper_steps": steps, "paper_training_h": step * steps / 3600, "losses": losses,
            "finite": bool(np.isfinite(losses).all())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--size", type=int, default=321)
    ap.add_argument("--sec-batch", type=int, default=15)
    ap.add_argument("--dsrg-batch", type=int, default=20)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--depth", type=int, default=101)
    ap.add_argument("--no-crf", action="store_true")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes")
    args = ap.parse_args()
    if args.dry_run:
        args.size, args.sec_batch, args.dsrg_batch, args.width, args.depth, args.iters = 65, 2, 2, 0.0625, 18, 1
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    use_crf = not args.no_crf
    if use_crf:
        try:
            import pydensecrf.densecrf  # noqa: F401
        except ImportError:
            use_crf = False
    torch.backends.cudnn.benchmark = True
    info = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "results": []}
    for method in ("sec", "dsrg"):
        result = run(method, args, device, use_crf)
        info["results"].append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "losses"}), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "sec_dsrg_gpu.json").write_text(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
