"""ResNet-38 (Wu, Shen and van den Hengel, "Wider or Deeper", model A1) at output stride 8.

The network of AffinityNet and SEAM: pre-activation residual blocks (BN-ReLU
before each convolution), no max pooling, three stride-2 blocks (B2, B3, B4)
and then dilation instead of stride: B5 (dilation 2), B6 and B7 (bottlenecks,
dilation 4), so the features are 1/8 of the input.

    conv1a  3x3, 64                                   stride 1
    B2      3 blocks 3x3-3x3, 128   (first: stride 2)  1/2
    B3      3 blocks 3x3-3x3, 256   (first: stride 2)  1/4
    B4      6 blocks 3x3-3x3, 512   (first: stride 2)  1/8
    B5      3 blocks 3x3 512 - 3x3 1024, dilation 2    1/8
    B6      1 bottleneck 1x1 512 - 3x3 1024 - 1x1 2048, dilation 4, dropout 0.3
    B7      1 bottleneck 1x1 1024 - 3x3 2048 - 1x1 4096, dilation 4, dropout 0.5
    bn7     BN-ReLU of B7's output ("conv6", 4096 channels)

Module names follow AffinityNet's PyTorch port (``b4_3.conv_branch2a`` ...), so
its converted ``.pth`` files load as they are. ``width`` scales every channel
count (0.125 gives a CPU-sized network for the demo; weights load only at 1).

Weights (``weights``): ``"none"`` (random init), a local ``.pth`` state dict
(loaded with ``weights_only=True``), or the MXNet file SEAM and AffinityNet
users download, ``ilsvrc-cls_rna-a1_cls1000_ep-0001.params``, read without
MXNet by :mod:`.mxnet_params`. To convert it once to a ``.pth``:

    python -m conta_core.models.resnet38 convert ilsvrc-cls_rna-a1_cls1000_ep-0001.params res38.pth
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

from .backbone import WeightsError, read_state_dict

MXNET_FILE = "ilsvrc-cls_rna-a1_cls1000_ep-0001.params"
# (name, in, mid, out, stride, first dilation, dilation) of the basic blocks B2..B5, at width 1.
_BASIC = ([("b2", 64, 128, 128, 2, 1, 1), ("b2_1", 128, 128, 128, 1, 1, 1), ("b2_2", 128, 128, 128, 1, 1, 1)],
          [("b3", 128, 256, 256, 2, 1, 1), ("b3_1", 256, 256, 256, 1, 1, 1), ("b3_2", 256, 256, 256, 1, 1, 1)],
          [("b4", 256, 512, 512, 2, 1, 1)] + [(f"b4_{i}", 512, 512, 512, 1, 1, 1) for i in range(1, 6)],
          [("b5", 512, 512, 1024, 1, 1, 2), ("b5_1", 1024, 512, 1024, 1, 2, 2), ("b5_2", 1024, 512, 1024, 1, 2, 2)])
BLOCK_NAMES = (2, 3, 4, 5, 6, 7)


class ResBlock(nn.Module):
    """Pre-activation block: x + conv3x3(BN-ReLU(conv3x3(BN-ReLU(x)))), 1x1 projection when the shape changes."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int = 1, first_dilation: int = 1, dilation: int = 1):
        super().__init__()
        self.same_shape = cin == cout and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(cin)
        self.conv_branch2a = nn.Conv2d(cin, mid, 3, stride, padding=first_dilation, dilation=first_dilation,
                                       bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(mid)
        self.conv_branch2b1 = nn.Conv2d(mid, cout, 3, padding=dilation, dilation=dilation, bias=False)
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(output, BN-ReLU of the input): the latter is what SEAM calls conv4/conv5."""
        pre = F.relu(self.bn_branch2a(x))
        shortcut = x if self.same_shape else self.conv_branch1(pre)
        y = self.conv_branch2b1(F.relu(self.bn_branch2b1(self.conv_branch2a(pre))))
        return shortcut + y, pre


class BottleneckBlock(nn.Module):
    """Pre-activation bottleneck 1x1 (out/4) - 3x3 (out/2) - 1x1 (out) with spatial dropout."""

    def __init__(self, cin: int, cout: int, dilation: int, dropout: float):
        super().__init__()
        self.same_shape = cin == cout
        self.bn_branch2a = nn.BatchNorm2d(cin)
        self.conv_branch2a = nn.Conv2d(cin, cout // 4, 1, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(cout // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(cout // 4, cout // 2, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn_branch2b2 = nn.BatchNorm2d(cout // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(cout // 2, cout, 1, bias=False)
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = F.relu(self.bn_branch2a(x))
        shortcut = x if self.same_shape else self.conv_branch1(pre)
        y = self.dropout_2b1(F.relu(self.bn_branch2b1(self.conv_branch2a(pre))))
        y = self.dropout_2b2(F.relu(self.bn_branch2b2(self.conv_branch2b1(y))))
        return shortcut + self.conv_branch2b2(y), pre


BlockHook = Callable[[int, torch.Tensor], torch.Tensor]


class ResNet38(nn.Module):
    """The trunk; :meth:`forward` returns SEAM's named features conv4, conv5, conv6."""

    def __init__(self, width: float = 1.0, freeze_bn: bool = True, frozen_blocks: tuple[str, ...] = ("conv1a",)):
        super().__init__()
        if not 0 < width <= 1:
            raise ValueError(f"resnet38 width must be in (0, 1], got {width}")
        self.width = float(width)

        def c(channels: int) -> int:
            return max(4, int(round(channels * width)))

        self.conv1a = nn.Conv2d(3, c(64), 3, padding=1, bias=False)
        self.groups: list[list[str]] = []
        for group in _BASIC:
            names = []
            for name, cin, mid, cout, stride, first, dil in group:
                self.add_module(name, ResBlock(c(cin), c(mid), c(cout), stride, first, dil))
                names.append(name)
            self.groups.append(names)
        self.b6 = BottleneckBlock(c(1024), c(2048), dilation=4, dropout=0.3)
        self.b7 = BottleneckBlock(c(2048), c(4096), dilation=4, dropout=0.5)
        self.groups += [["b6"], ["b7"]]
        self.bn7 = nn.BatchNorm2d(c(4096))
        # Output widths of B2..B7 (the paper's "block k" = B_k), and of conv4/conv5/conv6.
        self.block_channels = {k: c(v) for k, v in zip(BLOCK_NAMES, (128, 256, 512, 1024, 2048, 4096))}
        self.feature_channels = {"conv4": c(512), "conv5": c(1024), "conv6": c(4096)}
        self.freeze_bn = freeze_bn
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.requires_grad_(False)
        for name in frozen_blocks:
            getattr(self, name).requires_grad_(False)

    def train(self, mode: bool = True) -> "ResNet38":
        super().train(mode)
        if self.freeze_bn:  # AffinityNet/SEAM keep ImageNet's BN statistics throughout
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor, after_block: BlockHook | None = None) -> dict[str, torch.Tensor]:
        """conv4 (BN-ReLU input of B5), conv5 (of B6), conv6 (BN-ReLU of B7's output).

        ``after_block(k, x)``, if given, is called with the output of every block
        group B_k (k = 2..7) and returns the tensor the network continues with:
        the place where CONTA splices [X, M_t].
        """
        out: dict[str, torch.Tensor] = {}
        x = self.conv1a(x)
        for k, names in zip(BLOCK_NAMES, self.groups):
            for name in names:
                x, pre = getattr(self, name)(x)
                if name == "b5":
                    out["conv4"] = pre
                elif name == "b6":
                    out["conv5"] = pre
            if after_block is not None:
                x = after_block(k, x)
        out["conv6"] = F.relu(self.bn7(x))
        return out


