"""expand.method irnet in the workflow: relation-training data, planning, and a real tiny run."""
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conta_core.expand.affinity import reduce_label
from conta_core.expand.relation_data import RelationDataset, load_classifier_backbone
from conta_core.store import MapReader, MapWriter
from workflow_helpers import planned_jobs, planned_rules, run_snakemake

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
TINY_IRNET = REPO / "tests" / "configs" / "tiny_irnet.yaml"
IRNET = ["--config", "expand={method: irnet}", "rounds=0"]


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, "--configfile", str(TINY), str(TINY_IRNET), *args, check=check)




# --- the relation network's training data --------------------------------------


class _Images:
    """The part of DatasetIndex that RelationDataset reads."""

    def __init__(self, images):
        self.images = images

    def read_image(self, image_id):
        return self.images[image_id]


def _ir_label_file(path, labels, round_index=0):
    with MapWriter(path, kind="ir_label", attrs={"round": round_index, "class_names": ["bg", "a", "b"]}) as w:
        for image_id, label in labels.items():
            w.put(image_id, label)


def test_relation_dataset_crops_and_reduces_labels(tmp_path):
    rng = np.random.default_rng(0)
    images = {f"im{i}": rng.integers(0, 255, (37, 50, 3), dtype=np.uint8) for i in range(3)}
    labels = {i: rng.choice(np.array([0, 1, 2, 255], np.uint8), size=(37, 50)) for i in images}
    _ir_label_file(tmp_path / "shard0.h5", {k: labels[k] for k in ("im0", "im2")})
    _ir_label_file(tmp_path / "shard1.h5", {"im1": labels["im1"]})
    files = [tmp_path / "shard0.h5", tmp_path / "shard1.h5"]
    expect = {"round": 0, "class_names": ["bg", "a", "b"]}

    data = RelationDataset(_Images(images), sorted(images), files, crop=24, seed=3, expect=expect)
    image, label = data[1]
    assert image.shape == (3, 24, 24) and image.dtype == torch.float32
    assert label.shape == (6, 6) and label.dtype == torch.int64
    assert set(label.unique().tolist()) <= {0, 1, 2, 255}
    # same (seed, epoch, item): same sample; another epoch: another crop
    again = data[1]
    assert torch.equal(again[0], image) and torch.equal(again[1], label)
    data.set_epoch(1)
    assert not torch.equal(data[1][0], image)

    # with no rescale the label is the stride-4 reduction of the label under the crop:
    # find the crop by matching the image, then compare
    flat = RelationDataset(_Images(images), ["im1"], files, crop=24, seed=0, expect=expect)
    for epoch in range(4):
        flat.set_epoch(epoch)
        crop, small = flat[0]
        from conta_core.data.datasets import to_tensor
        full = to_tensor(images["im1"])
        found = False
        for flip in (False, True):
            src = full.flip(-1) if flip else full
            lab = labels["im1"][:, ::-1] if flip else labels["im1"]
            for top in range(37 - 24 + 1):
                for left in range(50 - 24 + 1):
                    if torch.equal(src[:, top:top + 24, left:left + 24], crop):
                        assert np.array_equal(small.numpy(), reduce_label(lab[top:top + 24, left:left + 24]))
                        found = True
        assert found

    # a stale label file (wrong round) or a missing id fails when the dataset is made
    with pytest.raises(Exception, match="round"):
        RelationDataset(_Images(images), sorted(images), files, crop=24, expect={"round": 1})
    with pytest.raises(ValueError, match="no IR label"):
        RelationDataset(_Images(images), ["im0", "nope"], files, crop=24, expect=expect)


def test_relation_dataset_with_loader_workers(tmp_path):
    rng = np.random.default_rng(1)
    images = {f"im{i}": rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for i in range(4)}
    _ir_label_file(tmp_path / "l.h5", {i: np.zeros((40, 40), np.uint8) for i in images})
    data = RelationDataset(_Images(images), sorted(images), [tmp_path / "l.h5"], crop=32, seed=0,
                           scale_range=(0.8, 1.2))
    data[0]  # the main process opened the file; workers must reopen their own
    loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=2)
    batches = list(loader)
    assert [tuple(b[0].shape) for b in batches] == [(2, 3, 32, 32)] * 2
    assert all(tuple(b[1].shape) == (2, 8, 8) for b in batches)


