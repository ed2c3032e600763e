"""IRNet's random walk (Ahn et al., CVPR 2019), as sparse mat-vec products.

IRNet propagates the CAMs over a pixel graph at stride 4 whose edges join every
pair of pixels closer than ``radius`` (5 at inference). The edge weight comes
from the predicted class-boundary map ``B`` (values in [0, 1]):

    a_ij = 1 - max_{k on the path i -> j} B_k                       (path affinity)

where the path of an offset (dy, dx) is every lattice point of the bounding box
of (0, 0) and (dy, dx) whose distance to the line through them is below one
pixel (both end points included; :func:`path_points`). IRNet then builds the
transition matrix (``to_transition_matrix`` in its ``misc/indexing.py``):

    A   = a ** beta            symmetric, with a self-loop a_ii = 1,
                               pairs at distance >= radius get 0
    T   = A / colsum(A)        column-normalised: T = A D^-1, D = diag(sum_i A_ij)
    rw  = x T^(2^exp_times)    x: a row vector per class, x = CAM * (1 - B)

and squares the dense (HW x HW) matrix ``exp_times`` (8) times. Because A is
symmetric, ``x T^t`` is the transpose of ``(D^-1 A)^t x^T``: the same walk is
``t`` products of the *row*-normalised sparse matrix ``P = D^-1 A`` with the
[N, K] matrix of all classes' CAMs. That needs O(N r^2) memory and O(N r^2 t K)
time instead of O(N^2) memory and O(N^3 log t) time, and gives the same numbers
up to float rounding (tests/test_random_walk.py checks this against the dense
reference in :mod:`conta_core.expand.dense_reference`).

After the walk (:func:`walk_to_labels`), IRNet upsamples the scores x4
(bilinear), crops to the image, divides by the *global* maximum over all
classes and pixels (``rw_up / torch.max(rw_up)`` in ``make_sem_seg_labels.py``;
``normalize="per_class"`` divides each class by its own maximum instead), puts a
constant background score ``bg_threshold`` (IRNet's ``sem_seg_bg_thres``, 0.25)
in front and takes the argmax.

Everything is torch and runs on the device of its inputs (CPU or CUDA).
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "pair_offsets", "path_points", "path_affinity", "path_max_affinity", "pair_affinity_matrix",
    "transition_matrix",
    "propagate", "random_walk", "downsample_cams", "walk_to_labels", "expand_irnet",
]


@functools.lru_cache(maxsize=None)
def _pair_offsets(radius: int) -> tuple[tuple[int, int], ...]:
    r = int(radius)
    if r != radius or r < 2:
        raise ValueError(f"radius must be an integer >= 2, got {radius!r}")
    # Half of the disk dy^2 + dx^2 < r^2: (0, dx > 0) and every dx for dy > 0.
    # Each unordered pair {p, q} with 0 < |p - q| < r is then met exactly once,
    # as (p, p + offset) with p the earlier pixel in raster order.
    offsets = [(0, dx) for dx in range(1, r)]
    offsets += [(dy, dx) for dy in range(1, r) for dx in range(-r + 1, r) if dy * dy + dx * dx < r * r]
    return tuple(offsets)


def pair_offsets(radius: int) -> list[tuple[int, int]]:
    """IRNet's half-neighbourhood: the (dy, dx) joining each pixel to its later
    neighbours closer than ``radius`` (strictly: dy^2 + dx^2 < radius^2)."""
    return list(_pair_offsets(radius))


@functools.lru_cache(maxsize=None)
def _path_points(dy: int, dx: int) -> tuple[tuple[int, int], ...]:
    length_sq = dy * dy + dx * dx
    if length_sq == 0:
        return ((0, 0),)
    points = []
    for y in range(min(0, dy), max(0, dy) + 1):
        for x in range(min(0, dx), max(0, dx) + 1):
            # squared distance of (y, x) to the line through 0 and (dy, dx) is
            # (dy x - dx y)^2 / |d|^2; keep the points closer than 1 pixel.
            if (dy * x - dx * y) ** 2 < length_sq:
                points.append((y, x))
    return tuple(points)


def path_points(dy: int, dx: int) -> list[tuple[int, int]]:
    """The lattice points on the path from (0, 0) to (dy, dx), end points included."""
    return list(_path_points(int(dy), int(dx)))


def path_affinity(boundary: torch.Tensor, radius: int) -> torch.Tensor:
    """``1 - max(boundary on the path)`` for every pair offset.

    boundary: ``[..., H, W]`` in [0, 1]. Returns ``[..., P, H, W]`` with
    ``P = len(pair_offsets(radius))``; entry ``[..., k, y, x]`` belongs to the pair
    ``(y, x) -> (y + dy_k, x + dx_k)`` and is 0 where that pair leaves the map
    (the map is padded with boundary 1, as IRNet does). Differentiable: the
    gradient flows to the pixel that holds each path's maximum.
    """
    offsets = _pair_offsets(radius)
    rf = radius - 1
    height, width = boundary.shape[-2:]
    lead = boundary.shape[:-2]
    padded = F.pad(boundary.reshape(-1, 1, height, width), (rf, rf, 0, rf), value=1.0)
    padded = padded.reshape(*lead, height + rf, width + 2 * rf)
    padded_width = width + 2 * rf
    device = boundary.device
    # flat index (into the padded map) of each pair's source pixel
    base = (torch.arange(height, device=device)[:, None] * padded_width
            + torch.arange(width, device=device)[None, :] + rf)
    values = padded.detach()
    indices = []
    with torch.no_grad():
        for dy, dx in offsets:
            best = best_shift = None
            for py, px in _path_points(dy, dx):
                view = values[..., py:py + height, rf + px:rf + px + width]
                shift = py * padded_width + px
                if best is None:
                    best = view
                    best_shift = torch.full(view.shape, shift, dtype=torch.long, device=device)
                else:
                    best_shift.masked_fill_(view > best, shift)
                    best = torch.maximum(best, view)
            indices.append(base + best_shift)
        index = torch.stack(indices, dim=-3)  # [..., P, H, W]
    flat = padded.reshape(*lead, -1)
    gathered = torch.gather(flat, -1, index.reshape(*lead, -1))
    return 1.0 - gathered.reshape(*lead, len(offsets), height, width)


def path_max_affinity(boundary: torch.Tensor, radius: int = 5, beta: float = 10.0) -> torch.Tensor:
    """Sparse symmetric affinity ``A`` over the ``H*W`` pixels of ``boundary [H, W]``.

    ``A_ij = (1 - max boundary on the path i -> j) ** beta`` for ``0 < |i - j| < radius``,
    ``A_ii = 1`` (IRNet's self-loop), 0 elsewhere. Returned as a sparse CSR tensor
    (int32 indices) on ``boundary``'s device and dtype; no dense ``N x N`` array is formed.
    """
    if boundary.dim() != 2:
        raise ValueError(f"boundary must be [H, W], got shape {tuple(boundary.shape)}")
    with torch.no_grad():
        return pair_affinity_matrix(path_affinity(boundary, radius).pow_(beta), radius)


def pair_affinity_matrix(pairs: torch.Tensor, radius: int) -> torch.Tensor:
    """Sparse symmetric CSR ``A`` from half-neighbourhood pair values ``pairs [P, H, W]``.

    ``pairs[k, y, x]`` is the affinity of ``(y, x)`` and ``(y, x) + pair_offsets(radius)[k]``
    (ignored where that pair leaves the map); ``A`` holds it at both ``(i, j)`` and
    ``(j, i)``, and 1 on the diagonal (the self-loop of IRNet and AffinityNet).

    Built row by row: the full neighbourhood (both halves and the centre) sorted by
    ``(dy, dx)`` lists every row's columns in increasing order, so the CSR arrays
    come out of one masked selection without sorting. The entry for the offset
    ``-o`` of pixel p is the half-neighbourhood value of ``o`` at ``p - o``.
    """
    half = _pair_offsets(radius)
    if pairs.dim() != 3 or pairs.shape[0] != len(half):
        raise ValueError(f"pairs must be [{len(half)}, H, W] for radius {radius}, got {tuple(pairs.shape)}")
    _, height, width = pairs.shape
    n = height * width
    device = pairs.device
    with torch.no_grad():
        full = sorted([(-dy, -dx) for dy, dx in half] + [(0, 0)] + list(half))
        index_of = {off: k for k, off in enumerate(half)}
        values = torch.zeros(len(full), height, width, dtype=pairs.dtype, device=device)
        for j, (dy, dx) in enumerate(full):
            if (dy, dx) == (0, 0):
                values[j] = 1.0
            elif (dy, dx) in index_of:
                values[j] = pairs[index_of[(dy, dx)]]
            else:  # (dy, dx) = -o: value of the pair (p - o) -> p, stored at p - o
                oy, ox = -dy, -dx
                k = index_of[(oy, ox)]
                values[j, oy:, max(ox, 0):width + min(ox, 0)] = pairs[k, :height - oy, max(-ox, 0):width - max(ox, 0)]
        offsets = torch.tensor(full, dtype=torch.int32, device=device)
        ys = torch.arange(height, dtype=torch.int32, device=device)[:, None, None]
        xs = torch.arange(width, dtype=torch.int32, device=device)[None, :, None]
        dst_y = ys + offsets[:, 0]
        dst_x = xs + offsets[:, 1]
        valid = (dst_y >= 0) & (dst_y < height) & (dst_x >= 0) & (dst_x < width)  # [H, W, F]
        cols = (dst_y * width + dst_x)[valid]
        vals = values.permute(1, 2, 0)[valid]
        crow = torch.zeros(n + 1, dtype=torch.int64, device=device)
        crow[1:] = valid.reshape(n, -1).sum(1).cumsum(0)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
            return torch.sparse_csr_tensor(crow.to(torch.int32), cols, vals, (n, n), check_invariants=False)


def transition_matrix(affinity: torch.Tensor) -> torch.Tensor:
    """``P = D^-1 A`` (rows sum to one) for a symmetric sparse CSR affinity ``A``.

    IRNet divides the columns (``A / A.sum(0)``) and multiplies row vectors from
    the left; for symmetric A, ``x (A D^-1)^t`` is ``((D^-1 A)^t x^T)^T``, so this
    row-normalised matrix applied to column vectors is the same walk.
    """
    crow = affinity.crow_indices()
    col = affinity.col_indices()
    values = affinity.values()
    n = affinity.shape[0]
    row = torch.repeat_interleave(torch.arange(n, device=values.device), (crow[1:] - crow[:-1]).long())
    degree = torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, row, values)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(crow, col, values / degree[row], (n, n), check_invariants=False)


def propagate(transition: torch.Tensor, x: torch.Tensor, steps: int) -> torch.Tensor:
    """``transition^steps @ x`` by ``steps`` sparse mat-mat products; ``x`` is ``[N, K]``."""
    for _ in range(int(steps)):
        x = transition @ x
    return x


@contextlib.contextmanager
def _cpu_threads(threads: int | None, device: torch.device):
    """Run the block with ``threads`` intra-op CPU threads, then restore torch's setting."""
    old = torch.get_num_threads()
    if device.type != "cpu" or threads is None or threads == old:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def random_walk(cams: torch.Tensor, boundary: torch.Tensor, *, beta: float = 10.0, exp_times: int = 8,
                steps: int | None = None, radius: int = 5, cpu_threads: int | None = 1) -> torch.Tensor:
    """Propagate ``cams [K, h, w]`` over the boundary-aware graph of ``boundary [h, w]``.

    Returns the raw walk scores ``[K, h, w]`` (``x T^t`` with ``x = cams * (1 - boundary)``).
    ``steps`` defaults to ``2 ** exp_times`` (IRNet: 8 squarings = 256 steps).

    cpu_threads: intra-op threads for the walk on CPU (``None``: torch's current
    setting). Default 1: one step is only ~N * 69 * K multiply-adds (16 M at VOC
    size), so an OpenMP fork/join per step gains little and collapses when the
    cores are shared (2-core machine under load: 0.7 s on 1 thread, 4.5-7.7 s on
    2). Parallelise over images (inference shards) instead.
    """
    if cams.dim() != 3 or cams.shape[-2:] != boundary.shape:
        raise ValueError(f"cams [K, h, w] and boundary [h, w] disagree: {tuple(cams.shape)} vs "
                         f"{tuple(boundary.shape)}")
    steps = 2 ** int(exp_times) if steps is None else int(steps)
    k, height, width = cams.shape
    boundary = boundary.to(cams.dtype)
    with torch.no_grad(), _cpu_threads(cpu_threads, cams.device):
        trans = transition_matrix(path_max_affinity(boundary, radius, beta))
        x = (cams * (1.0 - boundary)).reshape(k, height * width).t().contiguous()
        walked = propagate(trans, x, steps)
    return walked.t().reshape(k, height, width)


def downsample_cams(cams: torch.Tensor, size: tuple[int, int], stride: int = 4) -> torch.Tensor:
    """Full-resolution CAMs ``[K, H, W]`` -> ``[K, h, w]`` at ``stride``, max-normalised per class.

    IRNet's stride-4 CAMs come from the network's low-resolution output; from the
    stored full-resolution CAMs we take the mean over each ``stride x stride`` cell
    (the image is edge-padded to ``h*stride x w*stride``) and divide each class by
    its maximum again, as IRNet normalises its strided CAMs.
    """
    k, height, width = cams.shape
    h, w = size
    pad_h, pad_w = h * stride - height, w * stride - width
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"cams {height}x{width} do not fit a {h}x{w} map at stride {stride}")
    x = cams[None].float()
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    x = F.avg_pool2d(x, stride)[0].to(cams.dtype)
    peak = x.flatten(1).amax(1).clamp_min(1e-5)[:, None, None]
    return x / peak


