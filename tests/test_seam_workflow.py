"""method seam in the workflow (issue 12): planning, and a real tiny run of SEAM + AffinityNet with a
CONTA round (ResNet-38 at width 1/16 from random init, 48 px images)."""
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conta_core.cam_labels import cam_to_label, cam_to_label_power
from conta_core.data.index import DatasetIndex
from conta_core.metrics import ConfusionMatrix
from conta_core.store import MapReader
from workflow_helpers import planned_jobs, planned_rules, run_snakemake

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
TINY_SEAM = REPO / "tests" / "configs" / "tiny_seam.yaml"


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, "--configfile", str(TINY), str(TINY_SEAM), *args, check=check)


def test_seam_plan(tmp_path):
    result = snakemake(tmp_path, "-n", "-p", "--config", "shards=2")
    plan = planned_jobs(result.stdout)
    assert plan["aff_label"] == 4 and plan["train_affinity"] == 2 and plan["expand"] == 4  # 2 rounds x 2 shards
    assert "ir_label" not in plan and "train_relation" not in plan
    assert "--affinity-net results/tiny/round1/affinity_net.pt --device auto --gpus 1" in result.stdout
    # the trunk starts from the round's classifier (weights: classifier)
    assert "--classifier results/tiny/round0/classifier.pt --out results/tiny/round0/affinity_net.pt" in result.stdout


def test_seam_config_errors_at_planning(tmp_path):
    result = snakemake(tmp_path, "-n", "--config", "expand={method: irnet}", check=False)
    assert result.returncode != 0
    assert "config key expand.method: 'irnet' is not available for method 'seam'" in result.stdout + result.stderr
    result = snakemake(tmp_path, "-n", "--config", "expand={affinitynet: {train: {width: 0.25}}}", check=False)
    assert result.returncode != 0
    assert "expand.affinitynet.train.width (0.25) must equal classifier.width" in result.stdout + result.stderr


def cam_miou(index, cams, label) -> float:
    cm = ConfusionMatrix(index.num_classes, index.void)
    for image_id in cams.ids():
        classes = [int(c) for c in cams.item_attrs(image_id)["classes"]]
        cm.update(index.read_mask(image_id), label(cams.get(image_id).astype(np.float32), classes))
    return 100.0 * cm.miou()


@pytest.mark.workflow
def test_tiny_seam_run(tmp_path):
    snakemake(tmp_path, "--config", "threads=1")
    results = tmp_path / "results" / "tiny"
    summary = pd.read_csv(results / "summary.csv")
    assert list(summary["round"]) == [0, 1]
    values = summary[["cam_miou", "pseudo_mask_miou", "seg_miou"]].to_numpy()
    assert np.isfinite(values).all() and ((values >= 0) & (values <= 100)).all()

    round0 = results / "round0"
    meta = torch.load(round0 / "classifier.pt", map_location="cpu", weights_only=True)["meta"]
    assert meta["settings"]["method"] == "seam"
    state = torch.load(round0 / "classifier.pt", map_location="cpu", weights_only=True)["model"]
    assert any(k.startswith("backbone.b7.") for k in state) and "f9.weight" in state  # ResNet-38 + PCM
    with MapReader(round0 / "aff_label" / "shard0.h5", kind="aff_label") as labels:
        assert labels.attrs["alpha_low"] == 0.5 and labels.attrs["alpha_high"] == 1.5
        values = np.unique(np.concatenate([labels.get(i).ravel() for i in labels.ids()]))
        assert len(labels) == 24 and set(values.tolist()) <= set(range(6)) | {255} and 255 in values
    meta = torch.load(round0 / "affinity_net.pt", map_location="cpu", weights_only=True)["meta"]
    assert meta["round"] == 0 and np.isfinite(meta["loss_history"]).all()
    with MapReader(round0 / "pseudo_mask" / "shard0.h5", kind="pseudo_mask") as masks:
        assert masks.attrs["method"] == "affinitynet" and len(masks) == 24
        assert all(masks.get(i).shape == (48, 48) for i in masks.ids())

    # The CAM row scores SEAM's CAM-as-mask, background (1 - max) ** cam.bg_power (1.0 here), not
    # cam.bg_threshold: recomputed here from the CAM file, per round.
    index = DatasetIndex.load(results / "dataset")
    for t in (0, 1):
        with MapReader(results / f"round{t}" / "cam" / "shard0.h5", kind="cam") as cams:
            power = cam_miou(index, cams, lambda c, k: cam_to_label_power(c, k, 1.0))
            # (at power 1 the background 1 - max beats the top class exactly where a constant 0.5
            # would: compare with another constant)
            constant = cam_miou(index, cams, lambda c, k: cam_to_label(c, k, 0.3))
        assert summary.loc[t, "cam_miou"] == pytest.approx(power, abs=0.006)  # summary.csv: 2 decimals
        assert abs(power - constant) > 0.05  # the two scorings differ, so the check above can fail

    # Round 1 is a CONTA round of SEAM: its classifier has the fusion at block 5, and the M-usage
    # diagnostic ran on it.
    state = torch.load(results / "round1" / "classifier.pt", map_location="cpu", weights_only=True)["model"]
    assert any(k.startswith("fusion.5.") for k in state)
    usage = pd.read_csv(results / "m_usage.csv")
    row = usage[usage["round"] == 1].iloc[0]
    assert np.isfinite(row["cam_change_zero_pct"]) and row["cam_change_zero_pct"] < 1e3

    # A changed walk setting reruns round 0's walk, not its affinity network or labels; round 1
    # follows from round 0's new segmenter (through the confounder), so all of it reruns.
    plan = planned_rules(tmp_path, [TINY, TINY_SEAM], {"threads": 1, "expand": {"affinitynet": {"beta": 4.0}}})
    assert plan.get("expand") == 2 and plan.get("train_segmenter") == 2
    assert plan.get("train_affinity") == plan.get("aff_label") == plan.get("train_classifier") == 1
