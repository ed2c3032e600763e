"""Benchmark: sparse IRNet random walk vs the dense (N x N) reference, at VOC size.

    python bench/random_walk.py                      # 125 x 94 stride-4 map, 21 classes, r 5, t 256
    python bench/random_walk.py --height 60 --width 45   # quicker
    python bench/random_walk.py --methods sparse     # skip the (slow) dense reference

Each method runs in its own fresh Python process on identical synthetic inputs
(seeded ellipse-outline boundary map and Gaussian-blob CAMs), after a small
warm-up run of the same code. Reported per method:

* time: wall-clock seconds of the whole walk (affinity construction, transition
  matrix, the 2^exp_times steps or the exp_times squarings, the final product),
  measured with ``time.perf_counter``; labelling is shared and not timed. The
  sparse walk runs on ``--sparse-threads`` CPU threads (default 1, as
  ``random_walk``'s default), the dense reference on torch's default threads
  (all cores for MKL's GEMM), so the speed-up is if anything understated.
* peak memory: the process's resident-set high-water mark (``VmHWM`` from
  ``/proc/self/status``) during the walk. Just before the walk the mark is reset
  to the current RSS by writing ``5`` to ``/proc/self/clear_refs`` (Linux), so
  the peak counts only what is resident while the walk runs; "extra" is that peak
  minus the RSS just before the walk (interpreter, torch, inputs), i.e. the
  memory the algorithm itself needed. RSS counts every allocation (torch's
  CPU allocator, numpy, MKL buffers), which tracemalloc would miss. Where
  clear_refs is unavailable the fallback is ``ru_maxrss`` of the fresh process,
  which then also counts the import and warm-up (reported as such).

The parent then checks that both give identical labels at full resolution (IRNet's
labelling: x4 bilinear upsampling, global-max normalisation, 0.25 background).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    rss, hwm = _status_kb("VmRSS"), _status_kb("VmHWM")
    return rss is not None and hwm is not None and hwm <= rss + 1024


def make_inputs(height: int, width: int, classes: int, seed: int):
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    boundary = np.zeros((height, width))
    for _ in range(max(3, classes // 2)):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.1, 0.35) * height, rng.uniform(0.1, 0.35) * width
        d = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
        boundary = np.maximum(boundary, np.exp(-((d - 1.0) * min(ry, rx) / 1.5) ** 2))
    boundary = np.clip(boundary + 0.05 * rng.random((height, width)), 0, 1)
    cams = np.empty((classes, height, width))
    for k in range(classes):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        sy, sx = rng.uniform(0.05, 0.25) * height, rng.uniform(0.05, 0.25) * width
        cams[k] = np.exp(-0.5 * (((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2))
    cams /= cams.reshape(classes, -1).max(1)[:, None, None]
    return torch.from_numpy(cams).float(), torch.from_numpy(boundary).float()


def child(args) -> None:
    import gc

    import numpy as np
    import torch

    from conta_core.expand.dense_reference import dense_random_walk
    from conta_core.expand.random_walk import random_walk, walk_to_labels

    if args.threads:
        torch.set_num_threads(args.threads)
    method = {"sparse": random_walk, "dense": dense_random_walk}[args.child]
    kwargs = dict(beta=args.beta, exp_times=args.exp_times, radius=args.radius)
    if args.child == "sparse":
        kwargs["cpu_threads"] = args.sparse_threads or None
    threads = (args.sparse_threads or torch.get_num_threads()) if args.child == "sparse" else torch.get_num_threads()
    warm_cams, warm_boundary = make_inputs(12, 10, 2, args.seed + 1)
    method(warm_cams, warm_boundary, **kwargs)  # warm-up: thread pools, MKL, lazy imports
    cams, boundary = make_inputs(args.height, args.width, args.classes, args.seed)
    gc.collect()
    rss_before = _status_kb("VmRSS")
    reset = _reset_peak()
    start = time.perf_counter()
    scores = method(cams, boundary, **kwargs)
    elapsed = time.perf_counter() - start
    if reset:
        peak_kb, how = _status_kb("VmHWM"), "VmHWM after clear_refs reset"
    else:
        peak_kb, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss (whole process)"
    size = (args.height * 4, args.width * 4)
    labels = walk_to_labels(scores, list(range(1, args.classes + 1)), size, bg_threshold=0.25)
    np.savez(args.out, scores=scores.numpy(), labels=labels)
    print(json.dumps({"method": args.child, "seconds": elapsed, "rss_before_mb": rss_before / 1024,
                      "peak_mb": peak_kb / 1024, "extra_mb": (peak_kb - rss_before) / 1024, "peak_how": how,
                      "threads": threads, "n": args.height * args.width}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=125, help="stride-4 map height (VOC 500 px -> 125)")
    parser.add_argument("--width", type=int, default=94, help="stride-4 map width (VOC 375 px -> 94)")
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--radius", type=int, default=5)
    parser.add_argument("--beta", type=float, default=10.0)
    parser.add_argument("--exp-times", type=int, default=8, help="t = 2 ** exp_times steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--sparse-threads", type=int, default=1,
                        help="cpu_threads of the sparse walk (random_walk's default 1; 0: torch's setting)")
    parser.add_argument("--methods", nargs="+", default=["sparse", "dense"], choices=["sparse", "dense"])
    parser.add_argument("--child", choices=["sparse", "dense"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    import numpy as np

    n = args.height * args.width
    print(f"random walk: {args.height} x {args.width} (N = {n}), {args.classes} classes, radius {args.radius}, "
          f"beta {args.beta:g}, t = 2^{args.exp_times} = {2 ** args.exp_times}; one fresh process per method",
          flush=True)
    results, outputs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            out = os.path.join(tmp, f"{method}.npz")
            cmd = [sys.executable, __file__, "--child", method, "--out", out]
            for key in ("height", "width", "classes", "radius", "beta", "exp_times", "seed", "threads",
                        "sparse_threads"):
                cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                sys.exit(f"{method} failed:\n{proc.stderr}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            results[method] = res
            with np.load(out) as data:
                outputs[method] = {k: data[k] for k in data.files}
            print(f"{method:>6}: {res['seconds']:9.2f} s   peak RSS {res['peak_mb']:8.1f} MB   "
                  f"extra over the {res['rss_before_mb']:.0f} MB before the walk {res['extra_mb']:8.1f} MB   "
                  f"({res['threads']} threads; {res['peak_how']})", flush=True)
    if {"sparse", "dense"} <= set(results):
        s, d = results["sparse"], results["dense"]
        print(f"speed-up dense/sparse: {d['seconds'] / s['seconds']:.1f}x   "
              f"peak RSS sparse/dense: 1/{d['peak_mb'] / s['peak_mb']:.1f}   "
              f"extra memory sparse/dense: 1/{d['extra_mb'] / max(s['extra_mb'], 1e-3):.1f}")
        ss, ds = outputs["sparse"]["scores"], outputs["dense"]["scores"]
        diff = np.abs(ss / ss.max() - ds / ds.max()).max()
        mismatch = int((outputs["sparse"]["labels"] != outputs["dense"]["labels"]).sum())
        total = outputs["sparse"]["labels"].size
        print(f"max |normalised score difference| {diff:.2e}; labels identical: {mismatch == 0} "
              f"({mismatch} of {total} pixels differ)")
        ok = mismatch == 0
        print("targets (>= 50x faster, <= 1/20 extra memory): "
              f"{'met' if d['seconds'] / s['seconds'] >= 50 and d['extra_mb'] >= 20 * s['extra_mb'] else 'NOT met'}")
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
