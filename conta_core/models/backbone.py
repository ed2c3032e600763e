"""ResNet backbones with configurable output stride, frozen BN and frozen conv1.

``build_resnet`` returns a :class:`ResNetBackbone` whose ``forward`` gives the
outputs of the stem and the four residual stages. The paper calls the stage
outputs block 2..5 (ResNet layer1..layer4); ``stage_channels`` lists their
widths so heads and the CONTA fusion layers can be sized without a dry run.

Weights: ``"none"`` (random init, used by tests and the CPU demo),
``"imagenet"`` (torchvision's weights API; needs network once) or a path to a
local checkpoint loaded with ``weights_only=True``. The layers themselves are
built by :mod:`.resnet` in torchvision's layout (importing torchvision costs
seconds per job; it is imported only to fetch ImageNet weights).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .resnet import BLOCKS_PER_STAGE, build_stages, build_stem, init_like_torchvision

_WEIGHTS_ENUM = {18: "ResNet18_Weights", 34: "ResNet34_Weights", 50: "ResNet50_Weights",
                 101: "ResNet101_Weights"}


class WeightsError(RuntimeError):
    """Pretrained weights were asked for but cannot be loaded."""


def fetch_imagenet_state(enum, model_name: str) -> dict:
    """A torchvision weights enum's state dict; offline, an error saying which file to fetch."""
    try:
        return enum.get_state_dict(progress=False)
    except Exception as err:  # network errors come in many types
        raise WeightsError(
            f"could not fetch ImageNet weights for {model_name} ({err.__class__.__name__}: {err}).\n"
            f"Download {enum.url} on a machine with network access, copy it here and set "
            f"the config key's weights to that file's path (e.g. weights: /data/{Path(enum.url).name})."
        ) from err


def read_state_dict(path: str | Path) -> dict:
    """A local state dict read with ``weights_only=True``; a ``{"model": state_dict}`` wrapper and
    DataParallel's ``module.`` prefix are accepted. Errors name the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist (set weights: none | imagenet | <path>)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling refusals, truncated or foreign files
        raise WeightsError(f"weights file {path} cannot be read as a state dict with "
                           f"weights_only=True ({err.__class__.__name__}: {err}); save it with "
                           "torch.save(model.state_dict(), path)") from err
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise WeightsError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _strides_for(output_stride: int) -> tuple[int, int, int, int]:
    # Stride of layer1..layer4; the stem (conv1 + maxpool) adds a factor 4.
    if output_stride == 32:
        return (1, 2, 2, 2)
    if output_stride == 16:
        # IRNet's strides (2, 2, 2, 1) count conv1, layer2, layer3, layer4 (the max-pool's 2
        # is not listed); here the stem is separate.
        return (1, 2, 2, 1)
    if output_stride == 8:
        return (1, 2, 1, 1)
    raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")


class ResNetBackbone(nn.Module):
    """``dilate``: a stage that gives up its stride is dilated (DeepLab's atrous convolution,
    for the segmenter) or not (IRNet's CAM and relation networks: strides (2, 2, 2, 1) with
    plain 3x3 convolutions in layer4). The two see different receptive fields, so they
    compute different features from the same weights; they are not equivalent."""

    def __init__(self, depth: int = 50, output_stride: int = 16, freeze_bn: bool = True,
                 freeze_conv1: bool = True, dilate: bool = True):
        super().__init__()
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"backbone depth must be one of {sorted(BLOCKS_PER_STAGE)}, got {depth}")
        self.stem = build_stem()
        self.layer1, self.layer2, self.layer3, self.layer4 = build_stages(depth, _strides_for(output_stride),
                                                                          dilate)
        self.dilate = dilate
        init_like_torchvision(self)
        expansion = 4 if depth >= 50 else 1
        self.stage_channels = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
        self.output_stride = output_stride
        self.depth = depth
        self.freeze_bn = freeze_bn
        if freeze_conv1:
            for p in [*self.stem[0].parameters(), *self.stem[1].parameters()]:
                p.requires_grad_(False)
        if freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    for p in m.parameters():
                        p.requires_grad_(False)

    def train(self, mode: bool = True) -> "ResNetBackbone":
        super().train(mode)
        if self.freeze_bn:
            # Frozen BN keeps its running statistics: always in eval mode.
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def stages(self):
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for layer in self.stages():
            x = layer(x)
            outs.append(x)
        return outs


def build_resnet(depth: int, output_stride: int, weights: str = "none", freeze_bn: bool = True,
                 freeze_conv1: bool = True, dilate: bool = True) -> ResNetBackbone:
    """``dilate=False`` for IRNet's networks (see :class:`ResNetBackbone`); weights load either way."""
    backbone = ResNetBackbone(depth, output_stride, freeze_bn, freeze_conv1, dilate)
    load_backbone_weights(backbone, depth, weights)
    return backbone


def load_backbone_weights(backbone: ResNetBackbone, depth: int, weights: str) -> None:
    """Load ``imagenet`` (torchvision) or a local checkpoint into the backbone.

    A local checkpoint is a torchvision-format ResNet state dict (``torch.save(
    model.state_dict())``; a ``{"model": state_dict}`` wrapper and DataParallel's
    ``module.`` prefix are accepted), read with ``weights_only=True``. Every key
    of the backbone must be filled with a tensor of the right shape; otherwise
    :class:`WeightsError` names the missing, unrecognised and mis-shaped keys.
    """
    if weights in (None, "none"):
        return
    if weights == "imagenet":
        import torchvision

        state = fetch_imagenet_state(getattr(torchvision.models, _WEIGHTS_ENUM[depth]).IMAGENET1K_V1,
                                     f"ResNet-{depth}")
    else:
        state = read_state_dict(weights)
    own = {}
    for name, module in (("stem.0", "conv1"), ("stem.1", "bn1")):
        for k, v in list(state.items()):
            if k.startswith(module + "."):
                own[name + k[len(module):]] = v
    for k, v in state.items():
        if k.startswith("layer"):
            own[k] = v
    expected = backbone.state_dict()
    # Old checkpoints (torchvision's ImageNet files among them) have no BN num_batches_tracked.
    missing = [k for k in expected if k not in own and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in own if k not in expected]
    skipped = [k for k in state if not k.startswith(("conv1.", "bn1.", "layer", "fc."))]
    mismatched = [f"{k} {tuple(own[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                  if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if missing or skipped or unexpected or mismatched:
        def listed(keys: list[str]) -> str:
            return f"{keys[:10]}{f' ... ({len(keys)} in all)' if len(keys) > 10 else ''}"
        raise WeightsError(
            f"weights {weights} do not fit the ResNet-{depth} backbone: missing keys {listed(missing)}; "
            f"unrecognised keys {listed(skipped + unexpected)}; shape mismatches (checkpoint vs "
            f"model) {listed(mismatched)}. Expected a torchvision ResNet-{depth} state dict.")
    backbone.load_state_dict(own, strict=False)  # every key checked above
