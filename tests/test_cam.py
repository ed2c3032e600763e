import numpy as np
import pytest
import torch

from conta_core.cam import infer_cam, infer_cams, normalise_by_max, prepare_for_inference
from conta_core.cam_labels import cam_to_label, same_size_batches
from conta_core.models.backbone import build_resnet
from conta_core.models.classifier import CamClassifier


def test_normalise_by_max_per_class():
    cams = torch.tensor([[[0.0, 2.0], [1.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]], [[3.0, 1.5], [0.0, 0.0]]])
    out = normalise_by_max(cams)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]), atol=1e-4, rtol=0)
    assert torch.equal(out[1], torch.zeros(2, 2))            # an all-zero map stays zero (no NaN)
    torch.testing.assert_close(out[2], torch.tensor([[1.0, 0.5], [0.0, 0.0]]), atol=1e-4, rtol=0)


def test_cam_to_label_uses_background_threshold():
    cams = np.array([[[0.9, 0.1], [0.3, 0.6]], [[0.2, 0.05], [0.5, 0.7]]], np.float32)
    np.testing.assert_array_equal(cam_to_label(cams, [2, 5], 0.4), [[2, 0], [5, 5]])
    np.testing.assert_array_equal(cam_to_label(cams, [2, 5], 0.8), [[2, 0], [0, 0]])


class _Linear(torch.nn.Module):
    """A CAM model whose maps are known: class k's map is channel k of the image."""

    def cam(self, images, x_m=None, view=None):
        return torch.relu(images)


def test_flip_and_scales_on_a_known_model():
    rng = np.random.default_rng(0)
    # 16 x 32: a multiple of 16, so IRNet's rounded-up grid is the image itself (no resampling)
    image = rng.integers(0, 255, (16, 32, 3), dtype=np.uint8)
    single = infer_cam(_Linear(), image, [1, 3], [1.0], True, torch.device("cpu"))
    # Flipping, mapping back and adding doubles a flip-equivariant map: after max-normalisation
    # it equals the normalised map of the image itself.
    from conta_core.data.datasets import to_tensor
    x = torch.relu(to_tensor(image))[[0, 2]]
    torch.testing.assert_close(torch.from_numpy(single), normalise_by_max(x), atol=1e-5, rtol=0)
    assert single.shape == (2, 16, 32)
    np.testing.assert_allclose(single.reshape(2, -1).max(axis=1), 1.0, atol=1e-4)


def test_batched_equals_one_by_one():
    torch.manual_seed(0)
    model = CamClassifier(build_resnet(18, 16, freeze_bn=False, freeze_conv1=False), 4).eval()
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (3, 40, 40, 3), dtype=np.uint8)
    labels = [[1], [2, 4], [3]]
    batched = infer_cams(model, images, labels, [1.0, 0.5], True, torch.device("cpu"))
    for image, classes, got in zip(images, labels, batched):
        one = infer_cam(model, image, classes, [1.0, 0.5], True, torch.device("cpu"))
        np.testing.assert_allclose(got, one, atol=1e-5)


def test_same_size_batches():
    sizes = {"a": (5, 5), "b": (4, 4), "c": (5, 5), "d": (5, 5)}
    assert same_size_batches(list(sizes), sizes.get, 2) == [["a", "c"], ["d"], ["b"]]


def test_prepared_model_gives_the_same_cams():
    """BatchNorm folded into the convolutions: same CAMs, the caller's model untouched."""
    torch.manual_seed(0)
    model = CamClassifier(build_resnet(50, 16, dilate=False), 4).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prepared = prepare_for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in prepared.modules())
    images = np.random.default_rng(2).integers(0, 255, (2, 45, 61, 3), dtype=np.uint8)
    x = torch.randn(1, 3, 45, 61)
    with torch.no_grad():
        raw, folded = model.cam(x), prepared.cam(x)
    assert float((raw - folded).abs().max()) <= 1e-4 * float(raw.abs().max())
    a = infer_cams(model, images, [[1, 2], [4]], [1.0, 0.5], True, torch.device("cpu"))
    b = infer_cams(prepared, images, [[1, 2], [4]], [1.0, 0.5], True, torch.device("cpu"))
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, atol=1e-4)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_bf16_prepared_conta_model_close_to_fp32():
    """bf16 weights + autocast (CPU here) on a CONTA classifier with X_m: close to fp32, and a
    bf16 model refuses fp32 inference instead of failing inside the network."""
    torch.manual_seed(0)
    model = CamClassifier(build_resnet(18, 16, dilate=False), 4, conta_mode="adjust", blocks=(5,),
                          confounder=torch.rand(3, 4, 4), prior=torch.full((3,), 1 / 3), map_size=(4, 4)).eval()
    images = np.random.default_rng(3).integers(0, 255, (2, 40, 56, 3), dtype=np.uint8)
    x_m = np.random.default_rng(4).random((2, 4, 4)).astype(np.float32)
    fp32 = infer_cams(prepare_for_inference(model), images, [[1, 3], [2]], [1.0, 0.5], True,
                      torch.device("cpu"), x_m)
    bf16_model = prepare_for_inference(model, "bf16")
    assert next(bf16_model.parameters()).dtype == torch.bfloat16
    bf16 = infer_cams(bf16_model, images, [[1, 3], [2]], [1.0, 0.5], True, torch.device("cpu"), x_m,
                      precision="bf16")
    for a, b in zip(fp32, bf16):
        assert b.dtype == np.float32 and np.abs(a - b).mean() < 0.03, np.abs(a - b).mean()
    with pytest.raises(ValueError, match="bf16 weights"):
        infer_cams(bf16_model, images, [[1], [2]], [1.0], True, torch.device("cpu"), x_m)
