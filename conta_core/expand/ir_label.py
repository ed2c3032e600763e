"""IRNet's inter-pixel relation (IR) labels (``cam_to_ir_label.py``): numpy + the dense CRF, no torch.

A module of its own so that the CPU-only ``ir_label`` step and its spawned CRF
workers (conta_core.parallel) load no torch; :mod:`.irnet` re-exports all of it.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from conta_core.cam_labels import background_argmax

__all__ = ["make_ir_label", "confident_labels", "labels_to_probs", "IR_CRF_PARAMS", "IR_CRF_GT_PROB"]

# IRNet's ``imutils.crf_inference_label``: 10 mean-field iterations, Gaussian
# kernel sxy 3 / compat 3, bilateral kernel sxy 50 / srgb 5 / compat 10, and a
# unary from hard labels with probability 0.7 on the given label.
IR_CRF_PARAMS = {"iterations": 10, "pos_xy_std": 3.0, "pos_w": 3.0, "bi_xy_std": 50.0,
                 "bi_rgb_std": 5.0, "bi_w": 10.0}
IR_CRF_GT_PROB = 0.7


def labels_to_probs(labels: np.ndarray, n_labels: int, gt_prob: float = IR_CRF_GT_PROB) -> np.ndarray:
    """Hard labels ``[H, W]`` -> ``[L, H, W]``: ``gt_prob`` on the label, the rest shared equally.

    With ``-log`` of this as the unary this is pydensecrf's
    ``unary_from_labels(labels, L, gt_prob, zero_unsure=False)``, which IRNet uses.
    """
    if n_labels < 2:
        raise ValueError("a CRF over labels needs at least two labels")
    probs = np.full((n_labels, *labels.shape), (1.0 - gt_prob) / (n_labels - 1), dtype=np.float32)
    np.put_along_axis(probs, labels[None].astype(np.int64), np.float32(gt_prob), axis=0)
    return probs


def _default_crf() -> Callable:
    from conta_core.crf import dense_crf  # the project's pydensecrf wrapper
    return dense_crf


def confident_labels(image: np.ndarray, cams: np.ndarray, bg_score: float, crf_fn: Callable | None = None, *,
                     gt_prob: float = IR_CRF_GT_PROB, crf_params: dict | None = None,
                     levels: int | None = None) -> np.ndarray:
    """CRF-refined argmax of ``[bg_score, cams]``: channel index ``[H, W]`` (0 = background).

    IRNet pads the CAMs with a constant background score, takes the argmax (ties
    go to the background, the first channel), and refines that hard map with a
    dense CRF on the image. ``levels``: ``cams`` are a quantised map's integers
    (the same arg-max as their float32 values: :func:`conta_core.cam_labels.background_argmax`).
    """
    hard = background_argmax(cams, bg_score, levels)
    crf_fn = crf_fn or _default_crf()
    params = dict(IR_CRF_PARAMS, **(crf_params or {}))
    q = crf_fn(np.ascontiguousarray(image), labels_to_probs(hard, len(cams) + 1, gt_prob), **params)
    return np.asarray(q).argmax(0)


def make_ir_label(image: np.ndarray, cams: np.ndarray, class_ids: Sequence[int], conf_fg: float = 0.30,
                  conf_bg: float = 0.05, crf_fn: Callable | None = None, *, gt_prob: float = IR_CRF_GT_PROB,
                  crf_params: dict | None = None, ignore_index: int = 255, levels: int | None = None) -> np.ndarray:
    """IRNet's IR label (``cam_to_ir_label.py``): uint8 ``[H, W]``, 0 bg, class id, or ``ignore_index``.

    image: uint8 ``[H, W, 3]``; cams: ``[K, H, W]`` max-normalised CAMs of the
    image's K labelled classes ``class_ids`` (foreground indices, 1..C-1); ``levels``:
    they are a quantised map's integers (``MapReader.get_levels``; the same label).

    Two CRF-refined maps (:func:`confident_labels`):

    * ``fg`` with background score ``conf_fg`` (0.30): few, confident foreground pixels;
    * ``bg`` with background score ``conf_bg`` (0.05): background only where every CAM is tiny.

    The rule (IRNet: ``conf = fg.copy(); conf[fg == 0] = 255; conf[bg + fg == 0] = 0``):

    * ``fg`` says class c                -> c (whatever ``bg`` says);
    * ``fg`` says bg and ``bg`` says bg  -> 0;
    * ``fg`` says bg, ``bg`` says a class -> ``ignore_index`` (unsure).

    crf_fn: ``f(image, probs [L, H, W], *, iterations, pos_xy_std, pos_w, bi_xy_std,
    bi_rgb_std, bi_w) -> [L, H, W]``; default :func:`conta_core.crf.dense_crf`.
    """
    image = np.asarray(image)
    cams = np.asarray(cams, dtype=np.float32) if levels is None else np.asarray(cams)
    if cams.ndim != 3 or cams.shape[0] != len(class_ids):
        raise ValueError(f"cams must be [K, H, W] with K = {len(class_ids)} classes, got {cams.shape}")
    if image.shape[:2] != cams.shape[1:]:
        raise ValueError(f"image {image.shape[:2]} and cams {cams.shape[1:]} differ in size")
    if len(class_ids) == 0:
        # No labelled class: IRNet never sees such images; everything is background.
        return np.zeros(image.shape[:2], dtype=np.uint8)
    keys = np.asarray([0, *[int(c) for c in class_ids]], dtype=np.uint8)
    fg = keys[confident_labels(image, cams, conf_fg, crf_fn, gt_prob=gt_prob, crf_params=crf_params, levels=levels)]
    bg = keys[confident_labels(image, cams, conf_bg, crf_fn, gt_prob=gt_prob, crf_params=crf_params, levels=levels)]
    label = fg.copy()
    label[fg == 0] = ignore_index
    label[(fg == 0) & (bg == 0)] = 0
    return label
