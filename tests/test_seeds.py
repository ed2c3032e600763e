"""SEC/DSRG localisation cues: top-20 % CAM seeds, overlap rules, background cues, HDF5 round trip."""
from __future__ import annotations

import numpy as np
import pytest

from conta_core.expand import seeds as S

U = S.UNLABELLED


def test_top_fraction_on_a_hand_built_cam():
    # 4 x 5 map with the values 0..19 (/19): 20 % of 20 pixels = the 4 largest, 16..19.
    cam = (np.arange(20, dtype=np.float32) / 19).reshape(4, 5)
    mask = S.class_seed_mask(cam, 0.2)
    assert mask.sum() == 4
    assert np.array_equal(np.flatnonzero(mask), [16, 17, 18, 19])
    # k = ceil(0.25 * 20) = 5
    assert np.array_equal(np.flatnonzero(S.class_seed_mask(cam, 0.25)), [15, 16, 17, 18, 19])
    # k = ceil(0.21 * 20) = ceil(4.2) = 5 as well
    assert S.class_seed_mask(cam, 0.21).sum() == 5


def test_top_fraction_ties_and_zero_maps():
    cam = np.zeros((2, 5), np.float32)
    cam[0, :3] = 1.0                      # three pixels tie at the top; k = 2
    assert np.array_equal(np.flatnonzero(S.class_seed_mask(cam, 0.2)), [0, 1, 2])
    assert not S.class_seed_mask(np.zeros((4, 4), np.float32), 0.2).any()
    # 0 is never a seed, even when it is within the top k
    cam = np.zeros((2, 5), np.float32)
    cam[0, 0] = 0.5
    assert np.array_equal(np.flatnonzero(S.class_seed_mask(cam, 0.3)), [0])


def test_max_fraction_rule_is_secs_notebook():
    cam = np.array([[0.1, 0.2, 0.21, 1.0]], np.float32)
    assert np.array_equal(S.class_seed_mask(cam, 0.2, rule="max_fraction")[0], [False, False, True, True])
    with pytest.raises(ValueError, match="seed rule must be one of"):
        S.class_seed_mask(cam, 0.2, rule="top")
    with pytest.raises(ValueError, match="fraction"):
        S.class_seed_mask(cam, 0.0)


def test_foreground_seeds_overlap_goes_to_the_larger_cam_and_ties_to_the_first_class():
    a = np.array([[0.0, 0.2, 0.9, 1.0, 0.5]], np.float32)
    b = np.array([[1.0, 0.1, 0.95, 0.5, 0.5]], np.float32)
    # top 40 % of 5 pixels = 2 pixels: class 3 gets {2, 3}, class 7 gets {0, 2}
    seeds = S.foreground_seeds(np.stack([a, b]), [3, 7], fraction=0.4)
    assert seeds.tolist() == [[7, U, 7, 3, U]]
    # an exact tie at a shared seed pixel goes to the first listed class
    tie = np.array([[1.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
    assert S.foreground_seeds(np.stack([tie, tie]), [5, 2], fraction=0.2).tolist() == [[5, U, U, U, U]]
    assert (S.foreground_seeds(np.zeros((0, 2, 3), np.float32), []) == U).all()
    with pytest.raises(ValueError, match="K = len"):
        S.foreground_seeds(np.stack([a, b]), [3])


def test_background_cues_and_their_combination():
    sal = np.array([[0.0, 0.05, 0.06, 0.5]], np.float32)
    assert S.saliency_background(sal).tolist() == [[True, True, False, False]]   # strictly below 0.06
    with pytest.raises(ValueError, match="normalised"):
        S.saliency_background(sal * 255)
    # SEC: strictly below the int(0.1 * N)-th smallest of 20 values -> the 2 smallest
    score = np.arange(20, dtype=np.float32)[::-1].reshape(4, 5)
    low = S.lowest_fraction(score, 0.1)
    assert np.array_equal(np.sort(score[low]), [0, 1])
    fg = np.array([[U, 4, U, U]], np.uint8)
    bg = np.array([[True, True, False, True]])
    assert S.seed_map(fg, bg).tolist() == [[0, 4, U, 0]]                         # foreground wins
    cams = np.array([[[0.0, 1.0, 0.2, 0.1]]], np.float32)
    assert S.seeds_from_cams(cams, [4], bg, fraction=0.25).tolist() == [[0, 4, U, 0]]


def test_one_hot_seeds():
    seeds = np.array([[0, 2, U]], np.uint8)
    cues = S.one_hot_seeds(seeds, 3)
    assert cues.shape == (3, 1, 3)
    assert cues[:, 0].T.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
    with pytest.raises(ValueError, match=r"labels \[5\]"):
        S.one_hot_seeds(np.array([[5]], np.uint8), 3)


def test_seed_maps_round_trip_through_the_store(tmp_path):
    rng = np.random.default_rng(0)
    maps = {"2007_000032": rng.integers(0, 4, (7, 9)).astype(np.uint8),
            "coco/0001": np.full((3, 4), U, np.uint8)}
    maps["2007_000032"][0, 0] = U
    path = tmp_path / "round1" / "seeds.h5"
    path.parent.mkdir()
    S.write_seeds(path, maps, attrs={"round": 1, "step": "seeds"})
    for image_id, array in maps.items():
        back = S.read_seeds(path, image_id)
        assert back.dtype == np.uint8 and np.array_equal(back, array)
    with pytest.raises(ValueError, match="must be uint8"):
        S.write_seeds(tmp_path / "bad.h5", {"x": np.zeros((2, 2), np.int64)})
