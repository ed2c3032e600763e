"""Fault injection: damage each kind of finished artifact of a real run, then run again.

One tiny run (IRNet expansion, rounds 0 and 1, one thread per job so every rebuild is
bit-for-bit reproducible) is made once per module and copied per case. Each case damages
one round-0 artifact in place and asks Snakemake for the output of the artifact's nearest
consumer, the way a user's rerun would reach it:

- truncate: the file cut to half its size;
- flip: 64 bytes inverted in the middle of the stored data (the middle item's chunk, the
  largest tensor of a model file);
- rewrite: one value changed through h5py / torch.save, so the file is valid and only its
  stored checksum tells (garbage inside a well-formed file).

Expected of every case: the next run stops with a message naming the file and saying it
was deleted for a rebuild, never uses the damaged content, deletes no other
file than the consumer output it was asked to remake; and the run after it rebuilds the
file and its consumer's output bit for bit as in the baseline, with no NaN (checked for
the truncated case of each kind: once deleted, a file is rebuilt the same way whatever
damaged it). The outcomes are tabulated in docs/fault_injection.md.

Training checkpoints do not survive a finished run (they are removed once the model is
saved), so their case stops a training job with the NaN test hook (which also shows the
non-finite-loss stop at the workflow level), damages the newest checkpoint and resumes.
"""
from __future__ import annotations

import math
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conta_core.checkpoint import list_checkpoints, load_model_file
from conta_core.store import MapReader

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [REPO / "tests" / "configs" / "tiny.yaml", REPO / "tests" / "configs" / "tiny_irnet.yaml"]
RUN = "results/tiny"

# artifact kind -> (the damaged file, the output of its nearest consumer: the next run's target)
KINDS = {
    "cam": ("round0/cam/shard0.h5", "round0/ir_label/shard0.h5"),
    "ir_label": ("round0/ir_label/shard0.h5", "round0/relation_net.pt"),
    "relation_net": ("round0/relation_net.pt", "round0/pseudo_mask/shard0.h5"),
    "pseudo_mask": ("round0/pseudo_mask/shard0.h5", "round0/segmenter.pt"),
    "segmenter": ("round0/segmenter.pt", "round0/seg_pred/val/shard0.h5"),
    "seg_pred": ("round0/seg_pred/train/shard0.h5", "round0/confounder.h5"),
    "confounder": ("round0/confounder.h5", "round1/classifier.pt"),
    "classifier": ("round0/classifier.pt", "round0/cam/shard0.h5"),
}


