"""The sparse IRNet random walk against the dense reference and hand-computed values."""
import itertools
import warnings

import numpy as np
import pytest
import torch

from conta_core.expand.dense_reference import dense_affinity, dense_random_walk
from conta_core.expand.random_walk import (downsample_cams, expand_irnet, pair_offsets, path_affinity,
                                           path_max_affinity, path_points, random_walk, transition_matrix,
                                           walk_to_labels)

warnings.filterwarnings("ignore", message=".*[Ss]parse.*")


# --- pairs within the radius ------------------------------------------------


@pytest.mark.parametrize("radius", [2, 3, 5, 10])
def test_pair_offsets_count_each_pair_once(radius):
    h, w = 13, 17
    brute = set()
    for p, q in itertools.combinations(itertools.product(range(h), range(w)), 2):
        d2 = (p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2
        if d2 < radius * radius:
            brute.add(frozenset((p, q)))
    seen = []
    for dy, dx in pair_offsets(radius):
        for y, x in itertools.product(range(h), range(w)):
            if 0 <= y + dy < h and 0 <= x + dx < w:
                seen.append(frozenset(((y, x), (y + dy, x + dx))))
    assert len(seen) == len(set(seen)), "a pair is counted twice"
    assert set(seen) == brute, "pairs missing or out of the radius"
    # offsets: half of the open disk, none repeated, none the negation of another
    offsets = pair_offsets(radius)
    assert len(set(offsets)) == len(offsets)
    assert not {(-dy, -dx) for dy, dx in offsets} & set(offsets)
    disk = sum(1 for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
               if 0 < dy * dy + dx * dx < radius * radius)
    assert 2 * len(offsets) == disk


def test_radius_5_and_10_sizes():
    assert len(pair_offsets(5)) == 34  # (69 lattice points with dy^2+dx^2 < 25, minus the centre) / 2
    assert len(pair_offsets(10)) == 152


def test_path_points_by_hand():
    assert path_points(0, 3) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert sorted(path_points(2, 0)) == [(0, 0), (1, 0), (2, 0)]
    # (2, 2): |x - y| <= 1 inside the 3x3 box (distance to the diagonal < 1)
    assert sorted(path_points(2, 2)) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2)]
    # (1, 2) and (1, -2): every point of the 2x3 box is within 1 pixel of the line
    assert len(path_points(1, 2)) == 6 and len(path_points(1, -2)) == 6
    # (2, 3): keep |2x - 3y| < sqrt(13); (0,2) (0,3) (2,0) (2,1) of the 3x4 box are too far
    assert sorted(path_points(2, 3)) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (1, 3), (2, 2), (2, 3)]
    # (3, 1): |3x - y| <= 3 < sqrt(10) for the whole 4x2 box
    assert len(path_points(3, 1)) == 8


# --- path-max affinity on a hand-built boundary -----------------------------


def test_path_max_affinity_by_hand():
    b = torch.zeros(3, 4)
    b[1, 1] = 0.8
    b[0, 3] = 0.5
    beta = 2.0
    A = path_max_affinity(b, radius=3, beta=beta).to_dense()
    idx = lambda y, x: y * 4 + x  # noqa: E731
    expected = {
        ((0, 0), (0, 2)): 1.0,           # path (0,0) (0,1) (0,2): no boundary
        ((0, 0), (1, 2)): 0.2,           # 2x3 box, contains (1,1) = 0.8
        ((0, 2), (0, 3)): 0.5,           # end point (0,3) = 0.5
        ((2, 0), (2, 2)): 1.0,           # bottom row
        ((0, 0), (2, 2)): 0.2,           # diagonal band |x - y| <= 1 holds (1,1)
        ((0, 3), (2, 2)): 0.5,           # offset (2,-1): box cols 2..3, rows 0..2 -> max 0.5
        ((0, 0), (2, 1)): 0.2,           # offset (2,1): box holds (1,1)
        ((1, 0), (2, 0)): 1.0,
        ((1, 2), (2, 0)): 0.2,           # offset (1,-2) from (1,2): box holds (1,1)
        ((0, 0), (1, 1)): 0.2,           # the boundary pixel itself
        ((2, 2), (2, 3)): 1.0,
        ((1, 3), (2, 3)): 1.0,
        ((0, 2), (1, 3)): 0.5,           # 2x2 box holds (0,3)
    }
    for (p, q), a in expected.items():
        assert A[idx(*p), idx(*q)].item() == pytest.approx(a ** beta, abs=1e-6), (p, q)
        assert A[idx(*q), idx(*p)].item() == pytest.approx(a ** beta, abs=1e-6), (q, p)
    # out of the radius (dy^2 + dx^2 >= 9): no edge
    for p, q in [((0, 0), (0, 3)), ((0, 0), (2, 3)), ((0, 0), (2, 3)), ((2, 0), (0, 3))]:
        assert A[idx(*p), idx(*q)].item() == 0.0
    assert torch.all(torch.diag(A) == 1.0)
    assert torch.equal(A, A.T)
    # the per-offset view gives the same numbers and 0 for pairs leaving the map
    aff = path_affinity(b, 3)
    k = pair_offsets(3).index((1, 2))
    assert aff[k, 0, 0].item() == pytest.approx(0.2)
    assert aff[k, 0, 2].item() == 0.0  # (0,2) -> (1,4) is outside


