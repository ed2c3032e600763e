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
timed: the same without the CRF (the network and writing alone). Settings run
interleaved (1, 2, 1, 2, ...); the load average (``uptime``) is recorded before and after.
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


def child(threads: int, crf: bool, count: int) -> dict:
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
                          settings["predict_batch_size"], workers=threads)
        seconds = time.perf_counter() - start
        with MapReader(out, kind="seg_pred") as reader:
            masks = [reader.get(i) for i in sorted(images)]
    digests = [hashlib.sha256(m.tobytes()).hexdigest()[:12] for m in masks]
    labels = len(np.unique(np.concatenate([m.ravel() for m in masks])))
    return {"threads": threads, "crf": crf, "images": count, "seconds": seconds, "digests": digests,
            "labels": labels}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run_child(threads: int, crf: bool, count: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", str(threads), str(int(crf)), str(count)],
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"child threads={threads} crf={crf} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "predict_crf_workers.md")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        threads, crf, count = map(int, args.child)
        print(json.dumps(child(threads, bool(crf), count)))
        return
    before = uptime()
    rows = []
    for repeat in range(args.repeats):
        for crf in (True, False):
            for threads in args.threads:
                row = run_child(threads, crf, args.images)
                row["repeat"] = repeat
                rows.append(row)
                print(f"repeat {repeat} crf {crf} threads {threads}: {row['seconds']:.1f} s", flush=True)
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
             "| crf | threads | seconds per repeat | s/image (mean) |",
             "|---|---|---|---|"]
    for crf in (True, False):
        for threads in args.threads:
            secs = [r["seconds"] for r in rows if r["crf"] == crf and r["threads"] == threads]
            lines.append(f"| {str(crf).lower()} | {threads} | {', '.join(f'{s:.1f}' for s in secs)} | "
                         f"{np.mean(secs) / args.images:.2f} |")
    base = {r["repeat"]: r for r in rows if r["crf"] and r["threads"] == args.threads[0]}
    lines.append("")
    for threads in args.threads[1:]:
        pairs = [(base[r["repeat"]]["seconds"], r["seconds"]) for r in rows
                 if r["crf"] and r["threads"] == threads]
        ratios = [a / b for a, b in pairs]
        same = all(r["digests"] == base[r["repeat"]]["digests"] for r in rows if r["crf"] and r["threads"] == threads)
        lines.append(f"- crf true, threads {args.threads[0]} / threads {threads}: speed-up "
                     f"{', '.join(f'{x:.2f}x' for x in ratios)} (paired by repeat); masks "
                     f"{'identical' if same else 'NOT identical'} to threads {args.threads[0]}'s")
    labels = sorted({r["labels"] for r in rows if r["crf"]})
    lines.append(f"- labels present in the CRF masks: {labels}")
    lines.append("- torch runs with the job's thread count in each setting (as in a predict job), so on a "
                 "CPU the network's float sums may differ between thread counts; the CRF worker count "
                 "alone never changes a mask (tests/test_predict_workers.py)")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
