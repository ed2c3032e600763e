"""SEAM: PCM, the ER/ECR/OHEM losses, view alignment, CONTA splice, optimiser groups, resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conta_core import seam
from conta_core.models.resnet38 import build_resnet38
from conta_core.models.seam import SeamClassifier, pcm, pcm_input


class AddM(nn.Module):
    """A fusion with the (x, m) call signature: x + w m, w per channel (zero start)."""

    def __init__(self, channels: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x, m):
        return x + self.w * m

    def m_parameters(self):
        return [self.w]

    def spliced_parameters(self):
        return []


def tiny_seam(num_fg=3, **kwargs) -> SeamClassifier:
    torch.manual_seed(0)
    backbone = build_resnet38(0.0625, "none", frozen_blocks=("conv1a", "b2", "b2_1", "b2_2"))
    return SeamClassifier(backbone, num_fg, **kwargs)


def test_pcm_hand_computed():
    # pixels with unit features (1,0), (0,1), (0.6,0.8), (-1,0); CAM 1, 2, 3, 4
    f = torch.tensor([[1.0, 0.0, 0.6, -1.0], [0.0, 1.0, 0.8, 0.0]]).reshape(1, 2, 1, 4)
    cam = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 1, 4)
    # relu(f_i . f_j), normalised over i for each j; y_j = sum_i cam_i a_ij
    expected = [(1 + 3 * 0.6) / 1.6, (2 + 3 * 0.8) / 1.8, (0.6 + 2 * 0.8 + 3) / 2.4, 4 / 1.0]
    got = pcm(cam, f).flatten().tolist()
    assert got == pytest.approx(expected, rel=1e-4)


def test_pcm_input_hand_computed():
    cam = torch.tensor([[2.0, 1.0, -1.0], [1.0, 4.0, 0.0]]).reshape(1, 2, 1, 3)  # two classes, 3 pixels
    out = pcm_input(cam).reshape(3, 3)
    # class 1 / 2, class 2 / 4; background 1 - max; only the strongest class kept
    assert out[0].tolist() == pytest.approx([0.0, 0.0, 1.0], abs=1e-4)
    assert out[1].tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-4)
    assert out[2].tolist() == pytest.approx([0.0, 1.0, 0.0], abs=1e-4)


def test_max_norm_and_er_against_direct_formulas():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 3, 5, 6, generator=g), torch.randn(2, 3, 5, 6, generator=g)
    na = a.relu().numpy()
    lo, hi = na.min(axis=(2, 3), keepdims=True), na.max(axis=(2, 3), keepdims=True)
    assert np.allclose(seam.max_norm(a).numpy(), np.maximum(na - lo - 1e-5, 0) / (hi - lo + 1e-5), atol=1e-6)
    direct = sum(abs(float(a[i, c, y, x] - b[i, c, y, x])) for i in range(2) for c in range(3)
                 for y in range(5) for x in range(6)) / (2 * 3 * 5 * 6)
    assert float(seam.er_loss(a, b)) == pytest.approx(direct, rel=1e-5)


def test_ecr_target_and_ohem_against_direct_formulas():
    g = torch.Generator().manual_seed(2)
    cam = torch.rand(2, 4, 3, 5, generator=g)
    rv = torch.rand(2, 4, 3, 5, generator=g)
    t = seam.ecr_target(cam).numpy()
    c = cam.numpy()
    for i in range(2):
        for y in range(3):
            for x in range(5):
                fg = c[i, 1:, y, x]
                k = int(np.argmax(fg))
                assert t[i, 0, y, x] == pytest.approx(1 - fg.max())
                assert t[i, 1 + k, y, x] == pytest.approx(fg[k])
                assert np.count_nonzero(t[i, 1:, y, x]) == 1
    diff = np.abs(t - rv.numpy()).reshape(2, -1)
    k = int(diff.shape[1] * 0.2)  # SEAM: int(21 * h * w * 0.2) for 21 channels
    direct = np.mean([np.sort(row)[::-1][:k].mean() for row in diff])
    assert float(seam.ecr_loss(seam.ecr_target(cam), rv)) == pytest.approx(direct, rel=1e-5)
    assert float(seam.ohem_mean(torch.arange(10.0)[None])) == pytest.approx((9 + 8) / 2)


def test_min_pool_loss_direct():
    x = torch.tensor([[[[0.1, -0.5], [0.7, 0.3]]], [[[1.0, 2.0], [-1.0, 0.2]]]])  # [2, 1, 2, 2]
    # smallest quarter (1 of 4 pixels) per image: -0.5 and -1.0, relu -> 0; then 0.1 vs 0.2 with a shift
    assert float(seam.min_pool_loss(x)) == 0.0
    assert float(seam.min_pool_loss(x + 1.0)) == pytest.approx((0.5 + 0.0) / 2)


def test_rescaled_view_alignment():
    # A CAM that is a smooth function of position: view 2 is the image rescaled by 0.3, its CAM the same
    # function on the small grid. Aligned, ER is ~0; with view 2 mirrored it is not.
    h, w = 40, 56
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    field = torch.stack([torch.sin(3 * xx) * yy, xx * (1 - yy)])[None] + 0.1   # [1, 2, H, W]
    small = F.interpolate(field, scale_factor=seam.SCALE, mode="bilinear", align_corners=True)
    model = tiny_seam(2)
    with torch.no_grad():
        out = model(torch.zeros(1, 3, h, w), rescale=seam.SCALE)
    assert out["cam2"].shape[-2:] == small.shape[-2:] == (12, 16)
    rv = torch.cat([torch.zeros(1, 1, h, w), field], 1)
    rv2 = torch.cat([torch.zeros_like(small[:, :1]), small], 1)
    labels = torch.ones(1, 2)
    aligned = seam.seam_losses({"cam": field, "cam_rv": rv, "cam2": small, "cam_rv2": rv2}, labels)
    mirrored = seam.seam_losses({"cam": field, "cam_rv": rv, "cam2": small.flip(-1), "cam_rv2": rv2}, labels)
    assert float(aligned["er"]) < 0.01
    assert float(mirrored["er"]) > 0.1


def test_forward_shapes_and_cam():
    model = tiny_seam(3).eval()
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        out = model(x, rescale=0.3)
        cams = model.cam(x)
    assert out["cam"].shape == (2, 3, 48, 64) and out["cam_rv"].shape == (2, 4, 48, 64)
    assert out["cam2"].shape == (2, 3, 14, 19) and out["cam_rv2"].shape == (2, 4, 14, 19)
    assert cams.shape == (2, 3, 6, 8) and bool((cams >= 0).all())


def test_conta_splice_uses_m():
    m = torch.rand(2, 1, 5, 5)
    model = tiny_seam(3, conta_mode="seg_mask", blocks=(5,), make_fusion=AddM).eval()
    base = tiny_seam(3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        # zero M weights: exactly the baseline network (same seed, CONTA layers built last)
        assert torch.equal(model(x, m[:, 0])["cam"], base(x)["cam"])
        model.fusion["5"].w.fill_(1.0)
        moved = model(x, m[:, 0])["cam"]
        zero_m = model(x, m=torch.zeros_like(m))["cam"]
    assert not torch.allclose(moved, base(x)["cam"])
    assert torch.allclose(zero_m, base(x)["cam"], atol=1e-6)
    dense = tiny_seam(3, conta_mode="seg_mask", blocks=(2, 3, 4, 5), make_fusion=AddM)
    assert [f.w.shape[1] for f in dense.fusion.values()] == [8, 16, 32, 64]
    with pytest.raises(ValueError, match="blocks"):
        tiny_seam(3, conta_mode="seg_mask", blocks=(7,), make_fusion=AddM)


def test_param_groups_partition_and_loss_backward():
    model = tiny_seam(3, conta_mode="seg_mask", blocks=(4,), make_fusion=AddM).train()
    groups = seam.optimizer_groups(model)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == sum(1 for p in model.parameters() if p.requires_grad)
    by = {g["name"]: {id(p) for p in g["params"]} for g in groups}
    assert {id(model.classifier.weight), id(model.f9.weight)} <= by["new"]
    assert id(model.backbone.b3.conv_branch2a.weight) in by["backbone"]
    assert by["context_m"] == {id(model.fusion["4"].w)}
    assert [g["lr_mult"] for g in groups] == [1.0, 2.0, 10.0, 20.0, 10.0]
    assert not model.backbone.b2.conv_branch2a.weight.requires_grad  # SEAM freezes conv1a, B2
    batch = {"image": torch.randn(2, 3, 48, 48), "target": torch.tensor([[1.0, 0, 0], [0, 1.0, 1.0]]),
             "x_m": torch.rand(2, 6, 6), "view": torch.tensor([[1.0, 0, 1, 0]] * 2)}
    loss = seam.seam_loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and model.classifier.weight.grad.abs().sum() > 0
    assert model.f9.weight.grad.abs().sum() > 0 and model.fusion["4"].w.grad.abs().sum() > 0


def test_min_max_normalise():
    cams = np.array([[[1.0, 3.0], [5.0, 2.0]]], np.float32)
    assert np.allclose(seam.min_max_normalise(cams), [[[0.0, 0.5], [1.0, 0.25]]], atol=1e-4)


class TinyViews(torch.utils.data.Dataset):
    """Images, labels, X_m and views drawn from (seed, epoch, item), like the project's datasets."""

    def __init__(self, n=4, size=32, seed=0):
        self.n, self.size, self.seed, self.epoch = n, size, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch * 10 + i)
        target = torch.zeros(3)
        target[i % 3] = 1.0
        return {"image": torch.randn(3, self.size, self.size, generator=g), "target": target,
                "x_m": torch.rand(6, 6, generator=g), "view": torch.tensor([1.0, 0.0, 1.0, 0.0])}


