"""Localisation cues (seeds) for SEC and DSRG: CAM foreground, background cues, HDF5 seed maps.

Numpy only (the seed step is a CPU job that loads no torch). A seed map is a
uint8 [H, W] label map: 0 background, 1..C-1 the class, :data:`UNLABELLED`
(255) no cue. SEC and DSRG train on the labelled pixels only.

Foreground (both methods, CONTA Appendix 3.3/3.4: "pixels with the top 20 %
activation values in the CAM"), per class c of the image, on its CAM as
stored (max-normalised, [K, H, W]):

* ``rule="top_fraction"`` (default; the paper's words): the pixels whose value
  is at least the k-th largest value of that class's map, k = ceil(fraction *
  H * W), and greater than 0. Ties at the k-th value are all kept, so a class
  can get slightly more than k pixels; a map that is zero everywhere gives none.
* ``rule="max_fraction"`` (SEC's released localisation notebook,
  ``heat_map > 0.2 * max(heat_map)``): the pixels above ``fraction`` times the
  class's maximum.

Overlap between classes: the pixel goes to the class with the larger
(max-normalised) CAM value; on an exact tie, the class listed first in
``class_ids``. (SEC's cues are multi-hot and DSRG's seeds can be too; a single
label per pixel keeps one seed format for both methods and the evaluation.)

Background cues: where a pixel is both a foreground seed and a background cue,
the foreground seed wins (the class evidence is image-specific, the background
cue is a generic low-saliency score).

* DSRG (Appendix 3.3): normalised saliency (PNG value / 255, the DRFI maps DSRG
  users have) below 0.06: :func:`saliency_background`.
* SEC: its background cue is the ``fraction`` = 10 % least salient pixels of a
  saliency map (SEC's background notebook: Simonyan et al.'s gradient saliency
  of the classification network at conv4_1, max |grad| over channels, 3x3
  median filter, ``grad < sorted(grad)[int(0.1 * N)]``): :func:`lowest_fraction`.
  The saliency source used here is documented in :mod:`conta_core.methods.sec`.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..cam_labels import level_values

UNLABELLED = 255
FG_FRACTION = 0.2            # Appendix 3.3 / 3.4: top 20 % of the CAM per class
DSRG_SALIENCY_THRESHOLD = 0.06  # Appendix 3.3: background where normalised saliency < 0.06
SEC_BG_FRACTION = 0.1        # SEC: the 10 % least salient pixels are background
RULES = ("top_fraction", "max_fraction")


def class_seed_mask(cam: np.ndarray, fraction: float = FG_FRACTION, rule: str = "top_fraction", *,
                    levels: int | None = None) -> np.ndarray:
    """Boolean [H, W]: one class's foreground seed pixels (see the module docstring). ``levels``:
    ``cam`` is a quantised map's integers (``MapReader.get_levels``): the same pixels as its float32
    values give (ranks and thresholds are exact on levels: k -> value is strictly increasing)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"seed fraction must be in (0, 1], got {fraction}")
    cam = np.asarray(cam, dtype=np.float32) if levels is None else np.asarray(cam)
    if rule == "top_fraction":
        k = max(1, math.ceil(fraction * cam.size))
        kth = np.partition(cam.ravel(), cam.size - k)[cam.size - k]
        return (cam >= kth) & (cam > 0)
    if rule == "max_fraction":
        if levels is None:
            peak = float(cam.max()) if cam.size else 0.0
            return (cam > fraction * peak) & (cam > 0)
        # The float rule on the level values themselves (the same comparison, element by element):
        # the levels above the threshold are a top range, above = k > levels - their count.
        values = level_values(levels)
        peak = float(values[cam.max()]) if cam.size else 0.0
        return (cam > levels - np.count_nonzero(values > fraction * peak)) & (cam > 0)
    raise ValueError(f"seed rule must be one of {RULES}, got {rule!r}")


