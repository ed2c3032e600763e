"""Dense CRF (Krähenbühl and Koltun) through pydensecrf2.

Default parameters are the ones AffinityNet/IRNet use for CAM refinement:
Gaussian kernel (sxy 3, compat 3) and bilateral kernel (sxy 50, srgb 5, compat 10).
"""
from __future__ import annotations

import numpy as np


def dense_crf(image: np.ndarray, probs: np.ndarray, *, iterations: int = 10,
              pos_xy_std: float = 3.0, pos_w: float = 3.0, bi_xy_std: float = 50.0,
              bi_rgb_std: float = 5.0, bi_w: float = 10.0) -> np.ndarray:
    """Refine ``probs`` ([L, H, W], each pixel a distribution) on an RGB uint8 image."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    labels, height, width = probs.shape
    if image.shape[:2] != (height, width):
        raise ValueError(f"image {image.shape[:2]} and probabilities {(height, width)} differ in size")
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs.astype(np.float32), clip=1e-5)))
    crf.addPairwiseGaussian(sxy=pos_xy_std, compat=pos_w)
    crf.addPairwiseBilateral(sxy=bi_xy_std, srgb=bi_rgb_std, rgbim=np.array(image, dtype=np.uint8, order="C", copy=True), compat=bi_w)
    q = crf.inference(iterations)
    return np.asarray(q, dtype=np.float32).reshape(labels, height, width)
