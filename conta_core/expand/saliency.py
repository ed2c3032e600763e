"""Saliency maps for DSRG's background cue (Appendix 3.3): read from a folder, or computed.

DSRG (and CONTA on it) takes the background cue from DRFI saliency maps (Jiang et
al., CVPR 2013): background where the saliency, normalised to [0, 1], is below
0.06 (:func:`conta_core.expand.seeds.saliency_background`).

* ``dataset.saliency_root``: one PNG per image id, ``<root>/<id>.png``, the
  format DSRG users already have (8-bit grey, 0..255; 16-bit grey and RGB
  with equal channels are accepted too), at the size of the image file (the
  upright image, before ``max_side``). Checked like the masks: a missing,
  unreadable, wrongly sized or colour file is a :class:`DatasetError` naming
  the image id and the file. The map is resized (bilinear) to the working size.
* No folder: :func:`opencv_saliency`, OpenCV's static spectral-residual
  saliency (Hou and Zhang, CVPR 2007; ``pip install 'conta-core[dsrg]'``,
  which brings ``opencv-contrib-python-headless``). It is an unsupervised
  stand-in for DRFI, which has no maintained Python package: blurred
  (:data:`BLUR`), min-max normalised per image, and its 0.06 threshold marks
  a different share of the image than DRFI's (see :func:`opencv_saliency`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..data.reader import DatasetError

SALIENCY_SUFFIX = ".png"
INSTALL_HINT = ("pip install 'conta-core[dsrg]' (or opencv-contrib-python-headless), or give "
                "dataset.saliency_root, a folder with one saliency PNG per image id")


def saliency_path(root: str | Path, image_id: str) -> Path:
    return Path(root) / f"{image_id}{SALIENCY_SUFFIX}"


def read_saliency_png(path: str | Path, image_id: str, size: tuple[int, int]) -> np.ndarray:
    """float32 [H, W] in [0, 1] from a saliency PNG that must be ``size`` = (height, width)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"saliency map of {image_id!r} is missing: {path} does not exist "
                           "(dataset.saliency_root needs one <id>.png per image)")
    try:
        with Image.open(path) as image:
            image.load()
            mode, width, height = image.mode, image.width, image.height
            array = np.asarray(image)
    except Exception as err:  # truncated or foreign files fail in many PIL error types
        raise DatasetError(f"saliency map of {image_id!r} cannot be read: {path} "
                           f"({err.__class__.__name__}: {err})") from None
    if (height, width) != tuple(size):
        raise DatasetError(f"saliency map of {image_id!r} is {height}x{width} but the image is "
                           f"{size[0]}x{size[1]} (height x width): {path}")
    if mode == "L":
        return array.astype(np.float32) / 255.0
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        if mode == "I" and (array.min() < 0 or array.max() > 65535):
            raise DatasetError(f"saliency map of {image_id!r} has values outside 0..65535: {path}")
        return array.astype(np.float32) / 65535.0
    if mode in ("RGB", "RGBA"):
        rgb = array[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise DatasetError(f"saliency map of {image_id!r} is a colour image (its channels differ); "
                               f"expected a grey PNG: {path}")
        return rgb[..., 0].astype(np.float32) / 255.0
    raise DatasetError(f"saliency map of {image_id!r} is a mode {mode!r} image, expected a grey PNG: {path}")


def resize_saliency(saliency: np.ndarray, height: int, width: int) -> np.ndarray:
    if saliency.shape == (height, width):
        return saliency
    resized = Image.fromarray(saliency.astype(np.float32), mode="F").resize((width, height),
                                                                          Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


BLUR = 0.04  # Gaussian sigma of the fallback, as a fraction of the shorter image side


def opencv_saliency(image: np.ndarray, blur: float = BLUR) -> np.ndarray:
    """float32 [H, W] in [0, 1]: OpenCV's static spectral-residual saliency of an RGB uint8 image.

    The spectral residual marks an object's edges and corners and leaves the
    inside of a flat object near 0, which the 0.06 threshold would call
    background; a Gaussian blur of ``blur`` x the shorter side fills it. On
    the 18 voc_mini images (used to choose it), the share of cue pixels that
    are ground-truth background is 0.849 without the blur and 0.930 with it
    (0.971 at 0.08), the cue covering 48 %, 31 % (20 %) of the image; the
    background is 72 % of those images.
    """
    try:
        import cv2
        create = cv2.saliency.StaticSaliencySpectralResidual_create
    except (ImportError, AttributeError):
        raise RuntimeError("no saliency maps: the OpenCV fallback needs opencv-contrib-python-headless "
                           f"(cv2.saliency); {INSTALL_HINT}") from None
    ok, sal = create().computeSaliency(np.ascontiguousarray(image[..., ::-1]))  # OpenCV wants BGR
    if not ok:
        raise RuntimeError(f"OpenCV saliency failed on an image of shape {image.shape}")
    sal = np.asarray(sal, dtype=np.float32)
    if blur > 0:
        sal = cv2.GaussianBlur(sal, (0, 0), blur * min(sal.shape))
    lo, hi = float(sal.min()), float(sal.max())
    return (sal - lo) / (hi - lo) if hi > lo else np.zeros_like(sal)


def load_saliency(index, image_id: str, saliency_root: str | Path | None) -> np.ndarray:
    """Image ``image_id``'s normalised saliency at the index's working size.

    ``index`` is a :class:`~conta_core.data.reader.DatasetIndex` (``size``,
    ``original_size``, ``read_image``). ``saliency_root`` None: the OpenCV fallback.
    """
    height, width = index.size(image_id)
    if saliency_root is None:
        return opencv_saliency(index.read_image(image_id))
    sal = read_saliency_png(saliency_path(saliency_root, image_id), image_id, index.original_size(image_id))
    return resize_saliency(sal, height, width)
