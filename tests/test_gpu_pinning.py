"""Scale-out without GPUs: sharded job counts, GPU claims per job, the gpu resource limit.

CONTA_FAKE_GPUS makes conta_core.devices pretend GPUs exist, so the claims that pin
each GPU job to its own devices are exercised on a CPU machine: every job logs the
devices it claimed and its start and end time (workflow_scripts/_common.setup).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"


def env(**extra: str) -> dict:
    out = {k: v for k, v in os.environ.items() if not k.startswith("CONTA_") and k != "CUDA_VISIBLE_DEVICES"}
    out["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    out.update(extra)
    return out


def snakemake(workdir: Path, *args: str, environ: dict | None = None, targets: list[str] = ()) -> str:
    cmd = [sys.executable, "-m", "snakemake", *targets, "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(TINY), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=environ or env(), cwd=REPO, timeout=900)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result.stdout + result.stderr


def planned(workdir: Path, *config: str) -> tuple[dict[str, int], str]:
    """Job counts of a dry run (Job stats table) and its printed shell commands."""
    out = snakemake(workdir, "-n", "-p", "--cores", "2", "--config", *config)
    counts, in_table = {}, False
    for line in out.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
        elif in_table and len(parts) == 2 and parts[1].isdigit():
            if parts[0] == "total":
                break
            counts[parts[0]] = int(parts[1])
    return counts, out


def test_job_count_grows_with_shards_and_rounds_not_images(tmp_path):
    base, _ = planned(tmp_path, "rounds=0", "shards=1")
    big, out = planned(tmp_path, "rounds=2", "shards=4")
    more_images, _ = planned(tmp_path, "rounds=2", "shards=4", "dataset={synthetic: {num_train: 480, num_val: 160}}")
    assert more_images == big  # 20x the images: the same jobs
    for step in ("cam", "expand"):
        assert base[step] == 1
        assert big[step] == 4 * 3, (step, big)
    # predict: the eval split in every round; the train split only where a confounder reads it
    # (rounds 0 and 1 of 0..2; none in a baseline-only run)
    assert base["predict"] == 1 and big["predict"] == 4 * 3 + 4 * 2, big
    for step in ("train_classifier", "train_segmenter", "evaluate"):
        assert base[step] == 1 and big[step] == 3
    # Consumers read every shard of their round (and look images up by id in them).
    for line in out.splitlines():
        if "train_segmenter.py" in line or "evaluate.py" in line:
            for k in range(4):
                assert re.search(rf"round(\d)/pseudo_mask/shard{k}\.h5", line), line
        if "confounder.py" in line:
            assert all(f"seg_pred/train/shard{k}.h5" in line for k in range(4)), line
    assert "--gpus 1" in out  # GPU rules pass their gpu resource to the claim


@pytest.mark.workflow
def test_gpu_jobs_claim_distinct_devices_and_respect_the_gpu_limit(tmp_path):
    """4 CAM shards, 2 fake GPUs, --resources gpu=2: at most 2 at once, never on the same device.

    Each CAM batch sleeps 2 s (CONTA_TEST_STEP_DELAY_S) so that jobs started together overlap
    even when their imports take different times on a busy machine.
    """
    config = tmp_path / "pin.yaml"
    config.write_text(yaml.safe_dump({"rounds": 0, "threads": 1, "shards": 4, "cam": {"batch_size": 2}}))
    fake = env(CONTA_FAKE_GPUS="2", CONTA_GPU_LOCK_DIR=str(tmp_path / "locks"), CONTA_TEST_STEP_DELAY_S="2")
    targets = [f"results/tiny/round0/cam/shard{k}.h5" for k in range(4)]
    snakemake(tmp_path, str(config), "--cores", "4", "--resources", "gpu=2", environ=fake, targets=targets)

    logs = tmp_path / "results" / "tiny" / "logs" / "round0"
    jobs = {}
    for name in ["train_classifier", *[f"cam_shard{k}" for k in range(4)]]:
        text = (logs / f"{name}.log").read_text()
        start = re.search(r"start \S+ unix=([\d.]+) pid=\d+ gpus=(\S+) CUDA_VISIBLE_DEVICES='([^']*)'", text)
        end = re.search(r"end \S+ unix=([\d.]+)", text)
        assert start and end, text[-2000:]
        assert start.group(2) in ("0", "1") and start.group(3) == start.group(2)  # one device, pinned
        jobs[name] = (float(start.group(1)), float(end.group(1)), start.group(2))

    overlapping = [(a, b) for a, b in combinations(jobs, 2)
                   if jobs[a][0] < jobs[b][1] and jobs[b][0] < jobs[a][1]]
    assert overlapping, f"no two GPU jobs ran at the same time: {jobs}"  # else the test shows nothing
    for a, b in overlapping:
        assert jobs[a][2] != jobs[b][2], f"{a} and {b} ran at once on GPU {jobs[a][2]}"
    events = sorted([(t0, 1) for t0, _, _ in jobs.values()] + [(t1, -1) for _, t1, _ in jobs.values()])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 2, jobs


def test_setup_takes_the_schedulers_devices(tmp_path):
    """Under SLURM (CUDA_VISIBLE_DEVICES set) a job uses the given devices and takes no locks."""
    code = ("import sys; sys.path.insert(0, 'workflow_scripts'); import _common; "
            "p = _common.parser('x'); a = p.parse_args(['--settings', '{}', '--gpus', '1']); _common.setup(a); "
            "import os; print('CVD=' + os.environ['CUDA_VISIBLE_DEVICES'])")
    locks = tmp_path / "locks"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            env=env(CUDA_VISIBLE_DEVICES="3,5", CONTA_FAKE_GPUS="8", CONTA_GPU_LOCK_DIR=str(locks)))
    assert result.returncode == 0, result.stderr
    assert "CVD=3" in result.stdout
    assert "gpus=3 CUDA_VISIBLE_DEVICES='3'" in result.stderr
    assert not locks.exists()
    # A CPU job (device cpu) claims nothing and hides every GPU.
    code = code.replace("'--gpus', '1'", "'--gpus', '1', '--device', 'cpu'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            env=env(CONTA_FAKE_GPUS="2", CONTA_GPU_LOCK_DIR=str(locks)))
    assert result.returncode == 0, result.stderr
    assert "CVD=\n" in result.stdout and "gpus=none" in result.stderr
