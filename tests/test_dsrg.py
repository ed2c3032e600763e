"""DSRG: seeded region growing, thresholds, saliency cue (folder and OpenCV fallback), network and loss."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conta_core.data.reader import DatasetError
from conta_core.expand.region_growing import grow_seeds
from conta_core.expand.seeds import UNLABELLED as U
from conta_core.expand import saliency as sal_mod


def _probs(fg1: np.ndarray, fg2: np.ndarray | None = None) -> np.ndarray:
    """[3, h, w] probabilities: class 1 = fg1, class 2 = fg2 (default 0), background the rest."""
    fg2 = np.zeros_like(fg1) if fg2 is None else fg2
    return np.stack([1 - fg1 - fg2, fg1, fg2]).astype(np.float32)


def test_region_growing_adds_exactly_the_connected_confident_pixels():
    p1 = np.array([
        [0.00, 0.00, 0.00, 0.00, 0.00, 0.00],
        [0.00, 0.995, 0.995, 0.00, 0.00, 0.00],
        [0.00, 0.00, 0.00, 0.995, 0.00, 0.995],   # (2, 3): diagonal to (1, 2); (2, 5) isolated
        [0.00, 0.98, 0.00, 0.00, 0.00, 0.00],     # (3, 1): adjacent to the seed but 0.98 < 0.99
        [0.00, 0.00, 0.00, 0.00, 0.00, 0.00],
    ])
    seeds = np.full(p1.shape, U, np.uint8)
    seeds[2, 1] = 1          # class-1 seed under (1, 1)
    seeds[4, 5] = 0          # background seed in the corner
    probs = _probs(p1)
    # background probability is 1 everywhere p1 = 0, except where we lower it below 0.85:
    probs[0, 4, 3] = 0.8
    probs[1, 4, 3] = 0.2     # (4, 3): background still arg-max but 0.8 < 0.85
    grown = grow_seeds(probs, seeds, [1])
    expected = np.array([
        [0, 0, 0, 0, 0, 0],
        [0, 1, 1, 0, 0, 0],
        [0, 1, 0, 1, 0, U],   # the isolated 0.995 pixel is not reached; its neighbours are background
        [0, U, 0, 0, 0, 0],
        [0, 0, 0, U, 0, 0],
    ], np.uint8)
    # (2, 5) is surrounded by background pixels, so it stays unlabelled rather than joining class 1
    assert grown.tolist() == expected.tolist()


def test_growing_neighbourhood_and_seed_stability():
    p1 = np.zeros((3, 3), np.float32)
    p1[1, 1] = p1[2, 2] = 0.999
    probs = _probs(p1)
    probs[0][p1 == 0] = 0.5
    probs[2][p1 == 0] = 0.5   # background never confident, so only class 1 can grow
    seeds = np.full((3, 3), U, np.uint8)
    seeds[0, 0] = 1
    assert grow_seeds(probs, seeds, [1, 2], connectivity=8)[2, 2] == 1       # chain of diagonals
    assert (grow_seeds(probs, seeds, [1, 2], connectivity=4) == seeds).all()  # no 4-neighbour path
    # a seeded pixel never changes class, even when another class is confident there
    seeds2 = seeds.copy()
    seeds2[1, 1] = 2
    grown = grow_seeds(probs, seeds2, [1, 2])
    assert grown[1, 1] == 2 and grown[2, 2] == U
    with pytest.raises(ValueError, match="connectivity"):
        grow_seeds(probs, seeds, [1], connectivity=6)


def test_thresholds_are_strict_and_per_class():
    # pixel 1 holds exactly the threshold, pixel 2 just above it
    fg = np.array([[0.0, 0.99, 0.991]], np.float32)
    seeds = np.array([[1, U, U]], np.uint8)
    probs = _probs(fg)
    probs[0, 0, 0], probs[1, 0, 0] = 0.0, 1.0
    # pixel 2 is not adjacent to the seed through pixel 1 (0.99 is not > 0.99)
    assert grow_seeds(probs, seeds, [1]).tolist() == [[1, U, U]]
    assert grow_seeds(probs, seeds, [1], fg_threshold=0.98).tolist() == [[1, 1, 1]]
    bg = np.array([[1.0, 0.85, 0.86]], np.float32)
    probs = np.stack([bg, 1 - bg, np.zeros_like(bg)])
    seeds = np.array([[0, U, U]], np.uint8)
    assert grow_seeds(probs, seeds, [1]).tolist() == [[0, U, U]]
    assert grow_seeds(probs, seeds, [1], bg_threshold=0.8).tolist() == [[0, 0, 0]]
    # DSRG's released code order: 0.85 for foreground, 0.99 for background
    fg = np.array([[0.0, 0.9, 0.9]], np.float32)
    probs = _probs(fg)
    probs[:, 0, 0] = [0.0, 1.0, 0.0]
    seeds = np.array([[1, U, U]], np.uint8)
    assert grow_seeds(probs, seeds, [1]).tolist() == [[1, U, U]]
    assert grow_seeds(probs, seeds, [1], fg_threshold=0.85, bg_threshold=0.99).tolist() == [[1, 1, 1]]


def test_growing_ignores_classes_absent_from_the_image():
    # class 2 has the largest probability, but the image is labelled {1}: restricted to {0, 1},
    # class 1 is the arg-max at 0.6 / (max over kept) - not > 0.99 - so nothing grows
    probs = np.array([[[0.0, 0.0]], [[1.0, 0.4]], [[0.0, 0.6]]], np.float32)
    seeds = np.array([[1, U]], np.uint8)
    assert grow_seeds(probs, seeds, [1]).tolist() == [[1, U]]
    assert grow_seeds(probs, seeds, [1], fg_threshold=0.3).tolist() == [[1, 1]]


class _Index:
    """The part of DatasetIndex that the saliency reader uses."""

    def __init__(self, image: np.ndarray, working: tuple[int, int] | None = None):
        self.image = image
        self.working = working or image.shape[:2]

    def size(self, image_id):
        return self.working

    def original_size(self, image_id):
        return self.image.shape[:2]

    def read_image(self, image_id):
        return self.image


def test_saliency_folder_read_and_resize(tmp_path):
    values = np.array([[0, 15, 255, 51], [102, 0, 0, 255]], np.uint8)
    Image.fromarray(values, mode="L").save(tmp_path / "img_1.png")
    index = _Index(np.zeros((2, 4, 3), np.uint8))
    sal = sal_mod.load_saliency(index, "img_1", tmp_path)
    assert np.allclose(sal, values / 255.0)
    from conta_core.expand.seeds import saliency_background
    assert saliency_background(sal).tolist() == [[True, True, False, False], [False, True, True, False]]
    # a max_side-downscaled image gets its saliency resized to the working size
    assert sal_mod.load_saliency(_Index(np.zeros((2, 4, 3), np.uint8), (1, 2)), "img_1", tmp_path).shape == (1, 2)
    # RGB with equal channels and 16-bit grey are accepted
    Image.fromarray(np.repeat(values[..., None], 3, axis=2), mode="RGB").save(tmp_path / "rgb.png")
    assert np.allclose(sal_mod.load_saliency(index, "rgb", tmp_path), values / 255.0)
    Image.fromarray(values.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    assert np.allclose(sal_mod.load_saliency(index, "deep", tmp_path), values / 255.0, atol=1e-6)


def test_saliency_validation_names_the_id_and_file(tmp_path):
    index = _Index(np.zeros((2, 4, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"saliency map of 'img_9' is missing: .*img_9\.png does not exist"):
        sal_mod.load_saliency(index, "img_9", tmp_path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DatasetError, match=r"saliency map of 'broken' cannot be read: .*broken\.png"):
        sal_mod.load_saliency(index, "broken", tmp_path)
    Image.fromarray(np.zeros((3, 4), np.uint8)).save(tmp_path / "tall.png")
    with pytest.raises(DatasetError, match=r"saliency map of 'tall' is 3x4 but the image is 2x4 .*tall\.png"):
        sal_mod.load_saliency(index, "tall", tmp_path)
    colour = np.zeros((2, 4, 3), np.uint8)
    colour[0, 0] = (255, 0, 0)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(DatasetError, match=r"saliency map of 'colour' is a colour image.*colour\.png"):
        sal_mod.load_saliency(index, "colour", tmp_path)


def test_opencv_fallback_on_a_known_image():
    pytest.importorskip("cv2")
    from conta_core.expand.seeds import saliency_background

    image = np.full((96, 96, 3), 128, np.uint8)
    image[40:56, 40:56] = (250, 30, 30)          # one small red square on flat grey
    sal = sal_mod.load_saliency(_Index(image), "x", None)
    assert sal.shape == (96, 96) and sal.dtype == np.float32
    assert sal.min() == pytest.approx(0.0) and sal.max() == pytest.approx(1.0)
    square = sal[40:56, 40:56].mean()
    corners = np.concatenate([sal[:16, :16].ravel(), sal[-16:, -16:].ravel()])
    assert square > 4 * corners.mean()
    bg = saliency_background(sal)
    assert not bg[40:56, 40:56].any() and bg[:16, :16].all()     # the blur fills the flat square
    unblurred = sal_mod.opencv_saliency(image, blur=0)
    assert saliency_background(unblurred)[46:50, 46:50].all()     # without it, its inside is "background"


VOC_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "voc_mini"


@pytest.mark.skipif(not (VOC_MINI / "JPEGImages").is_dir(), reason="../shared/data/voc_mini is not here")
def test_opencv_background_cue_on_real_voc_images():
    """The stand-in cue is better than chance: on the 18 voc_mini images, the share of its pixels
    that are ground-truth background (measured 0.930; 0.849 unblurred) beats the background's
    share (0.718). In-sample: these images chose the blur."""
    pytest.importorskip("cv2")
    from conta_core.expand.seeds import saliency_background

    precision, share = [], []
    for jpg in sorted((VOC_MINI / "JPEGImages").glob("*.jpg")):
        gt = np.asarray(Image.open(VOC_MINI / "SegmentationClass" / f"{jpg.stem}.png"))
        image = np.asarray(Image.open(jpg).convert("RGB"))
        cue = saliency_background(sal_mod.opencv_saliency(image)) & (gt != 255)
        precision.append(((gt == 0) & cue).sum() / max(1, cue.sum()))
        share.append(((gt == 0) & (gt != 255)).sum() / (gt != 255).sum())
    assert len(precision) == 18
    assert np.mean(precision) > np.mean(share) + 0.15


def test_missing_opencv_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(RuntimeError, match=r"opencv-contrib-python-headless.*conta-core\[dsrg\]"):
        sal_mod.opencv_saliency(np.zeros((8, 8, 3), np.uint8))


def test_balanced_seeding_loss_by_hand():
    torch = pytest.importorskip("torch")
    from conta_core.expand.dsrg import balanced_seeding_loss
    from conta_core.expand.sec import one_hot_cues, sec_softmax

    probs = sec_softmax(torch.tensor(np.random.default_rng(0).normal(size=(1, 3, 2, 2))))
    cues = one_hot_cues(torch.tensor([[[0, 0], [1, 255]]]), 3)
    p = probs.numpy()[0]
    expected = -(np.log(p[0, 0, 0]) + np.log(p[0, 0, 1])) / 2 - np.log(p[1, 1, 0])
    assert balanced_seeding_loss(probs, cues).item() == pytest.approx(expected, rel=1e-9)


def test_dsrg_network_and_loss():
    torch = pytest.importorskip("torch")
    from conta_core.expand import dsrg
    from conta_core.models.backbone import build_resnet

    torch.manual_seed(0)
    net = dsrg.DsrgNet(build_resnet(18, 16), 4)
    assert net(torch.zeros(1, 3, 65, 65)).shape == (1, 4, 5, 5)    # output stride 16
    seeds = torch.full((2, 65, 65), 255, dtype=torch.uint8)
    seeds[:, :16] = 0
    seeds[:, 30:40, 30:40] = torch.tensor([1, 3])[:, None, None]
    batch = {"image": torch.randn(2, 3, 65, 65), "seeds": seeds,
             "rgb": np.random.default_rng(1).integers(0, 256, (2, 65, 65, 3), dtype=np.uint8),
             "labels": torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])}
    loss = dsrg.dsrg_loss(net, batch)
    loss.backward()
    assert torch.isfinite(loss) and net.aspp.branches[0].weight.grad.abs().sum() > 0
    groups = dsrg.optimizer_groups(net)
    assert [g["lr_mult"] for g in groups] == [1.0, 10.0, 20.0]
    assert dsrg.DSRG_TRAINING["lr"] == 5e-4 and dsrg.DSRG_TRAINING["batch_size"] == 20
    with pytest.raises(ValueError, match="grow_on"):
        dsrg.dsrg_loss(net, batch, grow_on="cam")
