"""DSRG (Huang et al., CVPR 2018): DeepLab trained on seeds grown during training (Appendix 3.3).

Network (:class:`DsrgNet`): DeepLab-v2 on ResNet-101 at output stride 16
(:func:`conta_core.models.backbone.build_resnet`, frozen BN), dropout 0.5 on
the trunk's output (the appendix's dropout rate; DSRG's VGG prototxt drops
out inside each ASPP branch), then DeepLab-v2's ASPP (rates 6, 12, 18, 24,
branch logits summed; :class:`conta_core.models.deeplab.ASPP`). One scale
(no MSC), as DSRG.

One training step (:func:`dsrg_loss`), as DSRG's layers compute it:

1. f = SEC's softmax of the logits (floored at 1e-4, renormalised);
2. Q = the dense CRF of f on the image downscaled to the output grid, spatial
   kernels divided by 12 (DSRG's CRF layer, SEC's parameters; constant);
3. the seeds (CAM top 20 % + saliency < 0.06, on the output grid) grow on Q
   by :func:`conta_core.expand.region_growing.grow_seeds` (DSRG grows on the
   CRF-refined map; ``grow_on="softmax"`` grows on f instead);
4. loss = balanced seeding loss on the grown seeds (:func:`balanced_seeding_loss`)
   + the constrain loss KL(Q || f) with Q / f clipped to [0.05, 20] (DSRG's
   constrain layer).

Training (:data:`DSRG_TRAINING`): SGD momentum 0.9, 10,000 iterations, batch
20, weight decay 5e-4, lr 5e-4 divided by 10 every 2,000 iterations, 321
crops; lr x1 on the trunk, x10 / x20 on the ASPP weights / biases (DeepLab's).
Pseudo-masks: :func:`conta_core.expand.sec.predict_pseudo_mask` (CRF with the
public code's default parameters).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models.backbone import ResNetBackbone, build_resnet
from ..models.deeplab import ASPP
from .region_growing import BG_THRESHOLD, FG_THRESHOLD, grow_seeds
from .sec import CRF_SCALE, MIN_PROB, constrain_loss, crf_targets, one_hot_cues, sec_softmax, seeds_to_grid

CONSTRAIN_CLIP = (0.05, 20.0)   # DSRG's ConstrainLossLayer: clip(Q / f, 0.05, 20)
DSRG_TRAINING = {"optimizer": "sgd", "lr": 5e-4, "momentum": 0.9, "weight_decay": 5e-4, "iterations": 10000,
                 "batch_size": 20, "crop": 321, "lr_step": 2000, "lr_gamma": 0.1, "dropout": 0.5,
                 "depth": 101, "output_stride": 16, "fg_threshold": FG_THRESHOLD, "bg_threshold": BG_THRESHOLD}


class DsrgNet(nn.Module):
    """ResNet trunk + dropout + ASPP: ``forward`` gives logits [B, C, h, w]."""

    def __init__(self, backbone: ResNetBackbone, num_classes: int, rates=(6, 12, 18, 24),
                 dropout: float = DSRG_TRAINING["dropout"]):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)  # element-wise, as Caffe's Dropout layer in DSRG's network
        self.aspp = ASPP(backbone.stage_channels[-1], num_classes, tuple(rates))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.aspp(self.dropout(self.backbone(images)[-1]))


def build_dsrg_network(num_classes: int, weights: str = "none", depth: int = DSRG_TRAINING["depth"],
                       output_stride: int = DSRG_TRAINING["output_stride"]) -> DsrgNet:
    return DsrgNet(build_resnet(depth, output_stride, weights), num_classes)


def balanced_seeding_loss(probs: torch.Tensor, cues: torch.Tensor) -> torch.Tensor:
    """DSRG's balanced seeding loss: background and foreground cues each averaged over their own count.

    -mean_b[ sum_bg log f_0 / n_bg ] - mean_b[ sum_fg log f_c / n_fg ]; an empty set adds 0.
    """
    logp = probs.log()
    bg = -(cues[:, 0] * logp[:, 0]).sum(dim=(1, 2)) / cues[:, 0].sum(dim=(1, 2)).clamp_min(MIN_PROB)
    fg = -(cues[:, 1:] * logp[:, 1:]).sum(dim=(1, 2, 3)) / cues[:, 1:].sum(dim=(1, 2, 3)).clamp_min(MIN_PROB)
    return bg.mean() + fg.mean()


def grow_batch(probs: torch.Tensor, seeds: torch.Tensor, labels: torch.Tensor, *,
               fg_threshold: float = FG_THRESHOLD, bg_threshold: float = BG_THRESHOLD,
               connectivity: int = 8) -> torch.Tensor:
    """Grow each image's seeds ([B, h, w]) on ``probs`` ([B, C, h, w]); ``labels`` [B, C-1] multi-hot."""
    p = probs.detach().float().cpu().numpy()
    s = seeds.cpu().numpy()
    present = labels.cpu().numpy() > 0.5
    grown = [grow_seeds(p[b], s[b], [int(c) + 1 for c in np.flatnonzero(present[b])],
                        fg_threshold=fg_threshold, bg_threshold=bg_threshold, connectivity=connectivity)
             for b in range(len(p))]
    return torch.from_numpy(np.stack(grown)).to(seeds.device)


def dsrg_loss(model: DsrgNet, batch: dict, *, fg_threshold: float = FG_THRESHOLD,
              bg_threshold: float = BG_THRESHOLD, grow_on: str = "crf", connectivity: int = 8,
              crf: dict | None = None, clip: tuple[float, float] = CONSTRAIN_CLIP, scale: float = CRF_SCALE,
              workers=None) -> torch.Tensor:
    """Seeding loss on the grown seeds + constrain loss, for :func:`conta_core.train.train`.

    ``batch``: ``image`` [B, 3, H, W], ``rgb`` uint8 [B, H, W, 3], ``seeds`` [B, H, W], ``labels`` [B, C-1].
    ``workers``: spreads the CRFs over processes (see :func:`conta_core.expand.sec.crf_targets`).
    """
    if grow_on not in ("crf", "softmax"):
        raise ValueError(f"grow_on must be 'crf' or 'softmax', got {grow_on!r}")
    probs = sec_softmax(model(batch["image"]))
    size = tuple(probs.shape[-2:])
    rgb = batch["rgb"].cpu().numpy() if torch.is_tensor(batch["rgb"]) else np.asarray(batch["rgb"])
    refined = crf_targets(probs, rgb, scale, crf=crf, workers=workers)
    seeds = seeds_to_grid(batch["seeds"], size)
    grown = grow_batch(refined if grow_on == "crf" else probs, seeds, batch["labels"],
                       fg_threshold=fg_threshold, bg_threshold=bg_threshold, connectivity=connectivity)
    cues = one_hot_cues(grown, probs.shape[1])
    return balanced_seeding_loss(probs, cues) + constrain_loss(probs, refined, clip=clip)


def optimizer_groups(model: DsrgNet) -> list[dict]:
    """Trunk 1x; ASPP weights 10x, biases 20x (no decay on biases)."""
    return [{"params": [p for p in model.backbone.parameters() if p.requires_grad], "lr_mult": 1.0},
            {"params": [b.weight for b in model.aspp.branches], "lr_mult": 10.0},
            {"params": [b.bias for b in model.aspp.branches], "lr_mult": 20.0, "weight_decay": 0.0}]
