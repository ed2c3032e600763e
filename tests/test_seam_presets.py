"""The SEAM presets (issue 12 item 6): the paper's settings, and `snakemake -n` of the full 3-round run
on VOC- and COCO-sized fake indices plans every job (its time, target < 10 s, is measured by
bench/plan_coco_index.py --preset, not asserted here: speed is a bench's job)."""
from pathlib import Path

import jsonschema
import pytest
from preset_helpers import plan_bench, preset_config, schema

from conta_core import methods, seam
from conta_core.expand import affinitynet
from conta_core.models.resnet38 import MXNET_FILE

REPO = Path(__file__).resolve().parents[1]
PRESETS = ["voc12_seam_conta.yaml", "coco14_seam_conta.yaml"]


@pytest.mark.parametrize("name", PRESETS)
def test_seam_preset_carries_the_papers_settings(name):
    config = preset_config(name)
    jsonschema.validate(config, schema())
    assert config["method"] == "seam" and config["rounds"] == 3
    cls = config["classifier"]
    # Appendix 3.1: Adam, lr 0.01, poly 0.9, batch 8, 8 epochs, long side 448-768, 448 crops
    for key in ("optimizer", "lr", "poly_power", "batch_size", "epochs", "weight_decay", "crop", "long_side"):
        assert cls[key] == seam.PAPER_SETTINGS[key], key
    assert cls["backbone"] == "resnet38" and cls["width"] == 1.0 and cls["weights"].endswith(MXNET_FILE)
    assert cls["siamese_scale"] == seam.SCALE and cls["ohem_fraction"] == seam.OHEM_FRACTION
    assert cls["equivariance_weight"] == 1.0
    assert cls["freeze_bn"] and cls["frozen_blocks"] == ["conv1a", "b2", "b2_1", "b2_2"]
    assert config["cam"]["scales"] == seam.PAPER_SETTINGS["scales"] and config["cam"]["flip"]
    assert config["cam"]["bg_power"] == affinitynet.DEFAULTS["alpha"] == 16
    aff = config["expand"]["affinitynet"]
    assert config["expand"]["method"] == "affinitynet"
    assert {k: aff[k] for k in affinitynet.DEFAULTS} == affinitynet.DEFAULTS  # 16, 4, 24, radius 5, beta 8, t 256
    assert aff["crf"] == affinitynet.AFFINITYNET_CRF
    for key in ("optimizer", "lr", "weight_decay", "batch_size", "epochs", "crop", "new_layer_lr_mult"):
        assert aff["train"][key] == affinitynet.TRAINING[key], key
    assert aff["train"]["weights"].endswith(MXNET_FILE) and aff["train"]["width"] == 1.0
    assert config["conta"]["block"] == 5 and config["conta"]["mode"] == "adjust"
    assert config["segment"]["backbone"] == 101 and config["segment"]["crf"]  # DeepLab-v2, as every method
    recipe = methods.get("seam")
    assert config["expand"]["method"] == recipe.default_expansion


@pytest.mark.workflow
def test_voc12_seam_preset_plans_on_a_voc_sized_index(tmp_path):
    devkit, sbd = tmp_path / "VOCdevkit", tmp_path / "benchmark_RELEASE"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "Annotations"):
        (devkit / "VOC2012" / sub).mkdir(parents=True)
    (sbd / "dataset" / "cls").mkdir(parents=True)
    work, path = tmp_path / "work", REPO / "presets" / "voc12_seam_conta.yaml"
    dataset = work / "results" / "voc12_seam_conta" / "dataset"
    plan_bench.finish_index(plan_bench.fake_voc_scan(devkit / "VOC2012"),
                            {"train_split": "train_aug", "eval_split": "val"}, dataset)
    (dataset / "sbd_masks.h5").touch()
    _, jobs = plan_bench.snakemake_plan(work, devkit, 0, path, f"dataset={{root: {devkit}, sbd_root: {sbd}}}")
    shards, rounds = 4, 4
    assert jobs["train_classifier"] == rounds and jobs["train_affinity"] == rounds
    assert jobs["cam"] == jobs["aff_label"] == jobs["expand"] == rounds * shards
    assert "ir_label" not in jobs and "train_relation" not in jobs and "dataset_index" not in jobs


@pytest.mark.workflow
def test_coco14_seam_preset_plans_on_a_coco_sized_index(tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    work, path, mask_shards = tmp_path / "work", REPO / "presets" / "coco14_seam_conta.yaml", 4
    dataset = work / "results" / "coco14_seam_conta" / "dataset"
    scan = plan_bench.fake_scan(root, dataset, mask_shards)  # 82,783 + 40,504 ids
    plan_bench.finish_index(scan, {"train_split": "train"}, dataset / "plan")
    _, jobs = plan_bench.snakemake_plan(work, root, mask_shards, path)
    shards, rounds = 8, 4
    assert jobs["render_coco_masks"] == 2 * mask_shards and jobs["train_affinity"] == rounds
    assert jobs["aff_label"] == jobs["expand"] == rounds * shards