def walk_to_labels(scores: torch.Tensor, class_ids: Sequence[int], size: tuple[int, int], *,
                   bg_threshold: float = 0.25, normalize: str = "global", stride: int = 4) -> np.ndarray:
    """Walk scores ``[K, h, w]`` -> uint8 label map ``[H, W]`` (IRNet's ``make_sem_seg_labels``).

    Upsample x``stride`` (bilinear, align_corners False) and crop to ``size``;
    divide by the maximum (``normalize="global"``: over all classes and pixels, as
    IRNet; ``"per_class"``: each class by its own maximum); prepend a constant
    background channel ``bg_threshold``; argmax; map channel k to ``class_ids[k-1]``.
    """
    height, width = size
    keys = np.asarray([0, *[int(c) for c in class_ids]], dtype=np.uint8)
    if scores.shape[0] == 0:
        return np.zeros((height, width), dtype=np.uint8)
    if scores.shape[0] != len(keys) - 1:
        raise ValueError(f"{scores.shape[0]} score maps for {len(keys) - 1} class ids")
    if scores.shape[1] * stride < height or scores.shape[2] * stride < width:
        raise ValueError(f"scores {tuple(scores.shape[1:])} at stride {stride} do not cover {size}")
    up = F.interpolate(scores[None].float(), scale_factor=stride, mode="bilinear",
                       align_corners=False)[0, :, :height, :width]
    if normalize == "global":
        up = up / up.max().clamp_min(1e-12)
    elif normalize == "per_class":
        up = up / up.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    else:
        raise ValueError(f"normalize must be 'global' or 'per_class', got {normalize!r}")
    up = F.pad(up, (0, 0, 0, 0, 1, 0), value=float(bg_threshold))
    return keys[up.argmax(0).cpu().numpy()]


