"""The CAMs equal IRNet's (make_cam.py) on fixed weights.

The reference below is re-derived from reading IRNet's code (jiwoon-ahn/irn:
net/resnet50.py, net/resnet50_cam.py, voc12/dataloader.py, misc/imutils.py,
step/make_cam.py), not from conta_core: torchvision's ResNet-50 with IRNet's
strides (2, 2, 2, 1) and no dilation, the input pyramid resized by PIL bicubic on
uint8 and normalised in float64, each scale's flip-summed map resized to the
stride-4 grid and to the grid rounded up to a multiple of 16 (then cropped), sums
over scales, the image's classes, division by max + 1e-5.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conta_core.cam import infer_cams, prepare_for_inference
from conta_core.models.backbone import build_resnet
from conta_core.models.classifier import CamClassifier

torchvision = pytest.importorskip("torchvision")

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SCALES = [1.0, 0.5, 1.5, 2.0]


def irnet_network(ours: CamClassifier) -> torch.nn.Module:
    """torchvision ResNet-50 made IRNet's CAM trunk (layer4 stride 1, not dilated), our weights."""
    net = torchvision.models.resnet50(weights=None)
    net.layer4[0].conv2.stride = (1, 1)
    net.layer4[0].downsample[0].stride = (1, 1)
    state = {}
    for k, v in ours.backbone.state_dict().items():
        k = k.replace("stem.0.", "conv1.", 1).replace("stem.1.", "bn1.", 1)
        state[k] = v
    missing = net.load_state_dict(state, strict=False).missing_keys
    assert missing == ["fc.weight", "fc.bias"], missing
    return net.eval()


def irnet_cam_forward(net, weight: torch.Tensor, pack: torch.Tensor) -> torch.Tensor:
    """resnet50_cam.CAM.forward: stages, conv with the classifier weight, ReLU, x[0] + x[1].flip(-1)."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(pack))))
    x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
    x = F.relu(F.conv2d(x, weight))
    return x[0] + x[1].flip(-1)


def irnet_make_cam(net, weight, img: np.ndarray, label: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """step/make_cam.py for one image: (high_res [K, H, W], cam [K, ceil(H/4), ceil(W/4)])."""
    h, w = img.shape[:2]
    outputs = []
    for s in SCALES:
        if s == 1:
            s_img = img
        else:  # imutils.pil_rescale(img, s, order=3)
            target = (int(np.round(h * s)), int(np.round(w * s)))
            s_img = np.asarray(Image.fromarray(img).resize(target[::-1], Image.BICUBIC))
        proc = np.empty_like(s_img, np.float32)  # TorchvisionNormalize: float64 maths, float32 storage
        for c in range(3):
            proc[..., c] = (s_img[..., c] / 255. - MEAN[c]) / STD[c]
        chw = np.transpose(proc, (2, 0, 1))
        pack = np.stack([chw, np.flip(chw, -1)], axis=0)
        with torch.no_grad():
            outputs.append(irnet_cam_forward(net, weight, torch.from_numpy(pack.copy())))
    strided_size = ((h - 1) // 4 + 1, (w - 1) // 4 + 1)
    strided_up_size = (((h - 1) // 16 + 1) * 16, ((w - 1) // 16 + 1) * 16)
    strided_cam = torch.sum(torch.stack([F.interpolate(o[None], strided_size, mode="bilinear",
                                                       align_corners=False)[0] for o in outputs]), 0)
    highres = [F.interpolate(o[:, None], strided_up_size, mode="bilinear", align_corners=False) for o in outputs]
    highres = torch.sum(torch.stack(highres, 0), 0)[:, 0, :h, :w]
    valid = torch.tensor([c - 1 for c in label])
    strided_cam = strided_cam[valid]
    strided_cam /= F.adaptive_max_pool2d(strided_cam, (1, 1)) + 1e-5
    highres = highres[valid]
    highres /= F.adaptive_max_pool2d(highres, (1, 1)) + 1e-5
    return highres.numpy(), strided_cam.numpy()


@pytest.fixture(scope="module")
def model() -> CamClassifier:
    torch.manual_seed(0)
    net = CamClassifier(build_resnet(50, 16, "none", freeze_bn=True, freeze_conv1=True, dilate=False), 20)
    with torch.no_grad():  # BN statistics other than the defaults
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.2, 0.6)
        # Random class weights orthogonal to the mean feature: random-init features barely vary
        # over the image, so this makes maps positive in some places only (structure to compare).
        from conta_core.data.datasets import to_tensor
        mu = net.eval().features(to_tensor(_photos(1, 75, 101, 99)[0])[None]).mean(dim=(0, 2, 3))
        w = torch.randn(20, mu.numel(), generator=torch.Generator().manual_seed(1))
        w -= (w @ mu)[:, None] * mu[None] / (mu @ mu)
        net.classifier.weight.copy_(w[:, :, None, None])
    return net.eval()


def _photos(batch: int, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (batch, h // 6 + 1, w // 6 + 1, 3), dtype=np.uint8)
    smooth = [np.asarray(Image.fromarray(s).resize((w, h), Image.BILINEAR)) for s in small]
    return np.clip(np.stack(smooth).astype(np.int16) + rng.integers(-10, 11, (batch, h, w, 3)), 0, 255
                   ).astype(np.uint8)


# 75 x 101: 37.5 and 50.5 at scale 0.5, 112.5 at 1.5 (round half to even), not multiples of 4 or 16
@pytest.mark.parametrize("size,prepared", [((75, 101), False), ((64, 48), True)])
def test_cams_equal_irnet(model, size, prepared):
    images = _photos(2, *size, seed=size[0])
    labels = [[3, 15], [7]]
    ours = prepare_for_inference(model) if prepared else model  # as the cam job runs it
    full, low = infer_cams(ours, images, labels, SCALES, True, torch.device("cpu"), strided=True)
    net, weight = irnet_network(model), model.classifier.weight.detach()
    for image, label, ours_full, ours_low in zip(images, labels, full, low):
        ref_full, ref_low = irnet_make_cam(net, weight, image, label)
        assert ours_full.shape == ref_full.shape == (len(label), *size)
        assert ours_low.shape == ref_low.shape
        assert np.abs(ours_full - ref_full).max() <= 1e-3, np.abs(ours_full - ref_full).max()
        assert np.abs(ours_low - ref_low).max() <= 1e-3, np.abs(ours_low - ref_low).max()
        assert ref_full.max() > 0.99  # peaks at 1: the tolerance is 1e-3 of the peak
        assert (ref_full < 0.5).mean() > 0.2  # maps with structure, not a constant


def test_dilated_layer4_is_not_irnet(model):
    """The check can fail: the same weights in a DeepLab-style (dilated) layer4 give other CAMs."""
    dilated = CamClassifier(build_resnet(50, 16, "none", dilate=True), 20)
    dilated.load_state_dict(model.state_dict())
    images = _photos(1, 75, 101, seed=1)
    a = infer_cams(model, images, [[3, 15]], SCALES, True, torch.device("cpu"))[0]
    b = infer_cams(dilated.eval(), images, [[3, 15]], SCALES, True, torch.device("cpu"))[0]
    assert np.abs(a - b).max() > 0.05
