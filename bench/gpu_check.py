"""GPU check: the CUDA-only tests, one VOC-size round timed part by part, and the
estimated wall time of a full VOC IRNet + CONTA run on 1 and on 8 GPUs.

    bench/gpu_check.sh OUT_DIR                        # one GPU, < 6 min on an H100
    python bench/gpu_check.py --out OUT_DIR --dry-run  # CPU, tiny sizes, < 1 min

Runs on a bare GPU box: Python, torch, numpy, pytest (pillow for the loader part,
pydensecrf only if present); no network, no Snakemake, no pip install (the repository
root goes on sys.path). Steps:

1. ``pytest tests/test_cuda.py`` in a subprocess (log: OUT/cuda_tests.log).
2. Timed parts on generated data (random weights, bf16 autocast, channels-last,
   cudnn.benchmark): classifier training (ResNet-50, OS 16, CONTA block 5, batch 16
   and the per-rank batch 2, crop 512), CAMs (4 scales + flips, 384x512 images,
   batch 1 and 8), relation-network training (batch 32, crop 512), boundary maps,
   the sparse random walk (96x128 stride-4 maps, 2 classes, t = 256), DeepLab-v2
   training (ResNet-101, OS 8, MSC 1/0.75/0.5, batch 10 and 2, crop 321) and
   prediction (384x512, batch 1 and 8); on the CPU: decoding + augmentation per
   image and, where pydensecrf imports, the dense CRF.
   Each part: warm-up, then timed iterations (synchronised) until ``iters`` or the
   part's time budget; the median is reported with the peak GPU memory.
3. The estimate (bench/gpu_estimate.py says how), printed and written with
   everything else to OUT/gpu_check.json (rewritten after every part, so an
   interrupted run leaves what it measured).
"""
from __future__ import annotations

import argparse
import gc
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gpu_estimate import VOC_RUN, estimate, format_estimate  # noqa: E402

# dense CRF seconds on one core (375x500, smooth generated image, 10 iterations) measured
# on the development machine (AMD EPYC, 2 cores) with pydensecrf2; used where pydensecrf
# is not installed (the bare GPU box).
CRF_FALLBACK_S = {"crf3_s": 0.76, "crf21_s": 2.01}

FULL = {
    "cls_depth": 50, "seg_depth": 101, "image": (384, 512), "cls_crop": 512, "cls_batches": (16, 2), "cam_batches": (1, 8),
    "cam_scales": (1.0, 0.5, 1.5, 2.0), "rel_crop": 512, "rel_batch": 32, "walk_classes": 2,
    "seg_crop": 321, "seg_batches": (10, 2), "pred_batches": (1, 8), "exp_times": 8,
    "warmup": 3, "iters": 10, "part_budget_s": 12.0, "loader_images": 20, "cpu_image": (375, 500),
}
DRY = {  # ResNet-18 backbones: the same code paths in a few seconds
    "cls_depth": 18, "seg_depth": 18, "image": (48, 64), "cls_crop": 64, "cls_batches": (4, 2), "cam_batches": (1, 2),
    "cam_scales": (1.0, 0.5, 1.5, 2.0), "rel_crop": 64, "rel_batch": 4, "walk_classes": 2,
    "seg_crop": 41, "seg_batches": (2, 1), "pred_batches": (1, 2), "exp_times": 8,
    "warmup": 1, "iters": 2, "part_budget_s": 2.0, "loader_images": 2, "cpu_image": (48, 64),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, device: torch.device, cfg: dict) -> dict:
    """Median seconds per call of ``step`` after ``cfg['warmup']`` untimed calls."""
    for _ in range(cfg["warmup"]):
        step()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < cfg["iters"]:
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
        if len(times) >= 2 and time.perf_counter() - start > cfg["part_budget_s"]:
            break
    return {"median_s": statistics.median(times), "min_s": min(times), "iterations": len(times)}


def autocast(device: torch.device, precision: str):
    import contextlib

    return (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
            else contextlib.nullcontext())


