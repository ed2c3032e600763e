"""Benchmark: peak memory of prediction and of the dense CRF on one large photo, before and after
their maximum side (conta_core.segment.PREDICT_MAX_SIDE, conta_core.crf.CRF_MAX_SIDE).

    python bench/predict_memory.py                  # 4000x3000, every case
    python bench/predict_memory.py --json out.json
    python bench/predict_memory.py --crf21-before   # also the unbounded 21-label CRF (~23 GB)

Each case runs in a fresh Python process and reports that process's peak resident set
(``ru_maxrss`` from ``os.wait4``: interpreter, libraries, image, activations, outputs):

- ``predict``: what the predict step does for one image - ``read_rgb`` of a 4000x3000 JPEG
  (smooth random colours), DeepLab-v2 with the demo config's ``segment`` settings
  (ResNet-18, output stride 8, ASPP; random initialisation, which changes no tensor size)
  and VOC's 21 classes, ``predict_masks`` on the CPU, the mask written with ``MapWriter``;
  ``max_side`` None (before) and 1024 (after); without and with the dense CRF.
- ``crf``: ``dense_crf`` alone on the same image with 3 labels (an expansion step: background
  and the image's classes) and 21 labels (a prediction), max_side None (before) and 1024.
  The unbounded 21-label case needs ~23 GB by the fit below and is skipped unless asked for.
- the CRF's memory model: ``dense_crf`` at 500x375 and 1000x750 with 3 and 21 labels, and
  a least-squares fit of ``peak - base = N * (a + b * L)`` (N pixels, L labels).
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_image(path: Path, width: int, height: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 255, (height // 100 + 1, width // 100 + 1, 3), dtype=np.uint8)
    Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR).save(path, quality=90)


def child_predict(image_path: Path, out: Path, max_side: int | None, crf: bool, threads: int) -> dict:
    import torch
    import yaml

    from conta_core.data.images import read_rgb
    from conta_core.segment import build_segmenter, predict_masks
    from conta_core.store import MapWriter

    torch.set_num_threads(threads)
    settings = yaml.safe_load((REPO / "config.yaml").read_text())["segment"]
    model = build_segmenter(settings, 21, load_weights=False).eval()
    image = read_rgb(image_path)
    start = time.perf_counter()
    mask = predict_masks(model, [image], torch.device("cpu"), crf, max_side)[0]
    with MapWriter(out, kind="seg_pred") as writer:
        writer.put("big", mask)
    return {"seconds": time.perf_counter() - start, "mask": list(mask.shape)}


def child_crf(image_path: Path | None, size: tuple[int, int] | None, labels: int,
              max_side: int | None) -> dict:
    import warnings

    from conta_core.crf import dense_crf
    from conta_core.data.images import read_rgb

    if image_path is not None:
        image = read_rgb(image_path)
    else:
        image = np.random.default_rng(1).integers(0, 255, (*size, 3), dtype=np.uint8)
    height, width = image.shape[:2]
    probs = np.random.default_rng(0).random((labels, height, width), dtype=np.float32)
    probs /= probs.sum(axis=0, keepdims=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = dense_crf(image, probs, max_side=max_side)
    return {"seconds": time.perf_counter() - start, "out": list(q.shape), "base_gb": base}


def run_child(*args: str) -> dict:
    process = subprocess.Popen([sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, cwd=REPO)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"child {args} failed with status {os.waitstatus_to_exitcode(status)}")
    result = json.loads(output)
    result["peak_rss_gb"] = usage.ru_maxrss * 1024 / 1e9  # KiB on Linux
    return result


def fit_crf(rows: list[dict]) -> tuple[float, float]:
    """Least squares of (peak - base) = N * a + N * L * b over the model rows: (a, b) in bytes."""
    design = np.array([[r["pixels"], r["pixels"] * r["labels"]] for r in rows], dtype=np.float64)
    target = np.array([(r["peak_rss_gb"] - r["base_gb"]) * 1e9 for r in rows])
    (a, b), *_ = np.linalg.lstsq(design, target, rcond=None)
    return float(a), float(b)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=4000)
    p.add_argument("--height", type=int, default=3000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--crf21-before", action="store_true", help="also the unbounded 21-label CRF")
    p.add_argument("--json", type=Path)
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        what, *rest = args.child
        side = lambda v: None if v == "none" else int(v)  # noqa: E731
        if what == "predict":
            result = child_predict(Path(rest[0]), Path(rest[1]), side(rest[2]), rest[3] == "crf", int(rest[4]))
        else:
            path = None if rest[0] == "none" else Path(rest[0])
            size = None if path else (int(rest[1]), int(rest[2]))
            result = child_crf(path, size, int(rest[3]), side(rest[4]))
        print(json.dumps(result))
        return

    print(f"load average {os.getloadavg()[0]:.2f}; {args.width}x{args.height}; {args.threads} threads")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "big.jpg"
        make_image(image, args.width, args.height)
        model_rows = []
        for (h, w) in ((375, 500), (750, 1000)):
            for labels in (3, 21):
                r = run_child("crf", "none", str(h), str(w), str(labels), "none")
                r.update(case="crf model", pixels=h * w, labels=labels, size=f"{w}x{h}")
                model_rows.append(r)
                print(f"crf model {w}x{h} L={labels}: peak {r['peak_rss_gb']:.2f} GB (base {r['base_gb']:.2f}),"
                      f" {r['seconds']:.1f} s", flush=True)
        a, b = fit_crf(model_rows)
        estimate = lambda n, L: (a + b * L) * n / 1e9  # noqa: E731
        print(f"crf memory fit: N * ({a:.0f} + {b:.1f} L) bytes; at {args.width}x{args.height}: "
              f"{estimate(args.width * args.height, 3):.1f} GB (3 labels), "
              f"{estimate(args.width * args.height, 21):.1f} GB (21 labels) above the base", flush=True)
        cases = [("predict", "none", "nocrf"), ("predict", "1024", "nocrf"), ("predict", "1024", "crf"),
                 ("crf", "none", 3), ("crf", "1024", 3), ("crf", "1024", 21)]
        if args.crf21_before:
            cases += [("predict", "none", "crf"), ("crf", "none", 21)]
        for what, side, extra in cases:
            if what == "predict":
                r = run_child("predict", str(image), str(Path(tmp) / f"p{side}{extra}.h5"), side, extra,
                              str(args.threads))
                label = f"predict max_side {side:>4} {'+ CRF' if extra == 'crf' else '     '}"
            else:
                r = run_child("crf", str(image), "0", "0", str(extra), side)
                label = f"dense_crf {extra:2d} labels, max_side {side:>4}"
            r.update(case=label)
            rows.append(r)
            print(f"{label}: peak RSS {r['peak_rss_gb']:.2f} GB, {r['seconds']:.1f} s", flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"model": model_rows, "fit_bytes": [a, b], "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