_MX_BLOCK = re.compile(r"^(res|bn)(\d)(a|b\d)_branch(1|2a|2b1|2b2)_(weight|gamma|beta|moving_mean|moving_var)$")
_MX_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_var": "running_var"}


def mxnet_to_torch_names(arrays: dict) -> dict:
    """Rename Wu et al.'s MXNet parameters (``arg:res4b3_branch2a_weight`` ...) to this module's keys.

    The ImageNet classifier (``linear1000_*``) is dropped; an unknown name raises.
    """
    renamed, unknown = {}, []
    for key, value in arrays.items():
        name = key.split(":", 1)[1] if key.startswith(("arg:", "aux:")) else key
        if name.startswith("linear1000"):
            continue
        if name == "conv1a_weight":
            renamed["conv1a.weight"] = value
            continue
        if name.startswith("bn7_") and name[4:] in _MX_BN:
            renamed[f"bn7.{_MX_BN[name[4:]]}"] = value
            continue
        m = _MX_BLOCK.match(name)
        if m is None:
            unknown.append(key)
            continue
        kind, stage, unit, branch, param = m.groups()
        block = f"b{stage}" if unit == "a" else f"b{stage}_{unit[1:]}"
        if kind == "res" and param == "weight":
            renamed[f"{block}.conv_branch{branch}.weight"] = value
        elif kind == "bn" and param in _MX_BN:
            renamed[f"{block}.bn_branch{branch}.{_MX_BN[param]}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise WeightsError(f"MXNet parameters not part of ResNet-38 A1: {unknown[:10]}"
                           f"{f' ... ({len(unknown)} in all)' if len(unknown) > 10 else ''}")
    return renamed


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A ResNet-38 state dict from an MXNet ``.params`` file or a ``.pth`` state dict."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"ResNet-38 weights file {path} does not exist. This machine cannot download it: "
                           f"fetch {MXNET_FILE} (Wu et al.'s MXNet ImageNet model, linked from the "
                           "AffinityNet and SEAM READMEs) elsewhere, copy it here and set the weights "
                           "key to its path, or use weights: none")
    if path.suffix == ".params":
        from .mxnet_params import ParamsFormatError, read_params
        try:
            arrays = read_params(path)
        except ParamsFormatError as err:
            raise WeightsError(str(err)) from err
        return {k: torch.from_numpy(v.copy()) for k, v in mxnet_to_torch_names(arrays).items()}
    return read_state_dict(path)


