"""ir_label / aff_label spread their dense CRFs over --threads spawned workers: the stored labels
are the same with 1 and 2 workers, and what the workers import (the entry scripts' top level)
loads no torch."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conta_core.data.index import DatasetIndex
from conta_core.expand.aff_label import AFFINITYNET_CRF
from conta_core.expand.ir_label import IR_CRF_PARAMS
from conta_core.store import MapReader

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow_scripts"
sys.path.insert(0, str(REPO / "bench"))
from ir_label_workers import CAM_DIGEST, make_shard  # noqa: E402  (the benchmark's CAM shard, at a fixed blob width)


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    """A 1-shard index of 7 synthetic 40x40 images and its CAM shard (255 levels, as cam.py writes)."""
    tmp = tmp_path_factory.mktemp("labels")
    index_dir, cam, _ = make_shard(tmp, images=7, side=40, blob_divisor=5)
    return tmp, DatasetIndex.load(index_dir), cam


def run_step(step: str, shard, threads: int, out: Path) -> dict:
    tmp, index, cam = shard
    if step == "ir_label":
        section = {"irnet": {"ir_label": {"conf_fg": 0.30, "conf_bg": 0.05, "gt_prob": 0.7, "crf": IR_CRF_PARAMS}}}
    else:
        section = {"affinitynet": {"alpha_low": 4.0, "alpha_high": 24.0, "crf": AFFINITYNET_CRF}}
    settings = {"seed": 0, "train_split": "train", "shards": 1, "expand": section}
    expect = [{"path": str(cam), "kind": "cam", "round": 0, "config_digest": CAM_DIGEST}]
    cmd = [sys.executable, str(SCRIPTS / f"{step}.py"), "--settings", json.dumps(settings),
           "--expect", json.dumps(expect), "--threads", str(threads), "--index-dir", str(tmp / "index"),
           "--round", "0", "--cam", str(cam), "--shard", "0", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with MapReader(out, kind=step) as r:
        assert r.ids() == index.ids("train")  # written in the shard's order
        return {i: (r.get(i), list(r.item_attrs(i)["classes"])) for i in r.ids()}


@pytest.mark.parametrize("step", ["ir_label", "aff_label"])
def test_one_and_two_workers_store_the_same_labels(shard, tmp_path, step):
    one = run_step(step, shard, 1, tmp_path / "one.h5")
    two = run_step(step, shard, 2, tmp_path / "two.h5")
    assert one.keys() == two.keys() and len(one) == 7
    for image_id, (label, classes) in one.items():
        np.testing.assert_array_equal(two[image_id][0], label, err_msg=image_id)
        assert two[image_id][1] == classes == shard[1].labels(image_id)
    values = np.concatenate([label.ravel() for label, _ in one.values()])
    # a case that tells labels apart: background, some foreground class and unsure pixels all occur
    assert {0, 255} <= set(np.unique(values).tolist()) and ((values != 0) & (values != 255)).any()


def test_worker_imports_load_no_torch():
    # A spawned worker imports the entry script's top level and the mapped function's module.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import ir_label, aff_label; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, str(SCRIPTS)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
