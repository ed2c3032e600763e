"""Benchmark: the artifact store against IRNet's one-.npy-per-image format, on the same CAMs.

    python bench/store.py                       # both CAM sets, 5 runs, the default encoding
    python bench/store.py --candidates          # also every codec / dtype / LZ4 acceleration candidate
    python bench/store.py --runs 3 --json out.json

The CAM sets (200 each):
- ``demo``: the demo's round-0 CAMs (results/demo/round0/cam/*.h5, 96x96, 1-4 classes, from a
  network trained from scratch: diffuse, ~6 % zeros), float32 as the network gave them
  up to their stored float16; skipped if the demo has not run.
- ``voc``: VOC-size synthetic CAMs: 333-500 x 375-500 pixels, 1-3 of 20 classes per image (as
  VOC's), each map a sum of Gaussian blobs plus noise made at stride 16, upsampled
  bilinearly, cut at 0.1 (the ReLU), max-normalised: smooth, ~2/3 zeros.

The formats, each holding the full-resolution CAMs and the class ids:
- ``npy``: IRNet's make_cam output, ``np.save(<id>.npy, {"keys": ..., "high_res": float32})``,
  one file per image, read with ``np.load(allow_pickle=True).item()`` (IRNet also stores the
  stride-4 ``cam``, which the project derives: left out, so npy is not made bigger than ours);
- ``store float32``: ``MapWriter``/``MapReader`` as the CAM step writes them, read with ``get``
  (float32 maps: what the random walk, AffinityNet's CRF, the overlays and diagnose read);
- ``store levels``: the same file read with ``get_levels`` (the stored uint8 levels and the
  file's 255: what the seeds, IR-label and scoring steps read, exact for their thresholds and
  arg-max); (``--candidates``: other codecs, dtypes, LZ4 accelerations for items of every size,
  and the store read with the standard library's CRC-32 where zlib-ng is installed);
- ``before <commit>``: the store of a git commit (``--before``; that commit's whole conta_core
  package, extracted with ``git archive``), written as the CAM step wrote CAMs then. Default:
  2cf19a4 (conta-maps/1: float16 CAMs gzip-4 + shuffle in HDF5 chunks, checksums in per-item
  attributes; its float16 read converted to float32 as the consumers do) and a05417e
  (conta-maps/2 before its read path was tuned: LZ4 at acceleration 1 for every item,
  python-lz4's decode, zlib's CRC-32).

Measured per format, median over rounds (min-max in brackets): bytes (st_size; the npy
files also round up to 4 KiB blocks on disk, not counted); write time of all 200
(``--runs`` writes); reading 100 random ids as float32 arrays (``store levels``: as uint8
levels; a reader's open is included), warm (files in the page cache, same process;
``--warm-rounds`` rounds) and cold (``--runs`` rounds): every file's pages dropped from
the page cache with ``posix_fadvise(DONTNEED)`` after an ``fsync`` (no root needed;
``fincore`` confirms 0 resident bytes when installed), then a fresh Python process reads
(its start and imports not timed). Each read round draws 100 ids and reads them from
every format in a shuffled order, so the formats of one round share the machine's load;
"speed" is the median over rounds of npy's time / the format's (paired). The seed labels
(``cam_to_label``) of the stored CAMs are compared with those of the float32 CAMs at
several background thresholds: pixels changed, and the mIoU of the one labelling
against the other.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from conta_core.cam_labels import cam_to_label  # noqa: E402
from conta_core import store_codec  # noqa: E402
from conta_core.store import MapReader, MapWriter  # noqa: E402

DEFAULT = {"codec": None, "quantize": 255}  # as workflow_scripts/cam.py writes CAMs
CANDIDATES = {  # "acceleration": LZ4's (writes); "crc": "zlib", the standard library's CRC-32 (reads)
    **{f"u8 lz4 a{a}": {"codec": "lz4", "quantize": 255, "acceleration": a} for a in (1, 16, 64, 256, 1024)},
    **({"store, zlib CRC": {**DEFAULT, "crc": "zlib"}} if store_codec.crc32 is not zlib.crc32 else {}),
    "u8 lz4 a1, levels": {"codec": "lz4", "quantize": 255, "acceleration": 1, "read": "levels"},
    "u8 raw, levels": {"codec": "raw", "quantize": 255, "read": "levels"},
    "u8 lz4hc": {"codec": "lz4hc", "quantize": 255},
    "u8 zlib1": {"codec": "zlib1", "quantize": 255},
    "u8 raw": {"codec": "raw", "quantize": 255},
    "u16 lz4": {"codec": "lz4", "quantize": 65535},
    "f16 lz4": {"codec": "lz4", "quantize": None, "dtype": "float16"},
}
THRESHOLDS = (0.05, 0.15, 0.25, 0.3, 0.5, 0.6)


# --- the CAM sets -------------------------------------------------------------------------
def demo_cams(n: int) -> list[tuple[str, list[int], np.ndarray]] | None:
    out = []
    for path in sorted((REPO / "results" / "demo" / "round0" / "cam").glob("*.h5")):
        with MapReader(path, remove_damaged=False) as r:  # either format; never deletes a demo file
            out += [(i, [int(c) for c in r.item_attrs(i)["classes"]], r.get(i).astype(np.float32))
                    for i in r.ids()[:n - len(out)]]
        if len(out) >= n:
            break
    return out or None


def _upsample(low: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(m).resize((width, height), Image.Resampling.BILINEAR))
                     for m in low])


def voc_cams(n: int, seed: int = 0) -> list[tuple[str, list[int], np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        height, width = (int(rng.choice([333, 375, 375, 375, 500, 281])), 500)
        if rng.random() < 0.3:
            height, width = width, height
        classes = sorted(int(c) + 1 for c in rng.choice(20, int(rng.choice([1, 1, 1, 2, 2, 3])), replace=False))
        hs, ws = -(-height // 16), -(-width // 16)
        yy, xx = np.mgrid[0:hs, 0:ws]
        low = np.zeros((len(classes), hs, ws), np.float32)
        for c in range(len(classes)):
            for _ in range(int(rng.integers(1, 4))):
                cy, cx, s = rng.uniform(0, hs), rng.uniform(0, ws), rng.uniform(1.5, hs / 3)
                low[c] += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
            low[c] += 0.05 * rng.standard_normal((hs, ws))
        cam = np.maximum(_upsample(low, height, width) - 0.1, 0)
        cam /= cam.reshape(len(classes), -1).max(1)[:, None, None] + 1e-5
        out.append((f"voc_{i:04d}", classes, cam.astype(np.float32)))
    return out


# --- the formats ----------------------------------------------------------------------------
def write_npy(folder: Path, cams) -> None:
    folder.mkdir(parents=True)
    for image_id, classes, cam in cams:
        np.save(folder / f"{image_id}.npy", {"keys": np.asarray(classes), "high_res": cam})


def read_npy(folder: Path, ids) -> None:
    for image_id in ids:
        np.load(folder / f"{image_id}.npy", allow_pickle=True).item()["high_res"]


_BEFORE: dict[str, object] = {}


def store_at(commit: str | None):
    """conta_core.store as of ``commit`` (None: the working tree's): that commit's whole
    conta_core package, extracted from git and imported as ``conta_core_<commit>``, so a store
    split over several modules (store_reader, store_codec, ...) is the commit's throughout."""
    if commit is None:
        return sys.modules["conta_core.store"]
    if commit not in _BEFORE:
        import importlib
        import io
        import tarfile

        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "conta_core"],
                                 capture_output=True, check=True).stdout
        root = Path(tempfile.mkdtemp())
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(root, filter="data")
        name = f"conta_core_{commit}"
        (root / "conta_core").rename(root / name)
        sys.path.insert(0, str(root))
        try:
            _BEFORE[commit] = importlib.import_module(f"{name}.store")
        finally:
            sys.path.remove(str(root))
    return _BEFORE[commit]


