"""VGG-16 in the DeepLab-LargeFOV form (SEC, CONTA Appendix 3.4), with CONTA's block layout.

Trunk: VGG-16's 13 convolutions (3x3, ReLU) in five groups. pool1..pool3 are
2x2 stride 2; pool4 and pool5 are 3x3 stride 1 padding 1 (DeepLab-LargeFOV),
and conv5_x are dilated by 2 to keep their field of view, so the output
stride is 8 (321 -> 41). fc6 and fc7 are replaced by randomly initialised 3x3
convolutions with 1024 channels (Appendix 3.4), each followed by ReLU and
dropout 0.5; fc6 is dilated by ``fc6_dilation`` (12 in LargeFOV and SEC's
segmentation network; 1 in SEC's localisation (CAM) network, whose fc6/fc7
are plain 3x3). SEC's released LargeFOV prototxt has a 1x1 fc7; ``fc7_kernel=1``
builds that.

CONTA's blocks for VGG-16 (:class:`VGG16Trunk` mirrors ResNet's stem + four
stages, so :class:`~conta_core.models.classifier.CamClassifier` and the
segmentation head use it unchanged):

* stem = conv1_1, conv1_2, pool1;
* block 2 = conv2_x + pool2; block 3 = conv3_x + pool3; block 4 = conv4_x + pool4;
* block 5 = conv5_x + pool5 + fc6 + fc7: the last block's output is what the
  class-specific 1x1 convolution reads, as ResNet's layer4 is;
* ``dense`` = blocks 2..5.

``width`` scales every channel count (the CPU demo uses e.g. 0.125); ImageNet
weights need ``width=1``. ``batch_norm`` puts a BatchNorm after each of the 13
convolutions (torchvision's ``vgg16_bn`` layout; SEC's network has none): the CPU
demo's VGG from random init does not localise without it. Weights: ``none``, ``imagenet`` (torchvision's
VGG16_Weights.IMAGENET1K_V1 through its weights API, network needed once) or
the path of a local torchvision VGG-16 state dict (``weights_only=True``):
the 13 ``features.*`` convolutions are copied in order into conv1_1..conv5_3;
torchvision's fc layers are dropped (fc6/fc7 are new, random layers).
"""
from __future__ import annotations

import torch
from torch import nn

from .backbone import WeightsError, fetch_imagenet_state, read_state_dict

# (convolutions, channels) per VGG-16 group
GROUPS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
CONV_NAMES = tuple(f"conv{g + 1}_{i + 1}" for g, (n, _) in enumerate(GROUPS) for i in range(n))
# torchvision vgg16().features indices of the 13 convolutions; vgg16_bn() has each one's BatchNorm at +1
TORCHVISION_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
TORCHVISION_BN_CONV_INDICES = (0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40)
FC_CHANNELS = 1024
DROPOUT = 0.5


def _channels(c: int, width: float) -> int:
    return max(4, round(c * width))


