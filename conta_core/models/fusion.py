"""The class-shared network on the channel concatenation [X, M_t] (paper, Eq. 2).

Both fusions keep the X part and the M part of their first convolution as two
parameters whose outputs are summed: that is exactly one convolution over the
concatenation [X, M], and it lets the M weights have their own initialisation
and learning rate (``conta.m_init``, ``conta.m_lr_mult``).

``linear`` (the original design): X' = W_x X + W_m M + b, a 1x1 convolution
    initialised as the identity on X. At block 5 it is followed by the linear
    class convolution, so M only adds a per-class multiple of itself to the CAM
    and the constant mean(M) to the score: the image-level loss barely needs it.
``conv``: a residual block X' = X + U relu(BN(V_x X + V_m M)), V a 3x3
    convolution to ``hidden`` channels, U a 1x1 convolution back, zero-initialised
    so the block starts as the identity on X (a pretrained later layer is not
    disturbed). The ReLU lets M gate X location by location, so M can change
    where the CAM is, not only its level. The BatchNorm keeps the ReLU alive:
    without it, AdamW's per-weight steps on the 9C-input X part shifted every
    pre-activation to about -100 within round 1 of the demo (at the backbone
    rate too), all units died and M had no effect (M-usage diagnostic: 0.0 %).

``m_init``: ``zero`` (the original: the M weights start at 0 and, at the
backbone's learning rate, barely move) or ``balanced``: the M weights are drawn
so that the single M channel reaches the next layer with about the strength of
all X channels together (std of an X weight times sqrt(C)).
"""
from __future__ import annotations

import math

import torch
from torch import nn

FUSIONS = ("linear", "conv")
M_INITS = ("zero", "balanced")


def _init_m_weight(weight: torch.Tensor, m_init: str, x_weight_std: float, channels: int) -> None:
    if m_init not in M_INITS:
        raise ValueError(f"conta.m_init must be one of {M_INITS}, got {m_init!r}")
    with torch.no_grad():
        if m_init == "zero":
            weight.zero_()
        else:
            weight.normal_(0.0, x_weight_std * math.sqrt(channels))


class LinearFusion(nn.Module):
    """X' = W_x X + W_m M + b (1x1), starting as X' = X (+ W_m M with ``m_init: balanced``)."""

    def __init__(self, channels: int, m_init: str = "zero"):
        super().__init__()
        self.x_conv = nn.Conv2d(channels, channels, kernel_size=1, bias=True)
        self.m_conv = nn.Conv2d(1, channels, kernel_size=1, bias=False)
        with torch.no_grad():
            self.x_conv.weight.copy_(torch.eye(channels)[:, :, None, None])
            self.x_conv.bias.zero_()
        # The identity's weight per channel is 1: balanced M weights have std 1 / sqrt(C) * sqrt(C) = 1.
        _init_m_weight(self.m_conv.weight, m_init, 1.0 / math.sqrt(channels), channels)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return self.x_conv(x) + self.m_conv(m)

    def m_parameters(self) -> list[nn.Parameter]:
        return [self.m_conv.weight]

    def spliced_parameters(self) -> list[nn.Parameter]:
        """Parameters that start as the backbone's identity (trained at the backbone rate)."""
        return list(self.x_conv.parameters())

    def new_parameters(self) -> list[nn.Parameter]:
        return []


class ConvFusion(nn.Module):
    """X' = X + U relu(BN(V_x X + V_m M)): a residual 3x3 -> BN -> ReLU -> 1x1 block, U starts at 0."""

    def __init__(self, channels: int, hidden: int | None = None, m_init: str = "balanced"):
        super().__init__()
        hidden = hidden or max(1, channels // 4)
        self.x_in = nn.Conv2d(channels, hidden, kernel_size=3, padding=1, bias=False)
        self.m_in = nn.Conv2d(1, hidden, kernel_size=3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(hidden)
        self.out = nn.Conv2d(hidden, channels, kernel_size=1, bias=False)
        nn.init.zeros_(self.out.weight)
        _init_m_weight(self.m_in.weight, m_init, float(self.x_in.weight.detach().std()), channels)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return x + self.out(torch.relu(self.norm(self.x_in(x) + self.m_in(m))))

    def m_parameters(self) -> list[nn.Parameter]:
        return [self.m_in.weight]

    def spliced_parameters(self) -> list[nn.Parameter]:
        # At the backbone rate, like the linear splice: it sits inside the backbone's feature path.
        return [*self.x_in.parameters(), *self.norm.parameters(), self.out.weight]

    def new_parameters(self) -> list[nn.Parameter]:
        return []


def build_fusion(kind: str, channels: int, m_init: str, hidden: int | None = None) -> nn.Module:
    if kind == "linear":
        return LinearFusion(channels, m_init)
    if kind == "conv":
        return ConvFusion(channels, hidden, m_init)
    raise ValueError(f"conta.fusion must be one of {FUSIONS}, got {kind!r}")
