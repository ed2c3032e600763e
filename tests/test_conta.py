"""Eq. 3, the confounder set, the [X, M] fusion and the baseline equivalence."""
import math

import numpy as np
import pytest
import torch

from conta_core.classify import INERT_CONTA, LIVE_CONTA, build_classifier
from conta_core.confounder import build_confounder, class_prior, reduce_foreground, reduce_map
from conta_core.conta import ContextAdjustment
from conta_core.models.backbone import build_resnet
from conta_core.models.classifier import CamClassifier, identity_fusion, multilabel_soft_margin
from conta_core.models.fusion import ConvFusion

CLASSIFIER = {"backbone": 18, "output_stride": 16, "weights": "none", "freeze_bn": False, "freeze_conv1": False}


def test_eq3_against_numpy():
    rng = np.random.default_rng(0)
    n, h, w, batch = 5, 4, 3, 6
    c = rng.random((n, h, w)).astype(np.float32)
    x_m = rng.random((batch, h, w)).astype(np.float32)
    counts = np.array([3, 0, 5, 1, 7])
    for prior_kind in ("uniform", "empirical"):
        prior = class_prior(counts, prior_kind)
        module = ContextAdjustment(torch.from_numpy(c), torch.from_numpy(prior))
        w1 = module.w1.weight.detach().numpy()  # n x hw
        w2 = module.w2.weight.detach().numpy()
        cf = c.reshape(n, -1)
        for b in range(batch):
            sims = np.array([(w1 @ x_m[b].ravel()) @ (w2 @ cf[i]) for i in range(n)]) / math.sqrt(n)
            alpha = np.exp(sims - sims.max())
            alpha /= alpha.sum()
            expected = (alpha[:, None] * cf * prior[:, None]).sum(axis=0).reshape(h, w)
            got_alpha = module.attention(torch.from_numpy(x_m[b:b + 1]))[0].detach().numpy()
            np.testing.assert_allclose(got_alpha, alpha, rtol=1e-5, atol=1e-6)
            assert got_alpha.sum() == pytest.approx(1.0, abs=1e-6)
            got = module(torch.from_numpy(x_m[b:b + 1]))[0, 0].detach().numpy()
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_sqrt_n_scaling_changes_attention():
    # Doubling the logits (what dropping the 1/sqrt(n) would do for n = 4) must sharpen alpha.
    torch.manual_seed(0)
    c = torch.rand(4, 2, 2)
    module = ContextAdjustment(c, torch.full((4,), 0.25))
    x = torch.rand(1, 2, 2)
    logits = module.w1(x.flatten(1)) @ module.w2(module.confounder).t()
    np.testing.assert_allclose(module.attention(x).detach(), torch.softmax(logits / 2.0, dim=1).detach(), rtol=1e-5)


def test_priors():
    np.testing.assert_allclose(class_prior(np.array([1, 1, 2]), "uniform"), [1 / 3] * 3)
    np.testing.assert_allclose(class_prior(np.array([1, 1, 2]), "empirical"), [0.25, 0.25, 0.5])
    with pytest.raises(ValueError, match="prior"):
        class_prior(np.array([1]), "bogus")


