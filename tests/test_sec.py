"""SEC: VGG-16 LargeFOV shapes and weights, GWRP, the three losses, optimiser settings."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conta_core.crf import dense_crf
from conta_core.expand import sec
from conta_core.models.backbone import WeightsError
from conta_core.models.vgg import CONV_NAMES, VGG16Trunk, load_vgg16_weights


def test_vgg16_largefov_shapes():
    trunk = VGG16Trunk(width=0.125)
    outs = trunk(torch.zeros(2, 3, 321, 321))
    # blocks 2..5 at strides 4, 8, 8, 8 (321 -> 161 -> 81 -> 41 with Caffe's ceil-mode pools)
    assert [tuple(o.shape[1:]) for o in outs] == [(16, 81, 81), (32, 41, 41), (64, 41, 41), (128, 41, 41)]
    assert trunk.stage_channels == [16, 32, 64, 128]
    full = VGG16Trunk()
    assert full.stage_channels == [128, 256, 512, 1024]
    assert full.fc6.weight.shape == (1024, 512, 3, 3) and full.fc6.dilation == (12, 12)
    assert full.fc7.weight.shape == (1024, 1024, 3, 3)
    assert [full.convs[n].dilation for n in ("conv4_3", "conv5_1")] == [(1, 1), (2, 2)]
    net = sec.SecNet(VGG16Trunk(width=0.125), 21)
    assert net(torch.zeros(1, 3, 321, 321)).shape == (1, 21, 41, 41)
    big = sec.SecNet(full, 21)
    assert big.fc8.weight.shape == (21, 1024, 1, 1)
    assert abs(big.fc8.weight.std().item() - 0.01) < 0.001 and (big.fc8.bias == 0).all()
    drop = [m for m in full.block5 if isinstance(m, torch.nn.Dropout)]
    assert [d.p for d in drop] == [0.5, 0.5]


def test_torchvision_vgg16_weights_land_in_the_right_layers(tmp_path):
    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.vgg16(weights=None).state_dict()
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    trunk = VGG16Trunk()
    fc6_before = trunk.fc6.weight.clone()
    load_vgg16_weights(trunk, str(path))
    conv_indices = [i for i, k in enumerate(torchvision.models.vgg16().features)
                    if isinstance(k, torch.nn.Conv2d)]
    assert len(conv_indices) == len(CONV_NAMES) == 13
    for name, index in zip(CONV_NAMES, conv_indices):
        assert torch.equal(trunk.convs[name].weight, state[f"features.{index}.weight"]), name
        assert torch.equal(trunk.convs[name].bias, state[f"features.{index}.bias"]), name
    assert torch.equal(trunk.fc6.weight, fc6_before)      # fc6/fc7 stay random
    # the convolutions are the ones the forward pass runs
    assert trunk.block5[0] is trunk.convs["conv5_1"] and trunk.stem[0] is trunk.convs["conv1_1"]

    with pytest.raises(WeightsError, match="need width 1.0"):
        load_vgg16_weights(VGG16Trunk(width=0.5), str(path))
    with pytest.raises(WeightsError, match="does not exist"):
        load_vgg16_weights(VGG16Trunk(), str(tmp_path / "missing.pth"))
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="not a torchvision VGG-16"):
        load_vgg16_weights(VGG16Trunk(), str(tmp_path / "bad.pth"))


def test_vgg16_bn_weights_and_statistics_land_in_the_right_layers(tmp_path):
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.vgg16_bn(weights=None)
    for module in reference.features:  # running statistics unlike a fresh BatchNorm's 0 / 1
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    path = tmp_path / "vgg16_bn.pth"
    torch.save(reference.state_dict(), path)
    trunk = VGG16Trunk(batch_norm=True)
    load_vgg16_weights(trunk, str(path))
    layers = list(reference.features)
    pairs = [(layers[i], layers[i + 1]) for i, m in enumerate(layers) if isinstance(m, torch.nn.Conv2d)]
    assert len(pairs) == 13 and all(isinstance(bn, torch.nn.BatchNorm2d) for _, bn in pairs)
    for name, (conv, bn) in zip(CONV_NAMES, pairs):
        assert torch.equal(trunk.convs[name].weight, conv.weight), name
        assert torch.equal(trunk.norms[name].running_var, bn.running_var), name
        assert torch.equal(trunk.norms[name].bias, bn.bias), name
    # the trunk's conv layers (no fc6/fc7, pool strides differ) compute torchvision's to rounding:
    # conv1_1 -> BN -> ReLU -> conv1_2 -> BN -> ReLU in eval mode
    trunk.eval()
    reference.eval()
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(trunk.stem[:6](x), reference.features[:6](x), atol=1e-5)
    # a plain VGG-16 file into a BatchNorm trunk (or back) names the mismatch
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), tmp_path / "plain.pth")
    with pytest.raises(WeightsError, match="not a torchvision VGG-16-BN state dict"):
        load_vgg16_weights(VGG16Trunk(batch_norm=True), str(tmp_path / "plain.pth"))
    with pytest.raises(WeightsError, match="not a torchvision VGG-16 state dict"):
        load_vgg16_weights(VGG16Trunk(), str(path))


def test_imagenet_weights_offline_error(monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models.VGG16_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(WeightsError, match=r"Download https://.*vgg16.*weights: /data/vgg16"):
        load_vgg16_weights(VGG16Trunk(), "imagenet")


def test_gwrp_against_its_formula():
    v = torch.tensor([[3.0, 1.0, 2.0]])
    # sorted descending 3, 2, 1 with weights 1, d, d^2
    assert sec.gwrp(v, 0.5).item() == pytest.approx((3 + 2 * 0.5 + 1 * 0.25) / 1.75)
    assert sec.gwrp(v, 1.0).item() == pytest.approx(2.0)           # d = 1: the mean
    assert sec.gwrp(v, 0.0).item() == pytest.approx(3.0)           # d = 0: the max
    rng = np.random.default_rng(1)
    x = rng.random(1681)
    d = 0.996
    expected = sum(d ** j * s for j, s in enumerate(sorted(x, reverse=True))) / sum(d ** j for j in range(1681))
    assert sec.gwrp(torch.tensor(x), d).item() == pytest.approx(expected, rel=1e-9)


def _probs(rng, b, c, h, w):
    return sec.sec_softmax(torch.tensor(rng.normal(size=(b, c, h, w)) * 2))


def test_expansion_loss_by_hand():
    rng = np.random.default_rng(2)
    probs = _probs(rng, 2, 4, 3, 3)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    p = probs.numpy().reshape(2, 4, 9)

    def g(x, d):
        s = np.sort(x)[::-1]
        w = d ** np.arange(len(s))
        return (s * w).sum() / w.sum()

    total = 0.0
    for b in range(2):
        present = [c for c in range(3) if labels[b, c] == 1]
        absent = [c for c in range(3) if labels[b, c] == 0]
        total += -np.mean([math.log(g(p[b, c + 1], 0.996)) for c in present])
        total += -np.mean([math.log(1 - p[b, c + 1].max()) for c in absent])
        total += -math.log(g(p[b, 0], 0.999))
    assert sec.expansion_loss(probs, labels).item() == pytest.approx(total / 2, rel=1e-9)


def test_seeding_loss_by_hand():
    probs = _probs(np.random.default_rng(3), 2, 3, 2, 2)
    seeds = torch.tensor([[[0, 255], [2, 2]], [[255, 255], [255, 255]]])
    cues = sec.one_hot_cues(seeds, 3)
    p = probs.numpy()
    first = -(math.log(p[0, 0, 0, 0]) + math.log(p[0, 2, 1, 0]) + math.log(p[0, 2, 1, 1])) / 3
    assert sec.seeding_loss(probs, cues).item() == pytest.approx((first + 0.0) / 2, rel=1e-9)


def test_constrain_loss_is_the_kl_to_the_crf_of_the_output():
    rng = np.random.default_rng(4)
    probs = _probs(rng, 2, 3, 6, 7).float()
    images = rng.integers(0, 256, (2, 24, 28, 3), dtype=np.uint8)
    q = sec.crf_targets(probs, images)
    # independent Q: the CRF called directly with SEC's parameters and the spatial kernels / 12
    small = sec.downscale_images(images, (6, 7))
    direct = np.stack([dense_crf(small[b], probs[b].numpy(), iterations=10, bi_w=10.0, bi_xy_std=80 / 12,
                                 bi_rgb_std=13.0, pos_w=3.0, pos_xy_std=3 / 12) for b in range(2)])
    direct = np.maximum(direct, sec.MIN_PROB)
    direct /= direct.sum(axis=1, keepdims=True)
    assert np.allclose(q.numpy(), direct, atol=1e-6)
    unscaled = sec.crf_targets(probs, images, scale=1.0)
    assert not torch.allclose(unscaled, q, atol=1e-3)          # the scaling is applied
    kl = (direct * np.log(direct / probs.numpy())).sum(axis=1).mean()
    assert sec.constrain_loss(probs, q).item() == pytest.approx(kl, rel=1e-5)
    ref = F.kl_div(probs.log(), q, reduction="sum").item() / (2 * 6 * 7)
    assert sec.constrain_loss(probs, q).item() == pytest.approx(ref, rel=1e-5)
    # the gradient flows into the output only
    logits = torch.zeros(1, 3, 6, 7, requires_grad=True)
    sec.constrain_loss(sec.sec_softmax(logits), q[:1]).backward()
    assert logits.grad.abs().sum() > 0


def test_sec_loss_trains_the_network():
    torch.manual_seed(0)
    net = sec.SecNet(VGG16Trunk(width=0.0625), 3)
    rng = np.random.default_rng(5)
    seeds = torch.full((2, 33, 33), 255, dtype=torch.uint8)
    seeds[:, :8] = 0
    seeds[0, 14:20, 14:20] = 1
    seeds[1, 14:20, 14:20] = 2
    batch = {"image": torch.randn(2, 3, 33, 33), "rgb": rng.integers(0, 256, (2, 33, 33, 3), dtype=np.uint8),
             "seeds": seeds, "labels": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}
    loss = sec.sec_loss(net, batch)
    loss.backward()
    assert torch.isfinite(loss) and net.fc8.weight.grad.abs().sum() > 0


def test_sgd_settings():
    net = sec.SecNet(VGG16Trunk(width=0.0625), 3)
    opt = sec.sec_optimizer(net)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 2e-3, 1e-2, 2e-2])
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0, 5e-4, 0.0]
    assert opt.defaults["momentum"] == 0.9
    n_trunk = sum(len(g["params"]) for g in opt.param_groups[:2])
    assert n_trunk == len(list(net.trunk.parameters()))
    assert [sec.step_lr_factor(i) for i in (0, 1999, 2000, 4000, 7999)] == pytest.approx([1, 1, 0.1, 0.01, 0.001])
    sec.set_step_lr(opt, 2500)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-4, 2e-4, 1e-3, 2e-3])
    assert sec.SEC_TRAINING["batch_size"] == 15 and sec.SEC_TRAINING["iterations"] == 8000


def test_pseudo_mask_uses_the_image_classes_only():
    torch.manual_seed(0)
    net = sec.SecNet(VGG16Trunk(width=0.0625), 5)
    rgb = np.random.default_rng(6).integers(0, 256, (24, 30, 3), dtype=np.uint8)
    mask = sec.predict_pseudo_mask(net, torch.randn(1, 3, 24, 30), rgb, [2, 4])
    assert mask.shape == (24, 30) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 2, 4}


def test_gradient_saliency_background_cue():
    from conta_core.models.classifier import CamClassifier

    torch.manual_seed(0)
    model = CamClassifier(VGG16Trunk(width=0.0625, fc6_dilation=1), 3)
    images = torch.randn(2, 3, 40, 48)
    sal = sec.gradient_saliency(model, images)
    assert sal.shape == (2, 40, 48) and (sal >= 0).all() and sal.max() > 0
    assert model.training                                     # mode restored