def test_resume_equals_uninterrupted(tmp_path):
    from conta_core.train import Checkpointing, TrainSettings, train

    s = TrainSettings(epochs=2, batch_size=2, lr=0.01, optimizer="adam", weight_decay=5e-4, seed=3)

    def run(checkpoint):
        model = tiny_seam(3, conta_mode="seg_mask", blocks=(5,), make_fusion=AddM)
        losses = []
        train(model, TinyViews(), seam.seam_loss, seam.optimizer_groups(model), s, torch.device("cpu"),
              "seam", checkpoint=checkpoint, step_losses=losses)
        return model.state_dict(), losses

    full, full_losses = run(Checkpointing.prepare(tmp_path / "ck", every=3, digest="d"))
    assert len(full_losses) == 4
    resumed_from = Checkpointing.prepare(tmp_path / "ck", every=3, digest="d")
    assert resumed_from.resume_from is not None and resumed_from.resume_from.name == "iter00000003.pt"
    resumed, resumed_losses = run(resumed_from)
    assert resumed_losses == full_losses[3:]
    for k, v in full.items():
        assert torch.equal(v, resumed[k]), k


def test_inference_cams_as_seam():
    model = tiny_seam(3).eval()
    images = np.random.default_rng(0).integers(0, 256, (2, 40, 48, 3), dtype=np.uint8)
    cams = seam.infer_seam_cams(model, images, [[1, 3], []], [1.0, 0.5], True, torch.device("cpu"))
    from conta_core.cam import rescale_images
    from conta_core.data.datasets import to_tensor
    total = 0
    with torch.no_grad():
        for scale in (1.0, 0.5):
            x = to_tensor(rescale_images(images[:1], scale)[0])[None]
            for mirrored in (False, True):
                raw = model.cam(x.flip(-1) if mirrored else x)[0, [0, 2]]   # PCM-refined, stride 8
                up = F.interpolate(raw[None], size=(40, 48), mode="bilinear", align_corners=False)[0]
                total = total + (up.flip(-1) if mirrored else up)
    total = total.numpy()
    lo, hi = total.min(axis=(1, 2), keepdims=True), total.max(axis=(1, 2), keepdims=True)
    assert np.allclose(cams[0], np.maximum(total - lo - 1e-5, 0) / (hi - lo + 1e-5), atol=1e-5)
    assert cams[1].shape == (0, 40, 48)
    assert np.allclose(cams[0].max(axis=(1, 2)), 1, atol=1e-3) and np.allclose(cams[0].min(axis=(1, 2)), 0)


