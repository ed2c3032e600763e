"""ResNet-38 (model A1): architecture, output stride, MXNet weights without MXNet."""
from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from conta_core.models.backbone import WeightsError
from conta_core.models.mxnet_params import ParamsFormatError, read_params, write_params
from conta_core.models.resnet38 import ResNet38, build_resnet38, load_resnet38_weights, main

# Wu et al.'s model A as AffinityNet uses it: (blocks, in, mid, out) of the basic stages,
# then the two bottlenecks (in, out); written out here independently of the module.
STAGES = [(3, 64, 128, 128), (3, 128, 256, 256), (6, 256, 512, 512), (3, 512, 512, 1024)]
BOTTLENECKS = [(1024, 2048), (2048, 4096)]


def expected_parameter_count() -> int:
    total = 3 * 64 * 9  # conv1a
    for blocks, cin, mid, cout in STAGES:
        for b in range(blocks):
            i = cin if b == 0 else cout
            total += 2 * i + 9 * i * mid + 2 * mid + 9 * mid * cout  # BN(i), 3x3, BN(mid), 3x3
            if b == 0:
                total += i * cout  # 1x1 projection shortcut
    for cin, cout in BOTTLENECKS:
        q, h = cout // 4, cout // 2
        total += 2 * cin + cin * q + 2 * q + 9 * q * h + 2 * h + h * cout + cin * cout
    return total + 2 * 4096  # bn7


def test_parameter_count_matches_the_architecture():
    with torch.device("meta"):
        net = ResNet38()
    count = sum(p.numel() for p in net.parameters())
    assert count == expected_parameter_count() == 105_070_912
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    # 1 + 2 x 15 basic-block convs + 3 x 2 bottleneck convs = 37 weighted layers on the main path,
    # + the ImageNet classifier = 38; plus 6 projection shortcuts.
    shortcuts = [m for m in convs if m.kernel_size == (1, 1) and any(
        getattr(b, "conv_branch1", None) is m for b in net.modules())]
    assert len(convs) - len(shortcuts) == 37 and len(shortcuts) == 6


def test_output_stride_8_and_feature_shapes():
    net = ResNet38(width=0.125).eval()
    x = torch.randn(2, 3, 72, 104)
    seen = {}

    def hook(k, t):
        seen[k] = tuple(t.shape)
        return t

    with torch.no_grad():
        out = net(x, after_block=hook)
    assert out["conv4"].shape == (2, 64, 9, 13)
    assert out["conv5"].shape == (2, 128, 9, 13)
    assert out["conv6"].shape == (2, 512, 9, 13)
    assert seen == {2: (2, 16, 36, 52), 3: (2, 32, 18, 26), 4: (2, 64, 9, 13), 5: (2, 128, 9, 13),
                    6: (2, 256, 9, 13), 7: (2, 512, 9, 13)}
    assert {k: v for k, v in net.block_channels.items()} == {2: 16, 3: 32, 4: 64, 5: 128, 6: 256, 7: 512}
    # dilation, not stride, in B5..B7
    assert net.b5.conv_branch2a.stride == (1, 1) and net.b5.conv_branch2b1.dilation == (2, 2)
    assert net.b6.conv_branch2b1.dilation == (4, 4) and net.b7.conv_branch2b1.dilation == (4, 4)


def test_block_hook_replaces_the_tensor():
    net = ResNet38(width=0.125).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        plain = net(x)["conv6"]
        zeroed = net(x, after_block=lambda k, t: torch.zeros_like(t) if k == 7 else t)["conv6"]
    assert not torch.equal(plain, zeroed)
    assert torch.allclose(zeroed, torch.relu(net.bn7(torch.zeros(1, 512, 4, 4))))


