"""Dense CRF (Krähenbühl and Koltun) through pydensecrf2.

Default parameters are the ones AffinityNet/IRNet use for CAM refinement:
Gaussian kernel (sxy 3, compat 3) and bilateral kernel (sxy 50, srgb 5, compat 10).

Memory: pydensecrf needs up to N * (393 + 75 L) bytes for N pixels and L labels
(fitted on random-colour images, the worst case for its lattice; a smooth photo
needs less; bench/predict_memory.md): 1.5 GB for a 1000x750 image with VOC's 21
labels, up to 24 GB for a 4000x3000 one. An image with a side over ``max_side``
(default :data:`CRF_MAX_SIDE`) is therefore refined downscaled, and the refined
probabilities are scaled back to its size, with a warning. The full-size input
and output ([L, H, W] float32 each, 1 GB apiece for 21 labels at 4000x3000) are
the caller's: prediction avoids both (conta_core.segment.predict_masks).
"""
from __future__ import annotations

import warnings

import numpy as np

CRF_MAX_SIDE = 1024  # <= 1.6 GB with 21 labels; VOC (500 px) and COCO (640 px) images are never downscaled


def _resize(planes: np.ndarray, height: int, width: int) -> np.ndarray:
    """[L, h, w] float32 -> [L, height, width], bilinear per plane (antialiased when shrinking),
    filled plane by plane (a stack of the planes would hold the output twice)."""
    from PIL import Image

    out = np.empty((len(planes), height, width), np.float32)
    for plane, target in zip(planes, out):
        target[...] = np.asarray(Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F")
                                 .resize((width, height), Image.Resampling.BILINEAR))
    return out


def dense_crf(image: np.ndarray, probs: np.ndarray, *, iterations: int = 10,
              pos_xy_std: float = 3.0, pos_w: float = 3.0, bi_xy_std: float = 50.0,
              bi_rgb_std: float = 5.0, bi_w: float = 10.0,
              max_side: int | None = CRF_MAX_SIDE) -> np.ndarray:
    """Refine ``probs`` ([L, H, W], each pixel a distribution) on an RGB uint8 image.

    A longer side over ``max_side`` (None: no limit): the CRF runs on the image and the
    probabilities downscaled to that side (aspect kept; the kernels' pixel widths as given,
    so they reach relatively further), and its output is scaled back to [L, H, W].
    """
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    labels, height, width = probs.shape
    if image.shape[:2] != (height, width):
        raise ValueError(f"image {image.shape[:2]} and probabilities {(height, width)} differ in size")
    small = (height, width)
    if max_side and max(height, width) > max_side:
        from PIL import Image

        from .data.images import working_size

        small = working_size(height, width, max_side)
        warnings.warn(f"dense CRF on a {width}x{height} image runs at {small[1]}x{small[0]} (longer side "
                      f"over max_side {max_side}: memory), its output scaled back", stacklevel=2)
        image = np.asarray(Image.fromarray(np.asarray(image, dtype=np.uint8))
                           .resize((small[1], small[0]), Image.Resampling.BILINEAR))
        probs = _resize(probs, *small)
        probs /= np.maximum(probs.sum(axis=0, keepdims=True), 1e-12)
    crf = dcrf.DenseCRF2D(small[1], small[0], labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs.astype(np.float32), clip=1e-5)))
    crf.addPairwiseGaussian(sxy=pos_xy_std, compat=pos_w)
    crf.addPairwiseBilateral(sxy=bi_xy_std, srgb=bi_rgb_std, rgbim=np.array(image, dtype=np.uint8, order="C", copy=True), compat=bi_w)
    q = np.asarray(crf.inference(iterations), dtype=np.float32).reshape(labels, *small)
    return q if small == (height, width) else _resize(q, height, width)


def crf_labels(image: np.ndarray, probs: np.ndarray, labels, **params) -> np.ndarray:
    """uint8 [H, W]: ``labels[argmax]`` of the refined ``probs`` (``labels[k]``: the class of plane k).

    A module-level function of this torch-free module, so that CRF worker processes
    (:class:`conta_core.parallel.ProcessMap`) that unpickle it load no torch."""
    return np.asarray(labels, dtype=np.uint8)[dense_crf(image, probs, **params).argmax(axis=0)]
