"""The ``sec`` and ``dsrg`` recipes: hooks resolve, defaults are the modules' settings, VGG blocks splice."""
from __future__ import annotations

import pytest

from conta_core import methods


@pytest.mark.parametrize("name", ["sec", "dsrg"])
def test_hooks_resolve(name):
    recipe = methods.get(name)
    assert recipe.expansion().name == name and recipe.expansion("crf").name == "crf"
    for key, ref in recipe.refs().items():
        assert callable(ref.load()), f"{name}.{key} -> {ref.target}"


def test_recipe_settings_are_the_modules():
    from conta_core.expand import dsrg, region_growing, saliency, sec, seeds  # noqa: F401

    s = methods.get("sec").expansion("sec").defaults
    assert {k: s["train"][k] for k in sec.SEC_TRAINING} == sec.SEC_TRAINING
    assert (s["loss"]["fg_decay"], s["loss"]["bg_decay"], s["loss"]["crf_scale"]) == (sec.FG_DECAY, sec.BG_DECAY,
                                                                                      sec.CRF_SCALE)
    assert s["loss"]["crf"] == s["pseudo_mask"]["crf"] == sec.SEC_CRF
    assert (s["seeds"]["fg_fraction"], s["seeds"]["bg_fraction"]) == (seeds.FG_FRACTION, seeds.SEC_BG_FRACTION)
    d = methods.get("dsrg")
    g = d.expansion("dsrg").defaults
    assert {k: g["train"][k] for k in g["train"] if k in dsrg.DSRG_TRAINING} == \
        {k: dsrg.DSRG_TRAINING[k] for k in g["train"] if k in dsrg.DSRG_TRAINING}
    assert (g["loss"]["fg_threshold"], g["loss"]["bg_threshold"]) == (0.99, 0.85) == (
        region_growing.FG_THRESHOLD, region_growing.BG_THRESHOLD)
    assert g["seeds"]["saliency_threshold"] == seeds.DSRG_SALIENCY_THRESHOLD == 0.06
    assert tuple(g["loss"]["constrain_clip"]) == dsrg.CONSTRAIN_CLIP
    assert g["loss"]["crf"] == g["pseudo_mask"]["crf"] == sec.SEC_CRF
    assert d.defaults["root"]["rounds"] == 2


def test_vgg_trunk_takes_contas_splice_at_every_block():
    import torch

    from conta_core.models.classifier import CamClassifier, parse_blocks
    from conta_core.models.vgg import build_vgg16

    torch.manual_seed(0)
    trunk = build_vgg16(width=0.0625, fc6_dilation=1)
    model = CamClassifier(trunk, 3, conta_mode="seg_mask", blocks=parse_blocks("dense"), map_size=(6, 6))
    images = torch.randn(2, 3, 48, 40)
    x_m = torch.rand(2, 6, 6)
    cam = model.cam(images, x_m)
    assert cam.shape == (2, 3, 6, 5)
    assert set(model.fusion) == {"2", "3", "4", "5"}
    # the splice is live: the M path changes the output once its weights are not zero
    with torch.no_grad():
        for f in model.fusion.values():
            for p in f.m_parameters():
                p.fill_(0.5)
    assert not torch.allclose(model.cam(images, x_m), model.cam(images, x_m.flip(0)))


def test_build_classifier_takes_the_recipes_backbone():
    from conta_core.classify import build_classifier
    from conta_core.models.backbone import ResNetBackbone
    from conta_core.models.vgg import VGG16Trunk

    sec_cls = dict(methods.get("sec").defaults["classifier"], width=0.0625, weights="none")
    model = build_classifier(sec_cls, 4, {"mode": "off"}, 0, None)
    assert isinstance(model.backbone, VGG16Trunk) and model.backbone.fc6.dilation == (1, 1)
    assert model.backbone.stage_channels[-1] == 64 and model.classifier.out_channels == 3
    dsrg_cls = dict(methods.get("dsrg").defaults["classifier"], backbone=18, weights="none")
    resnet = build_classifier(dsrg_cls, 4, {"mode": "off"}, 0, None)
    assert isinstance(resnet.backbone, ResNetBackbone)
    assert methods.get("sec").backbone.load().__name__ == "build_vgg16"
