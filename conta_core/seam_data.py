"""SEAM's (and AffinityNet's) training augmentation for the classifier.

Per image (the authors' transform list): the long side rescaled to a random
integer length in ``long_side`` (paper: [448, 768]), horizontal flip with
p = 0.5, colour jitter (brightness, contrast, saturation 0.3, hue 0.1), and a
random ``crop`` (448) with zero padding of the normalised image. Randomness is
drawn from (seed, epoch, item) as in :mod:`conta_core.data.datasets`, so a
resumed run sees the same samples. Items carry the crop's ``view`` so X_m
follows the image in CONTA rounds.
"""
from __future__ import annotations

import numpy as np
import torch

from .data.datasets import ClassificationDataset, random_scale_flip_crop, to_tensor

JITTER = {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.1}
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _hue_shift(rgb: np.ndarray, shift: float) -> np.ndarray:
    """Rotate the hue of an [H, W, 3] image in [0, 1] by ``shift`` turns (HSV, as torchvision)."""
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv  # numpy only; imported where used
    hsv = rgb_to_hsv(rgb)
    hsv[..., 0] = (hsv[..., 0] + shift) % 1.0
    return hsv_to_rgb(hsv).astype(np.float32)


def color_jitter(image: np.ndarray, rng: np.random.Generator, jitter: dict | None = None) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8: brightness, contrast, saturation factors in [1 - j, 1 + j], hue in [-j, j]."""
    j = JITTER if jitter is None else jitter
    x = image.astype(np.float32) / 255.0
    b, c, s = (rng.uniform(1 - j[k], 1 + j[k]) for k in ("brightness", "contrast", "saturation"))
    h = rng.uniform(-j["hue"], j["hue"])
    x = np.clip(x * b, 0, 1)
    x = np.clip((x - float((x @ _LUMA).mean())) * c + float((x @ _LUMA).mean()), 0, 1)
    gray = (x @ _LUMA)[..., None]
    x = np.clip((x - gray) * s + gray, 0, 1)
    if h:
        x = _hue_shift(x, h)
    return np.round(x * 255).astype(np.uint8)


class SeamClassificationDataset(ClassificationDataset):
    """(image crop, multi-hot labels, X_m, view) with SEAM's augmentation."""

    def __init__(self, index, ids: list[str], *, crop: int, long_side: tuple[int, int], seed: int,
                 x_m=None, jitter: dict | None = None):
        super().__init__(index, ids, crop=crop, scale_range=(1.0, 1.0), seed=seed, x_m=x_m)
        lo, hi = int(long_side[0]), int(long_side[1])
        if not 0 < lo <= hi:
            raise ValueError(f"classifier.long_side must be [min, max] with 0 < min <= max, got {long_side}")
        self.long_side, self.jitter = (lo, hi), jitter

    def __getitem__(self, item: int) -> dict:
        image_id = self.ids[item]
        rng = self.rng(item)
        image = self.index.read_image(image_id)
        length = int(rng.integers(self.long_side[0], self.long_side[1] + 1))
        scale = length / max(image.shape[:2])
        image = color_jitter(image, rng, self.jitter)
        crop, _, view = random_scale_flip_crop(to_tensor(image), None, self.crop, (scale, scale), rng)
        target = torch.zeros(self.num_foreground)
        for cls in self.index.labels(image_id):
            target[cls - 1] = 1.0
        x_m = torch.from_numpy(self.x_m(image_id)) if self.x_m is not None else torch.zeros(0)
        return {"image": crop, "target": target, "x_m": x_m, "view": view}
