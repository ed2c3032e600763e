"""The generated dataset: determinism, layout, and the three confounding knobs
measured from pixels (not from the generator's own bookkeeping)."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from conta_core.data.synthetic import CLASSES, DEFAULT_PARAMS, generate_synthetic

HORSE, RIDER, BOAT, BIRD = (CLASSES.index(n) for n in ("horse", "rider", "boat", "bird"))


def make(root: Path, **overrides) -> Path:
    params = dict(DEFAULT_PARAMS, num_train=40, num_val=10)
    params.update(overrides)
    generate_synthetic(root, **params)
    return root


def load_all(root: Path):
    """(id, rgb image int32, mask) for every image in train and val."""
    out = []
    for split in ("train", "val"):
        for image_id in (root / "ImageSets/Segmentation" / f"{split}.txt").read_text().split():
            image = np.asarray(Image.open(root / "JPEGImages" / f"{image_id}.jpg").convert("RGB"),
                               dtype=np.int32)
            mask = np.asarray(Image.open(root / "SegmentationClass" / f"{image_id}.png"))
            out.append((image_id, image, mask))
    return out


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    a = tree_bytes(make(tmp_path / "a", seed=3, num_train=12, num_val=4))
    b = tree_bytes(make(tmp_path / "b", seed=3, num_train=12, num_val=4))
    c = tree_bytes(make(tmp_path / "c", seed=4, num_train=12, num_val=4))
    assert len(a) == 12 + 4 + 12 + 4 + 2 + 3
    assert a == b
    assert a.keys() == c.keys()
    assert a["JPEGImages/train_0000.jpg"] != c["JPEGImages/train_0000.jpg"]


def test_val_images_do_not_depend_on_num_train(tmp_path):
    a = tree_bytes(make(tmp_path / "a", num_train=5, num_val=3))
    b = tree_bytes(make(tmp_path / "b", num_train=9, num_val=3))
    assert a["SegmentationClass/val_0002.png"] == b["SegmentationClass/val_0002.png"]


def test_layout_labels_and_void_borders(tmp_path):
    root = make(tmp_path / "syn")
    meta = json.loads((root / "classes.json").read_text())
    assert meta["names"] == CLASSES and meta["void"] == 255
    assert meta["palette"][:2] == [[0, 0, 0], [128, 0, 0]]
    labels_json = json.loads((root / "image_labels.json").read_text())
    items = load_all(root)
    assert len(items) == 50 and len(labels_json) == 50
    for image_id, image, mask in items:
        assert image.shape == (96, 96, 3) and mask.shape == (96, 96)
        assert Image.open(root / "SegmentationClass" / f"{image_id}.png").mode == "P"
        present = set(np.unique(mask).tolist())
        assert present <= set(range(len(CLASSES))) | {255}
        names = [CLASSES[c] for c in sorted(present - {0, 255})]
        assert names and names == labels_json[image_id]
        # VOC style: two different classes never touch without a void band between them.
        for a, b in ((mask[:, 1:], mask[:, :-1]), (mask[1:, :], mask[:-1, :])):
            touching = (a != b) & (a != 255) & (b != 255)
            assert not touching.any(), image_id
        # every object is outlined: void sits next to each foreground region.
        for c in present - {0, 255}:
            ring = ndimage.binary_dilation(mask == c) & (mask != c)
            assert (mask[ring] == 255).mean() > 0.9


def test_rejects_out_of_range_knob(tmp_path):
    with pytest.raises(ValueError, match="ambiguity"):
        make(tmp_path / "x", ambiguity=1.5)


def test_regenerating_replaces_the_folder_and_leaves_no_temp(tmp_path):
    root = make(tmp_path / "syn", num_train=3, num_val=1)
    (root / "stale.txt").write_text("old")
    make(root, num_train=2, num_val=1)
    assert not (root / "stale.txt").exists()
    assert (root / "ImageSets/Segmentation/train.txt").read_text().split() == ["train_0000", "train_0001"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]


def rider_horse_stats(root: Path):
    together = touching = riders = horses = 0
    for _, _, mask in load_all(root):
        rider, horse = mask == RIDER, mask == HORSE
        riders += rider.any()
        horses += horse.any()
        if rider.any() and horse.any():
            together += 1
            touching += (ndimage.binary_dilation(rider, iterations=3) & horse).any()
    return riders, horses, together, touching


def test_ambiguity_one_puts_every_rider_on_a_horse(tmp_path):
    riders, horses, together, touching = rider_horse_stats(make(tmp_path / "a", ambiguity=1.0))
    assert riders > 10
    assert together == riders == horses
    assert touching == together


def test_ambiguity_zero_keeps_riders_and_horses_apart(tmp_path):
    riders, horses, together, _ = rider_horse_stats(make(tmp_path / "a", ambiguity=0.0))
    assert riders > 5 and horses > 5
    assert together == 0


def water_rates(root: Path):
    """Share of boat / non-boat images whose background below the horizon is blue water."""
    water = {True: [], False: []}
    for _, image, mask in load_all(root):
        lower = np.zeros(mask.shape, bool)
        lower[int(0.62 * mask.shape[0]):] = True
        background = image[lower & (mask == 0)]
        is_water = (background[:, 2] - background[:, 0]).mean() > 60
        water[bool((mask == BOAT).any())].append(is_water)
    return np.mean(water[True]), np.mean(water[False]), len(water[True])


def test_background_context_ties_water_to_boats(tmp_path):
    boat_rate, other_rate, boats = water_rates(make(tmp_path / "a", background_context=1.0,
                                                    num_train=80))
    assert boats > 15
    assert boat_rate == 1.0 and other_rate == 0.0
    boat_rate, other_rate, _ = water_rates(make(tmp_path / "b", background_context=0.0,
                                                num_train=80))
    assert 0.0 < other_rate < 0.45 and boat_rate < 0.5


def camouflage_rate(root: Path):
    """Share of bird images where >10% of the bird's pixels look like the sky (blue)."""
    flags = []
    for _, image, mask in load_all(root):
        bird = mask == BIRD
        if bird.sum() < 20:
            continue
        pixels = image[bird]
        flags.append(((pixels[:, 2] - pixels[:, 0]) > 30).mean() > 0.1)
    return np.mean(flags), len(flags)


def test_foreground_context_makes_wings_look_like_sky(tmp_path):
    rate, birds = camouflage_rate(make(tmp_path / "a", foreground_context=1.0, num_train=60))
    assert birds > 10 and rate == 1.0
    rate, birds = camouflage_rate(make(tmp_path / "b", foreground_context=0.0, num_train=60))
    assert birds > 10 and rate == 0.0
