"""Bounded prediction and CRF memory: large images are predicted / refined at a maximum side."""
import numpy as np
import pytest
import torch
from PIL import Image

from conta_core.crf import dense_crf
from conta_core.predict_cli import main
from conta_core.segment import build_segmenter, oversized, predict_masks

SEGMENT = {"backbone": 18, "weights": "none", "output_stride": 16, "freeze_bn": False, "freeze_conv1": False,
           "aspp_rates": [2, 4], "msc_scales": [1.0], "crf": False, "predict_batch_size": 2}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = build_segmenter(SEGMENT, 3, load_weights=False).eval()
    for branch in net.aspp.branches:  # large logits: masks with several classes
        torch.nn.init.normal_(branch.weight, std=1.0)
    return net


def _smooth_image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR))


def test_large_image_is_predicted_at_max_side_and_scaled_back(model):
    image = _smooth_image(150, 200)
    got = predict_masks(model, [image], torch.device("cpu"), crf=False, max_side=64)[0]
    # independently: PIL-bilinear to 64x48, DeepLab's argmax there, nearest neighbour back
    small = np.asarray(Image.fromarray(image).resize((64, 48), Image.Resampling.BILINEAR))
    x = torch.from_numpy(small.copy()).permute(2, 0, 1)[None].float()
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None] * 255
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None] * 255
    with torch.no_grad():
        labels = model.predict((x - mean) / std).argmax(1)[0].to(torch.uint8).numpy()
    expected = np.asarray(Image.fromarray(labels).resize((200, 150), Image.Resampling.NEAREST))
    assert got.shape == (150, 200) and len(np.unique(got)) > 1
    np.testing.assert_array_equal(got, expected)
    # at or under the limit nothing changes: the full-size prediction
    full = predict_masks(model, [image], torch.device("cpu"), crf=False, max_side=None)[0]
    np.testing.assert_array_equal(predict_masks(model, [image], torch.device("cpu"), crf=False,
                                                max_side=200)[0], full)
    assert (full != got).any()  # the limit did act


def test_oversized_names_the_images():
    sizes = {"a": (100, 50), "b": (30, 40), "c": (20, 300)}
    text = oversized(list(sizes), sizes.__getitem__, 64)
    assert text.startswith("2 image(s) are larger than the prediction max side 64")
    assert "'a' (50x100)" in text and "'c' (300x20)" in text and "'b'" not in text
    assert oversized(list(sizes), sizes.__getitem__, None) is None


def test_dense_crf_runs_at_max_side_and_scales_back():
    pytest.importorskip("pydensecrf")
    image = _smooth_image(60, 80, seed=1)
    rng = np.random.default_rng(2)
    probs = rng.random((3, 60, 80)).astype(np.float32)
    probs /= probs.sum(0, keepdims=True)
    with pytest.warns(UserWarning, match="80x60 image runs at 40x30"):
        got = dense_crf(image, probs, max_side=40)
    small_image = np.asarray(Image.fromarray(image).resize((40, 30), Image.Resampling.BILINEAR))
    small = np.stack([np.asarray(Image.fromarray(p, mode="F").resize((40, 30), Image.Resampling.BILINEAR))
                      for p in probs])
    small /= small.sum(0, keepdims=True)
    refined = dense_crf(small_image, small, max_side=None)
    expected = np.stack([np.asarray(Image.fromarray(q, mode="F").resize((80, 60), Image.Resampling.BILINEAR))
                         for q in refined])
    assert got.shape == (3, 60, 80)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(got.sum(0), 1.0, atol=1e-3)
    assert dense_crf(image, probs, max_side=80).shape == (3, 60, 80)  # not over: no warning, full size


def test_conta_predict_warns_and_writes_full_size_masks(tmp_path, model, capsys):
    from conta_core.classify import save_model
    from conta_core.segment import SEGMENTER_FORMAT

    path = tmp_path / "segmenter.pt"
    save_model(path, model, {"format": SEGMENTER_FORMAT, "round": 0, "settings": {"segment": SEGMENT},
                             "class_names": ["background", "a", "b"], "palette": None, "void": 255,
                             "max_side": None})
    Image.fromarray(_smooth_image(90, 120)).save(tmp_path / "big.png")
    Image.fromarray(_smooth_image(30, 40)).save(tmp_path / "small.png")
    assert main([str(tmp_path / "big.png"), str(tmp_path / "small.png"), "--model", str(path),
                 "--out", str(tmp_path / "out"), "--max-side", "64", "--device", "cpu", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "1 image(s) are larger than --max-side 64" in err and "big.png" in err and "small.png' (" not in err
    with Image.open(tmp_path / "out" / "big.png") as mask:
        assert mask.size == (120, 90)
    assert main([str(tmp_path / "big.png"), "--model", str(path), "--out", str(tmp_path / "o2"),
                 "--max-side", "8", "--quiet"]) == 2
    assert "--max-side must be 0 (no limit) or >= 32" in capsys.readouterr().err
