"""Time the planning path on a COCO-sized index (82,783 train ids, no images).

Why: the workflow loads the dataset index to list ids and mask shards when it
plans jobs, so that path must stay fast at COCO scale (target < 10 s).
Writes a fake index (the same writer ``build_index`` uses) into a temp dir,
then times ``DatasetIndex.load`` + ``ids`` + ``mask_shards`` + per-shard id
lists. Run: ``python bench/plan_coco_index.py [--shards 8]``.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from conta_core.data.coco import shard_file
from conta_core.data.index import DatasetIndex, Item, Scan, finish_index

NUM_TRAIN = 82_783


def fake_scan(out_dir: Path, num_shards: int) -> Scan:
    rng = np.random.default_rng(0)
    classes = ["background"] + [f"class{i}" for i in range(1, 81)]
    scan = Scan("coco14", Path("/data/coco"), classes, 255, None)
    ids = [f"COCO_train2014_{n:012d}" for n in range(1, NUM_TRAIN + 1)]
    draws = rng.integers(1, 81, (NUM_TRAIN, 3)).tolist()
    for position, image_id in enumerate(ids):
        labels = tuple(sorted(set(draws[position])))
        shard = shard_file(out_dir, "train", position * num_shards // len(ids))
        scan.items[image_id] = Item(f"/data/coco/train2014/{image_id}.jpg", f"h5:{shard}",
                                    480, 640, labels)
    scan.splits["train"] = ids
    return scan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp) / "index"
        scan = fake_scan(out_dir, args.shards)
        start = time.perf_counter()
        finish_index(scan, {"train_split": "train"}, out_dir)
        written = time.perf_counter() - start

        start = time.perf_counter()
        index = DatasetIndex.load(out_dir)
        ids = index.ids("train")
        shards = index.mask_shards()
        sizes = {Path(path).name: len(shard_ids) for path, shard_ids in shards.items()}
        planned = time.perf_counter() - start
    assert len(ids) == NUM_TRAIN and sum(sizes.values()) == NUM_TRAIN
    print(f"write index ({NUM_TRAIN} ids): {written:.2f} s")
    print(f"plan (load + ids + {len(shards)} mask shards): {planned:.2f} s  "
          f"[target < 10 s: {'ok' if planned < 10 else 'TOO SLOW'}]")
    print("shard sizes:", sizes)


if __name__ == "__main__":
    main()
