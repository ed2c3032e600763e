"""CAM inference speed on the CPU against the machine's fp32 matmul peak and the previous implementation.

    python bench/cam_speed.py                 # ResNet-50, 240x320, scales 1/0.5/1.5/2 + flips, 2 threads
    python bench/cam_speed.py --reps 5 --out cam_speed.json

Implementations, timed interleaved (one call of each per repetition, so a change
of machine load hits all of them alike), same random weights, same images:

* ``previous``: conta_core/cam.py and to_tensor as of ``--previous-rev`` (before
  issue 16: NCHW input, bilinear float resize of the pyramid, direct resize to the
  image size) with that revision's backbone (layer4 dilated), loaded from git;
* ``fp32 b1`` / ``fp32 b4``: the current ``infer_cams`` on the model as the cam job
  prepares it (``prepare_for_inference``: BatchNorm folded, channels-last), IRNet's
  resampling, one image per call and four same-size images per call;
* ``bf16 b1`` / ``b4``: the current one with bf16 weights under bf16 autocast (fast on CPUs
  with AVX512-BF16/AMX);
  its CAMs are compared with fp32's (max / mean abs difference, seed labels at 0.15).

GFLOP per image: 2 x multiply-adds of every convolution (forward hooks), all scales
and flips. Peak: the best of several 2048^3 fp32 ``torch.mm`` on the same threads,
measured before and after. The 1-minute load average (``os.getloadavg``) is recorded
before and after: above the thread count the numbers are "under load".
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from conta_core.cam import infer_cams, prepare_for_inference  # noqa: E402
from conta_core.cam_labels import cam_to_label  # noqa: E402
from conta_core.models.backbone import build_resnet  # noqa: E402
from conta_core.models.classifier import CamClassifier  # noqa: E402

PREVIOUS_REV = "d923d0b"  # the last commit before issue 16's CAM changes


def previous_infer_cams(rev: str):
    """``infer_cams`` of ``rev`` with that revision's ``to_tensor``, from git (no files written)."""
    def show(path: str) -> str:
        return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout

    data = types.ModuleType("previous_datasets")
    exec(compile(show("conta_core/data/datasets.py").replace("from torch.utils.data import Dataset",
                                                             "Dataset = object"), "previous_datasets", "exec"),
         data.__dict__)
    cam = types.ModuleType("previous_cam")
    cam.__dict__["to_tensor"] = data.to_tensor
    source = show("conta_core/cam.py").replace("from .data.datasets import to_tensor", "")
    exec(compile(source, "previous_cam", "exec"), cam.__dict__)
    return cam.infer_cams


