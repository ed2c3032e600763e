"""SEAM's augmentation: long-side rescale, flip, colour jitter, crop; reproducible from (seed, epoch, item)."""
from __future__ import annotations

import numpy as np
import torch

from conta_core.seam_data import SeamClassificationDataset, color_jitter


class FakeIndex:
    num_classes = 4

    def __init__(self):
        rng = np.random.default_rng(0)
        self.images = {"a": rng.integers(0, 256, (30, 50, 3), dtype=np.uint8),
                       "b": rng.integers(0, 256, (60, 20, 3), dtype=np.uint8)}

    def read_image(self, image_id):
        return self.images[image_id]

    def labels(self, image_id):
        return [1, 3] if image_id == "a" else [2]


def test_long_side_range_view_and_labels():
    ds = SeamClassificationDataset(FakeIndex(), ["a", "b"], crop=32, long_side=(40, 70), seed=5)
    lengths = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i, image_id in enumerate(["a", "b"]):
            item = ds[i]
            assert item["image"].shape == (3, 32, 32)
            a_x, _, a_y, _ = item["view"].tolist()
            h, w = ds.index.images[image_id].shape[:2]
            sw, sh = 32 / abs(a_x), 32 / a_y          # the rescaled image's size, from the view
            long = max(sw, sh)
            assert 40 - 0.5 <= long <= 70 + 0.5
            assert abs(sw / sh - w / h) < 0.1          # aspect kept
            lengths.add(round(long))
    assert len(lengths) > 4
    assert ds[0]["target"].tolist() == [1.0, 0.0, 1.0]
    again = SeamClassificationDataset(FakeIndex(), ["a", "b"], crop=32, long_side=(40, 70), seed=5)
    again.set_epoch(5)
    assert torch.equal(again[1]["image"], ds[1]["image"])


def test_color_jitter_identity_and_range():
    image = np.random.default_rng(1).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    none = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}
    assert np.abs(color_jitter(image, np.random.default_rng(0), none).astype(int) - image).max() <= 1
    jittered = color_jitter(image, np.random.default_rng(0))
    assert jittered.dtype == np.uint8 and jittered.shape == image.shape
    assert np.abs(jittered.astype(int) - image).mean() > 2
    # brightness alone scales the image
    only_b = {"brightness": 0.3, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}
    rng = np.random.default_rng(3)
    factor = np.random.default_rng(3).uniform(0.7, 1.3)
    expected = np.clip(np.round(image / 255.0 * factor * 255), 0, 255)
    assert np.abs(color_jitter(image, rng, only_b).astype(int) - expected).max() <= 1
