"""DSRG's seeded region growing (Huang et al., CVPR 2018), numpy + scipy only.

Rule, for the image's classes T (background 0 always among them): with the
class probabilities P restricted to T, a pixel u that carries no seed joins
the seed region of class c when

* u is connected to a seed pixel of class c through pixels that satisfy the
  criterion (region growing iterated to convergence: a pixel joins once a
  neighbour has joined), and
* c = argmax_{k in T} P_k(u) and P_c(u) > theta_c, with theta the background
  or the foreground threshold (strictly greater, as DSRG's code).

Neighbourhood: 8-connected, as DSRG's code (``CC_labeling_8.py``: its
connected-component labelling over the candidate pixels links W, N, NW and NE
neighbours in its raster pass, i.e. the 8-neighbourhood).

Thresholds: the CONTA paper (Appendix 3.3) and DSRG's paper give 0.99 for the
foreground and 0.85 for the background (:data:`FG_THRESHOLD`,
:data:`BG_THRESHOLD`), the defaults here. DSRG's released training prototxt
passes ``{'th1': 0.99, 'th2': 0.85}`` and its ``generate_seed_step`` applies
th2 = 0.85 to foreground classes and th1 = 0.99 (and 0.85) to the background,
i.e. the reverse; set ``fg_threshold=0.85, bg_threshold=0.99`` to follow the code.

Seeds never change class: a pixel seeded for one class is not a candidate for
another, and since every candidate pixel has one arg-max class, the classes
grow over disjoint candidate sets and the order of the classes does not matter.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from .seeds import UNLABELLED

FG_THRESHOLD = 0.99
BG_THRESHOLD = 0.85
_EIGHT = np.ones((3, 3), dtype=bool)
_FOUR = ndimage.generate_binary_structure(2, 1)


def grow_seeds(probs: np.ndarray, seeds: np.ndarray, class_ids: Sequence[int], *,
               fg_threshold: float = FG_THRESHOLD, bg_threshold: float = BG_THRESHOLD,
               connectivity: int = 8) -> np.ndarray:
    """Grown seed map (uint8 [h, w]; :data:`UNLABELLED` where no class reached).

    ``probs``: [C, h, w] probabilities over all C classes; ``seeds``: uint8 [h, w];
    ``class_ids``: the image's foreground classes (1..C-1); background 0 is added.
    """
    probs = np.asarray(probs, dtype=np.float32)
    seeds = np.asarray(seeds)
    if probs.ndim != 3 or probs.shape[1:] != seeds.shape:
        raise ValueError(f"probabilities {probs.shape} must be [C, h, w] over the seed map's {seeds.shape}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    structure = _EIGHT if connectivity == 8 else _FOUR
    keep = [0] + [c for c in class_ids if c != 0]
    restricted = probs[keep]
    winner = np.asarray(keep)[restricted.argmax(axis=0)]
    peak = restricted.max(axis=0)
    unlabelled = seeds == UNLABELLED
    grown = seeds.astype(np.uint8, copy=True)
    for c in keep:
        theta = bg_threshold if c == 0 else fg_threshold
        seeded = seeds == c
        if not seeded.any():
            continue
        candidate = unlabelled & (winner == c) & (peak > np.float32(theta))  # compared in float32
        components, _ = ndimage.label(candidate | seeded, structure=structure)
        reached = np.unique(components[seeded])
        grown[candidate & np.isin(components, reached[reached > 0])] = c
    return grown
