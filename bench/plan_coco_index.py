"""Time planning at COCO scale (82,783 train + 40,504 val ids, no images).

Why: a workflow that lists images or mask shards while it plans, or that makes
one job per image, stalls at COCO size. Target: < 10 s per plan.

Two measurements:

1. The index itself: write a fake COCO-sized index with the writer
   ``build_index`` uses, then time ``DatasetIndex.load`` + ``ids`` +
   ``mask_shards`` (what a render or evaluation job does when it starts).
2. ``snakemake -n`` with ``presets/coco14_irnet_conta.yaml`` (3 rounds,
   ``dataset.mask_shards`` shards per split) in a fresh working directory, in
   three states: nothing built yet; the index plan present (82,783 + 40,504
   rows); plan, all mask shards and the published index present, so the plan
   starts at training. Each is a separate process, timed end to end.

Run: ``python bench/plan_coco_index.py [--mask-shards 16] [--repeats 3] [--preset coco14_seam_conta.yaml]``.

``--voc`` times a VOC-sized plan instead (10,582 train_aug + 1,464 train + 1,449 val ids
published in results/<run>/dataset; ``--preset`` a voc12 preset, e.g. voc12_seam_conta.yaml):
nothing built, then the index present.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from conta_core.data.coco import shard_file
from conta_core.data.index import DatasetIndex, Item, Scan, finish_index

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "presets" / "coco14_irnet_conta.yaml"
SIZES = {"train": 82_783, "val": 40_504}
VOC_SIZES = {"train_aug": 10_582, "train": 1_464, "val": 1_449}


def run_name(preset: Path) -> str:
    import yaml

    return yaml.safe_load(preset.read_text())["run"]


def fake_voc_scan(root: Path) -> Scan:
    """A VOC-sized voc12 scan (no files behind it: planning reads none)."""
    rng = np.random.default_rng(0)
    classes = ["background"] + [f"class{i}" for i in range(1, 21)]
    scan = Scan("voc12", root, classes, 255, None)
    for split, size in VOC_SIZES.items():
        ids = [f"2008_{split}_{n:06d}" for n in range(size)]
        for image_id, draw in zip(ids, rng.integers(1, 21, (size, 2)).tolist()):
            scan.items[image_id] = Item(str(root / "JPEGImages" / f"{image_id}.jpg"),
                                        str(root / "SegmentationClass" / f"{image_id}.png"), 375, 500,
                                        tuple(sorted(set(draw))))
        scan.splits[split] = ids
    return scan


def fake_scan(root: Path, mask_dir: Path, num_shards: int) -> Scan:
    rng = np.random.default_rng(0)
    classes = ["background"] + [f"class{i}" for i in range(1, 81)]
    scan = Scan("coco14", root, classes, 255, None)
    for split, size in SIZES.items():
        ids = [f"COCO_{split}2014_{n:012d}" for n in range(1, size + 1)]
        draws = rng.integers(1, 81, (size, 3)).tolist()
        for position, image_id in enumerate(ids):
            shard = shard_file(mask_dir, split, position * num_shards // size)
            scan.items[image_id] = Item(str(root / f"{split}2014" / f"{image_id}.jpg"), f"h5:{shard}",
                                        480, 640, tuple(sorted(set(draws[position]))))
        scan.splits[split] = ids
    return scan


def time_index(num_shards: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp) / "index"
        scan = fake_scan(Path("/data/coco"), out_dir, num_shards)
        start = time.perf_counter()
        finish_index(scan, {"train_split": "train", "eval_split": "val"}, out_dir)
        written = time.perf_counter() - start
        start = time.perf_counter()
        index = DatasetIndex.load(out_dir)
        ids = index.ids("train")
        shards = index.mask_shards()
        loaded = time.perf_counter() - start
    assert len(ids) == SIZES["train"] and sum(map(len, shards.values())) == sum(SIZES.values())
    print(f"index: write {sum(SIZES.values())} rows {written:.2f} s; load + ids + "
          f"{len(shards)} mask shards {loaded:.2f} s")


def snakemake_plan(work: Path, root: Path, mask_shards: int, preset: Path = PRESET,
                   dataset: str | None = None) -> tuple[float, dict[str, int]]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(work), "--configfile", str(preset), "--cores", "2", "-n", "--quiet", "rules",
           "--config", dataset or f"dataset={{root: {root}, mask_shards: {mask_shards}}}"]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"snakemake -n failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    jobs = {m.group(1): int(m.group(2))
            for m in re.finditer(r"^(\w+)\s+(\d+)$", result.stdout + result.stderr, re.M)}
    return elapsed, jobs


def report(preset: Path, what: str, states: list) -> None:
    print(f"snakemake -n, presets/{preset.name}, {what} [target < 10 s]:")
    for state, fastest, slowest, jobs in states:
        picked = {k: jobs[k] for k in ("dataset_index", "render_coco_masks", "dataset_ready", "train_classifier",
                                       "aff_label", "train_affinity", "train_relation", "total") if k in jobs}
        verdict = "ok" if slowest < 10 else "TOO SLOW"
        print(f"  {state:32s} {fastest:5.2f} .. {slowest:5.2f} s  {verdict}  jobs {picked}")


def time_voc(preset: Path, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        devkit, sbd = tmp / "VOCdevkit", tmp / "benchmark_RELEASE"
        voc = devkit / "VOC2012"
        for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "Annotations"):
            (voc / sub).mkdir(parents=True)
        (sbd / "dataset" / "cls").mkdir(parents=True)
        work = tmp / "work"
        dataset_arg = f"dataset={{root: {devkit}, sbd_root: {sbd}}}"
        states = []

        def measure(state: str) -> None:
            runs = [snakemake_plan(work, devkit, 0, preset, dataset_arg) for _ in range(repeats)]
            states.append((state, min(t for t, _ in runs), max(t for t, _ in runs), runs[-1][1]))

        measure("nothing built")
        dataset = work / "results" / run_name(preset) / "dataset"
        finish_index(fake_voc_scan(voc), {"train_split": "train_aug", "eval_split": "val"}, dataset)
        (dataset / "sbd_masks.h5").touch()
        measure("index present")
    report(preset, f"VOC-sized index ({sum(VOC_SIZES.values())} ids)", states)


def time_snakemake(mask_shards: int, repeats: int, preset: Path = PRESET) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = tmp / "coco"
        (root / "annotations").mkdir(parents=True)
        for name in ("instances_train2014.json", "instances_val2014.json"):
            (root / "annotations" / name).write_text(json.dumps({"images": [], "annotations": [],
                                                                  "categories": []}))
        work = tmp / "work"
        dataset = work / "results" / run_name(preset) / "dataset"
        states = []

        def measure(state: str) -> None:
            times, jobs = [], {}
            for _ in range(repeats):
                elapsed, jobs = snakemake_plan(work, root, mask_shards, preset)
                times.append(elapsed)
            states.append((state, min(times), max(times), jobs))

        measure("nothing built")
        start = time.perf_counter()
        finish_index(fake_scan(root, dataset, mask_shards), {"train_split": "train"}, dataset / "plan")
        print(f"(wrote the {sum(SIZES.values())}-row plan in {time.perf_counter() - start:.1f} s)")
        measure("index plan present")
        for split in SIZES:
            for shard in range(mask_shards):
                path = shard_file(dataset, split, shard)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
        for name in ("index.csv", "classes.json", "report.md"):
            shutil.copy(dataset / "plan" / name, dataset / name)
        measure("plan + shards + index present")

    report(preset, f"COCO-sized index, mask_shards {mask_shards}, {repeats} run(s) each", states)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mask-shards", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--preset", default=PRESET.name, help="a preset file name under presets/")
    parser.add_argument("--voc", action="store_true", help="a VOC-sized index (a voc12 preset)")
    args = parser.parse_args()
    preset = REPO / "presets" / args.preset
    if args.voc:
        time_voc(preset, args.repeats)
        return
    time_index(args.mask_shards)
    time_snakemake(args.mask_shards, args.repeats, preset)


if __name__ == "__main__":
    main()