def test_transition_matrix_rows_sum_to_one():
    b = torch.rand(6, 7, generator=torch.Generator().manual_seed(0))
    P = transition_matrix(path_max_affinity(b, 4, 10.0)).to_dense()
    assert torch.allclose(P.sum(1), torch.ones(42), atol=1e-6)
    # IRNet's column-normalised matrix is the transpose of this one
    A = torch.from_numpy(dense_affinity(b.numpy(), 4, 10.0))
    assert torch.allclose((A / A.sum(0, keepdim=True)).T, P, atol=1e-6)


def test_dense_affinity_matches_sparse():
    b = torch.rand(9, 11, generator=torch.Generator().manual_seed(3))
    A = torch.from_numpy(dense_affinity(b.numpy(), 5, 3.0))
    assert torch.allclose(path_max_affinity(b, 5, 3.0).to_dense(), A, atol=1e-6)


# --- the walk: sparse == dense ----------------------------------------------


def _inputs(seed, k=3, h=12, w=15, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    cams = torch.rand(k, h, w, generator=g, dtype=dtype)
    cams = cams / cams.flatten(1).amax(1)[:, None, None]
    boundary = torch.rand(h, w, generator=g, dtype=dtype) ** 3
    return cams, boundary


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sparse_walk_equals_dense_reference(seed):
    """t = 256 (8 squarings), radius 5, beta 10: same normalised scores and labels.

    Both implementations are checked in float64, where they agree to ~1e-12: the
    algorithms are the same. In float32 the walk itself is ill-conditioned
    (a 1e-6 change of the affinities moves the scores by ~1e-4 after 256 steps,
    for the dense reference as much as for the sparse walk), so there the
    scores agree to 1e-3 and the labels exactly.
    """
    cams, boundary = _inputs(seed)
    sparse = random_walk(cams, boundary, beta=10, exp_times=8, radius=5)
    dense = dense_random_walk(cams, boundary, beta=10, exp_times=8, radius=5)
    assert sparse.shape == dense.shape == cams.shape
    assert torch.allclose(sparse / sparse.max(), dense / dense.max(), atol=1e-5, rtol=0)
    assert torch.allclose(sparse, dense, atol=1e-5 * dense.abs().max().item(), rtol=0)
    ids, size = [4, 9, 15], (46, 58)
    assert np.array_equal(walk_to_labels(sparse, ids, size), walk_to_labels(dense, ids, size))

    sparse32 = random_walk(cams.float(), boundary.float(), beta=10, exp_times=8, radius=5)
    dense32 = dense_random_walk(cams.float(), boundary.float(), beta=10, exp_times=8, radius=5)
    assert sparse32.dtype == dense32.dtype == torch.float32
    assert torch.allclose(sparse32 / sparse32.max(), dense32 / dense32.max(), atol=1e-3, rtol=0)
    assert np.array_equal(walk_to_labels(sparse32, ids, size), walk_to_labels(dense32, ids, size))
    assert np.array_equal(walk_to_labels(sparse32, ids, size), walk_to_labels(dense, ids, size))


def test_walk_steps_match_squarings():
    cams, boundary = _inputs(7, h=8, w=9)
    a = random_walk(cams, boundary, exp_times=3)
    b = random_walk(cams, boundary, steps=8)
    assert torch.equal(a, b)
    assert torch.allclose(a, dense_random_walk(cams, boundary, exp_times=3), atol=1e-12)


def test_walk_respects_boundaries():
    # a wall of boundary splits the map: a CAM on the left does not cross it
    cams = torch.zeros(1, 10, 12, dtype=torch.float64)
    cams[0, 4:6, 1:3] = 1.0
    boundary = torch.zeros(10, 12, dtype=torch.float64)
    boundary[:, 6] = 1.0
    scores = random_walk(cams, boundary)
    assert scores[0, :, 7:].abs().max() < 1e-12
    assert scores[0, :, :6].min() > 0.0


def test_walk_to_labels_background_and_keys():
    scores = torch.zeros(2, 3, 3)
    scores[0, 0, 0] = 1.0
    scores[1, 2, 2] = 0.5
    labels = walk_to_labels(scores, [3, 8], (12, 12), bg_threshold=0.25)
    assert labels.dtype == np.uint8 and labels.shape == (12, 12)
    assert labels[1, 1] == 3 and labels[10, 10] == 8 and labels[6, 6] == 0
    # per-class normalisation lifts the weaker class
    assert (walk_to_labels(scores, [3, 8], (12, 12), normalize="per_class") == 8).sum() > (labels == 8).sum()


def test_expand_irnet_full_resolution():
    cams_full = torch.zeros(2, 37, 41)
    cams_full[0, 2:18, 3:20] = 1.0
    cams_full[1, 22:35, 25:39] = 1.0
    boundary = torch.zeros(10, 11)
    boundary[:, 5] = 1.0  # a wall between the two objects (full-res columns 20..23)
    out = expand_irnet(cams_full, boundary, [2, 7])
    assert out.shape == (37, 41) and out.dtype == np.uint8
    assert out[8, 10] == 2 and out[28, 32] == 7
    assert set(np.unique(out)) <= {0, 2, 7}
    small = downsample_cams(cams_full, (10, 11))
    assert small.shape == (2, 10, 11) and torch.allclose(small.flatten(1).amax(1), torch.ones(2))
    assert np.array_equal(expand_irnet(small, boundary, [2, 7], image_size=(37, 41)), out)
    assert (expand_irnet(cams_full[:0], boundary, []) == 0).all()
