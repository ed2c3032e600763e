"""GPU check of the SEAM + AffinityNet parts at the paper's sizes (random weights).

    python bench/seam_gpu_check.py --out OUT_DIR          # one GPU, ~3 min on an H100
    python bench/seam_gpu_check.py --out OUT_DIR --tiny   # CPU smoke run of the script itself

Parts (each: warm-up, then the median of timed, synchronised iterations, and the
peak GPU memory; results rewritten to OUT/seam_gpu_check.json after every part):

1. SEAM classifier step: ResNet-38 (width 1), batch 8, crop 448, both views, Adam;
   fp32 and bf16 autocast; baseline and CONTA (the shared fusion at block 5).
2. SEAM CAMs of one 375x500 image: 4 scales x flip, PCM-refined.
3. AffinityNet step: batch 8, crop 448, radius 5.
4. Random walk of a 375x500 image's scores at stride 8 (47x63 grid, bg + 3 classes,
   t = 256) on the GPU and on one CPU thread; the sparse walk against the dense
   reference on a 20x20 grid, on the GPU.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conta_core import seam  # noqa: E402
from conta_core.cam import infer_cams  # noqa: E402
from conta_core.expand import affinitynet as an  # noqa: E402
from conta_core.expand.dense_reference import dense_feature_walk  # noqa: E402
from conta_core.models.resnet38 import build_resnet38  # noqa: E402
from conta_core.models.seam import SeamClassifier  # noqa: E402
from conta_core.train import TrainSettings, build_optimizer  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, warmup: int, iters: int, budget_s: float) -> dict:
    for _ in range(warmup):
        fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, start = [], time.time()
    while len(times) < iters and time.time() - start < budget_s:
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    out = {"median_s": statistics.median(times), "iters": len(times)}
    if device.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def make_fusion():
    try:
        from conta_core.models.fusion import build_fusion
        return lambda c: build_fusion("conv", c, "balanced")
    except ImportError:  # older checkouts: a minimal (x, m) fusion
        class AddM(nn.Module):
            def __init__(self, c):
                super().__init__()
                self.w = nn.Parameter(torch.zeros(1, c, 1, 1))

            def forward(self, x, m):
                return x + self.w * m
        return AddM


def seam_step(device, width, batch, crop, precision, conta: bool):
    torch.manual_seed(0)
    kwargs = dict(conta_mode="seg_mask", blocks=(5,), make_fusion=make_fusion()) if conta else {}
    model = SeamClassifier(build_resnet38(width, "none", frozen_blocks=("conv1a", "b2", "b2_1", "b2_2")), 20,
                           **kwargs).to(device).train()
    model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(seam.optimizer_groups(model), TrainSettings(epochs=1, batch_size=batch, lr=1e-4,
                                                                      optimizer="adam", weight_decay=5e-4))
    g = torch.Generator().manual_seed(0)
    batch_data = {"image": torch.randn(batch, 3, crop, crop, generator=g).to(device),
                  "target": (torch.rand(batch, 20, generator=g) < 0.15).float().to(device),
                  "x_m": torch.rand(batch, 16, 16, generator=g).to(device) if conta else torch.zeros(0, device=device),
                  "view": torch.tensor([[1.0, 0.0, 1.0, 0.0]] * batch, device=device)}
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else torch.autocast(
        device.type, enabled=False)

    def step():
        with ctx:
            loss = seam.seam_loss(model, batch_data)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if not torch.isfinite(loss):
            raise FloatingPointError("non-finite SEAM loss")
    return step, model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--tiny", action="store_true")
    a = p.parse_args()
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() and not a.tiny else "cpu")
    width, batch, crop = (0.0625, 2, 64) if a.tiny else (1.0, 8, 448)
    h, w = (48, 64) if a.tiny else (375, 500)
    iters, warm = (2, 1) if a.tiny else (10, 3)
    torch.backends.cudnn.benchmark = True
    results: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                     "torch": torch.__version__, "sizes": {"width": width, "batch": batch, "crop": crop}}

    def record(name, fn):
        try:
            results[name] = fn()
        except Exception as err:  # record and go on: later parts still run
            results[name] = {"error": f"{err.__class__.__name__}: {err}", "trace": traceback.format_exc()[-2000:]}
        print(name, json.dumps(results[name])[:400], flush=True)
        (out_dir / "seam_gpu_check.json").write_text(json.dumps(results, indent=1))

    for precision in ("fp32", "bf16"):
        for conta in (False, True):
            def part(precision=precision, conta=conta):
                step, model = seam_step(device, width, batch, crop, precision, conta)
                res = timed(step, device, warm, iters, 60)
                res["params_m"] = sum(q.numel() for q in model.parameters()) / 1e6
                del model, step
                torch.cuda.empty_cache() if device.type == "cuda" else None
                return res
            record(f"seam_step_{precision}_{'conta' if conta else 'base'}", part)

    def cams():
        torch.manual_seed(0)
        model = SeamClassifier(build_resnet38(width, "none"), 20).to(device).eval()
        image = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
        return timed(lambda: infer_cams(model, image, [[1, 5, 12]], [0.5, 1.0, 1.5, 2.0], True, device),
                     device, 1, iters, 60)
    record("seam_cams_4scales_flip", cams)

    def affinity():
        torch.manual_seed(0)
        net = an.AffinityNet(build_resnet38(width, "none", frozen_blocks=("conv1a", "b2", "b2_1", "b2_2")))
        net = net.to(device).train()
        groups = net.param_groups()
        opt = build_optimizer([{"params": groups["backbone"], "lr_mult": 1.0}, {"params": groups["new"], "lr_mult": 10.0}],
                              TrainSettings(epochs=1, batch_size=batch, lr=1e-3, momentum=0.9, weight_decay=5e-4))
        g = torch.Generator().manual_seed(1)
        labels = torch.randint(0, 3, (batch, crop, crop), generator=g)
        labels[:, :, : crop // 3] = 255
        data = {"image": torch.randn(batch, 3, crop, crop, generator=g).to(device), "label": labels.to(device)}

        def step():
            loss = an.affinity_training_loss(net, data)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return timed(step, device, warm, iters, 60)
    record("affinitynet_step", affinity)

    def walk():
        gh, gw = -(-h // 8), -(-w // 8)
        g = torch.Generator().manual_seed(2)
        feats = torch.rand(448 if not a.tiny else 16, gh, gw, generator=g)
        x = torch.rand(4, gh, gw, generator=g)
        res = {"grid": [gh, gw]}
        for dev in ([device, torch.device("cpu")] if device.type == "cuda" else [device]):
            f, xx = feats.to(dev), x.to(dev)
            old = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                res[f"{dev.type}_s"] = timed(lambda: an.affinity_walk(xx, an.pair_affinities(f), steps=256),
                                             dev, 1, 3, 60)["median_s"]
            finally:
                torch.set_num_threads(old)
        fs, xs = torch.rand(8, 20, 20, generator=g, dtype=torch.float64), torch.rand(3, 20, 20, generator=g,
                                                                                    dtype=torch.float64)
        sparse = an.affinity_walk(xs.to(device), an.pair_affinities(fs.to(device)), steps=256).cpu()
        dense = dense_feature_walk(xs, fs, radius=5, beta=8.0, exp_times=8)
        res["sparse_vs_dense_max_abs"] = float((sparse - dense).abs().max())
        res["sparse_equals_dense"] = bool(torch.allclose(sparse, dense, rtol=1e-6, atol=1e-9))
        return res
    record("affinity_walk", walk)


if __name__ == "__main__":
    main()