@contextlib.contextmanager
def _store_setting(setting: dict):
    """The working tree's store with ``setting``'s LZ4 acceleration (writes) and CRC-32
    implementation (reads: "zlib", the standard library's) in place of the defaults."""
    saved = store_codec.LZ4_ACCELERATION, store_codec.LZ4_ACCELERATE_FROM, store_codec.crc32
    if "acceleration" in setting:  # for items of every size
        store_codec.LZ4_ACCELERATION, store_codec.LZ4_ACCELERATE_FROM = setting["acceleration"], 0
    if setting.get("crc") == "zlib":
        store_codec.crc32 = zlib.crc32
    try:
        yield
    finally:
        store_codec.LZ4_ACCELERATION, store_codec.LZ4_ACCELERATE_FROM, store_codec.crc32 = saved


def write_store(path: Path, cams, setting: dict) -> None:
    dtype, before = setting.get("dtype"), setting.get("before")
    if before:  # as workflow_scripts/cam.py wrote CAMs then
        old = store_at(before)
        if old.FORMAT == "conta-maps/1":  # float16 CAMs
            with old.MapWriter(path, kind="cam", attrs={"round": 0}) as w:
                for image_id, classes, cam in cams:
                    w.put(image_id, cam.astype(np.float16), classes=classes)
        else:  # quantised to 255 levels, that commit's default codec
            with old.MapWriter(path, kind="cam", quantize=255, attrs={"round": 0}) as w:
                for image_id, classes, cam in cams:
                    w.put(image_id, cam, classes=classes)
        return
    with _store_setting(setting), MapWriter(path, kind="cam", codec=setting["codec"],
                                            quantize=setting["quantize"], attrs={"round": 0}) as w:
        for image_id, classes, cam in cams:
            w.put(image_id, cam.astype(dtype) if dtype else cam, classes=classes)