def test_adjust_mode_with_eq3_context_keeps_the_baseline_init():
    from conta_core.conta import ContextAdjustment
    g = torch.Generator().manual_seed(4)
    confounder, prior = torch.rand(3, 6, 6, generator=g), torch.full((3,), 1 / 3)
    model = tiny_seam(3, conta_mode="adjust", blocks=(2, 3, 4, 5),
                      make_context=lambda: ContextAdjustment(confounder, prior), make_fusion=AddM).eval()
    base = tiny_seam(3).eval()
    for name, p in base.named_parameters():
        assert torch.equal(p, dict(model.named_parameters())[name]), name
    x_m = torch.rand(2, 6, 6, generator=g)
    with torch.no_grad():
        m = model.context_map(x_m)
    assert m.shape == (2, 1, 6, 6) and torch.allclose(m, model.context(x_m))
    groups = model.param_groups()
    assert {id(p) for p in model.context.parameters()} <= {id(p) for p in groups["new"]}
    with pytest.raises(ValueError, match="X_m"):
        model(torch.randn(1, 3, 32, 32))


def test_paper_schedule_adam_poly():
    from conta_core.train import TrainSettings, build_optimizer, lr_factor
    s = TrainSettings(epochs=8, batch_size=8, lr=seam.PAPER_SETTINGS["lr"], optimizer="adam",
                      poly_power=seam.PAPER_SETTINGS["poly_power"], weight_decay=5e-4)
    max_iters = 8 * (10582 // 8)
    for it in (0, 1, 5000, max_iters - 1):
        assert s.lr * lr_factor(it, max_iters, s) == pytest.approx(0.01 * (1 - it / max_iters) ** 0.9)
    opt = build_optimizer(seam.optimizer_groups(tiny_seam(3)), s)
    assert isinstance(opt, torch.optim.Adam)
    # frozen BN and bias-free convolutions: only SEAM's 1x and 10x weight groups have parameters
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.1])
    torch.manual_seed(0)
    trained_bn = SeamClassifier(build_resnet38(0.0625, "none", freeze_bn=False), 3)
    opt = build_optimizer(seam.optimizer_groups(trained_bn), s)
    # trained BN scales and shifts join the pretrained biases: 2x, no weight decay
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.02, 0.1])
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0, 5e-4]


def test_loss_keys_reach_the_terms():
    """siamese_scale, ohem_fraction and equivariance_weight (config keys) against seam_losses called
    directly on the same forward pass: L = L_cls + w (L_ER + L_ECR)."""
    model = tiny_seam(3).eval()  # eval: dropout off, so two forward passes agree
    batch = {"image": torch.randn(2, 3, 48, 48), "target": torch.tensor([[1.0, 0, 0], [0, 1.0, 1.0]]),
             "x_m": torch.zeros(0), "view": torch.zeros(0)}
    with torch.no_grad():
        parts = seam.seam_losses(model(batch["image"], rescale=0.5), batch["target"], 0.5, 0.4)
        assert parts["er"] > 0 and parts["ecr"] > 0
        for w in (1.0, 0.1, 0.0):
            got = seam.seam_loss(model, batch, scale=0.5, ohem_fraction=0.4, equivariance_weight=w)
            assert got.item() == pytest.approx((parts["cls"] + w * (parts["er"] + parts["ecr"])).item(), rel=1e-5)
        default = seam.seam_loss(model, batch)
        assert default.item() != pytest.approx(seam.seam_loss(model, batch, scale=0.5).item(), rel=1e-4)
