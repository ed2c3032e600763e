"""Kill -9 a running workflow and rerun the same command: it resumes and ends exactly where
an uninterrupted run ends.

One run is killed twice: during the classifier's training (after a checkpoint), then
during the sharded CAM step (after some images are written). Each rerun is the same
command (after `snakemake --unlock`; the default profile has rerun-incomplete). The
resumed classifier logs the checkpoint it continued from, the resumed CAM shards keep
the images they had written, completed artifacts keep their mtimes, and the final
summary.csv, classifier weights and CAMs equal those of a separate uninterrupted run
(CPU, one thread, fixed seeds, deterministic algorithms).

The killed run sets CONTA_TEST_STEP_DELAY_S, which only makes every training step and
CAM batch sleep, so that the kills land in the middle of those steps on any machine.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest
import torch
import yaml

from conta_core.store import partial_ids

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"

# Over tiny.yaml: 4 classifier epochs of 3 steps with a checkpoint every 2 steps, CAM in
# 2 shards of 12 images in batches of 2, one thread per job so results are reproducible
# whatever runs beside them.
RESUME = {
    "rounds": 0,
    "threads": 1,
    "shards": 2,
    "classifier": {"epochs": 4},
    "cam": {"batch_size": 2},
    "resources": {"checkpoint_every": 2},
}


def snakemake_cmd(workdir: Path, config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(TINY), str(config), "--cores", "2", *args]


def env(**extra: str) -> dict:
    out = {k: v for k, v in os.environ.items() if not k.startswith("CONTA_")}
    out["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    out.update(extra)
    return out


def run(cmd: list[str], environ: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, env=environ, cwd=REPO, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL snakemake, its process group and every job process it started."""
    try:
        victims = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        victims = []
    with_pgid = os.getpgid(proc.pid) if proc.poll() is None else None
    for p in victims:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    if with_pgid is not None:
        try:
            os.killpg(with_pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    psutil.wait_procs(victims, timeout=30)
    proc.wait(timeout=30)


def wait_for(proc: subprocess.Popen, condition, what: str, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"workflow ended (rc {proc.returncode}) before {what}:\n{out[-4000:]}")
        if time.monotonic() > deadline:
            kill_tree(proc)
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def checkpoint_iterations(log: Path) -> list[int]:
    return [int(n) for n in re.findall(r"saved checkpoint \S+ at iteration (\d+)", read(log))]


def cam_progress(log: Path) -> int:
    counts = re.findall(r"(\d+)/12 images written", read(log))
    return int(counts[-1]) if counts else 0


def mtimes(paths: list[Path]) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in paths}


@pytest.mark.workflow
def test_kill_and_rerun_resumes_training_and_cam_exactly(tmp_path):
    config = tmp_path / "resume.yaml"
    config.write_text(yaml.safe_dump(RESUME))
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    # The uninterrupted reference runs beside the killed run (which mostly sleeps).
    ref_proc = subprocess.Popen(snakemake_cmd(reference, config), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env(), cwd=REPO)
    results = killed / "results" / "tiny"
    logs = results / "logs" / "round0"
    slow = env(CONTA_TEST_STEP_DELAY_S="0.4")
    try:
        # 1. Kill during the classifier's training, once the checkpoint of iteration 4
        #    (mid-epoch 2) is on disk.
        proc = subprocess.Popen(snakemake_cmd(killed, config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=slow, cwd=REPO, start_new_session=True)
        wait_for(proc, lambda: 4 in checkpoint_iterations(logs / "train_classifier.log"),
                 "the classifier's checkpoint at iteration 4")
        kill_tree(proc)
        assert not (results / "round0" / "classifier.pt").exists()
        saved = sorted(p.name for p in (results / "checkpoints" / "round0" / "classifier").glob("iter*.pt"))
        assert "iter00000004.pt" in saved and len(saved) <= 2
        newest = max(checkpoint_iterations(logs / "train_classifier.log"))
        dataset = [results / "dataset" / "index.csv", results / "dataset" / "classes.json"]
        kept = mtimes(dataset)

        # 2. Same command: training resumes from the newest checkpoint. Kill again when
        #    a CAM shard has written some of its images.
        run(snakemake_cmd(killed, config, "--unlock"), slow)
        proc = subprocess.Popen(snakemake_cmd(killed, config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=slow, cwd=REPO, start_new_session=True)
        shard_logs = [logs / f"cam_shard{k}.log" for k in range(2)]
        wait_for(proc, lambda: max(cam_progress(log) for log in shard_logs) >= 4, "4 CAMs of a shard written")
        kill_tree(proc)
        train_log = read(logs / "train_classifier.log")
        assert re.search(rf"resuming from \S+iter{newest:08d}\.pt at iteration {newest}\b", train_log), train_log[-2000:]
        assert "epoch 4/4" in train_log
        assert not (results / "checkpoints" / "round0" / "classifier").exists()  # cleared once saved
        classifier = results / "round0" / "classifier.pt"
        kept.update(mtimes([classifier]))
        partials = {k: results / "round0" / "cam" / f"shard{k}.h5.partial" for k in range(2)}
        written = {k: len(partial_ids(results / 'round0' / 'cam' / f'shard{k}.h5')) for k in range(2)}
        assert any(0 < n < 12 for n in written.values()), written

        # 3. Same command without the delay: the shards resume and the run completes.
        run(snakemake_cmd(killed, config, "--unlock"), env())
        run(snakemake_cmd(killed, config), env())
    finally:
        if ref_proc.poll() is None:
            ref_out, _ = ref_proc.communicate(timeout=900)
        else:
            ref_out = ref_proc.stdout.read()
    assert ref_proc.returncode == 0, ref_out[-6000:]

    for k, n in written.items():
        if 0 < n < 12:
            log = read(logs / f"cam_shard{k}.log")
            assert f"shard{k}.h5.partial with {n} complete item(s)" in log, log  # the journal was reopened
            # Whole batches of 2 already written were skipped; a torn batch is redone.
            assert f"shard {k}: 12 images, {n - n % 2} already written" in log, log
        assert not partials[k].exists()
    assert mtimes(list(kept)) == kept  # completed artifacts were not rebuilt

    ref_results = reference / "results" / "tiny"
    assert (results / "summary.csv").read_bytes() == (ref_results / "summary.csv").read_bytes()
    ref_weights = torch.load(ref_results / "round0" / "classifier.pt", weights_only=True)
    got_weights = torch.load(results / "round0" / "classifier.pt", weights_only=True)
    assert ref_weights["meta"]["loss_history"] == got_weights["meta"]["loss_history"]
    for name, value in ref_weights["model"].items():
        assert torch.equal(got_weights["model"][name], value), name
    for k in range(2):
        with h5py.File(ref_results / "round0" / "cam" / f"shard{k}.h5") as a, \
                h5py.File(results / "round0" / "cam" / f"shard{k}.h5") as b:
            assert sorted(a["items"]) == sorted(b["items"]) and len(a["items"]) == 12
            for key in a["items"]:
                np.testing.assert_array_equal(a["items"][key][()], b["items"][key][()])
