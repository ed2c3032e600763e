"""IRNet pseudo-mask expansion (Ahn, Cho and Kwak, CVPR 2019), boundary branch only.

Three steps, each a function here or in the sibling modules:

1. :func:`make_ir_label` -- confident foreground/background from the CAMs,
   refined by a dense CRF, gives the inter-pixel relation (IR) label map.
2. :class:`RelationNet` + :func:`train_relation_net` -- a class-boundary
   network trained from the pair labels of :func:`affinity_labels` with
   IRNet's balanced affinity loss (:func:`relation_loss`).
3. :func:`predict_boundary` + :func:`conta_core.expand.random_walk.expand_irnet`
   -- the random walk of the CAMs over the boundary-aware affinities.

IRNet's displacement-field branch (instance segmentation) is not part of this
module: semantic pseudo-masks need only the boundary map.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from conta_core.models.backbone import build_resnet

from .affinity import affinity_labels, reduce_label
from .ir_label import IR_CRF_GT_PROB, IR_CRF_PARAMS, confident_labels, labels_to_probs, make_ir_label
from .random_walk import expand_irnet, pair_offsets, path_affinity

__all__ = [
    "make_ir_label", "confident_labels", "labels_to_probs", "reduce_label", "affinity_labels",
    "RelationNet", "relation_loss", "predict_boundary", "predict_boundaries", "train_relation_net", "expand_irnet",
    "IR_CRF_PARAMS", "IR_CRF_GT_PROB",
]

# ---------------------------------------------------------------------------
# 1. IR labels: conta_core/expand/ir_label.py (torch-free, for the CPU step's workers).


# ---------------------------------------------------------------------------
# 2. The relation (boundary) network


class RelationNet(nn.Module):
    """IRNet's boundary branch on a frozen ResNet.

    The stem (stride 4, 64 channels) and the four stages are read without
    gradients (IRNet detaches them: the backbone stays at its initial weights,
    in eval mode). Each level goes through 1x1 conv -> GroupNorm -> upsample to
    stride 4 (bilinear) -> ReLU, the five maps are concatenated and a 1x1 conv
    gives the boundary logit at stride 4 (``[B, 1, ceil(H/4), ceil(W/4)]``).
    """

    def __init__(self, depth: int = 50, output_stride: int = 16, weights: str = "none", width: int = 32,
                 gn_groups: int = 4):
        super().__init__()
        # IRNet's strides (2, 2, 2, 1) without dilation, like the CAM network it may share weights with
        self.backbone = build_resnet(depth, output_stride, weights, freeze_bn=True, freeze_conv1=True,
                                     dilate=False)
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        channels = [64, *self.backbone.stage_channels]
        # stride of stem, layer1..layer4 (layer2 always halves; layer3 stops at 8 for OS 8)
        self.level_strides = [4, 4, 8, 8 if output_stride == 8 else 16, output_stride]
        self.edge_layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, width, 1, bias=False), nn.GroupNorm(gn_groups, width)) for c in channels)
        self.edge_out = nn.Conv2d(width * len(channels), 1, 1, bias=True)

    def train(self, mode: bool = True) -> "RelationNet":
        super().train(mode)
        self.backbone.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [*self.edge_layers.parameters(), *self.edge_out.parameters()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            stem = self.backbone.stem(x)
            feats = [stem]
            h = stem
            for layer in self.backbone.stages():
                h = layer(h)
                feats.append(h)
        size = stem.shape[-2:]
        maps = []
        for feat, layer, stride in zip(feats, self.edge_layers, self.level_strides):
            y = layer(feat.detach())
            if stride > 4:
                y = F.interpolate(y, scale_factor=stride // 4, mode="bilinear", align_corners=False)
            maps.append(F.relu(y[..., :size[0], :size[1]]))
        return self.edge_out(torch.cat(maps, dim=1))


def relation_loss(boundary: torch.Tensor, bg_pos: torch.Tensor, fg_pos: torch.Tensor, neg: torch.Tensor,
                  radius: int, eps: float = 1e-5) -> tuple[torch.Tensor, dict[str, float]]:
    """IRNet's balanced inter-pixel affinity loss (``train_irn.py``, without displacement).

    boundary: ``[B, h, w]`` probabilities; labels ``[B, P, h, w]`` from :func:`affinity_labels`.
    ``a_ij = 1 - max boundary on the path`` (:func:`path_affinity`);
    ``L_bg = mean over bg_pos of -log(a)``, ``L_fg`` likewise over fg_pos,
    ``L_neg = mean over neg of -log(1 - a)``, each mean ``sum / (count + 1e-5)``;
    ``loss = ((L_bg / 2 + L_fg / 2) + L_neg) / 2``, i.e. background and foreground
    positives a quarter each and negatives a half (IRNet's
    ``(pos_aff_loss + neg_aff_loss) / 2`` with ``pos = bg / 2 + fg / 2``).
    """
    aff = path_affinity(boundary, radius)
    pos_term = -torch.log(aff + eps)
    neg_term = -torch.log(1.0 + eps - aff)

    def masked_mean(term, mask):
        mask = mask.to(term.dtype)
        return (term * mask).sum() / (mask.sum() + eps)

    bg = masked_mean(pos_term, bg_pos)
    fg = masked_mean(pos_term, fg_pos)
    ng = masked_mean(neg_term, neg)
    loss = (bg / 2 + fg / 2 + ng) / 2
    return loss, {"bg_pos": float(bg.detach()), "fg_pos": float(fg.detach()), "neg": float(ng.detach())}


@torch.no_grad()
def predict_boundary(model: RelationNet, image: torch.Tensor, *, flip: bool = True,
                     pad_multiple: int = 16) -> torch.Tensor:
    """Boundary probabilities ``[ceil(H/4), ceil(W/4)]`` for a normalised image ``[3, H, W]``.

    As IRNet's ``EdgeDisplacement``: the image and its horizontal flip are run as
    one batch (zero-padded at the bottom/right; IRNet pads to 512, here to a
    multiple of ``pad_multiple``), the logits averaged (the flipped one flipped
    back) and passed through a sigmoid.
    """
    return predict_boundaries(model, image[None], flip=flip, pad_multiple=pad_multiple)[0]


@torch.no_grad()
def predict_boundaries(model: RelationNet, images: torch.Tensor, *, flip: bool = True,
                       pad_multiple: int = 16) -> torch.Tensor:
    """:func:`predict_boundary` of a batch of same-sized images ``[B, 3, H, W]`` in one forward pass.

    Returns ``[B, ceil(H/4), ceil(W/4)]``. The network normalises per sample
    (GroupNorm, frozen BatchNorm), so each result is that of the image alone;
    one pass over many images is much faster than many small ones on the CPU.
    """
    model.eval()
    images = images.to(next(model.parameters()).device)
    batch = images.shape[0]
    height, width = images.shape[-2:]
    out_h, out_w = (height + 3) // 4, (width + 3) // 4
    # pad to whole stride-4 cells first, so the mirrored copy's cells line up
    x = F.pad(images, (0, 4 * out_w - width, 0, 4 * out_h - height))
    if flip:
        x = torch.cat([x, x.flip(-1)], dim=0)
    x = F.pad(x, (0, -x.shape[-1] % pad_multiple, 0, -x.shape[-2] % pad_multiple))
    logits = model(x)[:, 0, :out_h, :out_w]
    edge = logits[:batch] / 2 + logits[batch:].flip(-1) / 2 if flip else logits
    return torch.sigmoid(edge)


# ---------------------------------------------------------------------------
# training


def train_relation_net(model: RelationNet, dataset, *, epochs: int = 3, batch_size: int = 32, lr: float = 0.1,
                       weight_decay: float = 1e-4, momentum: float = 0.0, poly_power: float = 0.9,
                       radius: int = 10, ignore_index: int = 255, num_workers: int = 0,
                       device: torch.device | str = "cpu", seed: int = 0, progress: bool = True,
                       name: str = "irn") -> list[float]:
    """Train the boundary layers of ``model`` in place; returns the loss of every step.

    dataset: items ``(image [3, H, W] float, label [ceil(H/4), ceil(W/4)] int)``
    where ``label`` is the IR label at stride 4 (:func:`reduce_label`), 255 unsure.
    IRNet's schedule: SGD, lr 0.1 with poly decay ``(1 - step / max_step) ** 0.9``,
    weight decay 1e-4, batch 32, 3 epochs, pair radius 10; the last partial batch
    of an epoch is dropped. Momentum defaults to 0: IRNet's ``PolyOptimizer``
    calls ``SGD.__init__(params, lr, weight_decay)``, which makes its momentum
    the weight decay value (1e-4, i.e. none to speak of), and uses its own
    ``momentum=0.9`` argument only as the poly power. Progress goes to stderr
    (tqdm bar and one line per epoch) unless ``progress`` is false. A dataset
    with ``set_epoch`` (:class:`~conta_core.expand.relation_data.RelationDataset`)
    is told the epoch before each pass.
    """
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    device = torch.device(device)
    if len(dataset) < batch_size:
        raise ValueError(f"{name}: {len(dataset)} training items is fewer than one batch (batch_size {batch_size})")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=num_workers,
                        generator=generator, pin_memory=device.type == "cuda")
    model.to(device).train()
    params = model.trainable_parameters()
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    max_steps = epochs * len(loader)
    step = 0
    losses: list[float] = []
    for epoch in range(epochs):
        start = time.time()
        if hasattr(dataset, "set_epoch"):  # fresh augmentation every epoch (RelationDataset)
            dataset.set_epoch(epoch)
        bar = tqdm(loader, desc=f"{name} epoch {epoch + 1}/{epochs}", file=sys.stderr, disable=not progress,
                   mininterval=5.0, leave=False)
        epoch_losses = []
        for images, labels in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr * (1.0 - step / max_steps) ** poly_power
            images = images.to(device, non_blocking=True).float()
            labels = labels.to(device, non_blocking=True)
            bg_pos, fg_pos, neg = affinity_labels(labels, radius, ignore_index)
            logits = model(images)[:, 0]
            if logits.shape[-2:] != labels.shape[-2:]:
                raise ValueError(f"{name}: label maps are {tuple(labels.shape[-2:])} but the network gives "
                                 f"{tuple(logits.shape[-2:])} at stride 4 (use reduce_label on the crop)")
            loss, _ = relation_loss(torch.sigmoid(logits), bg_pos, fg_pos, neg, radius)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            losses.append(float(loss.detach()))
            epoch_losses.append(losses[-1])
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if progress:
            print(f"[{name}] epoch {epoch + 1}/{epochs} step {step}/{max_steps} "
                  f"loss {np.mean(epoch_losses):.4f} {time.time() - start:.1f}s", file=sys.stderr, flush=True)
    model.eval()
    return losses