def read_store(path: Path, ids, setting: dict | None = None) -> None:
    setting = setting or {}
    with _store_setting(setting), store_at(setting.get("before")).MapReader(path, kind="cam") as r:
        if setting.get("read") == "levels":  # the stored integers, as the seeds/IR-label/score steps read them
            for image_id in ids:
                r.get_levels(image_id)
        else:
            for image_id in ids:
                r.get(image_id).astype(np.float32, copy=False)


def files_of(target: Path) -> list[Path]:
    return sorted(target.iterdir()) if target.is_dir() else [target]


def drop_cache(target: Path) -> int:
    """Evict the files' pages (written and synced first); the bytes fincore still sees resident."""
    for path in files_of(target):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    if shutil.which("fincore"):
        out = subprocess.run(["fincore", "-b", "-n", "-o", "RES", *map(str, files_of(target))],
                             capture_output=True, text=True).stdout
        return sum(int(x) for x in out.split())
    return -1


def cold_read(fmt: str, target: Path, ids, setting: dict | None = None) -> float:
    """Seconds a fresh process takes to read ``ids`` (imports done before the clock starts)."""
    code = ("import sys, time, json; sys.path.insert(0, sys.argv[1]); import bench.store as b; "
            "ids, setting = json.loads(sys.argv[4]), json.loads(sys.argv[5]); "
            "b.store_at(setting.get('before')); "
            "t = time.perf_counter(); "
            "b.read_npy(b.Path(sys.argv[3]), ids) if sys.argv[2] == 'npy' else "
            "b.read_store(b.Path(sys.argv[3]), ids, setting); "
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code, str(REPO), fmt, str(target), json.dumps(list(ids)),
                          json.dumps(setting or {})], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def _write(label: str, target: Path, cams, setting: dict | None) -> None:
    write_npy(target, cams) if label == "npy" else write_store(target, cams, setting)


def _read(label: str, target: Path, ids, setting: dict | None) -> None:
    read_npy(target, ids) if label == "npy" else read_store(target, ids, setting)


