"""The SEC and DSRG presets (issues 13, 14): the paper's settings (Appendix 3.3 / 3.4), and
`snakemake -n` of the full run on VOC- and COCO-sized fake indices plans every job (its time,
target < 10 s, is measured by bench/plan_coco_index.py --preset, not asserted here)."""
from pathlib import Path

import jsonschema
import pytest
from preset_helpers import plan_bench, preset_config, schema

from conta_core import methods
from conta_core.expand import dsrg, sec

REPO = Path(__file__).resolve().parents[1]
ROUNDS = {"sec": 3, "dsrg": 2}  # the paper's best round of each


@pytest.mark.parametrize("method", ["sec", "dsrg"])
@pytest.mark.parametrize("data", ["voc12", "coco14"])
def test_preset_carries_the_papers_settings(method, data):
    config = preset_config(f"{data}_{method}_conta.yaml")
    jsonschema.validate(config, schema())
    recipe = methods.get(method)
    assert config["method"] == method and config["rounds"] == ROUNDS[method]
    assert config["dataset"]["kind"] == data and config["expand"]["method"] == recipe.default_expansion == method
    section = config["expand"][method]
    defaults = recipe.expansion(method).defaults
    for part in ("seeds", "loss", "pseudo_mask"):
        assert section[part] == defaults[part], part
    train = {k: v for k, v in section["train"].items() if k in defaults["train"]}
    assert train == {k: defaults["train"][k] for k in train}
    paper = sec.SEC_TRAINING if method == "sec" else dsrg.DSRG_TRAINING
    for key in ("optimizer", "lr", "momentum", "weight_decay", "iterations", "batch_size", "crop", "lr_step",
                "lr_gamma", "dropout"):
        assert section["train"][key] == paper[key], key
    assert section["train"]["weights"] == "imagenet" and section["train"]["lr_policy"] == "step"
    if method == "sec":  # VGG-16 LargeFOV; fc8 N(0, 0.01); GWRP 0.996 / 0.999; CRF kernels / 12
        assert config["classifier"]["backbone"] == "vgg16" and config["classifier"]["width"] == 1.0
        assert section["train"]["fc8_std"] == 0.01 and section["loss"]["crf_scale"] == 12.0
        assert (section["loss"]["fg_decay"], section["loss"]["bg_decay"]) == (0.996, 0.999)
        assert section["seeds"]["fg_fraction"] == 0.2 and section["seeds"]["background"] == "gradient_saliency"
    else:  # ResNet-101 OS 16; top 20 % CAM seeds; saliency < 0.06; growing thresholds 0.99 / 0.85
        assert config["classifier"]["backbone"] == 101 and config["classifier"]["output_stride"] == 16
        assert (section["train"]["depth"], section["train"]["output_stride"]) == (101, 16)
        assert section["seeds"] == {"fg_fraction": 0.2, "fg_rule": "top_fraction", "saliency_threshold": 0.06}
        assert (section["loss"]["fg_threshold"], section["loss"]["bg_threshold"]) == (0.99, 0.85)
        assert "saliency_root" in config["dataset"]
    assert config["classifier"]["weights"] == "imagenet"
    assert config["conta"]["block"] == 5 and config["conta"]["mode"] == "adjust"
    assert config["segment"]["backbone"] == 101 and config["segment"]["crf"]  # DeepLab-v2, as every method


@pytest.mark.workflow
@pytest.mark.parametrize("method", ["sec", "dsrg"])
def test_voc12_preset_plans_on_a_voc_sized_index(tmp_path, method):
    devkit, sbd = tmp_path / "VOCdevkit", tmp_path / "benchmark_RELEASE"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "Annotations"):
        (devkit / "VOC2012" / sub).mkdir(parents=True)
    (sbd / "dataset" / "cls").mkdir(parents=True)
    name = f"voc12_{method}_conta"
    work = tmp_path / "work"
    dataset = work / "results" / name / "dataset"
    plan_bench.finish_index(plan_bench.fake_voc_scan(devkit / "VOC2012"),
                            {"train_split": "train_aug", "eval_split": "val"}, dataset)
    (dataset / "sbd_masks.h5").touch()
    _, jobs = plan_bench.snakemake_plan(work, devkit, 0, REPO / "presets" / f"{name}.yaml",
                                              f"dataset={{root: {devkit}, sbd_root: {sbd}}}")
    shards, rounds = 4, ROUNDS[method] + 1
    assert jobs["train_classifier"] == rounds and jobs[f"train_{method}"] == rounds
    assert jobs["cam"] == jobs["seeds"] == jobs["expand"] == rounds * shards
    assert jobs["confounder"] == rounds - 1 and "train_relation" not in jobs and "dataset_index" not in jobs


@pytest.mark.workflow
@pytest.mark.parametrize("method", ["sec", "dsrg"])
def test_coco14_preset_plans_on_a_coco_sized_index(tmp_path, method):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    name, mask_shards = f"coco14_{method}_conta", 4
    work = tmp_path / "work"
    dataset = work / "results" / name / "dataset"
    scan = plan_bench.fake_scan(root, dataset, mask_shards)  # 82,783 + 40,504 ids
    plan_bench.finish_index(scan, {"train_split": "train"}, dataset / "plan")
    _, jobs = plan_bench.snakemake_plan(work, root, mask_shards, REPO / "presets" / f"{name}.yaml")
    shards, rounds = 8, ROUNDS[method] + 1
    assert jobs["render_coco_masks"] == 2 * mask_shards and jobs[f"train_{method}"] == rounds
    assert jobs["seeds"] == jobs["expand"] == rounds * shards
