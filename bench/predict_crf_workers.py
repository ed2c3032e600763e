"""Benchmark: the predict step with dense CRFs (segment.crf: true) at 1 vs N threads on this CPU.

    flock /tmp/cpu_heavy.lock python bench/predict_crf_workers.py            # 20 images, threads 1 and 2
    python bench/predict_crf_workers.py --images 8 --threads 1 2 --repeats 1 --out /tmp/x.md

What the predict job does (workflow_scripts/predict.py), in a fresh process per setting:
``set_threads(threads)`` as ``_common.setup`` (torch keeps that many threads), then
``predict_split(..., workers=threads)`` - the CRFs in ``threads`` spawned worker processes
when threads > 1 - over generated VOC-size images (375x500, smooth random colours; the
lattice of pure noise is a worst case), DeepLab-v2 with the demo config's ``segment``
settings (ResNet-18, output stride 8, random init with a trained-looking ASPP head) and
VOC's 21 classes, ``predict_batch_size`` 16 (config.yaml), masks written with
``MapWriter``. Timed: the whole ``predict_split`` call, worker start-up included. Also
timed: the same without the CRF (the network and writing alone), and the control for
each N > 1: N torch threads with the CRFs serial in the job's process (``workers=1``,
what the job did before the pool), so the pool's gain is told apart from torch's
threads. And one 21-label ``dense_crf`` alone, on a bench image with the network's
softmax, on bench/gpu_check.py's CRF case (16-px colour blocks plus noise, uniform random
probabilities; its 2.01 s fallback is this machine's) and on pixel noise with uniform
random probabilities. Settings run interleaved
(repeat by repeat); the load average (``uptime``) is recorded before and after.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_images(count: int, height: int, width: int) -> dict[str, np.ndarray]:
    from PIL import Image

    rng = np.random.default_rng(0)
    images = {}
    for k in range(count):
        coarse = rng.integers(0, 255, (height // 60 + 1, width // 60 + 1, 3), dtype=np.uint8)
        images[f"im{k:03d}"] = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR))
    return images


class MemoryIndex:
    def __init__(self, images):
        self.images = images

    def size(self, image_id):
        return self.images[image_id].shape[:2]

    def read_image(self, image_id):
        return self.images[image_id]


def child(threads: int, crf: bool, count: int, workers: int) -> dict:
    import torch
    import yaml

    from conta_core.devices import set_threads
    from conta_core.segment import build_segmenter, predict_split
    from conta_core.store import MapReader, MapWriter

    set_threads(threads)
    settings = yaml.safe_load((REPO / "config.yaml").read_text())["segment"]
    torch.manual_seed(0)
    model = build_segmenter(settings, 21, load_weights=False).eval()
    with torch.no_grad():  # ASPP's 0.01-std init gives near-uniform maps; a trained head is peakier
        for branch in model.aspp.branches:
            branch.weight.normal_(0, 0.05)
    images = make_images(count, 375, 500)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "shard0.h5"
        start = time.perf_counter()
        with MapWriter(out, kind="seg_pred") as writer:
            predict_split(model, MemoryIndex(images), list(images), torch.device("cpu"), crf, writer,
                          settings["predict_batch_size"], workers=workers)
        seconds = time.perf_counter() - start
        with MapReader(out, kind="seg_pred") as reader:
            masks = [reader.get(i) for i in sorted(images)]
    digests = [hashlib.sha256(m.tobytes()).hexdigest()[:12] for m in masks]
    labels = len(np.unique(np.concatenate([m.ravel() for m in masks])))
    return {"threads": threads, "workers": workers, "crf": crf, "images": count, "seconds": seconds,
            "digests": digests, "labels": labels}


def child_crf_alone() -> dict:
    """Seconds of one 21-label dense CRF: a bench image with a softmax of the bench's network,
    gpu_check's case, and pixel noise (both with uniform random probabilities)."""
    import torch

    from conta_core.crf import dense_crf
    from conta_core.data.datasets import to_tensor
    from conta_core.segment import build_segmenter

    import yaml

    torch.set_num_threads(1)
    settings = yaml.safe_load((REPO / "config.yaml").read_text())["segment"]
    torch.manual_seed(0)
    model = build_segmenter(settings, 21, load_weights=False).eval()
    with torch.no_grad():
        for branch in model.aspp.branches:
            branch.weight.normal_(0, 0.05)
        image = make_images(1, 375, 500)["im000"]
        smooth = torch.softmax(model.predict(to_tensor(image)[None]), dim=1)[0].numpy()
    sys.path.insert(0, str(REPO / "bench"))
    from gpu_check import images_uint8

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
    uniform = rng.random((21, 375, 500)).astype(np.float32)
    uniform /= uniform.sum(0)
    cases = {"bench": (image, smooth), "gpu_check": (images_uint8(1, (375, 500))[0], uniform),
             "noise": (noise, uniform)}
    out = {}
    for name, (img, probs) in cases.items():
        times = []
        for _ in range(3):
            start = time.perf_counter()
            dense_crf(img, probs)
            times.append(time.perf_counter() - start)
        out[name] = float(np.median(times))
    return out


