"""The M-usage diagnostic (own X_m vs a permutation vs M = 0) and the confounding shares."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from test_m_path import TinyBackbone

from conta_core.confounder import derangement
from conta_core.confounding import confounding_markdown, mass_by_region
from conta_core.data.datasets import to_tensor
from conta_core.diagnostics import attention_stats, m_usage
from conta_core.models.classifier import CamClassifier


class FakeIndex:
    """What the diagnostics read from a DatasetIndex: images, masks, labels, sizes."""

    def __init__(self, masks: dict, labels: dict, classes: list[str]):
        self.masks, self._labels, self.classes = masks, labels, classes
        self.num_classes, self.void = len(classes), 255
        rng = np.random.default_rng(0)
        self.images = {i: rng.integers(0, 255, (*m.shape, 3), dtype=np.uint8) for i, m in masks.items()}

    def size(self, image_id):
        return self.masks[image_id].shape

    def read_image(self, image_id):
        return self.images[image_id]

    def read_mask(self, image_id):
        return self.masks[image_id]

    def labels(self, image_id):
        return self._labels[image_id]


def demo_index(count: int = 6) -> tuple[FakeIndex, dict]:
    rng = np.random.default_rng(1)
    masks, labels, x_m = {}, {}, {}
    for k in range(count):
        mask = np.zeros((32, 32), np.uint8)
        mask[rng.integers(0, 16):, rng.integers(0, 16):] = 1 + k % 2
        masks[f"im{k}"], labels[f"im{k}"] = mask, [1 + k % 2]
        x_m[f"im{k}"] = rng.random((8, 8)).astype(np.float32)
    return FakeIndex(masks, labels, ["background", "a", "b"]), x_m


def tiny_model(fusion: str, m_init: str) -> CamClassifier:
    torch.manual_seed(0)
    confounder = torch.rand(2, 8, 8)
    model = CamClassifier(TinyBackbone(), 2, conta_mode="adjust", blocks=(5,), confounder=confounder,
                          prior=torch.full((2,), 0.5), fusion=fusion, m_init=m_init, m_scale="normalised",
                          attention_init="scaled")
    if fusion == "conv":
        with torch.no_grad():
            model.fusion["5"].out.weight.normal_(0, 0.5)  # a trained block: its output conv is no longer 0
    return model.eval()


def test_a_dead_m_path_reads_zero():
    index, x_m = demo_index()
    usage = m_usage(tiny_model("linear", "zero"), index, list(x_m), x_m.get, 0, 0.5, torch.device("cpu"), 4)
    assert usage["cam_change_permuted_pct"] == 0 and usage["cam_change_zero_pct"] == 0
    assert usage["score_share_m_pct"] == 0
    assert usage["cam_miou_own"] == usage["cam_miou_permuted"] == usage["cam_miou_zero"]
    assert usage["images"] == 6


def test_cam_change_against_full_forward_passes():
    # Reference: the model's own cam() with the image's and the partner's X_m, one image at a time.
    index, x_m = demo_index()
    model = tiny_model("conv", "balanced")
    ids = list(x_m)
    usage = m_usage(model, index, ids, x_m.get, 0, 0.5, torch.device("cpu"), 4)
    partner = derangement(ids, 0, salt=13)
    expected_perm, expected_zero, shares = [], [], []
    with torch.no_grad():
        for image_id in ids:
            image = to_tensor(index.read_image(image_id))[None]
            own_x = torch.from_numpy(x_m[image_id])[None]
            other_x = torch.from_numpy(x_m[partner[image_id]])[None]
            cls = index.labels(image_id)[0] - 1
            own = model.cam(image, own_x)[0, cls]
            other = model.cam(image, other_x)[0, cls]
            zero = model.cam(image, m=torch.zeros(1, 1, 8, 8))[0, cls]
            expected_perm.append(100 * float((own - other).abs().mean() / own.max()))
            expected_zero.append(100 * float((own - zero).abs().mean() / own.max()))
            s_own, s_zero = model(image, own_x)[0], model(image, m=torch.zeros(1, 1, 8, 8))[0]
            delta = (s_own - s_zero).abs()
            shares.extend((delta / (s_zero.abs() + delta)).tolist())
    assert usage["cam_change_permuted_pct"] == pytest.approx(np.mean(expected_perm), rel=1e-4)
    assert usage["cam_change_zero_pct"] == pytest.approx(np.mean(expected_zero), rel=1e-4)
    assert usage["score_share_m_pct"] == pytest.approx(100 * np.mean(shares), rel=1e-4)
    assert usage["cam_change_permuted_pct"] > 0.1 and usage["cam_change_zero_pct"] > 0.1
    assert 0 <= usage["alpha_entropy"] <= 1


def test_attention_stats_by_hand():
    uniform = attention_stats(np.full((4, 3), 1 / 3))
    assert uniform["alpha_entropy"] == pytest.approx(1.0) and uniform["alpha_std"] == pytest.approx(0.0)
    one_hot = attention_stats(np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    assert one_hot["alpha_entropy"] == pytest.approx(0.0, abs=1e-9)
    # per class: std over images [0.5, 0.5, 0], mean [0.5, 0.5, 0] -> mean std 1/3
    assert one_hot["alpha_std"] == pytest.approx(1 / 3)
    half = attention_stats(np.array([[0.5, 0.5]]))
    assert half["alpha_entropy"] == pytest.approx(1.0)
    assert math.isnan(attention_stats(None)["alpha_entropy"])


class Reader:
    def __init__(self, arrays, classes=None):
        self.arrays, self.classes = arrays, classes

    def get(self, image_id):
        return self.arrays[image_id]

    def item_attrs(self, image_id):
        return {"classes": self.classes[image_id]}


def test_mass_by_region_by_hand():
    # 2x3 image: GT [[1, 1, 2], [0, 0, 255]]; labels horse (1) and rider (2).
    truth = np.array([[1, 1, 2], [0, 0, 255]], np.uint8)
    index = FakeIndex({"x": truth}, {"x": [1, 2]}, ["background", "horse", "rider"])
    horse_cam = np.array([[1.0, 0.5, 0.5], [0.5, 0.0, 0.5]], np.float32)   # total 3.0
    rider_cam = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]], np.float32)   # total 2.0
    cams = Reader({"x": np.stack([horse_cam, rider_cam]).astype(np.float16)}, {"x": [1, 2]})
    pseudo = Reader({"x": np.array([[1, 1, 1], [1, 2, 255]], np.uint8)})
    table = mass_by_region(index, ["x"], cams, pseudo).set_index(["source", "class", "region"])["share"]
    assert table["cam", "horse", "object"] == pytest.approx(50.0)        # 1.5 of 3.0
    assert table["cam", "horse", "rider"] == pytest.approx(100 * 0.5 / 3)
    assert table["cam", "horse", "background"] == pytest.approx(100 * 0.5 / 3)
    assert table["cam", "horse", "void"] == pytest.approx(100 * 0.5 / 3)
    assert table["cam", "rider", "object"] == pytest.approx(50.0)
    assert table["cam", "rider", "horse"] == pytest.approx(50.0)
    assert table["pseudo_mask", "horse", "object"] == pytest.approx(50.0)   # 2 of 4 horse pixels
    assert table["pseudo_mask", "horse", "rider"] == pytest.approx(25.0)
    assert table["pseudo_mask", "horse", "background"] == pytest.approx(25.0)
    assert table["pseudo_mask", "rider", "background"] == pytest.approx(100.0)
    for (source, name), shares in table.groupby(level=[0, 1]):
        assert shares.sum() == pytest.approx(100.0)
    frame = table.reset_index()
    frame.insert(0, "round", 0)
    text = confounding_markdown(pd.concat([frame, frame.assign(round=1)]))
    assert "| horse | obj 50 · bg 17 · rider 17 | obj 50 · bg 17 · rider 17 |" in text


def test_ceiling_and_m_change_by_hand():
    # Linear fusion at block 5 with X' = 1 (zero X weights, bias 1) and M weights 0.5, positive class
    # weights: the CAM of class k is S_k (1 + 0.5 M) everywhere (no ReLU clipping), S_k its weight sum.
    index, x_m = demo_index()
    index.classes, index.num_classes = ["background", "a", "b", "c"], 4
    top = np.zeros((8, 8), np.float32)
    top[:5] = 1.0
    confounder = np.stack([np.zeros((8, 8), np.float32), np.full((8, 8), 0.2, np.float32), top])
    # mean |c_i - c_j|: (0, 1) 0.2, (0, 2) 0.625, (1, 2) 0.575 -> the extreme pair is c_0, c_2;
    # range over i at each location: 1 in the 5 top rows, 0.2 below -> mean 0.7
    torch.manual_seed(0)
    model = CamClassifier(TinyBackbone(), 3, conta_mode="adjust", blocks=(5,),
                          confounder=torch.from_numpy(confounder), prior=torch.full((3,), 1 / 3),
                          fusion="linear", m_init="balanced", m_scale="normalised", attention_init="scaled")
    with torch.no_grad():
        model.fusion["5"].x_conv.weight.zero_()
        model.fusion["5"].x_conv.bias.fill_(1.0)
        model.fusion["5"].m_conv.weight.fill_(0.5)
        model.classifier.weight.uniform_(0.1, 1.0)
    model.eval()
    ids = list(x_m)
    usage = m_usage(model, index, ids, x_m.get, 0, 0.5, torch.device("cpu"), 4)

    w1 = model.context.w1.weight.detach().numpy().astype(np.float64)
    w2 = model.context.w2.weight.detach().numpy().astype(np.float64)
    keys = confounder.reshape(3, -1) @ w2.T                                # row i: W2 c_i

    def context(image_id):
        logits = keys @ (w1 @ x_m[image_id].ravel()) / math.sqrt(3)
        alpha = np.exp(logits - logits.max())
        return (alpha / alpha.sum()) @ confounder.reshape(3, -1)

    partner = derangement(ids, 0, salt=13)
    ceiling = [100 * 0.5 * 0.625 / (1 + 0.5 * context(i).max()) for i in ids]   # one labelled class each
    m_change = [100 * np.abs(context(i) - context(partner[i])).mean() / 0.7 for i in ids]
    assert usage["cam_change_ceiling_pct"] == pytest.approx(np.mean(ceiling), rel=1e-4)
    assert usage["m_change_permuted_pct"] == pytest.approx(np.mean(m_change), rel=1e-4)
    assert usage["m_change_permuted_pct"] > 1  # the scaled attention makes alpha differ across images
    # The permutation can never change the CAM more than the ceiling's room allows here (linear path).
    assert usage["cam_change_permuted_pct"] <= usage["cam_change_ceiling_pct"]


def test_no_ceiling_without_eq3():
    index, x_m = demo_index()
    torch.manual_seed(0)
    model = CamClassifier(TinyBackbone(), 2, conta_mode="seg_mask", blocks=(5,), map_size=(8, 8),
                          fusion="linear", m_init="balanced").eval()
    usage = m_usage(model, index, list(x_m), x_m.get, 0, 0.5, torch.device("cpu"), 4)
    assert math.isnan(usage["cam_change_ceiling_pct"]) and math.isnan(usage["m_change_permuted_pct"])
    assert usage["cam_change_permuted_pct"] > 0