def test_confounder_hand_built_two_images():
    # 4x4 masks, classes: 0 bg, 1 horse, 2 person, 3 never seen. Grid 2x2 (each cell = 2x2 pixels).
    m1 = np.zeros((4, 4), np.uint8)
    m1[:2, :2] = 1          # horse fills the top-left cell
    m1[2:, 2:] = 2          # person fills the bottom-right cell
    m2 = np.zeros((4, 4), np.uint8)
    m2[:2, :] = 1           # horse fills the top row
    m2[3, 0] = 255          # void counts as background
    conf, counts = build_confounder([(m1, [1, 2]), (m2, [1])], num_classes=4, size=(2, 2))
    np.testing.assert_array_equal(counts, [2, 1, 0])
    np.testing.assert_allclose(conf[0], [[1.0, 0.5], [0.0, 0.0]])  # mean of [[1,0],[0,0]] and [[1,1],[0,0]]
    np.testing.assert_allclose(conf[1], [[0.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(conf[2], np.zeros((2, 2)))        # never seen: zeros, not NaN
    np.testing.assert_allclose(reduce_foreground(m2, (2, 2)), [[1.0, 1.0], [0.0, 0.0]])


@pytest.mark.parametrize("shape,size", [((96, 96), (16, 16)), ((375, 500), (16, 16)), ((37, 53), (7, 5)),
                                        ((10, 12), (16, 16)), ((5, 5), (1, 1))])
def test_reduce_map_equals_adaptive_average_pooling(shape, size):
    # The confounder job reduces masks with numpy; torch's adaptive pooling is the reference.
    binary = np.random.default_rng(sum(shape)).random(shape) > 0.6
    expected = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(binary.astype(np.float32))[None, None],
                                                       size)[0, 0].numpy()
    np.testing.assert_allclose(reduce_map(binary, size), expected, rtol=1e-6, atol=1e-6)


def test_labelled_class_absent_from_mask_counts_as_zero_map():
    conf, counts = build_confounder([(np.zeros((4, 4), np.uint8), [1])], num_classes=2, size=(2, 2))
    assert counts[0] == 1 and conf[0].sum() == 0


def test_identity_fusion_block3_equals_plain_block():
    torch.manual_seed(0)
    backbone = build_resnet(18, 16, freeze_bn=False, freeze_conv1=False).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        plain = backbone(images)[1]  # block 3 = layer2
        fusion = identity_fusion(plain.shape[1])
        fused = fusion(plain, torch.rand(2, 1, *plain.shape[-2:]))
        # The live conv block starts as the identity on X too (its output conv is zero), whatever M is.
        conv = ConvFusion(plain.shape[1], m_init="balanced")
        conv_fused = conv(plain, torch.rand(2, 1, *plain.shape[-2:]))
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-6)
    torch.testing.assert_close(conv_fused, plain, rtol=0, atol=0)


def test_fusion_is_one_convolution_over_the_concatenation():
    # X and M parts are two parameters; their sum must equal one conv over [X, M].
    torch.manual_seed(0)
    x, m = torch.randn(2, 6, 5, 5), torch.rand(2, 1, 5, 5)
    conv = ConvFusion(6, hidden=4, m_init="balanced")
    weight = torch.cat([conv.x_in.weight, conv.m_in.weight], dim=1)
    conv.eval()  # BatchNorm with its running statistics (mean 0, var 1 at the start)
    hidden = conv.norm(torch.nn.functional.conv2d(torch.cat([x, m], dim=1), weight, None, padding=1))
    with torch.no_grad():
        conv.out.weight.normal_()
        torch.testing.assert_close(conv(x, m), x + conv.out(torch.relu(hidden)), rtol=1e-5, atol=1e-5)
    # Balanced M weights: std of an X weight times sqrt(C) (the M channel counts as much as all X).
    big = ConvFusion(256, m_init="balanced")
    ratio = float(big.m_in.weight.detach().std() / big.x_in.weight.detach().std())
    assert ratio == pytest.approx(16.0, rel=0.15)
    assert ConvFusion(8, m_init="zero").m_in.weight.abs().sum() == 0


@pytest.mark.parametrize("block", [3, "dense"])
def test_adjusted_classifier_starts_as_the_baseline_and_trains_w1_w2(block):
    torch.manual_seed(0)
    conf = torch.rand(3, 4, 4)
    # The original (inert) design: a linear splice with zero M weights.
    conta = {"mode": "adjust", "block": block, "map_size": [4, 4], "prior": "uniform", **INERT_CONTA}

    class Conf:
        confounder = conf.numpy()
        counts = np.array([2, 3, 1])
        reader = None

    torch.manual_seed(1)
    adjusted = build_classifier(CLASSIFIER, 4, conta, 1, Conf()).eval()
    torch.manual_seed(1)
    baseline = build_classifier(CLASSIFIER, 4, conta, 0, None).eval()
    images, x_m = torch.randn(2, 3, 64, 64), torch.rand(2, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(adjusted(images, x_m), baseline(images), rtol=0, atol=1e-5)
    # The M column of the fusion starts at zero (identity on X), so at step 0 only that
    # column gets a gradient; after one update the gradient reaches W1 and W2.
    adjusted.train()
    targets = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    optimizer = torch.optim.SGD(adjusted.parameters(), lr=0.1)
    multilabel_soft_margin(adjusted(images, x_m), targets).backward()
    for fusion in adjusted.fusion.values():
        assert fusion.m_conv.weight.grad.abs().sum() > 0
    optimizer.step()
    optimizer.zero_grad()
    multilabel_soft_margin(adjusted(images, x_m), targets).backward()
    assert adjusted.context.w1.weight.grad.abs().sum() > 0
    assert adjusted.context.w2.weight.grad.abs().sum() > 0


def test_parameter_groups_split_spliced_new_and_m_weights():
    class Conf:
        confounder = np.random.default_rng(0).random((3, 4, 4)).astype(np.float32)
        counts = np.array([2, 3, 1])
        reader = None

    for fusion in ("linear", "conv"):
        conta = {"mode": "adjust", "block": "dense", "map_size": [4, 4], "prior": "uniform", "fusion": fusion}
        model = build_classifier(CLASSIFIER, 4, conta, 1, Conf())
        groups = {name: {id(p) for p in params} for name, params in model.param_groups().items()}
        for block in model.fusion.values():
            assert {id(p) for p in block.m_parameters()} <= groups["context_m"]
            # Both fusions' X parts train at the backbone rate (the conv block's ReLUs die at the
            # new-layer rate under AdamW); only their M weights have their own rate.
            assert {id(p) for p in block.spliced_parameters()} <= groups["backbone"]
            assert not block.new_parameters()
        for param in (model.context.w1.weight, model.context.w2.weight, model.classifier.weight):
            assert id(param) in groups["new"]
        assert len(groups["context_m"]) == 4  # one M weight per block (dense: 4 blocks)
        assert not (groups["backbone"] & groups["new"]) and not (groups["new"] & groups["context_m"])
        assert sum(map(len, groups.values())) == len([p for p in model.parameters() if p.requires_grad])


def test_mode_off_builds_the_baseline_classifier_in_every_round():
    conta = {"mode": "off", "block": 5, "map_size": [4, 4], "prior": "uniform"}
    torch.manual_seed(3)
    r0 = build_classifier(CLASSIFIER, 4, conta, 0, None)
    torch.manual_seed(3)
    r2 = build_classifier(CLASSIFIER, 4, conta, 2, None)
    assert type(r2) is CamClassifier and not r2.fusion
    for (k0, v0), (k2, v2) in zip(r0.state_dict().items(), r2.state_dict().items()):
        assert k0 == k2 and torch.equal(v0, v2)


def test_seg_mask_mode_concatenates_x_m():
    conta = {"mode": "seg_mask", "block": 5, "map_size": [4, 4], "prior": "uniform"}
    model = build_classifier(CLASSIFIER, 3, conta, 1, None).eval()
    x_m = torch.rand(1, 4, 4)
    torch.testing.assert_close(model.context_map(x_m), x_m[:, None])
    with pytest.raises(ValueError, match="X_m"):
        model(torch.randn(1, 3, 32, 32))


def test_soft_margin_loss_is_negative_log_of_eq2():
    scores = torch.tensor([[2.0, -1.0, 0.5], [-0.3, 0.7, 1.5]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    # -log P(Y|X) of Eq. 2, averaged over classes then images
    p = torch.where(labels == 1, torch.sigmoid(scores), torch.sigmoid(-scores))
    expected = (-torch.log(p)).mean(dim=1).mean()
    torch.testing.assert_close(multilabel_soft_margin(scores, labels), expected)


def test_crop_view_places_m_where_the_crop_is():
    # An 8x8 image holding the values 0..63, cropped at scale 1 (top 2, left 4, size 4), maybe flipped:
    # resampling the 8x8 map with the crop's view must give exactly the cropped pixels.
    from conta_core.data.datasets import random_scale_flip_crop
    from conta_core.models.classifier import place_map

    full = torch.arange(64, dtype=torch.float32).reshape(1, 8, 8)
    for seed in range(12):
        rng = np.random.default_rng(seed)
        image = full.expand(3, 8, 8).clone()
        crop, _, view = random_scale_flip_crop(image, None, 4, (1.0, 1.0), rng)
        placed = place_map(full[None], view[None], (4, 4))[0, 0]
        torch.testing.assert_close(placed, crop[0], rtol=0, atol=1e-4)


def test_crop_view_pads_outside_the_image_with_zero():
    from conta_core.data.datasets import random_scale_flip_crop
    from conta_core.models.classifier import place_map

    full = torch.ones(1, 4, 4)
    crop, _, view = random_scale_flip_crop(full.expand(3, 4, 4).clone(), None, 6, (1.0, 1.0),
                                           np.random.default_rng(0))
    placed = place_map(full[None], view[None], (6, 6))[0, 0]
    # The image occupies the top-left 4x4 (padding goes right and down); bilinear blends one row/col.
    assert placed[:3, :3].min() == pytest.approx(1.0)
    assert placed[5, :].abs().max() == 0 and placed[:, 5].abs().max() == 0
