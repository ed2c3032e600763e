"""``expand.method: crf``: CAM seeds refined by a dense CRF into pseudo-masks.

The background score is the constant ``bg_threshold`` (or, with
``bg_power``, AffinityNet's (1 - max_c CAM_c) ** bg_power); the class scores are
the max-normalised CAMs. The scores are normalised into a distribution per pixel,
refined by the dense CRF, and the arg-max is the pseudo-mask.
"""
from __future__ import annotations

import numpy as np

from ..crf import dense_crf


def background_score(cams: np.ndarray, bg_threshold: float, bg_power: float | None) -> np.ndarray:
    if bg_power is None:
        return np.full((1, *cams.shape[1:]), bg_threshold, dtype=np.float32)
    peak = cams.max(axis=0, keepdims=True) if len(cams) else np.zeros((1, *cams.shape[1:]), np.float32)
    return np.power(1.0 - peak, bg_power).astype(np.float32)


def expand_crf(image: np.ndarray, cams: np.ndarray, class_ids: list[int], *, bg_threshold: float,
               bg_power: float | None = None, crf: dict | None = None) -> np.ndarray:
    """uint8 [H, W] pseudo-mask with values in {0} + class_ids."""
    scores = np.concatenate([background_score(cams, bg_threshold, bg_power), cams]).clip(1e-5, None)
    probs = scores / scores.sum(axis=0, keepdims=True)
    refined = dense_crf(image, probs, **(crf or {}))
    lookup = np.array([0] + list(class_ids), dtype=np.uint8)
    return lookup[refined.argmax(axis=0)]
