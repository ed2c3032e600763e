"""CUDA-only checks: CAMs, training steps, the random walk and GPU claims on a real GPU.

Skipped without CUDA. ``CONTA_CUDA_TESTS_ON_CPU=1`` runs them on the CPU instead
(bf16 autocast on the CPU; the claim test still needs a GPU): the dry run of
``bench/gpu_check.py`` does that, so the test code itself is exercised before the
one run on a GPU box. Needs only torch, numpy and pytest (no Snakemake, no
pydensecrf): ``bench/gpu_check.sh`` runs this file on a bare GPU machine.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from conta_core.cam import infer_cams
from conta_core.cam_labels import cam_to_label
from conta_core.models.backbone import build_resnet
from conta_core.models.classifier import CamClassifier, multilabel_soft_margin
from conta_core.models.deeplab import DeepLabV2, msc_loss
from conta_core.models.resnet import zero_init_residual as tame

pytestmark = pytest.mark.cuda
REPO = Path(__file__).resolve().parents[1]
ON_CPU_ENV = "CONTA_CUDA_TESTS_ON_CPU"


@pytest.fixture
def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if os.environ.get(ON_CPU_ENV) == "1":
        return torch.device("cpu")
    pytest.skip(f"needs CUDA ({ON_CPU_ENV}=1 runs it on the CPU)")


@contextlib.contextmanager
def exact_fp32():
    """No TF32 in CUDA convolutions and matmuls (cuDNN convolutions default to TF32)."""
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    old = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision, matmul.fp32_precision = "ieee", "ieee"
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = old


def _classifier(seed: int = 0) -> CamClassifier:
    torch.manual_seed(seed)
    return CamClassifier(build_resnet(50, 16, dilate=False), 20).eval()


def _images(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # smooth images (blocky colour fields), closer to photos than white noise
    small = rng.integers(0, 255, (batch, height // 8, width // 8, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, 8, axis=1), 8, axis=2)


def test_cam_on_device_equals_cpu(device):
    model = _classifier()
    images = _images(2, 96, 128)
    classes = [[1, 5], [7]]
    scales = [1.0, 0.5, 1.5]
    reference = infer_cams(model, images, classes, scales, True, torch.device("cpu"))
    with exact_fp32():
        got = infer_cams(model.to(device), images, classes, scales, True, device)
    for ref, out in zip(reference, got):
        assert out.shape == ref.shape and out.dtype == np.float32
        assert np.abs(out - ref).max() <= 1e-3, np.abs(out - ref).max()  # maps peak at 1


def test_cam_bf16_close_to_fp32(device):
    model = _classifier().to(device)
    images = _images(2, 96, 128, seed=1)
    classes = [[2, 3], [11]]
    fp32 = infer_cams(model, images, classes, [1.0, 0.5], True, device)
    bf16 = infer_cams(model, images, classes, [1.0, 0.5], True, device, precision="bf16")
    for a, b in zip(fp32, bf16):
        assert np.isfinite(b).all()
        assert np.abs(a - b).mean() < 0.02, np.abs(a - b).mean()
        agree = (cam_to_label(a, [1] * len(a), 0.15) == cam_to_label(b, [1] * len(b), 0.15)).mean()
        assert agree > 0.95, agree


def _train_steps(model, params, loss_fn, device, steps: int = 2) -> list[float]:
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    before = [p.detach().clone() for p in params]
    losses = []
    for _ in range(steps):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all(), losses
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, params))
    return losses


def test_classifier_train_step_bf16(device):
    torch.manual_seed(0)
    confounder = torch.rand(5, 8, 8)
    model = CamClassifier(build_resnet(50, 16, dilate=False), 20, conta_mode="adjust", blocks=(5,), confounder=confounder,
                          prior=torch.full((5,), 0.2), map_size=(8, 8))
    model = tame(model).to(device).train()
    model = model.to(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 128, 128, device=device).contiguous(memory_format=torch.channels_last)
    targets = torch.zeros(2, 20, device=device)
    targets[0, 3] = targets[1, 7] = 1
    x_m = torch.rand(2, 8, 8, device=device)
    view = torch.tensor([[0.5, 0.1, 0.5, -0.2], [-1.0, 0.0, 1.0, 0.0]], device=device)
    params = [p for p in model.parameters() if p.requires_grad]
    _train_steps(model, params, lambda: multilabel_soft_margin(model(images, x_m, view), targets), device)


def test_deeplab_train_step_bf16(device):
    torch.manual_seed(0)
    model = tame(DeepLabV2(build_resnet(101, 8, freeze_conv1=False), 21)).to(device).train()
    model = model.to(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 97, 97, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 21, (2, 97, 97), device=device)
    labels[:, :10] = 255
    params = [p for p in model.parameters() if p.requires_grad]
    _train_steps(model, params, lambda: msc_loss(model(images), labels), device)


def test_relation_net_step_bf16(device):
    from conta_core.expand.affinity import affinity_labels
    from conta_core.expand.irnet import RelationNet, relation_loss

    torch.manual_seed(0)
    model = RelationNet(50, 16).to(device).train()
    images = torch.randn(2, 3, 64, 64, device=device)
    labels = torch.randint(0, 3, (2, 16, 16), device=device)
    labels[:, :2] = 255
    bg_pos, fg_pos, neg = affinity_labels(labels, 10, 255)

    def loss():
        return relation_loss(torch.sigmoid(model(images)[:, 0].float()), bg_pos, fg_pos, neg, 10)[0]

    _train_steps(model, model.trainable_parameters(), loss, device)


def test_random_walk_on_device_equals_cpu(device):
    from conta_core.expand.random_walk import random_walk

    gen = torch.Generator().manual_seed(0)
    boundary = torch.rand(30, 40, generator=gen) ** 4
    cams = torch.rand(2, 30, 40, generator=gen)
    reference = random_walk(cams.double(), boundary.double(), exp_times=5)
    got = random_walk(cams.to(device), boundary.to(device), exp_times=5).cpu().double()
    torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-5 * float(reference.abs().max()))


def test_deeplab_predict_on_device_equals_cpu(device):
    torch.manual_seed(0)
    model = DeepLabV2(build_resnet(101, 8), 21).eval()
    x = torch.randn(1, 3, 65, 81)
    with torch.inference_mode():
        reference = model.predict(x)
    model.to(device)  # outside inference mode: parameters stay ordinary tensors
    with torch.inference_mode(), exact_fp32():
        got = model.predict(x.to(device)).cpu()
    assert got.shape == (1, 21, 65, 81)
    scale = float(reference.abs().max())
    assert float((got - reference).abs().max()) <= 1e-3 * scale


def test_resolve_device_auto_takes_the_gpu(device):
    from conta_core.devices import resolve_device

    if device.type != "cuda":
        pytest.skip("needs a real GPU")
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("cuda:0") == torch.device("cuda:0")


# Claims one GPU slot in a fresh process (CUDA must not be initialised before the claim),
# checks torch sees exactly the claimed device and can compute on it, then holds the slot
# while a second claimer must time out.
CLAIMER = textwrap.dedent("""
    import sys, torch
    from conta_core.devices import claim_gpus
    claim = claim_gpus(1, lock_dir=sys.argv[1], timeout_s=float(sys.argv[2]))
    assert torch.cuda.device_count() == 1, torch.cuda.device_count()
    x = torch.ones(1000, device=claim.torch_devices[0])
    assert float(x.sum()) == 1000.0
    print("claimed", claim.ids, flush=True)
    sys.stdin.readline()  # hold the slot until the parent says so
""")


def test_gpu_claim_with_the_real_device(device, tmp_path):
    if device.type != "cuda":
        pytest.skip("needs a real GPU")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("CONTA_FAKE_GPUS", None)
    scheduled = env.get("CUDA_VISIBLE_DEVICES")
    holder = subprocess.Popen([sys.executable, "-c", CLAIMER, str(tmp_path), "30"], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = holder.stdout.readline()
        assert line.startswith("claimed"), (line, holder.stderr.read() if holder.poll() is not None else "")
        if scheduled is None and torch.cuda.device_count() == 1:
            # the only GPU is held: a second job must wait, and give up at its timeout
            second = subprocess.run([sys.executable, "-c", CLAIMER, str(tmp_path), "1"], env=env, text=True,
                                    input="\n", capture_output=True, timeout=120)
            assert second.returncode != 0 and "TimeoutError" in second.stderr, second.stderr[-2000:]
    finally:
        if holder.poll() is None:
            holder.communicate("\n", timeout=60)
    assert holder.returncode == 0