def matmul_peak_gflops(n: int = 2048, tries: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def conv_gflop(model, images, scales) -> float:
    """GFLOP (2 x multiply-adds of the convolutions) of one CAM call on ``images``."""
    total = [0]

    def hook(module, inputs, output):
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total[0] += 2 * output.numel() * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        infer_cams(model, images, [[1]] * len(images), scales, True, torch.device("cpu"))
    finally:
        for h in handles:
            h.remove()
    return total[0] / 1e9


def photos(batch: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (batch, h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    smooth = np.stack([np.asarray(Image.fromarray(s).resize((w, h), Image.BILINEAR)) for s in small])
    return np.clip(smooth.astype(np.int16) + rng.integers(-10, 11, smooth.shape), 0, 255).astype(np.uint8)


def structured_model(dilate: bool, seed: int = 0) -> CamClassifier:
    """Random ResNet-50 CAM classifier whose class maps vary over the image (see tests/test_cam_irnet.py)."""
    from conta_core.data.datasets import to_tensor

    torch.manual_seed(seed)
    net = CamClassifier(build_resnet(50, 16, "none", dilate=dilate), 20).eval()
    with torch.no_grad():
        mu = net.features(to_tensor(photos(1, 96, 128, 99)[0])[None]).mean(dim=(0, 2, 3))
        w = torch.randn(20, mu.numel(), generator=torch.Generator().manual_seed(seed + 1))
        w -= (w @ mu)[:, None] * mu[None] / (mu @ mu)
        net.classifier.weight.copy_(w[:, :, None, None])
    return net


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 1.5, 2.0])
    p.add_argument("--previous-rev", default=PREVIOUS_REV)
    p.add_argument("--no-bf16", action="store_true")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    peak_before = matmul_peak_gflops()

    plain_model = structured_model(dilate=False)
    old_model = CamClassifier(build_resnet(50, 16, "none", dilate=True), 20).eval()
    old_model.load_state_dict(plain_model.state_dict())
    new_model = prepare_for_inference(plain_model)  # as the cam job runs it
    previous = previous_infer_cams(args.previous_rev)
    images = photos(4, args.height, args.width)
    classes = [[3, 15], [7], [1, 2], [11]]
    cpu = torch.device("cpu")
    gflop = conv_gflop(new_model, images[:1], args.scales)

    impls = {
        "previous b1": (1, lambda: previous(old_model, images[:1], classes[:1], args.scales, True, cpu)),
        "fp32 b1": (1, lambda: infer_cams(new_model, images[:1], classes[:1], args.scales, True, cpu)),
        "fp32 b4": (4, lambda: infer_cams(new_model, images, classes, args.scales, True, cpu)),
    }
    if not args.no_bf16:
        bf16_model = prepare_for_inference(plain_model, "bf16")
        impls["bf16 b1"] = (1, lambda: infer_cams(bf16_model, images[:1], classes[:1], args.scales, True, cpu,
                                                  precision="bf16"))
        impls["bf16 b4"] = (4, lambda: infer_cams(bf16_model, images, classes, args.scales, True, cpu,
                                                  precision="bf16"))
    for _, fn in impls.values():  # warm-up (allocator, oneDNN primitive caches)
        fn()
    times: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(args.reps):
        for name, (batch, fn) in impls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) / batch)
    peak_after = matmul_peak_gflops()
    load_after = os.getloadavg()[0]
    peak = max(peak_before, peak_after)

    rows = {}
    base = statistics.median(times["previous b1"])
    for name, ts in times.items():
        s = statistics.median(ts)
        rows[name] = {"s_per_image": s, "images_per_s": 1 / s, "gflop_per_s": gflop / s,
                      "percent_of_peak": 100 * gflop / s / peak, "speedup_vs_previous": base / s, "times": ts}

    accuracy = None
    if not args.no_bf16:
        fp32 = infer_cams(new_model, images, classes, args.scales, True, cpu)
        bf16 = infer_cams(bf16_model, images, classes, args.scales, True, cpu, precision="bf16")
        diffs = [np.abs(a - b) for a, b in zip(fp32, bf16)]
        agree = [(cam_to_label(a, c, 0.15) == cam_to_label(b, c, 0.15)).mean() for a, b, c in zip(fp32, bf16, classes)]
        accuracy = {"max_abs_diff": float(max(d.max() for d in diffs)),
                    "mean_abs_diff": float(np.mean([d.mean() for d in diffs])),
                    "seed_label_agreement_min": float(min(agree))}
    old_cams = previous(old_model, images[:1], classes[:1], args.scales, True, cpu)[0]
    new_cams = infer_cams(new_model, images[:1], classes[:1], args.scales, True, cpu)[0]
    result = {
        "image": [args.height, args.width], "scales": args.scales, "flip": True, "threads": args.threads,
        "gflop_per_image": gflop, "matmul_peak_gflops": {"before": peak_before, "after": peak_after},
        "load_1min": {"before": load_before, "after": load_after},
        "under_load": max(load_before, load_after) > args.threads, "previous_rev": args.previous_rev,
        "impls": rows, "bf16_vs_fp32": accuracy,
        "previous_vs_current_max_abs_diff": float(np.abs(old_cams - new_cams).max()),
        "cpu_flags_bf16": sorted({f for f in open("/proc/cpuinfo").read().split() if "bf16" in f or "amx" in f})
        if Path("/proc/cpuinfo").exists() else [],
    }
    print(f"CAM {args.height}x{args.width}, scales {args.scales} + flips, ResNet-50, {args.threads} threads: "
          f"{gflop:.0f} GFLOP/image; fp32 matmul peak {peak_before:.0f} / {peak_after:.0f} GFLOP/s "
          f"(before/after); load {load_before:.1f} -> {load_after:.1f}"
          + (" (UNDER LOAD)" if result["under_load"] else ""))
    print(f"{'implementation':14s} {'s/image':>8s} {'img/s':>7s} {'GFLOP/s':>8s} {'% peak':>7s} {'vs prev':>8s}")
    for name, r in rows.items():
        print(f"{name:14s} {r['s_per_image']:8.2f} {r['images_per_s']:7.3f} {r['gflop_per_s']:8.1f} "
              f"{r['percent_of_peak']:7.1f} {r['speedup_vs_previous']:7.2f}x")
    if accuracy:
        print(f"bf16 vs fp32 CAMs (random weights): max |diff| {accuracy['max_abs_diff']:.4f}, mean "
              f"{accuracy['mean_abs_diff']:.5f}, seed labels (bg 0.15) agree >= "
              f"{100 * accuracy['seed_label_agreement_min']:.2f} %")
    print(f"previous vs current CAMs, same weights: max |diff| {result['previous_vs_current_max_abs_diff']:.3f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