def test_load_classifier_backbone(tmp_path):
    from conta_core.classify import save_model
    from conta_core.expand.irnet import RelationNet
    from conta_core.models.backbone import build_resnet
    from conta_core.models.classifier import CamClassifier

    torch.manual_seed(1)
    classifier = CamClassifier(build_resnet(18, 16, "none", False, False), 3)
    save_model(tmp_path / "classifier.pt", classifier, {"round": 0})
    net = RelationNet(depth=18, output_stride=16)
    load_classifier_backbone(net, tmp_path / "classifier.pt")
    mine, theirs = net.backbone.state_dict(), classifier.backbone.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    with pytest.raises(ValueError, match="backbone"):
        load_classifier_backbone(RelationNet(depth=34, output_stride=16), tmp_path / "classifier.pt")


# --- planning ------------------------------------------------------------------


def test_crf_plan_has_no_irnet_jobs(tmp_path):
    result = snakemake(tmp_path, "-n", "-p", "--config", "shards=2")
    plan = planned_jobs(result.stdout)
    assert plan["expand"] == 4  # 2 rounds x 2 shards
    assert "ir_label" not in plan and "train_relation" not in plan
    expand_cmds = [line for line in result.stdout.splitlines() if "workflow_scripts/expand.py" in line]
    assert len(expand_cmds) == 4 and not any("--relation-net" in c or "--gpus" in c for c in expand_cmds)


def test_irnet_plan(tmp_path):
    result = snakemake(tmp_path, "-n", "-p", "--config", "expand={method: irnet}", "shards=2", "rounds=1")
    plan = planned_jobs(result.stdout)
    assert plan["ir_label"] == 4 and plan["train_relation"] == 2 and plan["expand"] == 4
    assert "results/tiny/round1/relation_net.pt" in result.stdout
    assert "--relation-net results/tiny/round0/relation_net.pt --device auto --gpus 1" in result.stdout
    assert "train_relation.py" in result.stdout and "--gpus 1" in result.stdout


def test_bad_irnet_key_fails_at_planning(tmp_path):
    result = snakemake(tmp_path, "-n", "--config", "expand={irnet: {walk: {betta: 3}}}", check=False)
    assert result.returncode != 0 and "betta" in result.stdout + result.stderr


# --- a real run ------------------------------------------------------------------


@pytest.mark.workflow
def test_tiny_irnet_run(tmp_path):
    snakemake(tmp_path, *IRNET)
    results = tmp_path / "results" / "tiny"
    summary = pd.read_csv(results / "summary.csv")
    assert list(summary["round"]) == [0]
    values = summary[["cam_miou", "pseudo_mask_miou", "seg_miou"]].to_numpy()
    assert np.isfinite(values).all() and ((values >= 0) & (values <= 100)).all()

    round0 = results / "round0"
    with MapReader(round0 / "pseudo_mask" / "shard0.h5", kind="pseudo_mask") as masks:
        assert masks.attrs["method"] == "irnet" and masks.attrs["step"] == "expand"
        assert len(masks) == 24
        for image_id in masks.ids():
            mask = masks.get(image_id)
            assert mask.shape == (48, 48) and mask.dtype == np.uint8
    with MapReader(round0 / "ir_label" / "shard0.h5", kind="ir_label") as labels:
        assert labels.attrs["conf_fg"] == 0.30 and labels.attrs["conf_bg"] == 0.05
        values = np.unique(np.concatenate([labels.get(i).ravel() for i in labels.ids()]))
        assert len(labels) == 24 and set(values.tolist()) <= set(range(6)) | {255}
    meta = torch.load(round0 / "relation_net.pt", map_location="cpu", weights_only=True)["meta"]
    assert meta["round"] == 0 and np.isfinite(meta["loss_history"]).all()
    for step in ("ir_label_shard0", "train_relation", "expand_shard0"):
        assert (results / "benchmarks" / "round0" / f"{step}.tsv").exists()

    # Rerunning does nothing; a changed walk setting reruns the walk, not the relation network.
    again = snakemake(tmp_path, *IRNET)
    assert "Nothing to be done" in again.stdout + again.stderr
    # (Planned in this process: the dry run's jobs, without a snakemake process per plan.)
    configfiles, irnet = [TINY, TINY_IRNET], {"expand": {"method": "irnet"}, "rounds": 0}
    walk = {"expand": {"method": "irnet", "irnet": {"walk": {"beta": 5}}}}
    plan = planned_rules(tmp_path, configfiles, {**irnet, **walk})
    assert plan.get("expand") == 1 and "train_relation" not in plan and "ir_label" not in plan
    # A deleted relation network is a missing product of the run: it is retrained, and the walk redone.
    (round0 / "relation_net.pt").unlink()
    plan = planned_rules(tmp_path, configfiles, irnet)
    assert plan.get("train_relation") == 1 and plan.get("expand") == 1 and "ir_label" not in plan
