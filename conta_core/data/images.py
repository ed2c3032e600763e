"""Reading images and masks one way everywhere: EXIF orientation, ``dataset.max_side``.

Why one place: a photo whose EXIF tag says "rotate 90 degrees" is shown upright
by every viewer (and usually annotated upright), but its stored pixels lie on
their side. If one step applied the tag and another did not, images and masks
would silently disagree. Here the tag is always applied to images (never to
masks, which are arrays of class indices), and indexing checks each mask
against the upright size.

``max_side`` bounds memory: CAM inference runs at up to 2x the image size with
flips, so one 4000x3000 photo costs ~10 GB. An image whose longer side exceeds
``max_side`` is read downscaled (bilinear, aspect kept) and its mask with it
(nearest neighbour), so every step - training, CAMs, pseudo-masks, prediction
and evaluation - works at the same reduced size and stays aligned.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

EXIF_ORIENTATION = 0x0112
# Orientations 5..8 are a transpose or a 90/270 degree turn: width and height swap.
SWAPPING = {5, 6, 7, 8}
ORIENTATION_NAMES = {2: "mirrored", 3: "rotated 180", 4: "flipped", 5: "transposed",
                     6: "rotated 90 clockwise", 7: "transversed", 8: "rotated 90 counter-clockwise"}
# Without dataset.max_side, images with a longer side above this are named at indexing.
LARGE_SIDE = 2048


def orientation(image: Image.Image) -> int:
    """The image's EXIF orientation 1..8 (1, upright, when absent or malformed)."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError, TypeError):
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright_size(stored: tuple[int, int], orient: int) -> tuple[int, int]:
    """(width, height) after the orientation is applied."""
    return (stored[1], stored[0]) if orient in SWAPPING else stored


def working_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """(height, width) an image is read at: the longer side capped at ``max_side``."""
    if not max_side or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def read_rgb(path: str | Path, max_side: int | None = None) -> np.ndarray:
    """uint8 HxWx3 RGB, upright (EXIF applied), longer side at most ``max_side``."""
    with Image.open(path) as image:
        orient = orientation(image)
        width, height = upright_size(image.size, orient)
        target_h, target_w = working_size(height, width, max_side)
        if (target_h, target_w) != (height, width) and image.format == "JPEG":
            # Decode a JPEG at 1/2, 1/4 or 1/8 scale (never below the target): the
            # full-size pixels of a huge photo are then never held in memory.
            stored = (target_h, target_w) if orient in SWAPPING else (target_w, target_h)
            image.draft("RGB", stored)
        upright = ImageOps.exif_transpose(image) if orient != 1 else image
        rgb = upright.convert("RGB")
        if rgb.size != (target_w, target_h):
            rgb = rgb.resize((target_w, target_h), Image.Resampling.BILINEAR)
        return np.asarray(rgb)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """A class-index mask at (height, width) by nearest neighbour (no new values)."""
    if mask.shape == (height, width):
        return mask
    return np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST))
