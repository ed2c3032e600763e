"""The tiny workflow on a real one-node SLURM cluster, submitted through profiles/slurm.

ci/slurm.sh installs (apt-get) and starts munged, slurmctld and slurmd on
localhost, with one stand-in GPU, so the GPU rules are submitted with --gpus=1
and see the CUDA_VISIBLE_DEVICES that SLURM sets. Needs root; skipped otherwise.
Jobs are grouped into two submissions (data and classification; segmentation and
scores) to keep the run short: the executor polls a job's status at growing
intervals (2 s, then 12, 22, ... s), which costs more than the tiny jobs themselves.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
SLURM_SH = REPO / "ci" / "slurm.sh"
TIMEOUT_S = 540  # the whole workflow on the cluster; the cluster is stopped either way

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

GROUPS = {"generate_synthetic": "classify", "dataset_index": "classify",
          "train_classifier": "classify", "cam": "classify", "expand": "classify", "diagnose": "classify",
          "train_segmenter": "segment", "predict": "segment", "evaluate": "segment", "summary": "segment",
          "overlays": "segment"}


def _slurm_sh(action: str, state_dir: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, CONTA_SLURM_DIR=str(state_dir))
    for name in ("OMP_NUM_THREADS", "OMP_THREAD_LIMIT"):  # the node gets every CPU
        env.pop(name, None)
    return subprocess.run(["bash", str(SLURM_SH), action], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("a local SLURM cluster needs root (munged, slurmctld, slurmd)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and apt-get is not available to install it")
    state_dir = Path(os.environ.get("CONTA_SLURM_DIR", "/tmp/conta-slurm"))
    was_running = _slurm_sh("status", state_dir, timeout=30).returncode == 0
    started = _slurm_sh("start", state_dir)
    if started.returncode != 0:
        pytest.fail(f"ci/slurm.sh start failed ({started.returncode}):\n{started.stderr[-3000:]}")
    try:
        yield state_dir
    finally:
        if not was_running:
            _slurm_sh("stop", state_dir, timeout=120)


def test_tiny_workflow_on_slurm(cluster, tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               SLURM_CONF=str(cluster / "slurm.conf"))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(tmp_path), "--configfile", str(TINY), "--profile", str(REPO / "profiles" / "slurm"),
           # One GPU on the node: the segment group's two predict jobs take it in turn
           # (without the limit the group would ask SLURM for --gpus=2).
           "--config", "rounds=0", "threads=1", "--jobs", "2", "--resources", "gpu=1",
           "--groups", *[f"{rule}={group}" for rule, group in GROUPS.items()]]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True)
        pytest.fail(f"workflow on SLURM did not finish within {TIMEOUT_S} s:\n{output[-6000:]}")
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, output[-8000:]
    print(f"tiny workflow on SLURM: {elapsed:.0f} s")

    submitted = [line for line in output.splitlines() if "submitted with SLURM jobid" in line]
    assert len(submitted) == 2, output[-4000:]  # both groups went through sbatch
    results = tmp_path / "results" / "tiny"
    summary = pd.read_csv(results / "summary.csv")
    assert list(summary["round"]) == [0]
    values = summary[["cam_miou", "pseudo_mask_miou", "seg_miou"]].to_numpy()
    assert ((values > 0) & (values <= 100)).all()
    # The GPU rules ran inside SLURM's allocation: the stand-in GPU 0, no lock files.
    log = (results / "logs" / "round0" / "train_classifier.log").read_text()
    assert "CUDA_VISIBLE_DEVICES='0'" in log and "gpus=0" in log, log[:2000]