def _mx_name(key: str) -> str:
    """This module's key -> Wu et al.'s MXNet name (the inverse map, written independently)."""
    bn = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_var"}
    parts = key.split(".")
    if parts[0] == "conv1a":
        return "arg:conv1a_weight"
    if parts[0] == "bn7":
        return ("aux:" if "running" in parts[1] else "arg:") + f"bn7_{bn[parts[1]]}"
    stage, _, unit = parts[0][1:].partition("_")
    unit = "a" if not unit else f"b{unit}"
    branch = parts[1].split("_branch")[1]
    if parts[1].startswith("conv"):
        return f"arg:res{stage}{unit}_branch{branch}_weight"
    return ("aux:" if "running" in parts[2] else "arg:") + f"bn{stage}{unit}_branch{branch}_{bn[parts[2]]}"


def _randomised(net: ResNet38, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(v.shape, generator=g) + 0.5 for k, v in net.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def test_mxnet_params_round_trip(tmp_path):
    source = ResNet38(width=0.0625)
    state = _randomised(source, 0)
    arrays = {_mx_name(k): v.numpy() for k, v in state.items()}
    arrays["arg:linear1000_weight"] = np.ones((1000, 256), np.float32)  # the ImageNet head is dropped
    path = tmp_path / "ilsvrc-cls_rna-a1_cls1000_ep-0001.params"
    write_params(path, arrays)
    raw = read_params(path)
    assert raw.keys() == arrays.keys()
    assert all(np.array_equal(raw[k], arrays[k]) for k in arrays)
    net = build_resnet38(0.0625, str(path))
    loaded = net.state_dict()
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k
    with pytest.raises(WeightsError, match="this network has width 0.125"):
        build_resnet38(0.125, str(path))


def test_converter_command_and_pth(tmp_path):
    source = ResNet38(width=0.0625)
    state = _randomised(source, 1)
    write_params(tmp_path / "w.params", {_mx_name(k): v.numpy() for k, v in state.items()})
    main(["convert", str(tmp_path / "w.params"), str(tmp_path / "w.pth"), "--width", "0.0625"])
    net = build_resnet38(0.0625, str(tmp_path / "w.pth"))
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())


def test_legacy_and_v1_array_layouts(tmp_path):
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    legacy = struct.pack("<I2I", 2, 2, 3) + struct.pack("<iii", 1, 0, 0) + data.tobytes()
    v1 = struct.pack("<II2q", 0xF993FAC8, 2, 2, 3) + struct.pack("<iii", 2, 0, 0) + data.tobytes()
    name = b"arg:x"
    blob = (struct.pack("<QQQ", 0x112, 0, 2) + legacy + v1 + struct.pack("<Q", 2)
            + struct.pack("<Q", len(name)) + name + struct.pack("<Q", 5) + b"aux:y")
    (tmp_path / "a.params").write_bytes(blob)
    out = read_params(tmp_path / "a.params")
    assert np.array_equal(out["arg:x"], data) and np.array_equal(out["aux:y"], data)


def test_clear_errors(tmp_path):
    with pytest.raises(WeightsError, match="does not exist.*ilsvrc-cls_rna-a1_cls1000_ep-0001.params"):
        build_resnet38(1.0, str(tmp_path / "missing.params"))
    (tmp_path / "bad.params").write_bytes(b"\x00" * 40)
    with pytest.raises(WeightsError, match="not MXNet's NDArray-list magic"):
        build_resnet38(0.0625, str(tmp_path / "bad.params"))
    write_params(tmp_path / "t.params", {"arg:x": np.zeros(3, np.float32)})
    (tmp_path / "t.params").write_bytes((tmp_path / "t.params").read_bytes()[:-4])
    with pytest.raises(ParamsFormatError, match="truncated"):
        read_params(tmp_path / "t.params")
    write_params(tmp_path / "u.params", {"arg:fc9_weight": np.zeros(3, np.float32)})
    with pytest.raises(WeightsError, match="fc9_weight"):
        build_resnet38(0.0625, str(tmp_path / "u.params"))


def test_frozen_bn_and_conv1a():
    net = build_resnet38(0.0625, "none").train()
    assert not net.conv1a.weight.requires_grad
    assert all(not m.training and not m.weight.requires_grad
               for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert net.b2.conv_branch2a.weight.requires_grad
