"""CAMs to labels, and batches of same-sized images (numpy only: CPU steps load no torch)."""
from __future__ import annotations

import functools

import numpy as np

from .store_codec import dequantise


def same_size_batches(ids: list[str], size_of, batch_size: int) -> list[list[str]]:
    """Group ids into batches of images of one size, keeping the original order within a size."""
    by_size: dict[tuple[int, int], list[str]] = {}
    for image_id in ids:
        by_size.setdefault(tuple(size_of(image_id)), []).append(image_id)
    return [group[i:i + batch_size] for group in by_size.values() for i in range(0, len(group), batch_size)]


def level_values(levels: int) -> np.ndarray:
    """float32 [levels + 1]: the value the store gives each level k of a quantised map
    (``MapReader.get`` = ``store_codec.dequantise``), strictly increasing in k."""
    return dequantise(np.arange(levels + 1), levels)


@functools.lru_cache(maxsize=256)
def levels_at_most(value: float, levels: int) -> int:
    """The largest level k whose value (:func:`level_values`) is <= ``float32(value)``, -1 if none:
    a float32 map m of levels k has ``m <= float32(value)`` exactly where ``k <= levels_at_most(value, levels)``."""
    return int(np.count_nonzero(level_values(levels) <= np.float32(value))) - 1


def background_argmax(cams: np.ndarray, bg_score: float, levels: int | None = None) -> np.ndarray:
    """Channel index [H, W] of the argmax over [bg_score, CAM_1..CAM_K] (0: background; ties go to
    the first channel). ``levels``: ``cams`` are a quantised map's integers (``MapReader.get_levels``),
    and the result is the float32 maps' exactly (k -> value is strictly increasing)."""
    if levels is None:
        height, width = cams.shape[1:]
        scores = np.concatenate([np.full((1, height, width), bg_score, np.float32),
                                 cams.astype(np.float32, copy=False)])
        return scores.argmax(axis=0)
    if not len(cams):
        return np.zeros(cams.shape[1:], np.intp)
    # Background wins where it is >= every CAM, i.e. where the largest level is at most bg's level.
    channel = cams.argmax(axis=0) + 1
    channel[cams.max(axis=0) <= levels_at_most(bg_score, levels)] = 0
    return channel


def label_stored_cam(labeller, cams, image_id: str, class_ids: list[int]) -> np.ndarray:
    """``labeller(cam, class_ids)`` of the CAM ``image_id`` of the reader ``cams``: on the stored
    levels where the labeller takes ``levels=`` (its ``takes_levels`` attribute is true) and the
    file is quantised (exact, and the read skips the float32 conversion), else on float32."""
    if getattr(labeller, "takes_levels", False) and getattr(cams, "levels", None):
        k, levels = cams.get_levels(image_id)
        return labeller(k, class_ids, levels=levels)
    return labeller(cams.get(image_id).astype(np.float32, copy=False), class_ids)


def cam_to_label(cams: np.ndarray, class_ids: list[int], bg_threshold: float, *,
                 levels: int | None = None) -> np.ndarray:
    """Seed labels: argmax over [bg_threshold, CAM_1..CAM_K], mapped to class indices.
    ``levels``: ``cams`` are a quantised map's integers (the same labels as their float32 values)."""
    return np.array([0] + list(class_ids), dtype=np.uint8)[background_argmax(cams, bg_threshold, levels)]


def cam_to_label_power(cams: np.ndarray, class_ids: list[int], alpha: float) -> np.ndarray:
    """SEAM/AffinityNet's CAM labels: argmax over [(1 - max_c CAM_c) ** alpha, CAM_1..CAM_K]
    (1 where the image has no class), mapped to class indices."""
    peak = cams.max(axis=0, keepdims=True) if len(cams) else np.zeros((1, *cams.shape[1:]), np.float32)
    background = np.power(np.clip(1.0 - peak, 0.0, 1.0), alpha).astype(np.float32)
    lookup = np.array([0] + list(class_ids), dtype=np.uint8)
    return lookup[np.concatenate([background, cams]).argmax(axis=0)]
