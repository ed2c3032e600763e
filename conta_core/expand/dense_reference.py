"""REFERENCE ONLY -- used by tests (test_random_walk.py, test_affinitynet.py) and bench/random_walk.py.

A deliberately plain, dense (N x N, N = h*w) implementation of IRNet's random
walk, written the way IRNet computes it: build the full affinity matrix, raise
it to ``beta``, divide every column by its sum, square the matrix ``exp_times``
times (T^(2^exp_times)) and multiply the row vectors of the CAMs from the left.
It needs O(N^2) memory (552 MB per matrix at VOC size) and O(N^3 exp_times)
time. Production code must use :func:`conta_core.expand.random_walk.random_walk`.

The affinity is built independently of the sparse code: it enumerates the
*full* disk of offsets (both directions of every pair) and recomputes each
path with floating-point geometry, so a mistake in the half-neighbourhood or
the symmetrisation of the sparse version shows up as a mismatch.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def _reference_path(dy: int, dx: int) -> list[tuple[int, int]]:
    """Points of the bounding box of (0,0)-(dy,dx) within one pixel of the line (float geometry)."""
    norm = math.hypot(dy, dx)
    points = []
    for y in range(min(0, dy), max(0, dy) + 1):
        for x in range(min(0, dx), max(0, dx) + 1):
            if abs(dy * x - dx * y) / norm < 1.0 - 1e-9:
                points.append((y, x))
    return points


def dense_affinity(boundary: np.ndarray, radius: int, beta: float, dtype=np.float32) -> np.ndarray:
    """Dense ``A`` [N, N]: (1 - max boundary on the path)^beta within ``radius``, 1 on the diagonal."""
    boundary = np.asarray(boundary, dtype=np.float64)
    h, w = boundary.shape
    n = h * w
    aff = np.zeros((n, n), dtype=dtype)
    flat = np.arange(n).reshape(h, w)
    for dy in range(-radius + 1, radius):
        for dx in range(-radius + 1, radius):
            if (dy, dx) == (0, 0) or dy * dy + dx * dx >= radius * radius:
                continue
            # sources whose destination (y+dy, x+dx) is inside the map
            y0, y1 = max(0, -dy), min(h, h - dy)
            x0, x1 = max(0, -dx), min(w, w - dx)
            if y0 >= y1 or x0 >= x1:
                continue
            path_max = np.zeros((y1 - y0, x1 - x0))
            for py, px in _reference_path(dy, dx):
                path_max = np.maximum(path_max, boundary[y0 + py:y1 + py, x0 + px:x1 + px])
            src = flat[y0:y1, x0:x1]
            dst = flat[y0 + dy:y1 + dy, x0 + dx:x1 + dx]
            aff[src.ravel(), dst.ravel()] = ((1.0 - path_max) ** beta).ravel()
    aff[np.arange(n), np.arange(n)] = 1.0
    return aff


def dense_random_walk(cams: torch.Tensor, boundary: torch.Tensor, *, beta: float = 10.0, exp_times: int = 8,
                      radius: int = 5) -> torch.Tensor:
    """Dense IRNet walk: ``rw = (cams * (1 - B)) @ T^(2^exp_times)``; returns ``[K, h, w]``."""
    k, h, w = cams.shape
    n = h * w
    dtype = cams.dtype
    aff = torch.from_numpy(dense_affinity(boundary.detach().cpu().numpy(), radius, beta,
                                          dtype=np.float64 if dtype == torch.float64 else np.float32))
    aff = aff.to(cams.device)
    trans = aff.div_(aff.sum(dim=0, keepdim=True))  # column-normalised, in place
    del aff
    for _ in range(int(exp_times)):
        trans = torch.matmul(trans, trans)
    x = (cams * (1.0 - boundary.to(dtype))).reshape(k, n)
    return torch.matmul(x, trans).reshape(k, h, w)


def dense_feature_affinity(feats: np.ndarray, radius: int, beta: float) -> np.ndarray:
    """AffinityNet's dense ``A`` [N, N]: exp(-mean_d |f_i - f_j|) ** beta for 0 < |i - j| < radius, 1 on the diagonal.

    Loops over every pixel pair of the full disk (both directions), independently
    of the sparse half-neighbourhood code.
    """
    feats = np.asarray(feats, dtype=np.float64)
    _, h, w = feats.shape
    n = h * w
    aff = np.zeros((n, n))
    for i in range(n):
        yi, xi = divmod(i, w)
        for j in range(n):
            yj, xj = divmod(j, w)
            dist2 = (yi - yj) ** 2 + (xi - xj) ** 2
            if i == j:
                aff[i, j] = 1.0
            elif dist2 < radius * radius:
                aff[i, j] = np.exp(-np.abs(feats[:, yi, xi] - feats[:, yj, xj]).mean()) ** beta
    return aff


def dense_feature_walk(x: torch.Tensor, feats: torch.Tensor, *, radius: int = 5, beta: float = 8.0,
                       exp_times: int = 8) -> torch.Tensor:
    """AffinityNet's walk as its authors compute it: T = A / colsum(A), squared ``exp_times`` times, x T."""
    k, h, w = x.shape
    aff = torch.from_numpy(dense_feature_affinity(feats.detach().cpu().numpy(), radius, beta))
    trans = aff / aff.sum(dim=0, keepdim=True)
    for _ in range(int(exp_times)):
        trans = trans @ trans
    return (x.double().reshape(k, h * w) @ trans).reshape(k, h, w)