def images_uint8(batch: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Smooth generated photos: blocky colour fields plus a little noise."""
    rng = np.random.default_rng(seed)
    h, w = size
    small = rng.integers(0, 255, (batch, -(-h // 16), -(-w // 16), 3), dtype=np.uint8)
    big = np.repeat(np.repeat(small, 16, axis=1), 16, axis=2)[:, :h, :w]
    return np.clip(big.astype(np.int16) + rng.integers(-8, 9, big.shape), 0, 255).astype(np.uint8)


def blocky_labels(batch: int, h: int, w: int, classes: int, device, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    small = torch.randint(0, classes, (batch, -(-h // 8), -(-w // 8)), generator=gen)
    labels = small.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, :h, :w].clone()
    labels[:, : max(1, h // 10)] = 255  # an unsure band, as in pseudo-masks
    return labels.to(device)


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


# --------------------------------------------------------------------------- parts


def build_cam_classifier(cfg: dict, device: torch.device):
    """ResNet-50 (dry run: 18) CAM classifier with CONTA's fusion at block 5 (rounds 1..3), random weights."""
    import inspect

    from conta_core.models.backbone import build_resnet
    from conta_core.models.classifier import CamClassifier
    from conta_core.models.resnet import zero_init_residual

    torch.manual_seed(0)
    kwargs = dict(conta_mode="adjust", blocks=(5,), confounder=torch.rand(20, 16, 16),
                  prior=torch.full((20,), 0.05), map_size=(16, 16))
    if "fusion" in inspect.signature(CamClassifier).parameters:
        kwargs["fusion"] = "conv"  # config.yaml's conta.fusion
    model = CamClassifier(build_resnet(cfg["cls_depth"], 16, "none", freeze_bn=True, freeze_conv1=True,
                                       dilate=False), 20, **kwargs)
    return zero_init_residual(model).to(device).to(memory_format=torch.channels_last)


def part_classifier(cfg, device, precision) -> dict:
    model = build_cam_classifier(cfg, device).train()
    params = trainable(model)
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=1e-4)
    out = {"params": sum(p.numel() for p in params)}
    for batch in cfg["cls_batches"]:
        crop = cfg["cls_crop"]
        images = torch.randn(batch, 3, crop, crop, device=device).contiguous(memory_format=torch.channels_last)
        targets = (torch.rand(batch, 20, device=device) < 0.08).float()
        targets[:, 0] = 1.0
        x_m = torch.rand(batch, 16, 16, device=device)
        view = torch.tensor([[0.8, 0.1, 0.9, -0.05]] * batch, device=device)
        losses = []

        def step():
            from conta_core.models.classifier import multilabel_soft_margin
            with autocast(device, precision):
                loss = multilabel_soft_margin(model(images, x_m, view), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())  # the training loop reads the loss every step too

        out[f"batch{batch}"] = timed(step, device, cfg)
        out[f"batch{batch}"]["finite"] = bool(np.isfinite(losses).all())
    return out


def part_cam(cfg, device, precision) -> dict:
    from conta_core.cam import infer_cams, prepare_for_inference

    model = prepare_for_inference(build_cam_classifier(cfg, device), precision, device)
    out = {"scales": list(cfg["cam_scales"]), "flip": True}
    for batch in cfg["cam_batches"]:
        images = images_uint8(batch, cfg["image"])
        classes = [[1, 5]] * batch
        x_m = np.random.default_rng(0).random((batch, 16, 16)).astype(np.float32)
        result = {}

        def step():
            result["cams"] = infer_cams(model, images, classes, list(cfg["cam_scales"]), True, device, x_m,
                                        precision=precision)

        out[f"batch{batch}"] = timed(step, device, cfg)
        out[f"batch{batch}"]["finite"] = bool(all(np.isfinite(c).all() for c in result["cams"]))
    return out