def measure(cams, work: Path, runs: int, warm_rounds: int, rng, settings: dict) -> dict:
    """Every format on the same CAMs: ``runs`` writes each; then ``warm_rounds`` rounds of warm
    reads and ``runs`` rounds of cold reads, each round reading the same 100 random ids from
    every format in a shuffled order, so each round pairs the formats under the same load (the
    speed ratios are medians of the rounds' ratios)."""
    ids_all = [c[0] for c in cams]
    formats = {"npy": None, **settings}
    rows = {label: {"write_s": [], "warm_s": [], "cold_s": [], "resident_after_drop": []} for label in formats}
    targets = {}
    for k, (label, setting) in enumerate(formats.items()):
        for run in range(runs):
            target = work / (f"f{k}-{run}" if label == "npy" else f"f{k}-{run}.h5")
            t = time.perf_counter()
            _write(label, target, cams, setting)
            rows[label]["write_s"].append(time.perf_counter() - t)
            if run == 0:
                targets[label] = target  # the one the reads use
                rows[label]["bytes"] = sum(p.stat().st_size for p in files_of(target))
            else:
                shutil.rmtree(target) if target.is_dir() else target.unlink()
    for label, target in targets.items():
        _read(label, target, ids_all, formats[label])  # the page cache holds every byte now
    for kind, rounds in (("warm_s", warm_rounds), ("cold_s", runs)):
        for _ in range(rounds):
            ids = list(rng.choice(ids_all, min(100, len(ids_all)), replace=False))
            order = list(formats)
            rng.shuffle(order)
            for label in order:
                if kind == "warm_s":
                    t = time.perf_counter()
                    _read(label, targets[label], ids, formats[label])
                    rows[label]["warm_s"].append(time.perf_counter() - t)
                else:
                    rows[label]["resident_after_drop"].append(drop_cache(targets[label]))
                    rows[label]["cold_s"].append(cold_read(label, targets[label], ids, formats[label]))
    for target in targets.values():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    for r in rows.values():  # paired: the rounds' ratios npy / format (above 1: faster than npy)
        for kind in ("warm_s", "cold_s"):
            r[f"{kind[:4]}_speed"] = [a / b for a, b in zip(rows["npy"][kind], r[kind])]
    return rows


def _miou(conf: np.ndarray) -> float:
    union = conf.sum(0) + conf.sum(1) - np.diag(conf)
    present = union > 0
    return float((np.diag(conf)[present] / union[present]).mean())


def _confusion(a: np.ndarray, b: np.ndarray, void: int = 255) -> np.ndarray:
    keep = (a != void) & (b != void)
    return np.bincount(a[keep].astype(np.int64) * 21 + b[keep], minlength=441).reshape(21, 21)


def demo_masks(ids) -> dict | None:
    """The demo's ground-truth masks of ``ids`` (None without the demo's dataset index)."""
    try:
        from conta_core.data.index import DatasetIndex

        index = DatasetIndex.load(REPO / "results" / "demo" / "dataset")
        return {i: index.read_mask(i) for i in ids}
    except Exception as err:  # noqa: BLE001 - the comparison is optional
        print(f"  (no ground truth for the seeds' mIoU: {err})")
        return None


