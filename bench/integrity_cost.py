"""What the artifact checksums cost (issue 10, items 2 and 6).

- Model files and training checkpoints: the payload SHA-256 over ResNet-sized state
  dicts, against torch.save / torch.load of the same payload.
- HDF5 artifacts in the store's format (conta-maps/2: LZ4 items, CAMs quantised to uint8,
  a CRC'd JSON index; :mod:`conta_core.store`): a VOC-sized CAM shard (float32 maps in
  [0, 1], [2, 375, 500] per image, written at 255 levels as workflow_scripts/cam.py does)
  and a pseudo-mask shard (uint8 [375, 500]): the CRC-32s of the stored bytes alone, the
  store's write (journal + HDF5 build), its read with every check, the same reads (one
  ``pread`` and one decode per item, from the index) without any check, and
  ``check_layout`` (what ``python -m conta_core.verify`` adds).

Each timing is the best of ``--repeats`` runs (other processes only ever add time).

    python bench/integrity_cost.py [--items 100] [--repeats 3] [--skip-models]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import zlib
from pathlib import Path

import h5py
import numpy as np
import torch

from conta_core.checkpoint import load_model_file, payload_digest, save_model_file
from conta_core import store_codec
from conta_core.store import MapReader, MapWriter

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


def read_store(path: Path) -> None:
    with MapReader(path) as reader:
        for image_id in reader.ids():
            reader.get(image_id)
            reader.item_attrs(image_id)


def read_unchecked(path: Path) -> None:
    """The reader's work without its checks: the index parsed, each item read and decoded."""
    with h5py.File(path, "r") as f:
        index = json.loads(f["index"][()].tobytes())
    fd = os.open(path, os.O_RDONLY)
    try:
        for _, offset, nbytes, dtype, shape, _, attrs in index["items"]:
            array = store_codec.decode(os.pread(fd, nbytes, offset), index["codec"], dtype, tuple(shape))
            if index["quantize"]:
                store_codec.dequantise(array, index["quantize"])
    finally:
        os.close(fd)


def check_layout(path: Path) -> None:
    with MapReader(path) as reader:
        reader.check_layout()


def write_store(path: Path, arrays: dict, quantize: int | None) -> None:
    with MapWriter(path, kind="bench", resume=False, quantize=quantize) as writer:
        for key, a in arrays.items():
            writer.put(key, a, classes=[1, 2])


def hdf5_costs(tmp: Path, items: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    smooth = np.linspace(0, 1, 375 * 500, dtype=np.float32).reshape(375, 500)
    kinds = {  # name -> (items, quantisation levels)
        "CAM float32 [2, 375, 500] as uint8": (
            {f"img{i}": np.clip(np.stack([smooth, smooth[::-1]])
                                + rng.random((2, 375, 500), dtype=np.float32) * np.float32(0.01), 0, 1)
             for i in range(items)}, 255),
        "pseudo-mask uint8 [375, 500]": ({f"img{i}": (smooth * 20).astype(np.uint8) for i in range(items)}, None),
    }
    print(f"\n{items} items per file.\n")
    print("| artifact | file | CRC-32 of all stored items | store write (journal + HDF5) | store read, every check "
          "| same reads, no check | check_layout |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (arrays, quantize) in kinds.items():
        store = tmp / "store.h5"
        stored = [store_codec.encode(store_codec.quantise(a, quantize) if quantize else a,
                                   store_codec.writer_codec(None))
                  for a in arrays.values()]
        t_crc = best(lambda: [zlib.crc32(blob) for blob in stored], repeats)
        t_write = best(lambda: write_store(store, arrays, quantize), repeats)
        t_read = best(lambda: read_store(store), repeats)
        t_plain = best(lambda: read_unchecked(store), repeats)
        t_layout = best(lambda: check_layout(store), repeats)
        size = store.stat().st_size / 2**20
        print(f"| {name} | {size:.1f} MiB | {t_crc:.4f} s | {t_write:.2f} s | {t_read:.3f} s "
              f"| {t_plain:.3f} s | {t_layout:.3f} s |")


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
