"""AffinityNet's confident labels (step 1 of :mod:`.affinitynet`): numpy + the dense CRF, no torch.

A module of its own so that the CPU-only ``aff_label`` step and its spawned CRF
workers (conta_core.parallel) load no torch; :mod:`.affinitynet` re-exports all of it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..crf import dense_crf

STRIDE = 8
# psa's crf_inference (the "public code" whose CRF defaults the paper uses): bilateral sxy 80, srgb 13.
AFFINITYNET_CRF = {"iterations": 10, "pos_xy_std": 3.0, "pos_w": 3.0, "bi_xy_std": 80.0, "bi_rgb_std": 13.0,
                   "bi_w": 10.0}
DEFAULTS = {"alpha": 16.0, "alpha_low": 4.0, "alpha_high": 24.0, "radius": 5, "beta": 8.0, "steps": 256}


def background(cams: np.ndarray, alpha: float) -> np.ndarray:
    """(1 - max_c CAM_c) ** alpha, [1, H, W] (1 where the image has no class)."""
    peak = cams.max(axis=0, keepdims=True) if len(cams) else np.zeros((1, *cams.shape[1:]), np.float32)
    return np.power(np.clip(1.0 - peak, 0.0, 1.0), alpha).astype(np.float32)


def crf_scores(image: np.ndarray, cams: np.ndarray, alpha: float, crf: dict | None = None) -> np.ndarray:
    """CRF-refined probabilities [K+1, H, W] of [background ** alpha, CAMs] (as psa's _crf_with_alpha)."""
    scores = np.concatenate([background(cams, alpha), cams]).clip(1e-5, None)
    return dense_crf(image, scores / scores.sum(axis=0, keepdims=True), **(crf or AFFINITYNET_CRF))


def _pool(probs: np.ndarray, stride: int) -> np.ndarray:
    if stride == 1:
        return probs
    k, h, w = probs.shape
    ph, pw = -h % stride, -w % stride
    padded = np.pad(probs, ((0, 0), (0, ph), (0, pw)))  # zeros: no score outside the image
    return padded.reshape(k, (h + ph) // stride, stride, (w + pw) // stride, stride).mean(axis=(2, 4))


def confident_labels(probs_low: np.ndarray, probs_high: np.ndarray, class_ids: Sequence[int],
                     stride: int = STRIDE, ignore_index: int = 255) -> np.ndarray:
    """uint8 [ceil(H/s), ceil(W/s)]: a class where alpha-4 says so, 0 where alpha-24 says background, else 255."""
    low, high = _pool(probs_low, stride), _pool(probs_high, stride)
    lookup = np.array([0, *[int(c) for c in class_ids]], dtype=np.uint8)
    fg = lookup[low.argmax(axis=0)]
    label = np.where(fg == 0, np.uint8(ignore_index), fg)
    label[high.argmax(axis=0) == 0] = 0
    label[np.maximum(low.max(axis=0), high.max(axis=0)) < 1e-5] = ignore_index
    return label.astype(np.uint8)


def make_aff_label(image: np.ndarray, cams: np.ndarray, class_ids: Sequence[int], *,
                   alpha_low: float = DEFAULTS["alpha_low"], alpha_high: float = DEFAULTS["alpha_high"],
                   crf: dict | None = None) -> np.ndarray:
    """One image's full-resolution confident labels (uint8 [H, W]; 255 unsure) for affinity training."""
    if len(class_ids) == 0:  # no class: everything the background CRF keeps is background
        return np.zeros(image.shape[:2], np.uint8)
    return confident_labels(crf_scores(image, cams, alpha_low, crf), crf_scores(image, cams, alpha_high, crf),
                            class_ids, stride=1)


def cam_labels(cams: np.ndarray, class_ids: Sequence[int], alpha: float = DEFAULTS["alpha"]) -> np.ndarray:
    """The CAM's own labels: arg-max of [(1 - max CAM) ** alpha, CAMs] (alpha 16 by default)."""
    lookup = np.array([0, *[int(c) for c in class_ids]], dtype=np.uint8)
    return lookup[np.concatenate([background(cams, alpha), cams]).argmax(axis=0)]