def foreground_seeds(cams: np.ndarray, class_ids: Sequence[int], fraction: float = FG_FRACTION,
                     rule: str = "top_fraction", *, levels: int | None = None) -> np.ndarray:
    """uint8 [H, W]: class index at each foreground seed, :data:`UNLABELLED` elsewhere.

    ``cams``: [K, H, W] maps of the image's classes ``class_ids`` (1..C-1); ``levels``: they are
    a quantised map's integers (the same seeds as their float32 values).
    """
    cams = np.asarray(cams, dtype=np.float32) if levels is None else np.asarray(cams)
    if cams.ndim != 3 or len(cams) != len(class_ids):
        raise ValueError(f"cams must be [K, H, W] with K = len(class_ids) = {len(class_ids)}, "
                         f"got shape {cams.shape}")
    out = np.full(cams.shape[1:], UNLABELLED, dtype=np.uint8)
    if not len(class_ids):
        return out
    masks = np.stack([class_seed_mask(c, fraction, rule, levels=levels) for c in cams])
    # Overlap: the larger CAM value wins; argmax takes the first class on ties.
    scores = np.where(masks, cams, -np.inf if levels is None else np.int16(-1))
    winner = scores.argmax(axis=0)
    seeded = masks.any(axis=0)
    lookup = np.asarray(class_ids, dtype=np.uint8)
    out[seeded] = lookup[winner[seeded]]
    return out


def saliency_background(saliency: np.ndarray, threshold: float = DSRG_SALIENCY_THRESHOLD) -> np.ndarray:
    """Boolean [H, W]: DSRG's background cue, normalised saliency (in [0, 1]) below ``threshold``."""
    saliency = np.asarray(saliency, dtype=np.float32)
    if saliency.size and (saliency.min() < 0 or saliency.max() > 1):
        raise ValueError(f"saliency must be normalised to [0, 1], got values in "
                         f"[{saliency.min():.3g}, {saliency.max():.3g}]")
    return saliency < threshold


def lowest_fraction(score: np.ndarray, fraction: float = SEC_BG_FRACTION) -> np.ndarray:
    """Boolean [H, W]: SEC's background cue, the pixels below the ``int(fraction * N)``-th smallest score.

    Written as SEC's notebook (strictly below ``sorted(score)[int(fraction * N)]``),
    so ties at the threshold are left out and at most ``int(fraction * N)`` pixels are chosen.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"background fraction must be in (0, 1), got {fraction}")
    score = np.asarray(score, dtype=np.float32)
    thr = np.sort(score.ravel())[int(fraction * score.size)]
    return score < thr


def seed_map(foreground: np.ndarray, background: np.ndarray | None) -> np.ndarray:
    """Combine a foreground seed map and a boolean background cue (foreground wins on overlap)."""
    out = np.array(foreground, dtype=np.uint8, copy=True)
    if background is not None:
        if background.shape != out.shape:
            raise ValueError(f"background cue {background.shape} and foreground seeds {out.shape} differ in size")
        out[np.asarray(background, bool) & (out == UNLABELLED)] = 0
    return out


def seeds_from_cams(cams: np.ndarray, class_ids: Sequence[int], background: np.ndarray | None, *,
                    fraction: float = FG_FRACTION, rule: str = "top_fraction",
                    levels: int | None = None) -> np.ndarray:
    """One image's seed map: CAM foreground seeds plus a background cue (``levels``: see
    :func:`foreground_seeds`)."""
    return seed_map(foreground_seeds(cams, class_ids, fraction, rule, levels=levels), background)


def one_hot_seeds(seeds: np.ndarray, num_classes: int) -> np.ndarray:
    """float32 [C, H, W] cue tensor of a seed map (all zero at unlabelled pixels), SEC's cue layout."""
    seeds = np.asarray(seeds)
    bad = np.setdiff1d(np.unique(seeds), np.r_[np.arange(num_classes), UNLABELLED])
    if bad.size:
        raise ValueError(f"seed map holds labels {bad.tolist()} outside 0..{num_classes - 1} and {UNLABELLED}")
    out = np.zeros((num_classes, *seeds.shape), dtype=np.float32)
    for c in range(num_classes):
        out[c][seeds == c] = 1.0
    return out


# --- HDF5: seed maps per round, through the project's one store -------------------------------

SEED_KIND = "seeds"


def write_seeds(path, seeds: dict[str, np.ndarray], attrs: dict | None = None) -> None:
    """Write {image id: uint8 seed map} as a ``seeds`` artifact (atomic, with provenance ``attrs``)."""
    from ..store import MapWriter

    with MapWriter(path, kind=SEED_KIND, attrs=attrs or {}) as writer:
        for image_id, array in seeds.items():
            array = np.asarray(array)
            if array.dtype != np.uint8 or array.ndim != 2:
                raise ValueError(f"seed map of {image_id!r} must be uint8 [H, W], got {array.dtype} {array.shape}")
            writer.put(image_id, array)


def read_seeds(path, image_id: str, expect: dict | None = None) -> np.ndarray:
    """One image's seed map from a ``seeds`` artifact."""
    from ..store import MapReader

    with MapReader(path, kind=SEED_KIND, expect=expect) as reader:
        return reader.get(image_id)
