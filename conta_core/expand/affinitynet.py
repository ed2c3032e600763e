"""``expand.method: affinitynet``: AffinityNet (Ahn and Kwak, CVPR 2018), SEAM's seed expansion.

1. Confident labels (:func:`crf_scores`, :func:`confident_labels`). The CAMs
   with background (1 - max_c CAM_c) ** alpha are refined by the dense CRF at
   two powers: alpha 4 (strong background: where a class still wins, it is
   confident foreground) and alpha 24 (weak background: where the background
   still wins, it is confident background). Everything else is unsure (255).
   As in the authors' code the CRF probabilities are averaged over 8 x 8 cells
   to the network's stride-8 grid before the arg-max.
2. Affinity labels: every pixel pair closer than radius 5 on that grid is a
   background pair, a same-class foreground pair or a different-label pair
   (:func:`conta_core.expand.affinity.affinity_labels`).
3. The affinity network (:class:`AffinityNet`): ResNet-38 features conv4,
   conv5, conv6 -> 1x1 convolutions (64, 128, 256 channels, ELU) -> a 1x1
   448 -> 448 convolution (ELU) = f. Pair affinity a_ij = exp(-|f_i - f_j|_1 / D)
   (D channels: the authors' code takes the channel mean of |f_i - f_j|, the
   paper's L1 norm divided by D). Loss (:func:`affinity_loss`): the mean
   -log a over background pairs / 4 + over foreground pairs / 4 + the mean
   -log(1 - a) over different-label pairs / 2.
4. Random walk (:func:`expand_affinitynet`): scores x = [(1 - max CAM) ** 16,
   CAMs] average-pooled to stride 8 walk t = 256 steps over T = D^-1 A with
   A = a ** beta (beta 8) on pairs within radius 5, self-loops 1: the sparse
   walk of :mod:`.random_walk`, never a dense (HW)^2 matrix. Then x8 bilinear
   upsampling, crop, arg-max over background and classes.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from ..models.resnet38 import ResNet38
from .aff_label import (AFFINITYNET_CRF, DEFAULTS, STRIDE, background, cam_labels,  # noqa: F401
                        confident_labels, crf_scores, make_aff_label)
from .affinity import affinity_labels
from .random_walk import _pair_offsets, pair_affinity_matrix, propagate, transition_matrix

# Step 1 (confident labels) lives in .aff_label (torch-free, for the CPU step's CRF workers).
# The authors' train_aff.py: SGD poly, lr 0.1, weight decay 5e-4, batch 8, 8 epochs, crop 448 after a
# long-side rescale to [448, 768]; new layers at 10x.
TRAINING = {"optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4, "batch_size": 8, "epochs": 8, "crop": 448,
            "long_side": [448, 768], "new_layer_lr_mult": 10.0}


class AffinityNet(nn.Module):
    def __init__(self, backbone: ResNet38):
        super().__init__()
        self.backbone = backbone
        ch, w = backbone.feature_channels, backbone.width
        c3, c4, c5 = (max(8, round(c * w)) for c in (64, 128, 256))
        self.f8_3 = nn.Conv2d(ch["conv4"], c3, 1, bias=False)
        self.f8_4 = nn.Conv2d(ch["conv5"], c4, 1, bias=False)
        self.f8_5 = nn.Conv2d(ch["conv6"], c5, 1, bias=False)
        self.f9 = nn.Conv2d(c3 + c4 + c5, c3 + c4 + c5, 1, bias=False)
        for conv in (self.f8_3, self.f8_4, self.f8_5):
            nn.init.kaiming_normal_(conv.weight)
        nn.init.xavier_uniform_(self.f9.weight, gain=4)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Affinity features f: [B, D, H/8, W/8]."""
        d = self.backbone(images)
        f = torch.cat([F.elu(self.f8_3(d["conv4"])), F.elu(self.f8_4(d["conv5"])), F.elu(self.f8_5(d["conv6"]))], 1)
        return F.elu(self.f9(f))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        new = {id(p) for m in (self.f8_3, self.f8_4, self.f8_5, self.f9) for p in m.parameters()}
        params = [p for p in self.parameters() if p.requires_grad]
        return {"backbone": [p for p in params if id(p) not in new], "new": [p for p in params if id(p) in new]}


def image_features(model: AffinityNet, image: torch.Tensor) -> torch.Tensor:
    """Features [D, ceil(H/8), ceil(W/8)] of one normalised image [3, H, W], zero-padded to a multiple of 8
    (as the authors' inference) so that feature cell (y, x) covers pixels [8y, 8y+8) x [8x, 8x+8)."""
    h, w = image.shape[-2:]
    padded = F.pad(image, (0, -w % STRIDE, 0, -h % STRIDE))
    with torch.no_grad():
        return model(padded[None])[0]