def expand_irnet(cams: torch.Tensor | np.ndarray, boundary: torch.Tensor | np.ndarray,
                 class_ids: Sequence[int], *, image_size: tuple[int, int] | None = None,
                 beta: float = 10.0, exp_times: int = 8, radius: int = 5, bg_threshold: float = 0.25,
                 normalize: str = "global", device: torch.device | str | None = None) -> np.ndarray:
    """One image's IRNet pseudo-mask: uint8 ``[H, W]``, 0 background, else a class id.

    cams: ``[K, H, W]`` full-resolution max-normalised CAMs of the image's labelled
    classes (downsampled here to the boundary's size), or ``[K, h, w]`` already at
    stride 4 (then ``image_size`` gives ``(H, W)``; default ``(4h, 4w)``).
    boundary: ``[h, w]`` boundary probabilities at stride 4 (``h = ceil(H / 4)``).
    """
    boundary = torch.as_tensor(boundary, device=device).float()
    if device is None:
        device = boundary.device
    cams = torch.as_tensor(cams, device=device).float()
    h, w = boundary.shape
    at_stride4 = tuple(cams.shape[-2:]) == (h, w)
    if at_stride4:
        size = tuple(image_size) if image_size is not None else (4 * h, 4 * w)
    else:
        size = tuple(cams.shape[-2:]) if image_size is None else tuple(image_size)
        if tuple(cams.shape[-2:]) != size:
            raise ValueError(f"cams are {tuple(cams.shape[-2:])} but image_size is {size}")
    if len(class_ids) == 0:
        return np.zeros(size, dtype=np.uint8)
    if not at_stride4:
        cams = downsample_cams(cams, (h, w))
    scores = random_walk(cams, boundary, beta=beta, exp_times=exp_times, radius=radius)
    return walk_to_labels(scores, class_ids, size, bg_threshold=bg_threshold, normalize=normalize)