def part_relation(cfg, device, precision) -> dict:
    from conta_core.expand.affinity import affinity_labels
    from conta_core.expand.irnet import RelationNet, relation_loss

    torch.manual_seed(0)
    model = RelationNet(cfg["cls_depth"], 16).to(device).to(memory_format=torch.channels_last).train()
    params = model.trainable_parameters()
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.0, weight_decay=1e-4)
    batch, crop = cfg["rel_batch"], cfg["rel_crop"]
    images = torch.randn(batch, 3, crop, crop, device=device).contiguous(memory_format=torch.channels_last)
    labels = blocky_labels(batch, -(-crop // 4), -(-crop // 4), 3, device)
    losses = []

    def step():
        bg_pos, fg_pos, neg = affinity_labels(labels, 10, 255)  # built every step, as in training
        with autocast(device, precision):
            logits = model(images)[:, 0]
        loss, _ = relation_loss(torch.sigmoid(logits.float()), bg_pos, fg_pos, neg, 10)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    out = {f"batch{batch}": timed(step, device, cfg)}
    out[f"batch{batch}"]["finite"] = bool(np.isfinite(losses).all())
    return out


def part_boundary_and_walk(cfg, device, precision) -> dict:
    from conta_core.data.datasets import to_tensor
    from conta_core.expand.irnet import RelationNet, predict_boundaries
    from conta_core.expand.random_walk import expand_irnet

    torch.manual_seed(0)
    model = RelationNet(cfg["cls_depth"], 16).to(device).eval()
    out = {}
    for batch in cfg["cam_batches"]:
        images = torch.stack([to_tensor(im) for im in images_uint8(batch, cfg["image"])])
        result = {}

        def step():
            with torch.inference_mode(), autocast(device, precision):
                result["b"] = predict_boundaries(model, images).float()

        out[f"boundary_batch{batch}"] = timed(step, device, cfg)
    boundary = result["b"][0]
    h, w = cfg["image"]
    # walk input as in the expand job: full-resolution float32 CAMs of the image's classes
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    cams = np.stack([np.exp(-((yy - 0.3 - 0.3 * k) ** 2 + (xx - 0.5) ** 2) * 20)
                     for k in range(cfg["walk_classes"])]).astype(np.float32)
    labels = {}

    def walk():
        labels["m"] = expand_irnet(cams, boundary, list(range(1, cfg["walk_classes"] + 1)), image_size=(h, w),
                                   beta=10.0, exp_times=cfg["exp_times"], radius=5, bg_threshold=0.25,
                                   device=device)

    out["walk"] = timed(walk, device, cfg)
    out["walk"].update(map=list(boundary.shape), classes=cfg["walk_classes"], steps=2 ** cfg["exp_times"],
                       labels_found=sorted(int(v) for v in np.unique(labels["m"])))
    return out


def build_deeplab(cfg: dict, device: torch.device):
    from conta_core.models.backbone import build_resnet
    from conta_core.models.deeplab import DeepLabV2
    from conta_core.models.resnet import zero_init_residual

    torch.manual_seed(0)
    model = DeepLabV2(build_resnet(cfg["seg_depth"], 8, "none", freeze_bn=True, freeze_conv1=False), 21, (6, 12, 18, 24),
                      (1.0, 0.75, 0.5))
    return zero_init_residual(model).to(device).to(memory_format=torch.channels_last)


def part_segmenter(cfg, device, precision) -> dict:
    from conta_core.models.deeplab import msc_loss

    model = build_deeplab(cfg, device).train()
    params = trainable(model)
    optimizer = torch.optim.SGD(params, lr=2.5e-4, momentum=0.9, weight_decay=5e-4)
    out = {"params": sum(p.numel() for p in params), "msc_scales": [1.0, 0.75, 0.5]}
    for batch in cfg["seg_batches"]:
        crop = cfg["seg_crop"]
        images = torch.randn(batch, 3, crop, crop, device=device).contiguous(memory_format=torch.channels_last)
        labels = blocky_labels(batch, crop, crop, 21, device)
        losses = []

        def step():
            with autocast(device, precision):
                loss = msc_loss(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())

        out[f"batch{batch}"] = timed(step, device, cfg)
        out[f"batch{batch}"]["finite"] = bool(np.isfinite(losses).all())
    return out


def part_predict(cfg, device, precision) -> dict:
    from conta_core.data.datasets import to_tensor

    model = build_deeplab(cfg, device).eval()
    out = {}
    for batch in cfg["pred_batches"]:
        images = torch.stack([to_tensor(im) for im in images_uint8(batch, cfg["image"])])
        result = {}

        def step():
            # as conta_core.segment.predict_masks: softmax probabilities back on the host
            with torch.inference_mode(), autocast(device, precision):
                x = images.to(device).contiguous(memory_format=torch.channels_last)
                result["p"] = torch.softmax(model.predict(x).float(), dim=1).cpu().numpy()

        out[f"batch{batch}"] = timed(step, device, cfg)
        out[f"batch{batch}"]["finite"] = bool(np.isfinite(result["p"]).all())
    return out


def part_cpu(cfg) -> dict:
    """One core: JPEG decode, classification and segmentation augmentation, dense CRF."""
    from PIL import Image

    from conta_core.data.datasets import random_scale_flip_crop, to_tensor

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        image = images_uint8(1, cfg["cpu_image"])[0]
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=90)
        data = buf.getvalue()
        rng = np.random.default_rng(0)
        n = cfg["loader_images"]

        def decode():
            return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

        def per_image(fn, reps: int = n) -> float:
            fn()
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            return (time.perf_counter() - t0) / reps

        label = torch.from_numpy(rng.integers(0, 21, cfg["cpu_image"]))
        out = {
            "decode_s_image": per_image(decode),
            "load_cls_s_image": per_image(lambda: random_scale_flip_crop(
                to_tensor(decode()), None, 512, (0.64, 1.28), rng)),
            "load_seg_s_image": per_image(lambda: random_scale_flip_crop(
                to_tensor(decode()), label, 321, (0.5, 1.5), rng)),
        }
    finally:
        torch.set_num_threads(old)
    try:
        from conta_core.crf import dense_crf

        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        out.update(CRF_FALLBACK_S, crf_source="fallback (pydensecrf not installed): development machine's core")
        return out
    for labels, key in ((3, "crf3_s"), (21, "crf21_s")):
        probs = rng.random((labels, *image.shape[:2])).astype(np.float32)
        probs /= probs.sum(0)
        out[key] = per_image(lambda: dense_crf(image, probs), reps=min(n, 3))  # ~2 s each at VOC size
    out["crf_source"] = f"measured here ({image.shape[0]}x{image.shape[1]})"
    return out


# --------------------------------------------------------------------------- driver


def run_cuda_tests(out_dir: Path, dry_run: bool, timeout_s: float) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    if dry_run:
        env["CONTA_CUDA_TESTS_ON_CPU"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
           str(ROOT / "tests" / "test_cuda.py")]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
        text, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        text, code = f"{err.stdout or ''}{err.stderr or ''}\nTIMEOUT after {timeout_s} s", -1
    (out_dir / "cuda_tests.log").write_text(text)
    tail = [line for line in text.strip().splitlines() if line.strip()][-1:] or [""]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", tail[0])}
    return {"returncode": code, "summary": tail[0], "counts": counts,
            "seconds": round(time.perf_counter() - start, 1), "log": "cuda_tests.log"}


def environment(device: torch.device) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
           "device": str(device), "cpu_cores": os.cpu_count(), "host": platform.node()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                   capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), gpu_count=torch.cuda.device_count())
    return env


