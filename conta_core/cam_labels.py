"""CAMs to labels, and batches of same-sized images (numpy only: CPU steps load no torch)."""
from __future__ import annotations

import numpy as np


def same_size_batches(ids: list[str], size_of, batch_size: int) -> list[list[str]]:
    """Group ids into batches of images of one size, keeping the original order within a size."""
    by_size: dict[tuple[int, int], list[str]] = {}
    for image_id in ids:
        by_size.setdefault(tuple(size_of(image_id)), []).append(image_id)
    return [group[i:i + batch_size] for group in by_size.values() for i in range(0, len(group), batch_size)]


def cam_to_label(cams: np.ndarray, class_ids: list[int], bg_threshold: float) -> np.ndarray:
    """Seed labels: argmax over [bg_threshold, CAM_1..CAM_K], mapped to class indices."""
    height, width = cams.shape[1:]
    scores = np.concatenate([np.full((1, height, width), bg_threshold, np.float32), cams])
    lookup = np.array([0] + list(class_ids), dtype=np.uint8)
    return lookup[scores.argmax(axis=0)]


def cam_to_label_power(cams: np.ndarray, class_ids: list[int], alpha: float) -> np.ndarray:
    """SEAM/AffinityNet's CAM labels: argmax over [(1 - max_c CAM_c) ** alpha, CAM_1..CAM_K]
    (1 where the image has no class), mapped to class indices."""
    peak = cams.max(axis=0, keepdims=True) if len(cams) else np.zeros((1, *cams.shape[1:]), np.float32)
    background = np.power(np.clip(1.0 - peak, 0.0, 1.0), alpha).astype(np.float32)
    lookup = np.array([0] + list(class_ids), dtype=np.uint8)
    return lookup[np.concatenate([background, cams]).argmax(axis=0)]
