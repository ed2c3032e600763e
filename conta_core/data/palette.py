"""The PASCAL VOC colour map and index-PNG writing.

Masks are stored as palette ("P" mode) PNGs whose pixel values are class
indices, exactly like VOC ``SegmentationClass``: the colours are only for
people looking at the files, never used to decode a mask.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def voc_colormap(n: int = 256) -> list[list[int]]:
    """The standard VOC colour map (bit-interleaved class index), ``n`` entries.

    Entry 255 is (224, 224, 192), the cream colour of VOC's void border.
    """
    colours = []
    for index in range(n):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        colours.append([r, g, b])
    return colours


def save_index_png(path: str | Path, mask: np.ndarray,
                   palette: list[list[int]] | None = None) -> None:
    """Write a uint8 HxW index map as a palette PNG (VOC colours by default)."""
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"index mask must be uint8 HxW, got {mask.dtype} {mask.shape}")
    colours = palette if palette is not None else voc_colormap()
    flat = [channel for colour in colours for channel in colour]
    flat += [0] * (768 - len(flat))
    height, width = mask.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(mask).tobytes())
    image.putpalette(flat)
    image.save(path, format="PNG", optimize=False)
