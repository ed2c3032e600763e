"""conta-predict on a small random DeepLab: same masks as predict_masks, palette PNGs, clear errors."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conta_core.classify import save_model
from conta_core.data.images import read_rgb
from conta_core.predict_cli import main
from conta_core.segment import SEGMENTER_FORMAT, build_segmenter, predict_masks

NAMES = ["background", "cat", "dog"]
PALETTE = [[0, 0, 0], [200, 10, 10], [10, 200, 10]]
SEGMENT = {"backbone": 18, "weights": "none", "output_stride": 16, "freeze_bn": False, "freeze_conv1": False,
           "aspp_rates": [2, 4], "msc_scales": [1.0], "crf": False, "predict_batch_size": 2}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    model = build_segmenter(SEGMENT, len(NAMES), load_weights=False).eval()
    for branch in model.aspp.branches:  # large logits: masks with several classes, not one
        torch.nn.init.normal_(branch.weight, std=1.0)
    path = tmp_path_factory.mktemp("model") / "segmenter.pt"
    save_model(path, model, {"format": SEGMENTER_FORMAT, "round": 2, "settings": {"segment": SEGMENT},
                             "class_names": NAMES, "palette": PALETTE, "void": 255, "max_side": None})
    return path, model


def _images(folder, sizes):
    rng = np.random.default_rng(0)
    paths = []
    for k, (h, w) in enumerate(sizes):
        path = folder / f"img{k}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_masks_equal_predict_masks_and_carry_the_palette(tmp_path, model_file):
    path, model = model_file
    images = _images(tmp_path, [(40, 48), (40, 48), (40, 48), (32, 32)])  # 2 batches of one size + 1
    out = tmp_path / "out"
    # --device cpu: compared with predict_masks on the CPU (auto would pick a GPU where there is one)
    assert main(["--model", str(path), *map(str, images), "--out", str(out), "--overlay", "--quiet",
                 "--device", "cpu"]) == 0
    for image_path in images:
        expected = predict_masks(model, [read_rgb(image_path)], torch.device("cpu"), crf=False)[0]
        with Image.open(out / f"{image_path.stem}.png") as png:
            assert png.mode == "P"
            assert json.loads(png.info["conta_classes"]) == NAMES
            assert png.getpalette()[:9] == [c for colour in PALETTE for c in colour]
            mask = np.asarray(png)
        np.testing.assert_array_equal(mask, expected)
        assert (out / "overlays" / f"{image_path.stem}.png").stat().st_size > 500
    assert len({int(v) for p in images for v in np.unique(np.asarray(Image.open(out / f"{p.stem}.png")))}) >= 2
    assert json.loads((out / "classes.json").read_text())["names"] == NAMES


def test_folder_input_and_crf_switch(tmp_path, model_file):
    path, model = model_file
    folder = tmp_path / "imgs"
    folder.mkdir()
    images = _images(folder, [(24, 24), (24, 24)])
    out = tmp_path / "out"
    assert main(["--model", str(path), str(folder), "--out", str(out), "--crf", "--quiet", "--device", "cpu"]) == 0
    expected = predict_masks(model, [read_rgb(p) for p in images], torch.device("cpu"), crf=True)
    for image_path, mask in zip(images, expected):
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"{image_path.stem}.png")), mask)


def test_foreign_and_wrong_checkpoints_are_named(tmp_path, model_file, capsys):
    image = _images(tmp_path, [(16, 16)])[0]
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    classifier = tmp_path / "classifier.pt"
    save_model(classifier, torch.nn.Linear(2, 2), {"round": 0, "settings": {"classifier": {}}, "class_names": NAMES})
    damaged = tmp_path / "damaged.pt"
    state = torch.load(model_file[0], weights_only=True)
    state["model"]["aspp.branches.0.bias"] = state["model"]["aspp.branches.0.bias"] + 1.0
    torch.save(state, damaged)
    for path, message in [(foreign, "not a CONTA checkpoint"), (garbage, "cannot be loaded as a torch checkpoint"),
                          (classifier, "not a segmenter"), (damaged, "damaged or written by an older version")]:
        assert main(["--model", str(path), str(image), "--out", str(tmp_path / "o"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and str(path) in err
    assert damaged.exists()  # the inference command never deletes a model


def test_unreadable_images_are_all_named_before_any_work(tmp_path, model_file, capsys):
    good = _images(tmp_path, [(16, 16)])[0]
    bad1, bad2 = tmp_path / "bad1.jpg", tmp_path / "bad2.png"
    bad1.write_bytes(b"\xff\xd8 nope")
    bad2.write_text("text")
    out = tmp_path / "o"
    assert main(["--model", str(model_file[0]), str(good), str(bad1), str(bad2), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "2 of 3 images cannot be read" in err and str(bad1) in err and str(bad2) in err
    assert not out.exists()
    assert main(["--model", str(model_file[0]), str(tmp_path / "missing.png"), "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
    other = tmp_path / "sub"
    other.mkdir()
    Image.open(good).save(other / good.name)
    assert main(["--model", str(model_file[0]), str(good), str(other / good.name), "--out", str(out)]) == 2
    assert "would both be written" in capsys.readouterr().err


def test_cuda_asked_for_but_absent_is_named(tmp_path, model_file, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    image = _images(tmp_path, [(16, 16)])[0]
    assert main(["--model", str(model_file[0]), str(image), "--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
    assert "--device cuda" in capsys.readouterr().err