def measured_seconds(parts: dict, cfg: dict) -> dict | None:
    """The estimate's inputs from the parts (None where a needed part is missing)."""
    try:
        cls, seg = parts["classifier"], parts["segmenter"]
        b_cls, r_cls = cfg["cls_batches"]
        b_seg, r_seg = cfg["seg_batches"]
        cam_b = cfg["cam_batches"][0]
        walk = parts["boundary_walk"]
        return {
            "classifier_s_iter": cls[f"batch{b_cls}"]["median_s"],
            "classifier_s_iter_rank": cls[f"batch{r_cls}"]["median_s"],
            "classifier_params": cls["params"],
            "cam_s_image": parts["cam"][f"batch{cam_b}"]["median_s"] / cam_b,
            "relation_s_iter": parts["relation"][f"batch{cfg['rel_batch']}"]["median_s"],
            "boundary_s_image": walk[f"boundary_batch{cam_b}"]["median_s"] / cam_b,
            "walk_s_image": walk["walk"]["median_s"],
            "segment_s_iter": seg[f"batch{b_seg}"]["median_s"],
            "segment_s_iter_rank": seg[f"batch{r_seg}"]["median_s"],
            "segment_params": seg["params"],
            "predict_s_image": parts["predict"][f"batch{cfg['pred_batches'][0]}"]["median_s"]
            / cfg["pred_batches"][0],
            **{k: parts["cpu"][k] for k in ("decode_s_image", "load_cls_s_image", "load_seg_s_image",
                                            "crf3_s", "crf21_s")},
        }
    except KeyError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and cuda_tests.log")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks the script in seconds")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--tests-timeout-s", type=float, default=None,
                   help="limit for the CUDA tests (default 150 s; dry run 900 s: CPU and maybe a busy machine)")
    p.add_argument("--budget-s", type=float, default=330.0,
                   help="after this many seconds the remaining parts are skipped (default 330)")
    p.add_argument("--allreduce-gbps", type=float, default=100.0,
                   help="assumed all-reduce bus bandwidth between GPUs for the 8-GPU estimate (GB/s)")
    p.add_argument("--cpu-cores", type=int, default=None, help="CPU cores for CRF jobs (default: this machine's)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    out_dir = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.dry_run:
        device, cfg = torch.device("cpu"), DRY
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    else:
        if not torch.cuda.is_available():
            print("gpu_check: CUDA is not available here; use --dry-run for the CPU check", file=sys.stderr)
            return 2
        device, cfg = torch.device("cuda"), FULL
    report = {"dry_run": args.dry_run, "precision": args.precision, "config": {k: list(v) if isinstance(v, tuple)
              else v for k, v in cfg.items()}, "environment": environment(device), "parts": {}, "errors": {}}
    json_path = out_dir / "gpu_check.json"

    def save():
        report["elapsed_s"] = round(time.perf_counter() - start, 1)
        json_path.write_text(json.dumps(report, indent=1))

    save()
    if not args.skip_tests:
        print("[gpu_check] CUDA tests ...", flush=True)
        limit = args.tests_timeout_s or (900.0 if args.dry_run else 150.0)
        report["tests"] = run_cuda_tests(out_dir, args.dry_run, limit)
        print(f"[gpu_check] tests: {report['tests']['summary']} ({report['tests']['seconds']} s)", flush=True)
        save()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    parts = [("classifier", part_classifier), ("cam", part_cam), ("relation", part_relation),
             ("boundary_walk", part_boundary_and_walk), ("segmenter", part_segmenter), ("predict", part_predict)]
    for name, fn in parts:
        if time.perf_counter() - start > args.budget_s:
            report["errors"][name] = f"skipped: over the {args.budget_s:.0f} s budget"
            continue
        t0 = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            result = fn(cfg, device, args.precision)
        except Exception as err:  # one failing part must not lose the others
            report["errors"][name] = f"{err.__class__.__name__}: {err}"
            print(f"[gpu_check] {name} FAILED: {report['errors'][name]}", flush=True)
            result = None
        if result is not None:
            if device.type == "cuda":
                sync(device)
                result["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
                result["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved(device) / 2 ** 30, 2)
            result["part_s"] = round(time.perf_counter() - t0, 1)
            report["parts"][name] = result
            print(f"[gpu_check] {name}: {json.dumps(result)}", flush=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        save()
    try:
        report["parts"]["cpu"] = part_cpu(cfg)
        print(f"[gpu_check] cpu: {json.dumps(report['parts']['cpu'])}", flush=True)
    except Exception as err:
        report["errors"]["cpu"] = f"{err.__class__.__name__}: {err}"
    seconds = measured_seconds(report["parts"], cfg)
    if seconds is not None:
        cores = args.cpu_cores or os.cpu_count() or 1
        report["estimate_inputs_s"] = seconds
        report["estimate"] = {str(g): estimate(seconds, g, cpu_cores=cores, allreduce_gbps=args.allreduce_gbps)
                              for g in (1, 8)}
        print(f"\n[gpu_check] full VOC IRNet+CONTA run (rounds 0..{VOC_RUN['rounds'] - 1}, "
              f"{VOC_RUN['train_images']} train_aug images); method: bench/gpu_estimate.py"
              + (" -- DRY RUN: tiny sizes, the numbers mean nothing" if args.dry_run else ""))
        for g in ("1", "8"):
            print(f"\n{g} GPU(s):\n{format_estimate(report['estimate'][g])}")
    else:
        print("[gpu_check] no estimate: a part is missing (see errors)", flush=True)
    save()
    failed = report.get("tests", {}).get("returncode", 0) != 0 or bool(report["errors"])
    print(f"\n[gpu_check] wrote {json_path} in {report['elapsed_s']} s"
          + ("; FAILURES: " + json.dumps(report["errors"]) if report["errors"] else "")
          + ("; CUDA tests failed" if report.get("tests", {}).get("returncode", 0) != 0 else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
