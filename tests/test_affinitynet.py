"""AffinityNet: confident labels, pair labels and affinities by brute force, loss, sparse walk == dense."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conta_core.expand import affinitynet as an
from conta_core.expand.affinity import affinity_labels
from conta_core.expand.dense_reference import dense_feature_walk
from conta_core.models.resnet38 import build_resnet38


def test_confident_labels_hand_built():
    # 3 labels (bg, class 4, class 9) on a 2x3 map, stride 1: alpha-4 decides foreground, alpha-24 background
    low = np.array([[[0.8, 0.1, 0.6], [0.2, 0.5, 0.0]],     # bg
                    [[0.1, 0.8, 0.3], [0.7, 0.2, 0.0]],     # class 4
                    [[0.1, 0.1, 0.1], [0.1, 0.3, 0.0]]])    # class 9
    high = np.array([[[0.9, 0.05, 0.2], [0.1, 0.6, 0.0]],
                     [[0.05, 0.9, 0.7], [0.8, 0.1, 0.0]],
                     [[0.05, 0.05, 0.1], [0.1, 0.3, 0.0]]])
    out = an.confident_labels(low, high, [4, 9], stride=1)
    # (0,0) bg in both -> 0; (0,1) class 4 in low -> 4; (0,2) bg in low, class in high -> unsure;
    # (1,0) -> 4; (1,1) bg in low and high -> 0; (1,2) no score at all -> unsure
    assert out.tolist() == [[0, 4, 255], [4, 0, 255]]


def test_confident_labels_pool_to_stride_8():
    low = np.zeros((2, 12, 20), np.float32)
    low[0, :, :8] = 1.0   # background on columns < 8
    low[1, :, 8:] = 1.0   # the class on columns >= 8
    high = low.copy()
    out = an.confident_labels(low, high, [3], stride=8)
    assert out.shape == (2, 3)
    # cells average 8x8 pixels of the zero-padded map; the padded rows still have some score
    assert out.tolist() == [[0, 3, 3], [0, 3, 3]]


def brute_force_pair_labels(label: np.ndarray, radius: int):
    """Every ordered pair (p, q) with q later in raster order and |p - q| < radius, classified directly."""
    h, w = label.shape
    out = {}
    for y in range(h):
        for x in range(w):
            for y2 in range(h):
                for x2 in range(w):
                    if (y2, x2) <= (y, x) or (y2 - y) ** 2 + (x2 - x) ** 2 >= radius ** 2:
                        continue
                    a, b = label[y, x], label[y2, x2]
                    if a == 255 or b == 255:
                        kind = None
                    elif a == b:
                        kind = "bg" if a == 0 else "fg"
                    else:
                        kind = "neg"
                    out[(y, x, y2 - y, x2 - x)] = kind
    return out


def test_affinity_labels_against_brute_force():
    rng = np.random.default_rng(0)
    label = rng.choice(np.array([0, 2, 5, 255], np.uint8), size=(7, 9))
    bg, fg, neg = (t.numpy() for t in affinity_labels(label, 5))
    offsets = an._pair_offsets(5)
    got = {}
    for k, (dy, dx) in enumerate(offsets):
        for y in range(7):
            for x in range(9):
                if 0 <= y + dy < 7 and 0 <= x + dx < 9:
                    kinds = [n for n, t in (("bg", bg), ("fg", fg), ("neg", neg)) if t[k, y, x]]
                    assert len(kinds) <= 1
                    got[(y, x, dy, dx)] = kinds[0] if kinds else None
                else:
                    assert not (bg[k, y, x] or fg[k, y, x] or neg[k, y, x])
    assert got == brute_force_pair_labels(label, 5)


def test_pair_affinities_against_brute_force():
    g = torch.Generator().manual_seed(1)
    f = torch.rand(6, 5, 7, generator=g)
    aff = an.pair_affinities(f, 5)
    assert aff.shape == (34, 5, 7)
    for k, (dy, dx) in enumerate(an._pair_offsets(5)):
        for y in range(5):
            for x in range(7):
                if 0 <= y + dy < 5 and 0 <= x + dx < 7:
                    d = sum(abs(float(f[c, y, x] - f[c, y + dy, x + dx])) for c in range(6)) / 6
                    assert float(aff[k, y, x]) == pytest.approx(math.exp(-d), rel=1e-5)
                else:
                    assert float(aff[k, y, x]) == 0.0


def test_affinity_loss_direct():
    aff = torch.tensor([0.9, 0.5, 0.2, 0.7])
    bg = torch.tensor([True, False, False, False])
    fg = torch.tensor([False, True, False, False])
    neg = torch.tensor([False, False, True, True])
    expected = -math.log(0.9 + 1e-5) / 4 - math.log(0.5 + 1e-5) / 4 \
        + (-math.log(1 + 1e-5 - 0.2) - math.log(1 + 1e-5 - 0.7)) / 2 / 2
    assert float(an.affinity_loss(aff, bg, fg, neg)) == pytest.approx(expected, rel=1e-4)


def test_sparse_walk_equals_dense_reference():
    g = torch.Generator().manual_seed(2)
    f = torch.rand(4, 6, 7, generator=g, dtype=torch.float64)
    x = torch.rand(3, 6, 7, generator=g, dtype=torch.float64)
    sparse = an.affinity_walk(x, an.pair_affinities(f, 5), beta=8.0, steps=256, radius=5)
    dense = dense_feature_walk(x, f, radius=5, beta=8.0, exp_times=8)
    assert torch.allclose(sparse, dense, rtol=1e-6, atol=1e-9)
    # and it moved: 256 steps are far from the start
    assert (sparse - x).abs().max() > 0.05


def test_expand_affinitynet_end_to_end_small():
    # Features split the image in two halves; the CAM of class 7 covers 7/12 of the left half. Walked
    # over the left half, its score (~0.58) beats the background's (~0.42) everywhere there.
    h, w = 32, 48
    feats = torch.zeros(2, 4, 6)
    feats[0, :, :3] = 3.0
    cams = np.zeros((1, h, w), np.float32)
    cams[0, :, :14] = 1.0
    mask = an.expand_affinitynet(cams, feats, [7], (h, w))
    assert mask.shape == (h, w)
    assert (an.cam_labels(cams, [7])[:, 14:20] == 0).all()  # background before the walk
    assert (mask[:, :20] == 7).all()                 # spread over the whole left half
    assert (mask[:, 28:] == 0).all()                 # never crosses the feature edge


def test_model_and_image_features():
    torch.manual_seed(0)
    net = an.AffinityNet(build_resnet38(0.0625, "none")).eval()
    f = an.image_features(net, torch.randn(3, 30, 45))
    assert f.shape == (32, 4, 6)  # 8 + 8 + 16 channels at width 1/16; ceil(30/8) x ceil(45/8)
    groups = net.param_groups()
    assert {id(p) for p in groups["new"]} == {id(p) for m in (net.f8_3, net.f8_4, net.f8_5, net.f9)
                                              for p in m.parameters()}


def test_crf_scores_and_alpha_thresholds():
    # A CAM ramp 0..1: alpha 4 calls a pixel foreground above c = (1 - c)^4 (c ~ 0.276), alpha 24
    # calls it background below c = (1 - c)^24 (c ~ 0.089); between them it is unsure.
    w = 101
    cams = np.tile(np.linspace(0, 1, w, dtype=np.float32), (4, 1))[None]
    image = np.full((4, w, 3), 128, np.uint8)
    no_crf = {"iterations": 0}
    low, high = an.crf_scores(image, cams, 4, no_crf), an.crf_scores(image, cams, 24, no_crf)
    assert np.allclose(low.sum(0), 1, atol=1e-4)
    label = an.confident_labels(low, high, [5], stride=1)[0]
    c = np.linspace(0, 1, w)
    assert (label[c < 0.085] == 0).all() and (label[c > 0.28] == 5).all()
    assert (label[(c > 0.095) & (c < 0.27)] == 255).all()
    refined = an.crf_scores(image, cams, 4)  # the default (psa's) CRF runs and returns probabilities
    assert refined.shape == (2, 4, w) and np.allclose(refined.sum(0), 1, atol=1e-3)


def test_training_loss_backward_and_label_reduction():
    labels = torch.full((2, 20, 27), 255, dtype=torch.long)
    labels[:, :, :12] = 0
    labels[:, 4:, 14:] = 3
    small = an.reduce_labels(labels)
    assert small.shape == (2, 3, 4)
    # cell centres y 4, 12, (20: padding), x 4, 12, 20, (28: padding)
    assert small[0].tolist() == [[0, 255, 3, 255], [0, 255, 3, 255], [255, 255, 255, 255]]
    torch.manual_seed(0)
    net = an.AffinityNet(build_resnet38(0.0625, "none")).train()
    loss = an.affinity_training_loss(net, {"image": torch.randn(2, 3, 20, 27), "label": labels})
    loss.backward()
    assert torch.isfinite(loss) and net.f9.weight.grad.abs().sum() > 0


class _Index:
    num_classes = 3

    def read_image(self, image_id):
        return np.random.default_rng(int(image_id)).integers(0, 256, (40, 48, 3), dtype=np.uint8)

    def labels(self, image_id):
        return [1]


class _Labels:
    def get(self, image_id):
        label = np.full((40, 48), 255, np.uint8)
        label[:, :16], label[:, 32:] = 0, 1
        return label


def test_train_affinity_net_from_the_classifier_trunk(tmp_path):
    from conta_core.checkpoint import save_model_file
    from conta_core.expand.affinitynet_train import build_affinity_net, train_affinity_net
    from conta_core.models.seam import SeamClassifier

    torch.manual_seed(1)
    classifier = SeamClassifier(build_resnet38(0.0625, "none"), 2)
    save_model_file(tmp_path / "classifier.pt", {"model": classifier.state_dict(), "meta": {}})
    settings = {"width": 0.0625, "weights": "classifier", "crop": 32, "batch_size": 2, "epochs": 1, "lr": 0.1,
                "optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4}
    start = build_affinity_net(settings, classifier=tmp_path / "classifier.pt")
    assert torch.equal(start.backbone.b4.conv_branch2a.weight, classifier.backbone.b4.conv_branch2a.weight)
    model, history = train_affinity_net(_Index(), ["0", "1", "2", "3"], _Labels(), settings, 0,
                                        torch.device("cpu"), classifier=tmp_path / "classifier.pt")
    assert len(history) == 1 and np.isfinite(history[0])
    assert not torch.equal(model.f9.weight, start.f9.weight)
    assert torch.equal(model.backbone.b2.conv_branch2a.weight, start.backbone.b2.conv_branch2a.weight)  # frozen
    with pytest.raises(ValueError, match="needs the round's classifier"):
        build_affinity_net(settings)