def pair_affinities(feats: torch.Tensor, radius: int = DEFAULTS["radius"]) -> torch.Tensor:
    """a = exp(-mean_d |f_i - f_j|) for the half-neighbourhood pairs: [..., P, h, w] (0 off the map)."""
    h, w = feats.shape[-2:]
    rf = radius - 1
    padded = F.pad(feats, (rf, rf, 0, rf))
    valid = F.pad(torch.ones_like(feats[..., :1, :, :]), (rf, rf, 0, rf))
    out = []
    for dy, dx in _pair_offsets(radius):
        other = padded[..., dy:dy + h, rf + dx:rf + dx + w]
        inside = valid[..., 0, dy:dy + h, rf + dx:rf + dx + w]
        out.append(torch.exp(-(feats - other).abs().mean(dim=-3)) * inside)
    return torch.stack(out, dim=-3)


def affinity_loss(aff: torch.Tensor, bg_pos: torch.Tensor, fg_pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """AffinityNet's loss: bg/4 + fg/4 + neg/2, each a mean over its pairs of the batch."""
    def mean_over(mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        mask = mask.to(values.dtype)
        return (mask * values).sum() / (mask.sum() + 1e-5)

    pos = -torch.log(aff + 1e-5)
    return (mean_over(bg_pos, pos) / 4 + mean_over(fg_pos, pos) / 4
            + mean_over(neg, -torch.log(1.0 + 1e-5 - aff)) / 2)


def reduce_labels(labels: torch.Tensor, stride: int = STRIDE, ignore_index: int = 255) -> torch.Tensor:
    """Full-resolution label crops [B, H, W] -> the feature grid [B, ceil(H/s), ceil(W/s)]: the pixel at
    each cell's centre (the map padded with ``ignore_index`` to a multiple of ``stride``)."""
    h, w = labels.shape[-2:]
    padded = F.pad(labels, (0, -w % stride, 0, -h % stride), value=ignore_index)
    return padded[..., stride // 2::stride, stride // 2::stride]


def affinity_training_loss(model: nn.Module, batch: dict, radius: int = DEFAULTS["radius"]) -> torch.Tensor:
    """The training loop's loss: ``batch["image"]`` crops and ``batch["label"]`` confident label crops.

    The confident labels are stored at full resolution (:func:`confident_labels` with stride 1) so
    crops and flips apply to them as to the image; here they are sampled onto the stride-8 grid.
    """
    feats = model(batch["image"])
    labels = reduce_labels(batch["label"])
    if tuple(labels.shape[-2:]) != tuple(feats.shape[-2:]):
        raise ValueError(f"labels on a {tuple(labels.shape[-2:])} grid, features {tuple(feats.shape[-2:])}")
    bg, fg, neg = affinity_labels(labels, radius)
    return affinity_loss(pair_affinities(feats, radius), bg, fg, neg)


def walk_scores(cams: np.ndarray | torch.Tensor, alpha: float, size: tuple[int, int],
                stride: int = STRIDE) -> torch.Tensor:
    """[(1 - max CAM) ** alpha, CAMs] at full resolution, zero-padded and average-pooled to ``size``."""
    cams = torch.as_tensor(np.asarray(cams), dtype=torch.float32)
    x = torch.cat([torch.from_numpy(background(cams.numpy(), alpha)), cams])
    h, w = size
    ph, pw = h * stride - x.shape[1], w * stride - x.shape[2]
    if ph < 0 or pw < 0:
        raise ValueError(f"CAMs {tuple(x.shape[1:])} do not fit a {h}x{w} grid at stride {stride}")
    return F.avg_pool2d(F.pad(x, (0, pw, 0, ph))[None], stride)[0]


def affinity_walk(x: torch.Tensor, pairs: torch.Tensor, *, beta: float = DEFAULTS["beta"],
                  steps: int = DEFAULTS["steps"], radius: int = DEFAULTS["radius"]) -> torch.Tensor:
    """Walk scores ``x [K, h, w]`` ``steps`` times over the pair affinities ``pairs [P, h, w]`` ** beta."""
    k, h, w = x.shape
    with torch.no_grad():
        trans = transition_matrix(pair_affinity_matrix(pairs.to(x.dtype).pow(beta), radius))
        walked = propagate(trans, x.reshape(k, h * w).t().contiguous(), steps)
    return walked.t().reshape(k, h, w)


def expand_affinitynet(cams: np.ndarray, feats: torch.Tensor, class_ids: Sequence[int],
                       image_size: tuple[int, int], *, alpha: float = DEFAULTS["alpha"],
                       beta: float = DEFAULTS["beta"], steps: int = DEFAULTS["steps"],
                       radius: int = DEFAULTS["radius"]) -> np.ndarray:
    """One image's pseudo-mask (uint8 [H, W]) from its CAMs [K, H, W] and affinity features [D, h, w]."""
    height, width = image_size
    if len(class_ids) == 0:
        return np.zeros((height, width), np.uint8)
    feats = feats.float()
    x = walk_scores(cams, alpha, tuple(feats.shape[-2:])).to(feats.device)
    walked = affinity_walk(x, pair_affinities(feats, radius), beta=beta, steps=steps, radius=radius)
    up = F.interpolate(walked[None], scale_factor=STRIDE, mode="bilinear", align_corners=False)[0]
    lookup = np.array([0, *[int(c) for c in class_ids]], dtype=np.uint8)
    return lookup[up[:, :height, :width].argmax(0).cpu().numpy()]
