"""The round's SEAM classifier: CONTA parts from the shared conta options, Eq. 3 module and fusions."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conta_core import seam
from conta_core.conta import ContextAdjustment
from conta_core.models.fusion import ConvFusion, LinearFusion
from conta_core.seam_classify import _seam_job, build_seam_classifier

SETTINGS = {"width": 0.0625, "weights": "none", "freeze_bn": False, "frozen_blocks": [], "crop": 32,
            "long_side": [32, 48]}


class FakeConfounder:
    def __init__(self):
        rng = np.random.default_rng(0)
        self.confounder = rng.random((3, 4, 4)).astype(np.float32)
        self.counts = np.array([5, 3, 2])
        self.reader = SimpleNamespace(path="round0/confounder.h5")

    def x_m(self, image_id):
        return np.full((4, 4), 0.5, np.float32)

    def mean_x_norm(self, ids):
        return 2.0


class FakeIndex:
    num_classes = 4

    def read_image(self, image_id):
        return np.random.default_rng(int(image_id)).integers(0, 256, (40, 36, 3), dtype=np.uint8)

    def labels(self, image_id):
        return [1 + int(image_id) % 3]


def conta(**kw):
    base = {"mode": "adjust", "block": 5, "map_size": [4, 4], "prior": "uniform", "fusion": "conv",
            "m_init": "balanced", "m_scale": "normalised", "attention_init": "scaled", "m_lr_mult": 10,
            "fusion_channels": None}
    return {**base, **kw}


def test_rounds_and_modes():
    plain = build_seam_classifier(SETTINGS, 4, conta(), 0, None)
    assert plain.conta_mode == "off" and not plain.fusion
    model = build_seam_classifier(SETTINGS, 4, conta(block="dense"), 1, FakeConfounder())
    assert model.conta_mode == "adjust" and isinstance(model.context, ContextAdjustment)
    assert sorted(model.fusion) == ["2", "3", "4", "5"] and all(isinstance(f, ConvFusion) for f in model.fusion.values())
    linear = build_seam_classifier(SETTINGS, 4, conta(mode="seg_mask", fusion="linear"), 2, None)
    assert linear.context is None and isinstance(linear.fusion["5"], LinearFusion)
    with pytest.raises(ValueError, match="confounder maps are"):
        build_seam_classifier(SETTINGS, 4, conta(map_size=[8, 8]), 1, FakeConfounder())
    with pytest.raises(ValueError, match="needs the previous round's confounder"):
        build_seam_classifier(SETTINGS, 4, conta(), 1, None)


def test_job_trains_m_path():
    ids = [str(i) for i in range(4)]
    job = _seam_job(FakeIndex(), ids, SETTINGS, conta(), 1, 0, FakeConfounder(), None)
    names = [g["name"] for g in job.groups]
    assert names == ["backbone", "backbone_bias", "new", "new_bias", "context_m"]
    assert job.groups[-1]["lr_mult"] == 10.0 and job.groups[-1]["params"]
    batch = torch.utils.data.default_collate([job.dataset[i] for i in range(2)])
    job.model.train()
    from conta_core.train import TrainSettings, build_optimizer
    opt = build_optimizer(job.groups, TrainSettings(epochs=1, batch_size=2, lr=1e-3, optimizer="adam"))
    fusion = job.model.fusion["5"]
    for step in range(2):
        opt.zero_grad()
        loss = job.loss_fn(job.model, batch)
        loss.backward()
        assert torch.isfinite(loss)
        if step == 0:  # the residual fusion starts as the identity: only its output layer has a gradient
            assert fusion.out.weight.grad.abs().sum() > 0
            opt.step()
    assert fusion.m_in.weight.grad.abs().sum() > 0            # then M reaches the loss
    assert job.model.context.w1.weight.grad.abs().sum() > 0   # and Eq. 3's W1 gets a gradient


def test_train_seam_classifier_reports_context_motion():
    from conta_core.seam_classify import train_seam_classifier
    settings = {**SETTINGS, "epochs": 1, "batch_size": 2, "lr": 1e-3, "optimizer": "adam", "weight_decay": 5e-4}
    model, history, motion = train_seam_classifier(FakeIndex(), ["0", "1", "2", "3"], settings, conta(), 1, 0,
                                                   torch.device("cpu"), FakeConfounder())
    assert len(history) == 1 and np.isfinite(history[0]) and not model.training
    assert motion["w1_rel_change"] > 0 and motion["m_weight_norm_end"] != motion["m_weight_norm_start"]
