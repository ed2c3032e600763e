"""The confounder set C, the reduced masks X_m and the prior P(c_i) of CONTA (numpy only).

Eq. 3 itself (M_t from these) is :mod:`conta_core.conta`.

Choices the paper leaves open, fixed here (config keys in brackets):

* The confounder set has one entry per *foreground* class (n = C - 1): the
  image-level labels that the classifier predicts are foreground classes.
* Masks are compared on an ``h x w`` grid over normalised image coordinates
  [``conta.map_size``, default 32 x 32]. A mask is reduced to that grid by area
  averaging (each cell holds the fraction of its pixels that belong to the class),
  so images of any size and aspect ratio land on the same grid.
* c_i is the mean, over training images whose image-level labels contain class i,
  of the reduced binary mask of class i in that image's mask (the round's
  predicted segmentation, or its pseudo-mask [``confounder.source``]). A class
  that never appears gets an all-zero map and count 0: it then contributes
  nothing to M, and its attention logit is 0.
* X_m, the image-specific mask fed to W1, is the reduced *foreground* map of the
  image's mask (pixels of any foreground class). Unsure/void pixels count as
  background.
* P(c_i) is uniform 1/n as in the paper, or the empirical class frequency
  [``conta.prior: uniform | empirical``].

Controls [``conta.mode``], which change only what the confounder file holds:

* ``permuted`` (the null arm): C as in ``adjust``, but image k is given the X_m
  of another training image, by a derangement fixed by the seed (the same in
  every round). Any effect of CONTA must beat this arm: it has the same M
  statistics without the image-specific pairing.
* ``oracle`` (research only, never a default): C and X_m from the ground-truth
  masks of the training images, an upper bound of what context can give. It
  uses pixel labels that weak supervision does not have.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np


def _cell_bounds(length: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell k covers [floor(k L / n), ceil((k + 1) L / n)): adaptive average pooling's cells."""
    k = np.arange(cells)
    return (k * length) // cells, -((-(k + 1) * length) // cells)


def reduce_map(binary: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average a 0/1 map ([H, W]) onto an ``h x w`` grid (adaptive average pooling)."""
    values = np.asarray(binary, dtype=np.float64)
    (row_start, row_end), (col_start, col_end) = (_cell_bounds(n, cells) for n, cells in zip(values.shape, size))
    integral = np.zeros((values.shape[0] + 1, values.shape[1] + 1))
    integral[1:, 1:] = values.cumsum(0).cumsum(1)
    sums = (integral[row_end][:, col_end] - integral[row_start][:, col_end]
            - integral[row_end][:, col_start] + integral[row_start][:, col_start])
    area = np.outer(row_end - row_start, col_end - col_start)
    return (sums / area).astype(np.float32)


def reduce_foreground(mask: np.ndarray, size: tuple[int, int], void: int = 255) -> np.ndarray:
    """X_m: the fraction of foreground pixels in each cell of the grid."""
    return reduce_map((mask != 0) & (mask != void), size)


def build_confounder(items: Iterable[tuple[np.ndarray, list[int]]], num_classes: int,
                     size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The confounder set C = {c_1..c_n} from (mask, image-level labels) pairs.

    ``num_classes`` counts the background (index 0); the result has one map per
    foreground class: ``confounder[i - 1]`` is c_i, ``counts[i - 1]`` the number
    of images that were averaged for it.
    """
    n = num_classes - 1
    sums = np.zeros((n, *size), dtype=np.float64)
    counts = np.zeros(n, dtype=np.int64)
    for mask, labels in items:
        for cls in labels:
            if not 1 <= cls < num_classes:
                raise ValueError(f"label {cls} outside the foreground range 1..{num_classes - 1}")
            sums[cls - 1] += reduce_map(mask == cls, size)
            counts[cls - 1] += 1
    confounder = np.divide(sums, counts[:, None, None], out=np.zeros_like(sums),
                           where=counts[:, None, None] > 0)
    return confounder.astype(np.float32), counts


def class_prior(counts: np.ndarray, kind: str) -> np.ndarray:
    """P(c_i): ``uniform`` (1/n, the paper) or ``empirical`` (class frequency)."""
    n = len(counts)
    if kind == "uniform":
        return np.full(n, 1.0 / n, dtype=np.float32)
    if kind == "empirical":
        total = counts.sum()
        if total == 0:
            raise ValueError("empirical prior needs at least one labelled image")
        return (counts / total).astype(np.float32)
    raise ValueError(f"conta.prior must be 'uniform' or 'empirical', got {kind!r}")


def derangement(ids: list[str], seed: int, salt: int = 11) -> dict[str, str]:
    """Image id -> another image's id: one cycle through a shuffle seeded by (seed, salt), so no
    image keeps its own. The ``permuted`` arm uses salt 11, the M-usage diagnostic 13."""
    if len(ids) < 2:
        raise ValueError("a permutation of X_m needs at least two training images")
    order = [ids[k] for k in np.random.default_rng([seed, salt]).permutation(len(ids))]
    return {order[k]: order[(k + 1) % len(order)] for k in range(len(order))}
