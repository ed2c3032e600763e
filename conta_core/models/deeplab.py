"""DeepLab-v2: ResNet (output stride 8) + ASPP with summed branches + optional MSC.

ASPP: one 3x3 convolution per dilation rate (6, 12, 18, 24), each predicting all
classes; the branch logits are summed. MSC: the image is also fed at scales 0.75
and 0.5; the logits are resized to the full-scale logits and fused by an
element-wise max. In training the loss is taken on every scale and on the fused
output, as in DeepLab-v2.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .backbone import ResNetBackbone


class ASPP(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, rates: tuple[int, ...]):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r, bias=True) for r in rates)
        for conv in self.branches:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(branch(x) for branch in self.branches)


class DeepLabV2(nn.Module):
    def __init__(self, backbone: ResNetBackbone, num_classes: int, rates=(6, 12, 18, 24),
                 msc_scales=(1.0, 0.75, 0.5)):
        super().__init__()
        self.backbone = backbone
        self.aspp = ASPP(backbone.stage_channels[-1], num_classes, tuple(rates))
        self.msc_scales = tuple(msc_scales) or (1.0,)

    def single_scale(self, images: torch.Tensor) -> torch.Tensor:
        return self.aspp(self.backbone(images)[-1])

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Logits per scale, then the max-fused logits (last); all at the full-scale logit size."""
        outputs = []
        for scale in self.msc_scales:
            x = images if scale == 1.0 else F.interpolate(images, scale_factor=scale, mode="bilinear",
                                                          align_corners=False)
            outputs.append(self.single_scale(x))
        size = outputs[0].shape[-2:]
        if len(outputs) == 1:
            return outputs
        resized = [outputs[0]] + [F.interpolate(o, size=size, mode="bilinear", align_corners=False)
                                  for o in outputs[1:]]
        fused = torch.stack(resized).max(dim=0).values
        return outputs + [fused]

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Fused logits resized to the input size: [B, C, H, W]."""
        return F.interpolate(self(images)[-1], size=images.shape[-2:], mode="bilinear", align_corners=False)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Backbone (1x lr), ASPP weights (10x) and ASPP biases (20x), as in DeepLab-v2."""
        return {
            "backbone": [p for p in self.backbone.parameters() if p.requires_grad],
            "aspp_weight": [b.weight for b in self.aspp.branches],
            "aspp_bias": [b.bias for b in self.aspp.branches],
        }


def msc_loss(outputs: list[torch.Tensor], labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy on every scale's logits, labels resized by nearest neighbour."""
    total = 0.0
    for logits in outputs:
        target = F.interpolate(labels[:, None].float(), size=logits.shape[-2:], mode="nearest")[:, 0].long()
        total = total + F.cross_entropy(logits, target, ignore_index=ignore_index)
    return total