def run_child_crf() -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", "crf"], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"CRF child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run_child(*child: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *map(str, child)],
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"child {child} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "predict_crf_workers.md")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child == ["crf"]:
        print(json.dumps(child_crf_alone()))
        return
    if args.child:
        threads, crf, count, workers = map(int, args.child)
        print(json.dumps(child(threads, bool(crf), count, workers)))
        return
    before = uptime()
    settings = [(True, t, t) for t in args.threads] + [(True, t, 1) for t in args.threads if t > 1]
    settings += [(False, t, 1) for t in args.threads]
    rows = []
    for repeat in range(args.repeats):
        for crf, threads, workers in settings:
            row = run_child(threads, int(crf), args.images, workers)
            row["repeat"] = repeat
            rows.append(row)
            print(f"repeat {repeat} crf {crf} threads {threads} workers {workers}: {row['seconds']:.1f} s",
                  flush=True)
    crf_alone = run_child_crf()
    after = uptime()
    lines = [f"# predict with dense CRFs: 1 vs N threads ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
             "",
             f"`python bench/predict_crf_workers.py --images {args.images} --threads "
             f"{' '.join(map(str, args.threads))} --repeats {args.repeats}` (method: the script's docstring);",
             f"{args.images} generated 375x500 images, demo DeepLab (ResNet-18, OS 8), 21 labels, "
             "predict_batch_size 16, CPU only.",
             "",
             f"- load before: `{before}`",
             f"- load after: `{after}`",
             "",
             "| crf | threads (torch) | CRF workers | seconds per repeat | s/image (mean) |",
             "|---|---|---|---|---|"]

    def seconds(crf, threads, workers):
        return {r["repeat"]: r for r in rows if (r["crf"], r["threads"], r["workers"]) == (crf, threads, workers)}

    for crf, threads, workers in settings:
        secs = [r["seconds"] for r in seconds(crf, threads, workers).values()]
        pool = f"{workers} (pool)" if crf and workers > 1 else ("1 (serial)" if crf else "-")
        lines.append(f"| {str(crf).lower()} | {threads} | {pool} | {', '.join(f'{s:.1f}' for s in secs)} | "
                     f"{np.mean(secs) / args.images:.2f} |")
    lines.append("")
    first = args.threads[0]
    for threads in args.threads[1:]:
        for label, ref in ((f"threads {first}", seconds(True, first, first)),
                           (f"threads {threads} with serial CRFs", seconds(True, threads, 1))):
            runs = seconds(True, threads, threads)
            ratios = [ref[k]["seconds"] / runs[k]["seconds"] for k in sorted(runs)]
            same = all(runs[k]["digests"] == ref[k]["digests"] for k in runs)
            lines.append(f"- crf true, {label} / threads {threads} with {threads} CRF workers: "
                         f"{', '.join(f'{x:.2f}x' for x in ratios)} (paired by repeat); masks "
                         f"{'identical' if same else 'NOT identical'}")
    lines.append(f"- one 21-label dense CRF alone (median of 3, one core): {crf_alone['bench']:.2f} s on a "
                 f"bench image with the network's softmax; with uniform random probabilities "
                 f"{crf_alone['gpu_check']:.2f} s on bench/gpu_check.py's image (16-px colour blocks plus "
                 f"noise; its fallback crf21_s is 2.01 s) and {crf_alone['noise']:.2f} s on pixel noise")
    labels = sorted({r["labels"] for r in rows if r["crf"]})
    lines.append(f"- labels present in the CRF masks: {labels}")
    lines.append("- torch runs with the job's thread count in each setting (as in a predict job), so on a "
                 "CPU the network's float sums may differ between thread counts; the CRF worker count "
                 "alone never changes a mask (tests/test_predict_workers.py)")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
