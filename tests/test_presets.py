"""Paper presets (presets/*.yaml) and pretrained-backbone loading.

Presets are merged over config.yaml with --configfile; they must validate, carry
the paper's settings, and plan the full 3-round run against a (fake) dataset tree.
Backbone weights: a local torchvision checkpoint loads with weights_only and
changes the output; a wrong checkpoint names its bad keys; ``imagenet`` without
network fails at once saying how to use a local file (the download is stubbed,
so no test touches the network).
"""
import subprocess
import time
import urllib.error
from pathlib import Path

import jsonschema
import pytest
import torch
import torchvision

from conta_core.models import backbone as backbone_module
from conta_core.models.backbone import WeightsError, build_resnet
from preset_helpers import PRESETS, preset_config, schema
from workflow_helpers import planned_jobs, run_snakemake

PRESET_NAMES = sorted(p.name for p in PRESETS.glob("*.yaml"))


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_validates_against_the_schema(name):
    jsonschema.validate(preset_config(name), schema())


# The paper's (Appendix 3.2) and IRNet's / deeplab-pytorch's settings, shared by both presets.
# (precision is not the paper's: auto = bf16 autocast on CUDA, issue 16)
PAPER = {
    "rounds": 3, "device": "auto",
    "classifier": {"backbone": 50, "weights": "imagenet", "output_stride": 16, "freeze_bn": True,
                   "freeze_conv1": True, "crop": 512, "batch_size": 16, "epochs": 5, "optimizer": "sgd",
                   "lr": 0.1, "new_layer_lr_mult": 10, "momentum": 0.9, "weight_decay": 1e-4,
                   "poly_power": 0.9, "warmup_iters": 0, "precision": "auto"},
    "cam": {"scales": [1.0, 0.5, 1.5, 2.0], "flip": True, "bg_threshold": 0.15},
    "expand": {"method": "irnet",
               "irnet": {"ir_label": {"conf_fg": 0.30, "conf_bg": 0.05},
                         "train": {"backbone": 50, "output_stride": 16, "weights": "imagenet",
                                   "crop": 512, "batch_size": 32, "epochs": 3, "lr": 0.1,
                                   "radius": 10},
                         "walk": {"beta": 10.0, "exp_times": 8, "radius": 5, "bg_threshold": 0.25}}},
    "conta": {"mode": "adjust", "block": 5},
    "confounder": {"source": "seg_mask"},
    "segment": {"backbone": 101, "weights": "imagenet", "output_stride": 8, "freeze_bn": True,
                "aspp_rates": [6, 12, 18, 24], "msc_scales": [1.0, 0.75, 0.5], "crop": 321,
                "optimizer": "sgd", "lr": 2.5e-4, "momentum": 0.9, "weight_decay": 5e-4,
                "poly_power": 0.9, "warmup_iters": 0, "precision": "auto"},
}


def assert_contains(got: dict, expected: dict, where: str = "") -> None:
    for key, value in expected.items():
        assert key in got, f"{where}{key} missing"
        if isinstance(value, dict):
            assert_contains(got[key], value, f"{where}{key}.")
        else:
            assert got[key] == value, f"{where}{key}: {got[key]!r} != {value!r}"


@pytest.mark.parametrize("name", ["voc12_irnet_conta.yaml", "coco14_irnet_conta.yaml"])
def test_preset_carries_the_papers_settings(name):
    config = preset_config(name)
    assert_contains(config, PAPER)
    kind = {"voc12_irnet_conta.yaml": "voc12", "coco14_irnet_conta.yaml": "coco14"}[name]
    assert config["dataset"]["kind"] == kind
    assert config["dataset"]["train_split"] == ("train_aug" if kind == "voc12" else "train")
    assert config["dataset"]["eval_split"] == "val"
    for split in (config["dataset"]["train_split"], config["dataset"]["eval_split"]):
        assert split in config["dataset"]["splits"]  # rules/common.smk insists


# ------------------------------------------------------------------ planning the full run


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, *args, check=check, timeout=600)




