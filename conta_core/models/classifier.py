"""The image-level classifier of Eq. 2 and its CAM, with CONTA's [X, M_t].

s_i = f(X, M_t; theta_i): backbone features X, a class-shared fusion of the
channel concatenation [X, M] at the chosen block(s), then a class-specific 1x1
convolution without bias and global average pooling. The CAM of class i is the
same 1x1 convolution applied before pooling.

The fusion at a block is a 1x1 convolution from C+1 channels back to the
block's C channels, initialised as the identity on X and zero on M: at step 0
the network computes exactly what the plain backbone computes, so a pretrained
backbone is not disturbed, and later blocks keep their expected width. The M
column gets a gradient from the first step (like a zero-initialised "zero
convolution"); once it is non-zero the gradient also reaches W1 and W2.

``conta_mode``:
  * ``off``: no M at all (the baseline; every round is round 0's model).
  * ``adjust``: M_t from Eq. 3 (:class:`~conta_core.conta.ContextAdjustment`).
  * ``seg_mask``: ablation Q1, the raw reduced predicted mask X_m itself.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..conta import ContextAdjustment
from .backbone import ResNetBackbone

BLOCKS = (2, 3, 4, 5)  # the paper's names for ResNet layer1..layer4


def parse_blocks(block: int | str) -> tuple[int, ...]:
    if block == "dense":
        return BLOCKS
    if isinstance(block, str) and block.isdigit():
        block = int(block)
    if block not in BLOCKS:
        raise ValueError(f"conta.block must be one of 2, 3, 4, 5 or 'dense', got {block!r}")
    return (block,)


def identity_fusion(channels: int) -> nn.Conv2d:
    """1x1 conv [X, M] -> X' that starts as X' = X."""
    conv = nn.Conv2d(channels + 1, channels, kernel_size=1, bias=True)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :channels, 0, 0] = torch.eye(channels)
        conv.bias.zero_()
    return conv


def place_map(m: torch.Tensor, view: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
    """Resample M (over the whole image, [B, 1, h, w]) onto a block's grid of the network input.

    ``view`` ([B, 4]: a_x, b_x, a_y, b_y) maps the input's normalised coordinates
    u in [-1, 1] to the whole image's, x = a u + b: a random crop, rescale or
    flip of the image is applied to M too (outside the image M is 0, like the
    zero padding of the crop). ``None`` means the input is the whole image.
    """
    if view is None:
        return F.interpolate(m, size=size, mode="bilinear", align_corners=False)
    zeros = torch.zeros_like(view[:, 0])
    theta = torch.stack([torch.stack([view[:, 0], zeros, view[:, 1]], dim=1),
                         torch.stack([zeros, view[:, 2], view[:, 3]], dim=1)], dim=1).to(m.dtype)
    grid = F.affine_grid(theta, [m.shape[0], 1, *size], align_corners=False)
    return F.grid_sample(m, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class CamClassifier(nn.Module):
    def __init__(self, backbone: ResNetBackbone, num_foreground: int, *, conta_mode: str = "off",
                 blocks: tuple[int, ...] = (5,), confounder: torch.Tensor | None = None,
                 prior: torch.Tensor | None = None, map_size: tuple[int, int] | None = None):
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Conv2d(backbone.stage_channels[-1], num_foreground, 1, bias=False)
        # CONTA layers are built after the baseline layers so that, with the same
        # seed, the baseline part of the network is initialised identically.
        self.conta_mode = conta_mode
        self.blocks = blocks if conta_mode != "off" else ()
        if conta_mode == "adjust":
            if confounder is None or prior is None:
                raise ValueError("conta.mode 'adjust' needs the confounder set and prior")
            self.context = ContextAdjustment(confounder, prior)
        elif conta_mode == "seg_mask":
            if map_size is None:
                raise ValueError("conta.mode 'seg_mask' needs conta.map_size")
            self.context = None
        elif conta_mode == "off":
            self.context = None
        else:
            raise ValueError(f"conta.mode must be off, adjust or seg_mask, got {conta_mode!r}")
        self.fusion = nn.ModuleDict({str(b): identity_fusion(backbone.stage_channels[b - 2])
                                     for b in self.blocks})

    def context_map(self, x_m: torch.Tensor | None) -> torch.Tensor | None:
        if self.conta_mode == "off":
            return None
        if x_m is None:
            raise ValueError(f"conta.mode {self.conta_mode!r} needs the reduced masks X_m of the images")
        if self.conta_mode == "adjust":
            return self.context(x_m)
        return x_m[:, None]

    def features(self, images: torch.Tensor, x_m: torch.Tensor | None = None,
                 view: torch.Tensor | None = None) -> torch.Tensor:
        m = self.context_map(x_m)
        x = self.backbone.stem(images)
        for block, stage in zip(BLOCKS, self.backbone.stages()):
            x = stage(x)
            if block in self.blocks:
                x = self.fusion[str(block)](torch.cat([x, place_map(m, view, x.shape[-2:]).to(x.dtype)], dim=1))
        return x

    def forward(self, images: torch.Tensor, x_m: torch.Tensor | None = None,
                view: torch.Tensor | None = None) -> torch.Tensor:
        """Class scores s_i: [B, n]."""
        return self.classifier(self.features(images, x_m, view)).mean(dim=(2, 3))

    def cam(self, images: torch.Tensor, x_m: torch.Tensor | None = None,
            view: torch.Tensor | None = None) -> torch.Tensor:
        """Unnormalised class activation maps ReLU(W_i^T f): [B, n, h, w]."""
        return F.relu(self.classifier(self.features(images, x_m, view)))

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, new layers) for the 1x / 10x learning rates.

        The [X, M] fusions count as backbone: they are spliced into it and start as
        its identity. At the new-layer rate (10x; 1e-2 with the demo's AdamW, whose
        steps do not shrink with the gradient) their C x (C+1) weights are rewritten
        within a few dozen steps, which is the disturbance the identity start avoids.
        """
        fusion = [p for p in self.fusion.parameters() if p.requires_grad]
        backbone = [p for p in self.backbone.parameters() if p.requires_grad] + fusion
        ids = {id(p) for p in backbone}
        new = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        return backbone, new


def multilabel_soft_margin(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Negative log of Eq. 2, averaged over classes and images."""
    return F.multilabel_soft_margin_loss(scores, targets)