def label_effect(cams, work: Path, setting: dict, masks: dict | None) -> dict:
    """Seed labels of the stored CAMs against those of the float32 CAMs, per background threshold:
    pixels changed, mIoU of one labelling against the other, and (``masks``) the mIoU of
    each against the ground truth."""
    path = work / "labels.h5"
    write_store(path, cams, setting)
    changed = {t: 0 for t in THRESHOLDS}
    conf = {t: np.zeros((21, 21), np.int64) for t in THRESHOLDS}
    truth = {t: [np.zeros((21, 21), np.int64), np.zeros((21, 21), np.int64)] for t in THRESHOLDS}
    pixels = 0
    with store_at(setting.get("before")).MapReader(path) as r:
        for image_id, classes, cam in cams:
            stored = r.get(image_id).astype(np.float32)
            pixels += cam.shape[1] * cam.shape[2]
            for t in THRESHOLDS:
                a, b = cam_to_label(cam, classes, t), cam_to_label(stored, classes, t)
                changed[t] += int((a != b).sum())
                conf[t] += _confusion(a, b)
                if masks is not None:
                    truth[t][0] += _confusion(masks[image_id], a)
                    truth[t][1] += _confusion(masks[image_id], b)
    path.unlink()
    out = {}
    for t in THRESHOLDS:
        out[t] = {"changed_pct": 100 * changed[t] / pixels, "miou_vs_f32": _miou(conf[t])}
        if masks is not None:
            out[t]["miou_gt_f32"], out[t]["miou_gt_stored"] = _miou(truth[t][0]), _miou(truth[t][1])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="writes and cold-read rounds per format")
    p.add_argument("--warm-rounds", type=int, default=21, help="warm-read rounds per format")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--candidates", action="store_true", help="time every encoding candidate too")
    p.add_argument("--sets", nargs="+", default=["demo", "voc"])
    p.add_argument("--before", nargs="*", default=["2cf19a4", "a05417e"],
                   help="git commits of stores to compare with (none: no comparison; default: the "
                        "last conta-maps/1 store and the conta-maps/2 store before its read was tuned)")
    p.add_argument("--json", type=Path)
    p.add_argument("--workdir", type=Path, help="where the files go (default: a temporary folder)")
    args = p.parse_args(argv)

    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} CPUs; "
          f"{args.runs} runs, median [min-max]")
    print(f"CRC-32 from {store_codec.crc32.__module__ or 'zlib'}; LZ4 decodes into reused buffers: "
          f"{store_codec._LZ4_INTO is not None}; LZ4 acceleration {store_codec.LZ4_ACCELERATION} from "
          f"{store_codec.LZ4_ACCELERATE_FROM} bytes, 1 below")
    settings = {"store float32": DEFAULT, "store levels": {**DEFAULT, "read": "levels"},
                **(CANDIDATES if args.candidates else {})}
    for commit in args.before:
        settings[f"before {commit}"] = {"before": commit}
    results = {"load_before": load, "sets": {}}
    rng = np.random.default_rng(0)
    for name in args.sets:
        cams = demo_cams(args.n) if name == "demo" else voc_cams(args.n)
        if cams is None:
            print(f"\n[{name}] skipped: no results/demo/round0/cam/*.h5 (run the demo first)")
            continue
        zeros = float(np.mean([(c[2] == 0).mean() for c in cams]))
        masks = demo_masks([c[0] for c in cams]) if name == "demo" else None
        shape = cams[0][2].shape
        print(f"\n[{name}] {len(cams)} CAMs, e.g. {shape}, {zeros:.0%} zeros")
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            work = Path(tmp)
            rows = measure(cams, work, args.runs, args.warm_rounds, rng, settings)
            for label, setting in settings.items():
                if {"acceleration", "crc", "read"} & set(setting):  # the store's values, read differently
                    rows[label]["labels"] = rows["store float32"]["labels"]
                else:
                    rows[label]["labels"] = label_effect(cams, work, setting, masks)
        results["sets"][name] = {"zeros": zeros, "rows": rows}
        print_table(rows)
    results["load_after"] = os.getloadavg()
    print(f"\nload average after {results['load_after'][0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))
    return 0


def _stat(values, scale=1e3) -> str:
    return f"{statistics.median(values) * scale:7.1f} [{min(values) * scale:.1f}-{max(values) * scale:.1f}]"


def print_table(rows: dict) -> None:
    base = rows["npy"]
    print(f"{'format':18s} {'bytes':>11s} {'of npy':>7s} {'write 200 ms':>22s} {'warm 100 ms':>22s}"
          f" {'cold 100 ms':>24s} {'speed warm/cold vs npy':>23s}  seeds changed % at bg 0.05..0.6")
    for label, r in rows.items():
        warm, cold = statistics.median(r["warm_speed"]), statistics.median(r["cold_speed"])
        labels = " ".join(f"{v['changed_pct']:.3f}" for v in r.get("labels", {}).values()) or "-"
        print(f"{label:18s} {r['bytes']:11d} {r['bytes'] / base['bytes']:7.1%} {_stat(r['write_s']):>22s}"
              f" {_stat(r['warm_s']):>22s} {_stat(r['cold_s']):>24s} {warm:10.2f}x /{cold:6.2f}x  {labels}")
    for label, r in rows.items():
        labels = r.get("labels", {})
        if labels and "miou_gt_f32" in next(iter(labels.values())):
            print(f"  {label}: seed mIoU vs ground truth (float32 CAMs -> stored) at bg "
                  + ", ".join(f"{t}: {v['miou_gt_f32']:.4f}->{v['miou_gt_stored']:.4f}" for t, v in labels.items()))
    resident = {label: max(r["resident_after_drop"]) for label, r in rows.items()}
    print(f"bytes still cached after the drop (fincore, -1: not installed): {resident}")


if __name__ == "__main__":
    sys.exit(main())
