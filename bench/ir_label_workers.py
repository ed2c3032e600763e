"""Benchmark: the ir_label (or aff_label) step at 1 vs N threads (CRF worker processes) on this CPU.

    flock /tmp/cpu_heavy.lock python bench/ir_label_workers.py          # 20 images, threads 1 and 2
    python bench/ir_label_workers.py --images 8 --threads 1 2 --repeats 1 --out /tmp/x.md

What is timed: the step's entry script (workflow_scripts/ir_label.py) as its rule runs it, a
fresh process per setting (interpreter start, worker spawn, reading the CAMs and writing the
labels included), over one shard of ``--images`` generated images of 432x432 (the pixel count
of a 375x500 VOC image) from conta_core.data.synthetic (VOC's 21 classes, 1-3 per image), with
CAMs of smooth blobs stored at 255 levels as cam.py stores them. Settings run interleaved
(repeat by repeat); the load average (``uptime``) is recorded before and after, and the CPU
seconds of each run (the step and its workers) beside its wall time; the stored
labels of every setting are compared with those of the first.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CAM_DIGEST = "bench0000bench000"


def make_shard(root: Path, images: int, side: int, blob_divisor: float | None = None) -> tuple[Path, Path, list[str]]:
    """An index of ``images`` generated train images and their CAM shard (1 shard): one smooth
    blob per labelled class, max-normalised (confident cores, unsure rims, background elsewhere),
    of std side / ``blob_divisor`` (None: drawn per blob in [3, 6])."""
    from conta_core.data.index import DatasetIndex, build_index
    from conta_core.data.synthetic import DEFAULT_PARAMS, generate_synthetic
    from conta_core.store import MapWriter

    generate_synthetic(root / "data", **dict(DEFAULT_PARAMS, num_train=images, num_val=1, image_size=side))
    build_index({"kind": "voc_layout", "root": str(root / "data"),
                 "splits": {"train": "train.txt", "val": "val.txt"}, "train_split": "train", "eval_split": "val"},
                root / "index")
    index = DatasetIndex.load(root / "index")
    rng = np.random.default_rng(0)
    cam = root / "cam.h5"
    attrs = {"step": "cam", "round": 0, "config_digest": CAM_DIGEST, "class_names": index.classes,
             "shard": 0, "shards": 1}
    with MapWriter(cam, kind="cam", attrs=attrs, quantize=255) as writer:
        for image_id in index.ids("train"):
            classes = index.labels(image_id)
            h, w = index.size(image_id)
            yy, xx = np.mgrid[:h, :w]
            maps = [np.exp(-((yy - rng.uniform(0, h)) ** 2 + (xx - rng.uniform(0, w)) ** 2)
                           / (2 * (h / (blob_divisor or rng.uniform(3, 6))) ** 2)) for _ in classes]
            cams = np.asarray([m / m.max() for m in maps], np.float32).reshape(len(classes), h, w)
            writer.put(image_id, cams, classes=classes)
    return root / "index", cam, index.ids("train")


def settings_of(step: str) -> dict:
    from conta_core.expand.aff_label import AFFINITYNET_CRF
    from conta_core.expand.ir_label import IR_CRF_PARAMS

    if step == "ir_label":  # config.yaml's expand.irnet.ir_label
        section = {"irnet": {"ir_label": {"conf_fg": 0.30, "conf_bg": 0.05, "gt_prob": 0.7, "crf": IR_CRF_PARAMS}}}
    else:
        section = {"affinitynet": {"alpha_low": 4.0, "alpha_high": 24.0, "crf": AFFINITYNET_CRF}}
    return {"seed": 0, "train_split": "train", "shards": 1, "expand": section}


def run_step(step: str, index_dir: Path, cam: Path, threads: int, out: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + sys of the step and its workers)."""
    expect = [{"path": str(cam), "kind": "cam", "round": 0, "config_digest": CAM_DIGEST}]
    cmd = [sys.executable, str(REPO / "workflow_scripts" / f"{step}.py"), "--settings", json.dumps(settings_of(step)),
           "--expect", json.dumps(expect), "--threads", str(threads), "--index-dir", str(index_dir),
           "--round", "0", "--cam", str(cam), "--shard", "0", "--out", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers, reaped by the step, count too
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode != 0:
        raise SystemExit(f"{step} --threads {threads} failed:\n{result.stderr[-3000:]}")
    return elapsed, cpu


def labels_of(path: Path, step: str) -> dict[str, np.ndarray]:
    from conta_core.store import MapReader

    with MapReader(path, kind=step) as r:
        return {i: r.get(i) for i in r.ids()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--step", choices=["ir_label", "aff_label"], default="ir_label")
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--side", type=int, default=432)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "ir_label_workers.md")
    args = p.parse_args()
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    times: dict[int, list[float]] = {t: [] for t in args.threads}
    cpus: dict[int, list[float]] = {t: [] for t in args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        index_dir, cam, ids = make_shard(tmp, args.images, args.side)
        reference, identical = None, True
        for rep in range(args.repeats):
            for t in args.threads:
                out = tmp / f"{args.step}_{t}_{rep}.h5"
                wall, cpu = run_step(args.step, index_dir, cam, t, out)
                times[t].append(wall)
                cpus[t].append(cpu)
                print(f"repeat {rep} threads {t}: {wall:.1f} s, CPU {cpu:.1f} s", file=sys.stderr, flush=True)
                got = labels_of(out, args.step)
                if reference is None:
                    reference = got
                identical &= list(got) == list(reference) and all(np.array_equal(got[i], reference[i])
                                                                  for i in reference)
                out.unlink()
        values = np.concatenate([v.ravel() for v in reference.values()])
        share = {name: float(np.mean(mask)) for name, mask in
                 (("bg", values == 0), ("unsure", values == 255), ("fg", (values != 0) & (values != 255)))}
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    base = args.threads[0]
    lines = [f"# {args.step} with its CRFs over worker processes: threads {' vs '.join(map(str, args.threads))} "
             f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"`python bench/ir_label_workers.py --step {args.step} --images {args.images} --side {args.side} "
             f"--threads {' '.join(map(str, args.threads))} --repeats {args.repeats}` (method: the script's "
             f"docstring); {args.images} generated {args.side}x{args.side} images, one shard, whole step timed.", "",
             f"- load before: `{uptime_before}`", f"- load after: `{uptime_after}`", "",
             "| threads (CRF workers) | wall s per repeat | wall s/image (mean) | CPU s per repeat |", "|---|---|---|---|"]
    for t in args.threads:
        lines.append(f"| {t} | {', '.join(f'{x:.1f}' for x in times[t])} | {np.mean(times[t]) / args.images:.3f} | "
                     f"{', '.join(f'{x:.1f}' for x in cpus[t])} |")
    lines.append("")
    for t in args.threads[1:]:
        ratios = ", ".join(f"{a / b:.2f}x" for a, b in zip(times[base], times[t]))
        lines.append(f"- threads {base} / threads {t}: {ratios} (paired by repeat)")
    lines.append(f"- stored labels identical across all settings and repeats: {identical}")
    lines.append(f"- label pixels: bg {share['bg']:.1%}, unsure {share['unsure']:.1%}, fg {share['fg']:.1%}")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if not identical:
        raise SystemExit("the stored labels differ between settings")


if __name__ == "__main__":
    main()