def snakemake(workdir: Path, *targets: str, config: tuple[str, ...] = (), env: dict | None = None,
              check: bool = True) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CONTA_")}
    environ["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    environ.update(env or {})
    cmd = [sys.executable, "-m", "snakemake", *targets, "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--cores", "2", "--configfile", *map(str, CONFIGS),
           "--config", "expand={method: irnet}", "threads=1", *config]
    result = subprocess.run(cmd, capture_output=True, text=True, env=environ, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """The pristine finished run (a copy: cases run in its original folder, see case_copy)."""
    root = tmp_path_factory.mktemp("faults")
    (root / "run").mkdir()
    snakemake(root / "run")
    shutil.copytree(root / "run", root / "pristine", symlinks=True)
    return root / "pristine"


def case_copy(pristine: Path, tmp_path: Path) -> Path:
    """The finished run restored into the folder it was made in (so no path-valued setting
    differs), modification times kept (copy2), so nothing is out of date."""
    case = pristine.parent / "run"
    shutil.rmtree(case)
    shutil.copytree(pristine, case, symlinks=True)
    return case


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip(path: Path) -> None:
    """64 bytes inverted in the middle of stored data: the middle item's first chunk (HDF5),
    the largest tensor (torch zip). Bytes flipped anywhere in an HDF5 file, B-tree slack
    included, are tests/test_store.py's test_flipped_bytes_are_detected_or_provably_harmless."""
    if path.suffix == ".pt":
        with zipfile.ZipFile(path) as z:
            info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        with open(path, "rb") as f:
            f.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", f.read(4))
        start, size = info.header_offset + 30 + name_len + extra_len, info.file_size
    else:
        with h5py.File(path, "r") as f:
            dataset = _middle_item(f)
            if dataset.chunks:
                chunk = dataset.id.get_chunk_info(0)
                start, size = chunk.byte_offset, chunk.size
            else:
                start, size = dataset.id.get_offset(), dataset.id.get_storage_size()
    data = bytearray(path.read_bytes())
    at, n = start + size // 2 - min(32, size // 2), min(64, size)
    data[at:at + n] = bytes(b ^ 0xFF for b in data[at:at + n])
    path.write_bytes(bytes(data))


def rewrite(path: Path) -> None:
    """One value changed through the file format's own library: a valid file whose stored
    checksum is now stale (what torch.load and gzip alone never notice)."""
    if path.suffix == ".pt":
        state = torch.load(path, weights_only=True)
        largest = max(state["model"].values(), key=lambda t: t.numel())
        largest.view(-1)[0] += 1
        torch.save(state, path)
        return
    with h5py.File(path, "r+") as f:
        dataset = _middle_item(f)
        values = dataset[()]
        flat = values.reshape(-1)
        flat[0] = flat[0] + 1 if values.dtype.kind in "iu" else flat[0] + 0.5
        dataset[...] = values


def _middle_item(f: h5py.File) -> h5py.Dataset:
    keys = sorted(f["items"])
    return f["items"][keys[len(keys) // 2]]


DAMAGES = {"truncate": truncate, "flip": flip, "rewrite": rewrite}


def content(path: Path):
    """What a reader gets from an artifact, for bitwise comparison (times and host left out)."""
    if path.suffix == ".pt":
        state = load_model_file(path, remove_damaged=False)
        weights = {k: v.clone() for k, v in state["model"].items()}
        return {"model": weights, "loss_history": state["meta"].get("loss_history")}
    with MapReader(path, remove_damaged=False) as reader:
        items = {i: (reader.get(i), reader.item_attrs(i)) for i in reader.ids()}
        arrays = {name: reader.array(name) for name in ("confounder", "counts") if name in reader._file}
        attrs = {k: v for k, v in reader.attrs.items() if k not in ("created_utc", "root_crc32")}
        return {"items": items, "arrays": arrays, "attrs": attrs}


def assert_same(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
        assert not a.is_floating_point() or torch.isfinite(a).all(), f"{where} holds NaN/inf"
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), where
        assert a.dtype.kind != "f" or np.isfinite(a).all(), f"{where} holds NaN/inf"
    elif isinstance(a, float):
        assert math.isfinite(a) and a == b, where
    else:
        assert a == b, where


def file_times(case: Path) -> dict[str, int]:
    root = case / RUN
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")
            if p.is_file() and p.parts[len(root.parts)] not in ("logs", "benchmarks")}


@pytest.mark.parametrize("damage", list(DAMAGES))
@pytest.mark.parametrize("kind", list(KINDS))
def test_damaged_artifact_is_never_used_and_rebuilt(finished_run, tmp_path, kind, damage):
    rel, consumer = KINDS[kind]
    case = case_copy(finished_run, tmp_path)
    damaged, target = case / RUN / rel, case / RUN / consumer
    before = file_times(case)
    DAMAGES[damage](damaged)

    first = snakemake(case, f"{RUN}/{consumer}", check=False)
    log = first.stdout + first.stderr
    if first.returncode != 0:
        # Stopped at the first read, naming the file, which is gone so that it is rebuilt.
        assert f"{RUN}/{rel} is damaged" in log, log[-4000:]
        assert "it was deleted" in log and "rerun the same command" in log
        assert not damaged.exists()
    else:
        raise AssertionError(f"the damaged {rel} was not noticed:\n{log[-4000:]}")
    # Nothing else was deleted or rewritten: only the consumer output Snakemake was asked to remake.
    after = file_times(case)
    for name, mtime in before.items():
        if name not in (rel, consumer):
            assert after.get(name) == mtime, f"{name} was deleted or rewritten"

    if damage != "truncate":
        return  # a deleted file is rebuilt the same way whatever damaged it: shown once per kind
    snakemake(case, f"{RUN}/{consumer}")
    assert_same(content(finished_run / RUN / rel), content(damaged), rel)
    assert_same(content(finished_run / RUN / consumer), content(target), consumer)


def test_default_target_rerun_after_damage_gives_the_same_summary(finished_run, tmp_path):
    """The user's view: `snakemake` stops naming the damaged file; `snakemake` again finishes
    with the baseline's numbers."""
    case = case_copy(finished_run, tmp_path)
    damaged = case / RUN / "round1" / "segmenter.pt"
    flip(damaged)
    first = snakemake(case, check=False)
    assert first.returncode != 0 and f"{RUN}/round1/segmenter.pt is damaged" in first.stdout + first.stderr
    snakemake(case)
    for name in ("summary.csv", "per_class.csv"):
        assert (case / RUN / name).read_text() == (finished_run / RUN / name).read_text(), name
    # Every round's models are targets of `all`: the second run rebuilt the deleted segmenter.
    assert damaged.exists()
    assert_same(content(finished_run / RUN / "round1/segmenter.pt"), content(damaged), "segmenter.pt")


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_training_checkpoint_is_skipped(finished_run, tmp_path, damage):
    """A training job stopped by a NaN loss leaves checkpoints; the newest is damaged; the
    resumed job skips it with a log line, continues from the one before and ends exactly
    where the uninterrupted baseline ended."""
    case = case_copy(finished_run, tmp_path)
    model = case / RUN / "round0" / "classifier.pt"
    model.unlink()
    every = ("resources={checkpoint_every: 1}",)
    stopped = snakemake(case, f"{RUN}/round0/classifier.pt", config=every, check=False,
                        env={"CONTA_TEST_NAN_AT_ITERATION": "3"})
    log = stopped.stdout + stopped.stderr + (case / RUN / "logs/round0/train_classifier.log").read_text()
    assert stopped.returncode != 0
    assert "the loss is nan at iteration 3" in log and "CONTA_NONFINITE_RESTART=resume" in log
    assert not model.exists()
    folder = case / RUN / "checkpoints" / "round0" / "classifier"
    saved = list_checkpoints(folder)
    assert [i for i, _ in saved] == [1, 2]
    DAMAGES[damage](saved[-1][1])

    # Without being asked, the rerun does not resume a run that went non-finite.
    # (It already skips the damaged newest checkpoint, with a log line, and names the one before.)
    refused = snakemake(case, f"{RUN}/round0/classifier.pt", config=every, check=False)
    log = (case / RUN / "logs/round0/train_classifier.log").read_text()
    assert refused.returncode != 0
    assert "skipping damaged checkpoint" in log and "iter00000002.pt" in log
    assert "CONTA_NONFINITE_RESTART=resume" in log and "iter00000001.pt" in log

    snakemake(case, f"{RUN}/round0/classifier.pt", config=every, env={"CONTA_NONFINITE_RESTART": "resume"})
    log = (case / RUN / "logs/round0/train_classifier.log").read_text()
    assert "resuming from" in log and "iter00000001.pt at iteration 1" in log
    assert_same(content(finished_run / RUN / "round0/classifier.pt"), content(model), "classifier.pt")
    assert not folder.exists()  # removed once the model is saved


@pytest.fixture(scope="module")
def other_config_run(tmp_path_factory) -> Path:
    """Round 0's artifacts made by another config (seed 1): foreign files of every kind."""
    other = tmp_path_factory.mktemp("faults_other") / "run"
    other.mkdir()
    snakemake(other, *sorted({f"{RUN}/{rel}" for rel, _ in KINDS.values()}), config=("seed=1",))
    return other


# The provenance checks (issue 10 item 3) compare the digest of the producing step's settings,
# which take in the digests of the files it read: a file of a seed-1 run is refused also where
# its own step has no seed (ir_label, expand, predict), through the seed-1 CAM or classifier
# it was made from.
FOREIGN_CASES = list(KINDS)


@pytest.mark.parametrize("kind", FOREIGN_CASES)
def test_artifact_from_another_config_is_refused(finished_run, other_config_run, tmp_path, kind):
    """The same artifact copied in from a run of another config: intact, checksums pass, but it
    is not this run's. The next run refuses it naming the file (never uses it)."""
    rel, consumer = KINDS[kind]
    case = case_copy(finished_run, tmp_path)
    foreign = case / RUN / rel
    shutil.copy(other_config_run / RUN / rel, foreign)  # a fresh copy: newer than its consumers
    before = file_times(case)
    first = snakemake(case, f"{RUN}/{consumer}", check=False)
    log = first.stdout + first.stderr
    assert first.returncode != 0, log[-3000:]
    assert f"{RUN}/{rel}" in log and "config_digest" in log, log[-4000:]
    assert foreign.exists()  # intact, only foreign: reported, not deleted
    after = file_times(case)
    for name, mtime in before.items():
        if name not in (rel, consumer):
            assert after.get(name) == mtime, f"{name} was deleted or rewritten"
