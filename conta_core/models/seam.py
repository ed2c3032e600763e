"""SEAM's network (Wang et al., CVPR 2020) on ResNet-38, with CONTA's [X, M_t] splice.

The classifier is a 1x1 convolution (no bias) on the 4096-channel ``conv6``
features, after spatial dropout 0.5; its output before pooling is the CAM and
its global average the class scores s_i of the paper's Eq. 2. SEAM's 21-way
``fc8`` has a background row that no loss reaches (its channel is always
replaced by 1 - max of the classes); here the classifier has the n foreground
rows only and the background channel is made where SEAM makes it.

The pixel correlation module (PCM, :func:`pcm`) refines a CAM by the feature
similarity of pixel pairs: with f the L2-normalised projection (``f9``) of
[image, f8_3(conv4), f8_4(conv5)] (the trunk features detached, as SEAM does),

    a_ij = relu(f_i . f_j),   y_c(j) = sum_i cam_c(i) a_ij / (sum_i a_ij + 1e-5).

Its input is SEAM's detached, max-normalised CAM with background 1 - max_c and,
per pixel, only the strongest class kept (:func:`pcm_input`).

CONTA: ``fusion`` holds one module per spliced block k (B_k of ResNet-38,
k in 2..5; ``dense`` = all four), each called as ``fusion(x, m)`` with M placed
on the block's grid by :func:`conta_core.models.classifier.place_map`; ``context``
maps X_m to M (Eq. 3's :class:`~conta_core.conta.ContextAdjustment`), or is None
for ``seg_mask`` (M = X_m itself). The caller passes factories for both
(``make_context()``, ``make_fusion(channels)``) built from the same CONTA
modules the IRNet classifier uses, so this file depends only on that call
signature; they are called after the baseline layers exist, so a seed
initialises the baseline part identically with and without CONTA. Layer names match CamClassifier's (``classifier``,
``context``, ``fusion``) so the round tools that inspect them work on both.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

from .classifier import place_map
from .resnet38 import ResNet38

SEAM_BLOCKS = (2, 3, 4, 5)
EPS = 1e-5


def pcm_input(cam: torch.Tensor) -> torch.Tensor:
    """[B, n, h, w] raw CAM -> [B, n+1, h, w]: max-normalised, background 1 - max, strongest class only."""
    with torch.no_grad():
        cam = F.relu(cam.detach())
        peak = cam.flatten(2).amax(dim=2)[..., None, None] + EPS
        norm = F.relu(cam - EPS) / peak
        top = norm.amax(dim=1, keepdim=True) if norm.shape[1] else torch.zeros_like(norm[:, :1])
        fg = torch.where(norm < top, torch.zeros_like(norm), norm)
        return torch.cat([1.0 - top, fg], dim=1)


def pcm(cam: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """PCM on L2-normalised features ``feats`` [B, D, h, w]: y = cam A, A column-normalised relu(f^T f)."""
    b, c, h, w = cam.shape
    f = feats.flatten(2)
    aff = F.relu(torch.bmm(f.transpose(1, 2), f))                   # [B, hw, hw], a_ij
    aff = aff / (aff.sum(dim=1, keepdim=True) + EPS)                 # sum over i for each j
    return torch.bmm(cam.flatten(2), aff).reshape(b, c, h, w)


class SeamClassifier(nn.Module):
    def __init__(self, backbone: ResNet38, num_foreground: int, *, conta_mode: str = "off",
                 blocks: tuple[int, ...] = (), make_context: Callable[[], nn.Module] | None = None,
                 make_fusion: Callable[[int], nn.Module] | None = None):
        super().__init__()
        self.backbone = backbone
        ch = backbone.feature_channels
        w = backbone.width
        f3, f4 = max(8, round(64 * w)), max(8, round(128 * w))
        self.dropout7 = nn.Dropout2d(0.5)
        self.classifier = nn.Conv2d(ch["conv6"], num_foreground, 1, bias=False)
        self.f8_3 = nn.Conv2d(ch["conv4"], f3, 1, bias=False)
        self.f8_4 = nn.Conv2d(ch["conv5"], f4, 1, bias=False)
        self.f9 = nn.Conv2d(3 + f3 + f4, f3 + f4, 1, bias=False)
        nn.init.xavier_uniform_(self.classifier.weight)
        nn.init.kaiming_normal_(self.f8_3.weight)
        nn.init.kaiming_normal_(self.f8_4.weight)
        nn.init.xavier_uniform_(self.f9.weight, gain=4)
        # CONTA layers after the baseline layers: the same seed initialises the baseline part identically.
        if conta_mode not in ("off", "adjust", "seg_mask"):
            raise ValueError(f"SEAM conta_mode must be off, adjust or seg_mask, got {conta_mode!r}")
        if conta_mode == "adjust" and make_context is None:
            raise ValueError("conta.mode 'adjust' needs the context module (Eq. 3)")
        bad = [b for b in blocks if b not in SEAM_BLOCKS]
        if bad:
            raise ValueError(f"SEAM splices [X, M] at ResNet-38 blocks {SEAM_BLOCKS}, got {bad}")
        if conta_mode != "off" and (not blocks or make_fusion is None):
            raise ValueError("a CONTA round needs blocks and a fusion builder")
        self.conta_mode = conta_mode
        self.blocks = tuple(blocks) if conta_mode != "off" else ()
        self.context = make_context() if conta_mode == "adjust" else None
        self.fusion = nn.ModuleDict({str(b): make_fusion(backbone.block_channels[b]) for b in self.blocks})

    def context_map(self, x_m: torch.Tensor | None) -> torch.Tensor | None:
        if self.conta_mode == "off":
            return None
        if x_m is None:
            raise ValueError(f"conta.mode {self.conta_mode!r} needs the reduced masks X_m of the images")
        return self.context(x_m) if self.context is not None else x_m[:, None]

    def trunk(self, images: torch.Tensor, m: torch.Tensor | None, view: torch.Tensor | None):
        if m is None:
            return self.backbone(images)

        def splice(block: int, x: torch.Tensor) -> torch.Tensor:
            if block not in self.blocks:
                return x
            return self.fusion[str(block)](x, place_map(m, view, x.shape[-2:]).to(x.dtype))

        return self.backbone(images, after_block=splice)

    def _one_view(self, images: torch.Tensor, m: torch.Tensor | None, view: torch.Tensor | None,
                  out_size: tuple[int, int] | None) -> dict[str, torch.Tensor]:
        d = self.trunk(images, m, view)
        cam = self.classifier(self.dropout7(d["conv6"]))
        h, w = cam.shape[-2:]
        f = torch.cat([F.interpolate(images, (h, w), mode="bilinear", align_corners=True),
                       F.relu(self.f8_3(d["conv4"].detach())), F.relu(self.f8_4(d["conv5"].detach()))], dim=1)
        f = self.f9(f)
        f = f / (f.norm(dim=1, keepdim=True) + EPS)
        cam_rv = pcm(pcm_input(cam), f)
        if out_size is not None:
            cam = F.interpolate(cam, out_size, mode="bilinear", align_corners=True)
            cam_rv = F.interpolate(cam_rv, out_size, mode="bilinear", align_corners=True)
        return {"cam": cam, "cam_rv": cam_rv}

    def forward(self, images: torch.Tensor, x_m: torch.Tensor | None = None, view: torch.Tensor | None = None,
                m: torch.Tensor | None = None, *, rescale: float | None = None) -> dict[str, torch.Tensor]:
        """SEAM's outputs at input size: ``cam`` [B, n, H, W] (raw), ``cam_rv`` [B, n+1, H, W] (PCM, bg first).

        ``rescale``: also run the siamese branch on the image rescaled by this
        factor (SEAM: 0.3), giving ``cam2``/``cam_rv2`` at that size. Both views
        go through one forward call (DDP counts one forward per backward); they
        show the same image region, so they share M and ``view``.
        """
        m = self.context_map(x_m) if m is None else m
        out = self._one_view(images, m, view, tuple(images.shape[-2:]))
        if rescale is not None:
            small = F.interpolate(images, scale_factor=rescale, mode="bilinear", align_corners=True)
            second = self._one_view(small, m, view, tuple(small.shape[-2:]))
            out.update(cam2=second["cam"], cam_rv2=second["cam_rv"])
        return out

    def class_logits(self, images: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        """The raw class maps [B, n, h, w] at stride 8 under context map ``m`` (no PCM; the
        M-usage diagnostic's class scores are their spatial mean, as SEAM's)."""
        return self.classifier(self.dropout7(self.trunk(images, m, None)["conv6"]))

    def cam(self, images: torch.Tensor, x_m: torch.Tensor | None = None, view: torch.Tensor | None = None,
            m: torch.Tensor | None = None) -> torch.Tensor:
        """Inference CAMs: the PCM-refined foreground maps [B, n, h, w] at stride 8 (SEAM's cam_rv[:, 1:])."""
        m = self.context_map(x_m) if m is None else m
        return self._one_view(images, m, view, None)["cam_rv"][:, 1:]

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """SEAM's four groups (pretrained weights 1x, their biases 2x without weight decay, new
        layers 10x, their biases 20x) plus CONTA's: a fusion's identity-start part with the
        pretrained weights, its M weights apart (``context_m``), the rest and W1, W2 new."""
        def trainable(params):
            return [p for p in params if p.requires_grad]

        m_weights, spliced = [], []
        for f in self.fusion.values():
            m_weights += trainable(getattr(f, "m_parameters", lambda: [])())
            spliced += trainable(getattr(f, "spliced_parameters", lambda: [])())
        pretrained = trainable(self.backbone.parameters()) + spliced
        taken = {id(p) for p in pretrained + m_weights}
        new = [p for p in trainable(self.parameters()) if id(p) not in taken]
        return {"backbone": [p for p in pretrained if p.dim() > 1],
                "backbone_bias": [p for p in pretrained if p.dim() <= 1],
                "new": [p for p in new if p.dim() > 1],
                "new_bias": [p for p in new if p.dim() <= 1],
                "context_m": m_weights}
