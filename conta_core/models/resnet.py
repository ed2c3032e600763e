"""ResNet stages in torchvision's layout, without importing torchvision.

Importing torchvision pulls in torch._dynamo (and triton where installed)
through its detection ops: about 2.6 s per process on a 2-core machine, paid by
every classifier, CAM, segmenter and prediction job of every round. The
backbone needs only the residual stages, so they are built here with
torchvision's module names, shapes and initialisation: a torchvision ResNet
state dict loads unchanged, and tests check the outputs against torchvision's
own network.

Strides and dilations are set per stage. DeepLab style (``dilate``): a stage that
gives up its stride dilates every one of its blocks (including the first) by the
accumulated factor. IRNet style: the stage keeps stride 1 without dilation.
"""
from __future__ import annotations

import torch
from torch import nn


def _conv3x3(in_channels: int, out_channels: int, stride: int, dilation: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation,
                     bias=False)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int, dilation: int):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, width, stride, dilation)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, 1, dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, width, stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride: ResNet v1.5), 1x1 expand (ResNet-50/101)."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int, dilation: int):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride, dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels, stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BLOCKS_PER_STAGE = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)),
                    50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3))}
STAGE_WIDTHS = (64, 128, 256, 512)


def build_stem() -> nn.Sequential:
    """conv1 (7x7, stride 2), bn1, ReLU, 3x3 max-pool (stride 2): torchvision's stem."""
    return nn.Sequential(nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64),
                         nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))


def build_stages(depth: int, strides: tuple[int, int, int, int], dilate: bool = True) -> list[nn.Sequential]:
    """layer1..layer4 with the given strides; with ``dilate`` a stride of 1 after layer1
    becomes dilation (DeepLab), without it the stage just keeps the resolution (IRNet)."""
    block, counts = BLOCKS_PER_STAGE[depth]
    stages, in_channels, dilation = [], 64, 1
    for index, (width, count, stride) in enumerate(zip(STAGE_WIDTHS, counts, strides)):
        if dilate and index > 0 and stride == 1:
            dilation *= 2
        blocks = []
        for position in range(count):
            blocks.append(block(in_channels, width, stride if position == 0 else 1, dilation))
            in_channels = width * block.expansion
        stages.append(nn.Sequential(*blocks))
    return stages


def init_like_torchvision(module: nn.Module) -> None:
    """He-normal (fan-out) convolutions, unit-scale zero-shift BatchNorm."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def zero_init_residual(module: nn.Module) -> nn.Module:
    """Zero the last BN scale of every residual branch (torchvision's ``zero_init_residual``).

    With frozen, unit-statistics BN a random He-initialised ResNet-101's features
    grow to ~1e5 by layer4 and an SGD step overflows in any precision; with the
    branches at zero the features keep a trained network's scale. For timing and
    numerics checks on random weights (bench/gpu_check.py, tests/test_cuda.py).
    """
    for m in module.modules():
        if isinstance(m, Bottleneck):
            nn.init.zeros_(m.bn3.weight)
        elif isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)
    return module


def _fold(conv: nn.Conv2d, bn: nn.Module) -> nn.Module:
    """Fold an eval-mode BatchNorm into the convolution before it; returns what replaces the BN."""
    if not isinstance(bn, nn.BatchNorm2d):
        return bn  # already folded (Identity)
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() - bn.running_mean * scale
    conv.weight = nn.Parameter(conv.weight.detach() * scale[:, None, None, None], requires_grad=False)
    bias = shift if conv.bias is None else conv.bias.detach() * scale + shift
    conv.bias = nn.Parameter(bias, requires_grad=False)
    return nn.Identity()


@torch.no_grad()
def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm of the stem and the residual blocks into its convolution, in place.

    For inference only (the statistics are frozen into the weights): one pass over
    each activation fewer per BN, the same outputs up to float rounding (~1e-6
    relative). Call on a copy of a model in eval mode.
    """
    for m in module.modules():
        if isinstance(m, nn.Sequential) and len(m) >= 2 and isinstance(m[0], nn.Conv2d):
            m[1] = _fold(m[0], m[1])  # the stem (conv1, bn1, ...) and shortcuts (conv, bn)
        elif isinstance(m, Bottleneck):
            m.bn1, m.bn2, m.bn3 = _fold(m.conv1, m.bn1), _fold(m.conv2, m.bn2), _fold(m.conv3, m.bn3)
        elif isinstance(m, BasicBlock):
            m.bn1, m.bn2 = _fold(m.conv1, m.bn1), _fold(m.conv2, m.bn2)
    return module