def fake_voc_tree(root: Path) -> tuple[Path, Path]:
    """Just the folders a dry run could look at (planning reads no dataset file)."""
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "Annotations"):
        (voc / sub).mkdir(parents=True)
    (voc / "ImageSets/Segmentation/train.txt").write_text("a\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text("b\n")
    sbd = root / "benchmark_RELEASE" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    (sbd / "train.txt").write_text("c\n")
    (sbd / "val.txt").write_text("d\n")
    return root / "VOCdevkit", root / "benchmark_RELEASE"


@pytest.mark.workflow
def test_voc12_preset_plans_the_full_three_round_run(tmp_path):
    devkit, sbd = fake_voc_tree(tmp_path / "data")
    work = tmp_path / "work"
    result = snakemake(work, "-n", "--configfile", str(PRESETS / "voc12_irnet_conta.yaml"),
                       "--config", f"dataset={{root: {devkit}, sbd_root: {sbd}}}")
    plan = planned_jobs(result.stdout)
    shards = preset_config("voc12_irnet_conta.yaml")["shards"]
    rounds = 4  # baseline + 3 CONTA rounds
    assert plan["dataset_index"] == 1
    assert plan["train_classifier"] == rounds and plan["train_segmenter"] == rounds
    assert plan["cam"] == rounds * shards and plan["expand"] == rounds * shards
    # val in every round; train_aug where the next round's confounder reads it (not the last round)
    assert plan["predict"] == rounds * shards + (rounds - 1) * shards
    assert plan["confounder"] == 3 and plan["evaluate"] == rounds
    assert "train_relation" in result.stdout  # IRNet's boundary branch (expand.method irnet)
    assert "render_coco_masks" not in plan
    # The index step declares the SBD masks it renders (into results/, not the dataset).
    assert "results/voc12_irnet_conta/dataset/sbd_masks.h5" in result.stdout
    assert "train_aug" in result.stdout and "round3" in result.stdout


@pytest.mark.workflow
def test_coco14_preset_plans_one_render_job_per_mask_shard(tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    work = tmp_path / "work"
    result = snakemake(work, "-n", "--configfile", str(PRESETS / "coco14_irnet_conta.yaml"),
                       "--config", f"dataset={{root: {root}, mask_shards: 3}}")
    plan = planned_jobs(result.stdout)
    assert plan["dataset_index"] == 1 and plan["dataset_ready"] == 1
    assert plan["render_coco_masks"] == 2 * 3  # train and val, 3 shards each
    assert plan["train_classifier"] == 4 and plan["confounder"] == 3
    for split in ("train", "val"):
        for shard in range(3):
            assert f"dataset/gt_masks/{split}_shard{shard}.h5" in result.stdout


# ------------------------------------------------------------------ pretrained backbones


def torchvision_checkpoint(path: Path, depth: int = 18, seed: int = 1) -> dict:
    torch.manual_seed(seed)
    net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    with torch.no_grad():  # BN statistics that are not the defaults, so they must load too
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    state = net.state_dict()
    torch.save(state, path)
    return state


def reference_features(depth: int, state: dict, x: torch.Tensor) -> torch.Tensor:
    net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def test_local_torchvision_checkpoint_loads_with_weights_only(tmp_path, monkeypatch):
    path = tmp_path / "resnet18.pth"
    state = torchvision_checkpoint(path)
    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(backbone_module.torch, "load", recording_load)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(7)
    random_init = build_resnet(18, 32, "none").eval()
    torch.manual_seed(7)
    loaded = build_resnet(18, 32, str(path)).eval()
    assert calls == [True]
    with torch.no_grad():
        before, after = random_init(x)[-1], loaded(x)[-1]
    # The weights change the output, and the backbone now computes torchvision's ResNet.
    assert not torch.allclose(before, after, atol=1e-3)
    assert torch.allclose(after, reference_features(18, state, x), atol=1e-5)
    # The same file in a {"model": ...} wrapper or with DataParallel's prefix loads the same.
    for variant in ({"model": state}, {f"module.{k}": v for k, v in state.items()}):
        torch.save(variant, tmp_path / "variant.pth")
        other = build_resnet(18, 32, str(tmp_path / "variant.pth")).eval()
        with torch.no_grad():
            assert torch.equal(other(x)[-1], after)


def test_checkpoint_with_wrong_keys_names_them(tmp_path):
    path = tmp_path / "resnet18.pth"
    state = torchvision_checkpoint(path)
    renamed = {f"backbone.{k}" if k.startswith("layer1.") else k: v for k, v in state.items()}
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(WeightsError) as info:
        build_resnet(18, 16, str(tmp_path / "renamed.pth"))
    message = str(info.value)
    assert "missing keys" in message and "'layer1.0.conv1.weight'" in message
    assert "unrecognised keys" in message and "'backbone.layer1.0.conv1.weight'" in message
    # A deeper ResNet's checkpoint: extra blocks are unrecognised, bottleneck shapes mismatch.
    torchvision_checkpoint(tmp_path / "resnet50.pth", depth=50)
    with pytest.raises(WeightsError) as info:
        build_resnet(18, 16, str(tmp_path / "resnet50.pth"))
    message = str(info.value)
    assert "'layer1.0.conv3.weight'" in message
    assert "shape mismatches" in message and "layer1.0.conv1.weight (64, 64, 1, 1) vs (64, 64, 3, 3)" in message
    # A pickled module is refused by weights_only and reported as such.
    torch.save(torchvision.models.resnet18(weights=None), tmp_path / "module.pth")
    with pytest.raises(WeightsError, match="weights_only=True"):
        build_resnet(18, 16, str(tmp_path / "module.pth"))
    with pytest.raises(WeightsError, match="does not exist"):
        build_resnet(18, 16, str(tmp_path / "nowhere.pth"))


def test_imagenet_without_network_fails_at_once_with_a_way_out(monkeypatch):
    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_network)
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        build_resnet(50, 16, "imagenet")
    assert time.perf_counter() - start < 30
    message = str(info.value)
    url = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    assert "URLError" in message and "name resolution" in message
    assert f"Download {url}" in message
    assert f"weights: /data/{Path(url).name}" in message and "path" in message
