"""The backbone built without torchvision computes torchvision's ResNet.

Reference: torchvision's own ResNet with the same state dict; for output
strides 16 and 8 its stages are given up-stride and dilated by hand (every block
of a dilated stage, as DeepLab does), independently of conta_core.models.resnet.
"""
import pytest
import torch
import torchvision

from conta_core.models.backbone import build_resnet


def torchvision_reference(depth: int, output_stride: int) -> torch.nn.Module:
    net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    undone = {32: 0, 16: 1, 8: 2}[output_stride]  # how many of layer4, layer3 keep stride 1
    dilation = 1
    for layer in (net.layer3, net.layer4)[2 - undone:]:
        dilation *= 2
        first = layer[0]
        (first.conv2 if depth >= 50 else first.conv1).stride = (1, 1)
        first.downsample[0].stride = (1, 1)
        for block in layer:
            for conv in ([block.conv2] if depth >= 50 else [block.conv1, block.conv2]):
                conv.dilation = conv.padding = (dilation, dilation)
    return net


@pytest.mark.parametrize("depth,output_stride", [(18, 32), (18, 16), (18, 8), (34, 16), (50, 16), (50, 8)])
def test_backbone_equals_torchvision(depth, output_stride):
    torch.manual_seed(depth + output_stride)
    reference = torchvision_reference(depth, output_stride)
    with torch.no_grad():  # BN statistics other than the defaults
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    ours = build_resnet(depth, output_stride, "none", freeze_bn=False, freeze_conv1=False)
    own_state = ours.state_dict()
    renamed = {k.replace("conv1.", "stem.0.", 1) if k.startswith("conv1.") else
               k.replace("bn1.", "stem.1.", 1) if k.startswith("bn1.") else k: v
               for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert sorted(renamed) == sorted(own_state)
    assert all(renamed[k].shape == v.shape for k, v in own_state.items())
    ours.load_state_dict(renamed)
    ours.eval(), reference.eval()
    x = torch.randn(2, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        stages = ours(x)
        h = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        for stage, layer in zip(stages, (reference.layer1, reference.layer2, reference.layer3, reference.layer4)):
            h = layer(h)
            assert stage.shape == h.shape
            torch.testing.assert_close(stage, h, rtol=1e-4, atol=1e-5)
    assert stages[-1].shape[-2:] == (-(-64 // output_stride), -(-80 // output_stride))  # ceil


def test_random_init_follows_torchvision_scheme():
    torch.manual_seed(0)
    net = build_resnet(50, 16, "none", freeze_bn=False, freeze_conv1=False)
    conv = net.layer3[1].conv2.weight  # 256 out channels, 3x3: He-normal fan-out std sqrt(2 / (256 * 9))
    assert abs(conv.std().item() - (2 / (256 * 9)) ** 0.5) < 0.002
    bn = net.layer3[1].bn2
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))
