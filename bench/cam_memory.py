"""Benchmark: peak memory of the CAM step on one large photo, without and with dataset.max_side.

    python bench/cam_memory.py                       # 4000x3000, max_side off vs 1024
    python bench/cam_memory.py --max-side 1024 1536  # several limits
    python bench/cam_memory.py --json out.json

What runs: a VOC-layout dataset of one 4000x3000 JPEG (smooth random colours)
and its mask is indexed once per setting (``max_side`` null, then each given
value); then, per setting, a fresh Python process does what the CAM rule does
for its shard - load the index, group same-size images, ``read_image``,
``infer_cams`` with the demo config's classifier and ``cam`` settings
(config.yaml: ResNet-18, scales [1.0, 0.5, 1.5], flip) on the CPU, and write
the float16 CAMs with ``MapWriter`` - except loading a trained checkpoint: the
classifier keeps its random initialisation, which changes no tensor size.

Reported per setting: the image size the step worked at, wall time, and the
process's peak resident set (``ru_maxrss`` of that child from ``os.wait4``,
the whole process: interpreter, torch, the image, activations, the CAMs).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def make_dataset(root: Path, width: int, height: int) -> None:
    from PIL import Image

    from conta_core.data.palette import save_index_png

    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 255, (height // 100 + 1, width // 100 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4:3 * height // 4, width // 4:3 * width // 4] = 1
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    image.save(root / "JPEGImages/big.jpg", quality=90)
    save_index_png(root / "SegmentationClass/big.png", mask)
    (root / "ImageSets/Segmentation/train.txt").write_text("big\n")


def index_dataset(root: Path, out: Path, max_side: int | None) -> None:
    import warnings

    from conta_core.data.index import build_index

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_index({"kind": "voc_layout", "root": str(root), "classes": ["background", "thing"],
                     "splits": {"train": "train.txt"}, "train_split": "train", "max_side": max_side},
                    out)
    for warning in caught:
        print(f"  index warning: {warning.message}", file=sys.stderr)


def child(index_dir: Path, out: Path, threads: int) -> dict:
    """The CAM rule's work for one shard, as workflow_scripts/cam.py does it."""
    import torch
    import yaml

    from conta_core.cam import infer_cams
    from conta_core.cam_labels import same_size_batches
    from conta_core.classify import build_classifier
    from conta_core.data.index import DatasetIndex
    from conta_core.store import MapWriter

    torch.set_num_threads(threads)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    index = DatasetIndex.load(index_dir)
    model = build_classifier(config["classifier"], index.num_classes, config["conta"], 0, None,
                             load_weights=False).eval()
    ids = index.ids("train")
    start = time.perf_counter()
    with MapWriter(out, kind="cam", attrs={"step": "cam"}) as writer, torch.no_grad():
        for batch in same_size_batches(ids, index.size, config["cam"]["batch_size"]):
            images = np.stack([index.read_image(i) for i in batch])
            classes = [index.labels(i) for i in batch]
            cams = infer_cams(model, images, classes, config["cam"]["scales"], config["cam"]["flip"],
                              torch.device("cpu"))
            for image_id, image_classes, cam in zip(batch, classes, cams):
                writer.put(image_id, cam.astype(np.float16), classes=image_classes)
    return {"seconds": time.perf_counter() - start, "size": list(index.size(ids[0])),
            "original": list(index.original_size(ids[0])), "scales": config["cam"]["scales"]}


def measure(index_dir: Path, out: Path, threads: int) -> dict:
    """Run :func:`child` in a fresh interpreter; its own peak RSS from wait4."""
    process = subprocess.Popen([sys.executable, __file__, "--child", str(index_dir), "--out", str(out),
                                "--threads", str(threads)], stdout=subprocess.PIPE, cwd=REPO)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"CAM child failed with status {process.returncode}")
    result = json.loads(output)
    result["peak_rss_gb"] = usage.ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=4000)
    p.add_argument("--height", type=int, default=3000)
    p.add_argument("--max-side", type=int, nargs="+", default=[1024])
    p.add_argument("--skip-off", action="store_true", help="measure only the max_side settings")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.out, args.threads)))
        return

    settings = ([] if args.skip_off else [None]) + args.max_side
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_dataset(tmp / "data", args.width, args.height)
        for max_side in settings:
            name = f"max_side_{max_side}"
            index_dataset(tmp / "data", tmp / name, max_side)
            result = measure(tmp / name, tmp / f"{name}.h5", args.threads)
            result["max_side"] = max_side
            rows.append(result)
            print(f"max_side {str(max_side):>5}: worked at {result['size'][1]}x{result['size'][0]}, "
                  f"{result['seconds']:.1f} s, peak RSS {result['peak_rss_gb']:.2f} GB", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
