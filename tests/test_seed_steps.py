"""SEC/DSRG workflow pieces: the seeds step, the seed-map dataset, training through train_job, pseudo-masks."""
from pathlib import Path

import numpy as np
import pytest
import torch

from conta_core import methods
from conta_core.data.index import build_index
from conta_core.data.synthetic import DEFAULT_PARAMS, generate_synthetic
from conta_core.expand import seed_net
from conta_core.expand.seeds import SEED_KIND, UNLABELLED, lowest_fraction, seeds_from_cams
from conta_core.seeds_step import make_seeds
from conta_core.store import MapReader, MapWriter


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seeds")
    generate_synthetic(tmp / "syn", **dict(DEFAULT_PARAMS, num_train=8, num_val=2, image_size=48))
    return build_index({"kind": "synthetic", "root": str(tmp / "syn"), "splits": {"train": "train.txt", "val": "val.txt"},
                        "train_split": "train", "on_bad_item": "error"}, tmp / "index")


def proxy_cams(index, image_id):
    """A CAM per labelled class: its ground-truth mask, softened (peaks inside the object)."""
    from scipy.ndimage import gaussian_filter

    mask = index.read_mask(image_id)
    cams = np.stack([gaussian_filter((mask == c).astype(np.float32), 2) for c in index.labels(image_id)])
    return cams / np.maximum(cams.max(axis=(1, 2), keepdims=True), 1e-6)


def write_cams(index, path):
    ids = index.ids("train")
    with MapWriter(path, kind="cam", attrs={"round": 0}) as w:
        for i in ids:
            w.put(i, proxy_cams(index, i).astype(np.float16), classes=index.labels(i))
    return ids


def test_make_seeds_is_seeds_from_cams_per_image(index, tmp_path):
    ids = write_cams(index, tmp_path / "cam.h5")
    background = lambda batch, images: [lowest_fraction(im.mean(axis=2), 0.1) for im in images]  # noqa: E731
    with MapReader(tmp_path / "cam.h5", kind="cam") as cams, \
            MapWriter(tmp_path / "seeds.h5", kind=SEED_KIND, attrs={"round": 0}) as writer:
        shares = make_seeds(index, ids, cams, writer, background, fraction=0.2, batch_size=3)
    with MapReader(tmp_path / "seeds.h5", kind=SEED_KIND) as seeds, MapReader(tmp_path / "cam.h5", kind="cam") as cams:
        assert sorted(seeds.ids()) == sorted(ids)
        fg = bg = total = 0
        for i in ids:
            image = index.read_image(i)
            expect = seeds_from_cams(cams.get(i).astype(np.float32), index.labels(i),
                                     lowest_fraction(image.mean(axis=2), 0.1), fraction=0.2)
            got = seeds.get(i)
            np.testing.assert_array_equal(got, expect)
            assert list(seeds.item_attrs(i)["classes"]) == index.labels(i)
            fg += int(((got != 0) & (got != UNLABELLED)).sum())
            bg += int((got == 0).sum())
            total += got.size
    assert shares["foreground"] == pytest.approx(fg / total) and shares["background"] == pytest.approx(bg / total)
    assert 0.5 < shares["correct"] <= 1.0  # proxy CAMs: most seed pixels are right


def test_sec_background_is_gradient_saliency_lowest_fraction(index):
    from conta_core.classify import build_classifier
    from conta_core.data.datasets import to_batch
    from conta_core.expand.sec import gradient_saliency
    from conta_core.seeds_step import sec_background

    torch.manual_seed(0)
    model = build_classifier(dict(methods.get("sec").defaults["classifier"], width=0.0625, weights="none"), index.num_classes,
                             {"mode": "off"}, 0, None).eval()
    ids = index.ids("train")[:2]
    images = [index.read_image(i) for i in ids]
    cues = sec_background(model, torch.device("cpu"), 0.1)(ids, images)
    sal = gradient_saliency(model, to_batch(np.stack(images)))
    for cue, s in zip(cues, sal):
        np.testing.assert_array_equal(cue, s < np.sort(s.ravel())[int(0.1 * s.size)])
        assert 0 < cue.sum() <= int(0.1 * s.size)


def test_seed_dataset_crops_image_rgb_and_seeds_alike(index):
    ids = index.ids("train")
    seed_maps = {i: np.where(index.read_mask(i) == 255, 0, index.read_mask(i)).astype(np.uint8) for i in ids}

    class Seeds:
        get = staticmethod(seed_maps.__getitem__)

    data = seed_net.SeedDataset(index, ids, Seeds(), crop=64, scale_range=(1.0, 1.0), seed=0)
    item = data[0]
    assert item["image"].shape == (3, 64, 64) and item["rgb"].shape == (64, 64, 3) and item["rgb"].dtype == torch.uint8
    assert item["seeds"].shape == (64, 64)
    h, w = index.size(ids[0])
    # scale 1: the crop is the image (maybe flipped) at the top left, padded beyond it
    image, seeds = index.read_image(ids[0]), seed_maps[ids[0]]
    rgb, got = item["rgb"].numpy()[:h, :w], item["seeds"].numpy()[:h, :w]
    flipped = not np.array_equal(got, seeds)
    if flipped:
        image, seeds = image[:, ::-1], seeds[:, ::-1]
    np.testing.assert_array_equal(got, seeds)
    assert np.abs(rgb.astype(int) - image.astype(int)).max() <= 1
    assert (item["seeds"].numpy()[h:] == UNLABELLED).all() and (item["seeds"].numpy()[:, w:] == UNLABELLED).all()
    assert item["labels"].tolist() == [1.0 if c in index.labels(ids[0]) else 0.0 for c in range(1, index.num_classes)]


@pytest.mark.parametrize("method", ["sec", "dsrg"])
def test_train_and_pseudo_masks(index, method, tmp_path):
    ids = index.ids("train")
    seed_maps = {i: seeds_from_cams(proxy_cams(index, i), index.labels(i), index.read_mask(i) == 0, fraction=0.2)
                 for i in ids}

    class Seeds:
        get = staticmethod(seed_maps.__getitem__)

    section = dict(methods.get(method).expansion(method).defaults)
    train = dict(section["train"], iterations=3, batch_size=2, crop=48, scale_range=[1.0, 1.0], optimizer="adam",
                 lr=1e-3, weights="none")
    train.update({"width": 0.0625} if method == "sec" else {"depth": 18, "freeze_bn": False})
    section["train"] = train
    model, history = seed_net.train_seed_network(method, index, ids, Seeds(), section, 0, torch.device("cpu"),
                                                 threads=2 if method == "sec" else 1)
    assert len(history) == 1 and np.isfinite(history[0])
    if method == "sec":  # the worker processes give the CRF targets computed here: same loss as threads=1
        _, history1 = seed_net.train_seed_network(method, index, ids, Seeds(), section, 0, torch.device("cpu"),
                                                  threads=1)
        assert history1 == pytest.approx(history, rel=1e-5)
    image, cls = index.read_image(ids[0]), index.labels(ids[0])
    from conta_core.data.datasets import to_tensor
    from conta_core.expand.sec import SEC_CRF, predict_pseudo_mask
    from conta_core.parallel import ProcessMap

    expect = predict_pseudo_mask(model, to_tensor(image)[None], image, cls, SEC_CRF)
    with ProcessMap(2) as workers:
        got = seed_net.pseudo_masks(model, [image, image], [cls, cls], torch.device("cpu"), SEC_CRF, workers)
    np.testing.assert_array_equal(got[0], expect)
    np.testing.assert_array_equal(got[1], expect)
    assert set(np.unique(expect)) <= {0, *cls}