class VGG16Trunk(nn.Module):
    """VGG-16 LargeFOV trunk: ``forward`` gives the outputs of blocks 2..5 (see module docstring)."""

    def __init__(self, width: float = 1.0, fc6_dilation: int = 12, fc7_kernel: int = 3,
                 fc_channels: int = FC_CHANNELS, dropout: float = DROPOUT, batch_norm: bool = False):
        super().__init__()
        if fc7_kernel not in (1, 3):
            raise ValueError(f"fc7_kernel must be 1 or 3, got {fc7_kernel}")
        self.width = width
        self.batch_norm = batch_norm
        convs: dict[str, nn.Conv2d] = {}
        norms: dict[str, nn.BatchNorm2d] = {}
        groups = []
        in_ch = 3
        names = iter(CONV_NAMES)
        for g, (n, ch) in enumerate(GROUPS):
            out_ch = _channels(ch, width)
            dilation = 2 if g == 4 else 1
            layers = []
            for _ in range(n):
                name = next(names)
                convs[name] = nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation)
                layers.append(convs[name])
                if batch_norm:
                    norms[name] = nn.BatchNorm2d(out_ch)
                    layers.append(norms[name])
                layers.append(nn.ReLU(inplace=True))
                in_ch = out_ch
            if g < 3:
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))   # pool1..3: stride 2 each -> 8
            else:
                layers.append(nn.MaxPool2d(3, 1, padding=1))        # pool4, pool5: stride 1
            groups.append(layers)
        fc = _channels(fc_channels, width)
        self.fc6 = nn.Conv2d(in_ch, fc, 3, padding=fc6_dilation, dilation=fc6_dilation)
        self.fc7 = nn.Conv2d(fc, fc, fc7_kernel, padding=fc7_kernel // 2)
        head = [self.fc6, nn.ReLU(inplace=True), nn.Dropout(dropout),
                self.fc7, nn.ReLU(inplace=True), nn.Dropout(dropout)]
        self.stem = nn.Sequential(*groups[0])
        self.block2 = nn.Sequential(*groups[1])
        self.block3 = nn.Sequential(*groups[2])
        self.block4 = nn.Sequential(*groups[3])
        self.block5 = nn.Sequential(*groups[4], *head)
        self.convs = convs  # plain dicts: name -> layer, for weight loading (not a second registration)
        self.norms = norms
        for layer in [*convs.values(), self.fc6, self.fc7]:
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")  # torchvision's VGG init
            nn.init.zeros_(layer.bias)
        self.stage_channels = [_channels(128, width), _channels(256, width), _channels(512, width), fc]
        self.output_stride = 8

    def stages(self):
        return (self.block2, self.block3, self.block4, self.block5)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for stage in self.stages():
            x = stage(x)
            outs.append(x)
        return outs


def build_vgg16(weights: str = "none", width: float = 1.0, fc6_dilation: int = 12, fc7_kernel: int = 3,
                output_stride: int = 8, batch_norm: bool = False) -> VGG16Trunk:
    if output_stride != 8:
        raise ValueError(f"the VGG-16 LargeFOV trunk has output stride 8, got output_stride {output_stride}")
    trunk = VGG16Trunk(width, fc6_dilation, fc7_kernel, batch_norm=batch_norm)
    load_vgg16_weights(trunk, weights)
    return trunk


def load_vgg16_weights(trunk: VGG16Trunk, weights: str | None) -> None:
    """Copy torchvision VGG-16 (``batch_norm``: VGG-16-BN) convolution weights, and BatchNorm weights
    and statistics, into conv1_1..conv5_3 (fc6/fc7 stay random)."""
    if weights in (None, "none"):
        return
    if trunk.width != 1.0:
        raise WeightsError(f"VGG-16 weights {weights} need width 1.0, the model has width {trunk.width}")
    if weights == "imagenet":
        import torchvision

        if trunk.batch_norm:
            state = fetch_imagenet_state(torchvision.models.VGG16_BN_Weights.IMAGENET1K_V1, "VGG-16-BN")
        else:
            state = fetch_imagenet_state(torchvision.models.VGG16_Weights.IMAGENET1K_V1, "VGG-16")
    else:
        state = read_state_dict(weights)
    problems = []
    copies = []
    indices = TORCHVISION_BN_CONV_INDICES if trunk.batch_norm else TORCHVISION_CONV_INDICES
    targets = [(name, trunk.convs[name], index, ("weight", "bias")) for name, index in zip(CONV_NAMES, indices)]
    if trunk.batch_norm:
        targets += [(f"{name} BatchNorm", trunk.norms[name], index + 1, ("weight", "bias", "running_mean", "running_var"))
                    for name, index in zip(CONV_NAMES, indices)]
    for name, layer, index, parts in targets:
        for part in parts:
            key = f"features.{index}.{part}"
            if key not in state:
                problems.append(f"missing {key} (for {name})")
            elif tuple(state[key].shape) != tuple(getattr(layer, part).shape):
                problems.append(f"{key} {tuple(state[key].shape)} vs {name}.{part} "
                                f"{tuple(getattr(layer, part).shape)}")
            else:
                copies.append((getattr(layer, part), state[key]))
    unknown = [k for k in state if not k.startswith(("features.", "classifier."))]
    if problems or unknown:
        kind = "VGG-16-BN" if trunk.batch_norm else "VGG-16"
        raise WeightsError(f"weights {weights} are not a torchvision {kind} state dict: "
                           f"{problems[:10]}{' unrecognised keys ' + str(unknown[:10]) if unknown else ''}")
    with torch.no_grad():
        for param, value in copies:
            param.copy_(value)
