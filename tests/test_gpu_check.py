"""bench/gpu_check: the dry run on a Python without Snakemake/pydensecrf, the estimate's
arithmetic, and its VOC numbers against the preset."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from gpu_estimate import VOC_RUN, allreduce_s, estimate, format_estimate, ranks_for  # noqa: E402

# What the bare GPU box lacks: every import of these fails in the dry run's processes
# (the script and the pytest it starts), as on a box with only torch, numpy, h5py,
# pillow, pandas and pytest.
ABSENT = ("pydensecrf", "snakemake", "tqdm", "yaml", "scipy", "torchvision", "matplotlib", "pycocotools",
          "tabulate")
BLOCKER = textwrap.dedent(f"""
    # The path finder (installed packages) no longer sees these: imports raise
    # ModuleNotFoundError and importlib.util.find_spec returns None, as when absent.
    import importlib.machinery
    ABSENT = {ABSENT!r}
    _find_spec = importlib.machinery.PathFinder.find_spec

    def _find(cls, fullname, path=None, target=None):
        if fullname.split(".")[0] in ABSENT:
            return None
        return _find_spec(fullname, path, target)

    importlib.machinery.PathFinder.find_spec = classmethod(_find)
""")


def test_blocker_blocks(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    code = ("import importlib.util, numpy\nassert importlib.util.find_spec('tabulate') is None\n"
            "try:\n import pydensecrf.densecrf\nexcept ImportError:\n print('blocked')")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "blocked"


def test_dry_run_without_snakemake_or_pydensecrf(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tmp_path / "site")  # the script puts the repository root on sys.path itself
    out_dir = tmp_path / "out"
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), str(out_dir), "--dry-run"],
                          env=env, capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads((out_dir / "gpu_check.json").read_text())
    assert report["dry_run"] and not report["errors"]
    tests = report["tests"]
    assert tests["returncode"] == 0 and tests["counts"].get("passed", 0) >= 6, tests
    assert "failed" not in tests["counts"]
    parts = report["parts"]
    for name in ("classifier", "cam", "relation", "boundary_walk", "segmenter", "predict"):
        timings = [v for v in parts[name].values() if isinstance(v, dict)]
        assert timings and all(t["median_s"] > 0 for t in timings), (name, parts[name])
        assert all(t.get("finite", True) for t in timings), (name, parts[name])
    # pydensecrf was blocked: the CRF numbers are the documented fallback
    assert parts["cpu"]["crf_source"].startswith("fallback")
    for gpus in ("1", "8"):
        est = report["estimate"][gpus]
        assert est["total_h"] > 0 and len(est["steps"]) == 7
    assert "1 GPU(s):" in proc.stdout and "8 GPU(s):" in proc.stdout


def test_gpu_check_refuses_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--dry-run" in proc.stderr


def test_ranks_and_allreduce():
    assert ranks_for(16, 8) == 8 and ranks_for(10, 8) == 5 and ranks_for(10, 1) == 1 and ranks_for(32, 3) == 2
    assert allreduce_s(10**9, 1, 100.0) == 0.0
    # 2 * (4 - 1) / 4 * 4 bytes * 1e9 / 100e9 B/s = 0.06 s
    assert allreduce_s(10**9, 4, 100.0) == pytest.approx(0.06)


def test_estimate_by_hand():
    m = {"classifier_s_iter": 0.5, "classifier_s_iter_rank": 0.1, "classifier_params": 25_000_000,
         "cam_s_image": 0.2, "relation_s_iter": 1.0, "boundary_s_image": 0.01, "walk_s_image": 0.04,
         "segment_s_iter": 0.4, "segment_s_iter_rank": 0.15, "segment_params": 43_000_000,
         "predict_s_image": 0.05, "load_cls_s_image": 0.01, "load_seg_s_image": 0.005,
         "decode_s_image": 0.004, "crf3_s": 0.5, "crf21_s": 2.0}
    one = {st["step"]: st for st in estimate(m, 1, cpu_cores=16)["steps"]}
    # classifier: 5 epochs x 661 iterations; loading 16 images x 0.01 s per iteration
    assert one["train_classifier"]["gpu_s"] == pytest.approx(3305 * 0.5)
    assert one["train_classifier"]["serial_cpu_s"] == pytest.approx(3305 * 0.16)
    # cam: 10582 images on 1 of 4 shards at a time
    assert one["cam"]["gpu_s"] == pytest.approx(10582 * 0.2)
    # ir_label: 4 shard jobs at once, 16 // 4 = 4 CRF workers each: 10582 / 4 = 2645.5 images per
    # job x 2 CRFs x 0.5 s / 4 workers = 661.375 s (all 16 cores; 1 worker each was 2645.5 s)
    ir = one["ir_label (CPU)"]
    assert ir["cpu_workers"] == 4 and ir["serial_cpu_s"] == 0.0 and ir["gpus_used"] == 0
    assert ir["pool_cpu_s"] == pytest.approx(661.375) and ir["wall_s"] == pytest.approx(661.375)
    # 2 cores: 2 of the 4 jobs at a time, 1 worker each, two waves: 2 x 2645.5 s
    assert estimate(m, 1, cpu_cores=2)["steps"][2]["wall_s"] == pytest.approx(5291.0)
    assert one["train_relation"]["gpu_s"] == pytest.approx(990 * 1.0)
    assert one["train_segmenter"]["gpu_s"] == pytest.approx(19 * 1058 * 0.4)
    # predict on 1 GPU: 1 job, 16 CRF workers. Network 12031 x 0.05 = 601.55 s plus decoding
    # 12031 x 0.004 = 48.124 s in the job's process; CRFs 12031 x 2.0 / 16 = 1503.875 s in the
    # workers, overlapped: the job takes the larger.
    pred = one["predict (train_aug + val)"]
    assert pred["cpu_workers"] == 16 and pred["gpu_s"] == pytest.approx(601.55)
    assert pred["serial_cpu_s"] == pytest.approx(48.124) and pred["pool_cpu_s"] == pytest.approx(1503.875)
    assert pred["wall_s"] == pytest.approx(1503.875)
    # 64 cores: CRFs 12031 x 2.0 / 64 = 375.97 s, now under the job's 649.674 s
    wide = estimate(m, 1, cpu_cores=64)["steps"][-1]
    assert wide["cpu_workers"] == 64 and wide["wall_s"] == pytest.approx(649.674)
    # No CRF: network and decoding only
    no_crf = {**VOC_RUN, "segment": {**VOC_RUN["segment"], "crf": False}}
    assert estimate(m, 1, cpu_cores=16, run=no_crf)["steps"][-1]["wall_s"] == pytest.approx(649.674)
    # Only predict overlaps: the other inference steps still add their CPU time
    assert one["cam"]["wall_s"] == pytest.approx(10582 * (0.2 + 0.004))
    total = sum(st["wall_s"] for st in one.values())
    assert estimate(m, 1, cpu_cores=16)["total_h"] == pytest.approx(4 * total / 3600)
    eight = {st["step"]: st for st in estimate(m, 8, cpu_cores=16, allreduce_gbps=100.0)["steps"]}
    # 8 ranks at batch 2 plus the all-reduce of 25 M fp32 gradients: 2 * 7/8 * 1e8 B / 1e11 B/s
    assert eight["train_classifier"]["gpu_s"] == pytest.approx(3305 * (0.1 + 1.75e-3))
    assert eight["train_classifier"]["serial_cpu_s"] == pytest.approx(3305 * 2 * 0.01)
    # DeepLab's batch 10 splits over 5 ranks, not 8
    assert eight["train_segmenter"]["gpus_used"] == 5
    assert eight["cam"]["gpu_s"] == pytest.approx(10582 * 0.2 / 8)
    assert eight["train_relation"]["gpus_used"] == 1
    # ir_label with 8 shards: 16 // 8 = 2 workers each, 1322.75 images x 2 x 0.5 s / 2 = 661.375 s
    assert eight["ir_label (CPU)"]["cpu_workers"] == 2
    assert eight["ir_label (CPU)"]["wall_s"] == pytest.approx(661.375)
    # predict on 8 GPUs: 8 shards at once, 16 // 8 = 2 CRF workers each; 12031 / 8 = 1503.875 images
    # per job: network 75.19 s + decoding 6.02 s, CRFs 1503.875 x 2.0 / 2 = 1503.875 s
    pred8 = eight["predict (train_aug + val)"]
    assert pred8["gpus_used"] == 8 and pred8["cpu_workers"] == 2
    assert pred8["gpu_s"] == pytest.approx(1503.875 * 0.05) and pred8["wall_s"] == pytest.approx(1503.875)


def test_format_names_the_rounds():
    m = {k: 0.1 for k in ("classifier_s_iter", "classifier_s_iter_rank", "cam_s_image", "relation_s_iter",
                          "boundary_s_image", "walk_s_image", "segment_s_iter", "segment_s_iter_rank",
                          "predict_s_image", "load_cls_s_image", "load_seg_s_image", "decode_s_image",
                          "crf3_s", "crf21_s")}
    m.update(classifier_params=10, segment_params=10)
    text = format_estimate(estimate(m, 1, cpu_cores=16))
    assert "rounds 0..3 (round 0 = baseline + 3 CONTA rounds)" in text and "(4 rounds)" not in text
    # predict's CRF pool: 12031 x 0.1 / 16 s = 0.02 h over 16 workers
    assert any(line.startswith("predict") and "0.02 x16" in line for line in text.splitlines())


def test_voc_numbers_match_the_preset():
    yaml = pytest.importorskip("yaml")
    from gpu_check import FULL

    base = yaml.safe_load((REPO / "config.yaml").read_text())
    preset = yaml.safe_load((REPO / "presets" / "voc12_irnet_conta.yaml").read_text())

    def merged(section):
        return {**base.get(section, {}), **preset.get(section, {})}

    cls, seg = merged("classifier"), merged("segment")
    rel, walk = preset["expand"]["irnet"]["train"], preset["expand"]["irnet"]["walk"]
    assert VOC_RUN["rounds"] == preset["rounds"] + 1
    assert VOC_RUN["shards"] == preset["shards"]
    assert VOC_RUN["classifier"] == {"epochs": cls["epochs"], "batch_size": cls["batch_size"]}
    assert VOC_RUN["relation"] == {"epochs": rel["epochs"], "batch_size": rel["batch_size"]}
    assert VOC_RUN["segment"] == {"epochs": seg["epochs"], "batch_size": seg["batch_size"], "crf": seg["crf"]}
    assert VOC_RUN["num_workers"] == cls["num_workers"] == seg["num_workers"]
    assert (FULL["cls_depth"], FULL["cls_crop"], FULL["cls_batches"][0]) == (cls["backbone"], cls["crop"],
                                                                             cls["batch_size"])
    assert list(FULL["cam_scales"]) == preset["cam"]["scales"]
    assert (FULL["rel_crop"], FULL["rel_batch"], rel["backbone"]) == (rel["crop"], rel["batch_size"], 50)
    assert FULL["exp_times"] == walk["exp_times"]
    assert (FULL["seg_depth"], FULL["seg_crop"], FULL["seg_batches"][0]) == (seg["backbone"], seg["crop"],
                                                                             seg["batch_size"])
    assert seg["msc_scales"] == [1.0, 0.75, 0.5]
