"""Context Adjustment (CONTA): the confounder set and M_t of Eq. 3.

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
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


def reduce_map(binary: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average a 0/1 map ([H, W]) onto an ``h x w`` grid."""
    t = torch.from_numpy(np.ascontiguousarray(binary, dtype=np.float32))[None, None]
    return F.adaptive_avg_pool2d(t, size)[0, 0].numpy()


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


class ContextAdjustment(nn.Module):
    """Eq. 3: M = sum_i alpha_i c_i P(c_i), alpha = softmax_i((W1 X_m)^T (W2 c_i) / sqrt(n)).

    W1, W2 (n x hw) are learnable and trained with the classifier; C and P(c)
    are fixed buffers for the round (they are saved in the checkpoint).
    """

    def __init__(self, confounder: torch.Tensor, prior: torch.Tensor):
        super().__init__()
        n, h, w = confounder.shape
        self.map_size = (h, w)
        self.register_buffer("confounder", confounder.reshape(n, h * w).float().clone())
        self.register_buffer("prior", prior.float().clone())
        self.w1 = nn.Linear(h * w, n, bias=False)
        self.w2 = nn.Linear(h * w, n, bias=False)

    def attention(self, x_m: torch.Tensor) -> torch.Tensor:
        """alpha: [B, n], each row sums to 1."""
        n = self.confounder.shape[0]
        query = self.w1(x_m.flatten(1))          # [B, n]  = W1 X_m
        keys = self.w2(self.confounder)          # [n, n]  row i = W2 c_i
        return torch.softmax(query @ keys.t() / math.sqrt(n), dim=1)

    def forward(self, x_m: torch.Tensor) -> torch.Tensor:
        """x_m: [B, h, w] reduced masks -> M: [B, 1, h, w]."""
        alpha = self.attention(x_m)
        m = (alpha * self.prior) @ self.confounder   # [B, hw]
        return m.reshape(-1, 1, *self.map_size)
