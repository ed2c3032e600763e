"""The image-level classifier of Eq. 2 and its CAM, with CONTA's [X, M_t].

s_i = f(X, M_t; theta_i): backbone features X, a class-shared fusion of the
channel concatenation [X, M] at the chosen block(s), then a class-specific 1x1
convolution without bias and global average pooling. The CAM of class i is the
same 1x1 convolution applied before pooling.

The fusion at a block (:mod:`conta_core.models.fusion`, ``conta.fusion``) is
either the original 1x1 identity splice or a residual conv block; both start as
the identity on X, so a pretrained backbone is not disturbed at step 0, and
later blocks keep their expected width. How M is scaled and how W1, W2 start
(``conta.m_scale``, ``conta.attention_init``) is :mod:`conta_core.conta`.

``conta_mode``:
  * ``off``: no M at all (the baseline; every round is round 0's model).
  * ``adjust``: M_t from Eq. 3 (:class:`~conta_core.conta.ContextAdjustment`).
  * ``seg_mask``: ablation Q1, the raw reduced predicted mask X_m itself.

(The config's ``permuted`` and ``oracle`` modes build the ``adjust`` model: they
differ only in which X_m the confounder file holds; see conta_core.confounder.)

The constructor's keyword defaults are the original design (linear fusion, zero M
weights, Eq. 3's scale, nn.Linear's W1/W2); the workflow builds the classifier
through :func:`conta_core.classify.build_classifier`, which applies the ``conta:``
keys (whose defaults are the live design).
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..conta import ContextAdjustment
from .backbone import ResNetBackbone
from .fusion import LinearFusion, build_fusion

BLOCKS = (2, 3, 4, 5)  # the paper's names for ResNet layer1..layer4


def parse_blocks(block: int | str) -> tuple[int, ...]:
    if block == "dense":
        return BLOCKS
    if isinstance(block, str) and block.isdigit():
        block = int(block)
    if block not in BLOCKS:
        raise ValueError(f"conta.block must be one of 2, 3, 4, 5 or 'dense', got {block!r}")
    return (block,)


def identity_fusion(channels: int) -> LinearFusion:
    """The original fusion: 1x1 [X, M] -> X' that starts as X' = X (zero M weights)."""
    return LinearFusion(channels, "zero")


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
                 prior: torch.Tensor | None = None, map_size: tuple[int, int] | None = None,
                 fusion: str = "linear", fusion_channels: int | None = None, m_init: str = "zero",
                 m_scale: str = "prior", attention_init: str = "default", x_norm: float | None = None):
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
            self.context = ContextAdjustment(confounder, prior, m_scale=m_scale,
                                             attention_init=attention_init, x_norm=x_norm)
        elif conta_mode == "seg_mask":
            if map_size is None:
                raise ValueError("conta.mode 'seg_mask' needs conta.map_size")
            self.context = None
        elif conta_mode == "off":
            self.context = None
        else:
            raise ValueError(f"conta.mode must be off, adjust or seg_mask, got {conta_mode!r}")
        self.fusion = nn.ModuleDict({str(b): build_fusion(fusion, backbone.stage_channels[b - 2], m_init,
                                                          fusion_channels) for b in self.blocks})

    def context_map(self, x_m: torch.Tensor | None) -> torch.Tensor | None:
        if self.conta_mode == "off":
            return None
        if x_m is None:
            raise ValueError(f"conta.mode {self.conta_mode!r} needs the reduced masks X_m of the images")
        if self.conta_mode == "adjust":
            return self.context(x_m)
        return x_m[:, None]

    def features(self, images: torch.Tensor, x_m: torch.Tensor | None = None,
                 view: torch.Tensor | None = None, m: torch.Tensor | None = None) -> torch.Tensor:
        """Block-5 features; ``m`` ([B, 1, h, w]) replaces M_t (diagnostics: M = 0, a given M)."""
        m = self.context_map(x_m) if m is None else m
        x = self.backbone.stem(images)
        for block, stage in zip(BLOCKS, self.backbone.stages()):
            x = stage(x)
            if block in self.blocks:
                x = self.fusion[str(block)](x, place_map(m, view, x.shape[-2:]).to(x.dtype))
        return x

    def forward(self, images: torch.Tensor, x_m: torch.Tensor | None = None,
                view: torch.Tensor | None = None, m: torch.Tensor | None = None) -> torch.Tensor:
        """Class scores s_i: [B, n]."""
        return self.classifier(self.features(images, x_m, view, m)).mean(dim=(2, 3))

    def cam(self, images: torch.Tensor, x_m: torch.Tensor | None = None,
            view: torch.Tensor | None = None, m: torch.Tensor | None = None) -> torch.Tensor:
        """Unnormalised class activation maps ReLU(W_i^T f): [B, n, h, w]."""
        return F.relu(self.classifier(self.features(images, x_m, view, m)))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by learning-rate group: ``backbone`` (1x), ``new`` (new_layer_lr_mult) and
        ``context_m`` (the fusions' M weights, conta.m_lr_mult).

        The linear fusion's X part counts as backbone: it is spliced into it and starts as its
        identity. At the new-layer rate (10x; 1e-2 with the demo's AdamW, whose steps do not
        shrink with the gradient) its C x C weights are rewritten within a few dozen steps, which
        is the disturbance the identity start avoids. The conv fusion is a new layer. W1, W2 are
        new layers.
        """
        m_weights = [p for f in self.fusion.values() for p in f.m_parameters() if p.requires_grad]
        spliced = [p for f in self.fusion.values() for p in f.spliced_parameters() if p.requires_grad]
        backbone = [p for p in self.backbone.parameters() if p.requires_grad] + spliced
        taken = {id(p) for p in backbone + m_weights}
        new = [p for p in self.parameters() if p.requires_grad and id(p) not in taken]
        return {"backbone": backbone, "new": new, "context_m": m_weights}


def multilabel_soft_margin(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Negative log of Eq. 2, averaged over classes and images."""
    return F.multilabel_soft_margin_loss(scores, targets)