def load_resnet38_weights(net: ResNet38, weights: str | None) -> None:
    """Fill every trunk parameter and BN statistic from ``weights`` ("none": keep random init).

    Keys of a SEAM/AffinityNet checkpoint that are not trunk keys (fc8, f8_3,
    ...) are ignored; a missing or mis-shaped trunk key raises, naming it.
    """
    if weights in (None, "none"):
        return
    state = read_weights(weights)
    expected = net.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or mismatched:
        hint = "" if net.width == 1.0 else f" (ImageNet files are width 1; this network has width {net.width})"
        raise WeightsError(f"weights {weights} do not fit ResNet-38{hint}: missing {missing[:10]} "
                           f"({len(missing)} in all); shape mismatches (file vs model) {mismatched[:10]}")
    net.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)


def build_resnet38(width: float = 1.0, weights: str | None = "none", *, freeze_bn: bool = True,
                   frozen_blocks: tuple[str, ...] = ("conv1a",)) -> ResNet38:
    net = ResNet38(width, freeze_bn, frozen_blocks)
    load_resnet38_weights(net, weights)
    return net


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("convert", help=f"convert {MXNET_FILE} to a PyTorch state dict")
    convert.add_argument("params")
    convert.add_argument("output")
    convert.add_argument("--width", type=float, default=1.0, help="only for tests' small fake files")
    args = parser.parse_args(argv)
    net = ResNet38(args.width)
    load_resnet38_weights(net, args.params)  # checks every key and shape
    torch.save(net.state_dict(), args.output)
    print(f"wrote {args.output} ({sum(v.numel() for v in net.state_dict().values())} values)")


if __name__ == "__main__":
    main()
