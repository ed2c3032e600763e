"""What the artifact checksums cost (issue 10, items 2 and 6).

- Model files and training checkpoints: the payload SHA-256 over ResNet-sized state
  dicts, against torch.save / torch.load of the same payload.
- HDF5 artifacts: a VOC-sized CAM shard (float16 [2, 375, 500] per image) and
  pseudo-mask shard (uint8 [375, 500]): the CRC-32s alone, the store's write (journal +
  HDF5 build) and read with every check, plain h5py reads of the same file without any
  check, and h5py writes/reads with HDF5's fletcher32 filter (per-chunk checksums, the
  alternative considered) against the same writes without it.

Each timing is the best of ``--repeats`` runs (other processes only ever add time).

    python bench/integrity_cost.py [--items 100] [--repeats 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from conta_core.checkpoint import load_model_file, payload_digest, save_model_file
from conta_core.store import MapReader, MapWriter, _crc_item

# Parameter counts (millions): torchvision ResNets, and DeepLab-v2 on ResNet-101.
MODELS = {"resnet18": 11.7, "resnet50": 25.6, "resnet101 / deeplab-v2": 44.5}


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def model_costs(tmp: Path, repeats: int) -> None:
    print("| payload | size | sha256 | torch.save | save_model_file | torch.load | load_model_file |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, millions in MODELS.items():
        for what, copies in (("model file", 1), ("training state (SGD momentum)", 2)):
            n = int(millions * 1e6)
            chunk = 1 << 20
            state = {f"p{i}": torch.randn(min(chunk, n - i * chunk)) for i in range((n + chunk - 1) // chunk)}
            payload = {"model": state, "meta": {"round": 0}}
            if copies == 2:
                payload["optimizer"] = {"state": {i: {"momentum_buffer": v.clone()} for i, v in
                                                  enumerate(state.values())}}
            raw, sealed = tmp / "raw.pt", tmp / "sealed.pt"
            t_hash = best(lambda: payload_digest(payload), repeats)
            t_save = best(lambda: torch.save(payload, raw), repeats)
            t_seal = best(lambda: save_model_file(sealed, payload), repeats)
            t_load = best(lambda: torch.load(raw, weights_only=True), repeats)
            t_verify = best(lambda: load_model_file(sealed), repeats)
            size = sealed.stat().st_size / 2**20
            print(f"| {name}, {what} | {size:.0f} MiB | {t_hash:.2f} s | {t_save:.2f} s | {t_seal:.2f} s "
                  f"| {t_load:.2f} s | {t_verify:.2f} s |")


def write_plain(path: Path, arrays: dict, fletcher: bool) -> None:
    with h5py.File(path, "w") as f:
        items = f.create_group("items")
        for key, a in arrays.items():
            items.create_dataset(key, data=a, chunks=True, compression="gzip", compression_opts=4,
                                 shuffle=True, fletcher32=fletcher)


def read_plain(path: Path) -> None:
    with h5py.File(path, "r") as f:
        for key in f["items"]:
            f["items"][key][()]


def read_store(path: Path) -> None:
    with MapReader(path) as reader:
        for image_id in reader.ids():
            reader.get(image_id)
            reader.item_attrs(image_id)


def write_store(path: Path, arrays: dict) -> None:
    with MapWriter(path, kind="bench", resume=False) as writer:
        for key, a in arrays.items():
            writer.put(key, a, classes=[1, 2])


def hdf5_costs(tmp: Path, items: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    smooth = np.linspace(0, 1, 375 * 500, dtype=np.float32).reshape(375, 500)
    kinds = {
        "cam float16 [2,375,500]": {f"img{i}": np.stack([smooth, smooth[::-1]]).astype(np.float16)
                                    + rng.random((2, 375, 500)).astype(np.float16) * np.float16(0.01)
                                    for i in range(items)},
        "mask uint8 [375,500]": {f"img{i}": (smooth * 20).astype(np.uint8) for i in range(items)},
    }
    print(f"\n{items} items per file.\n")
    print("| artifact | file | CRC-32 of all items | store write | store read + check | h5py read, no check "
          "| h5py write, no check | h5py write, fletcher32 | h5py read, fletcher32 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, arrays in kinds.items():
        store, plain, fl = tmp / "store.h5", tmp / "plain.h5", tmp / "fletcher.h5"
        t_crc = best(lambda: [_crc_item(k, a) for k, a in arrays.items()], repeats)
        t_store_w = best(lambda: write_store(store, arrays), repeats)
        t_store_r = best(lambda: read_store(store), repeats)
        t_plain_r = best(lambda: read_plain(store), repeats)
        t_fl_w = best(lambda: write_plain(fl, arrays, True), repeats)
        t_fl_r = best(lambda: read_plain(fl), repeats)
        t_pl_w = best(lambda: write_plain(plain, arrays, False), repeats)
        size = store.stat().st_size / 2**20
        print(f"| {name} | {size:.1f} MiB | {t_crc:.3f} s | {t_store_w:.2f} s | {t_store_r:.3f} s "
              f"| {t_plain_r:.3f} s | {t_pl_w:.2f} s | {t_fl_w:.2f} s | {t_fl_r:.3f} s |")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-models", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_models:
            model_costs(Path(tmp), args.repeats)
        hdf5_costs(Path(tmp), args.items, args.repeats)
