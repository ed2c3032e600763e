"""bench/context_information.py's probe: the AUC by hand, and a planted signal found / absent."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from context_information import probe, roc_auc  # noqa: E402


def test_roc_auc_by_hand():
    positive = np.array([True, True, False, False])
    assert roc_auc(np.array([0.9, 0.8, 0.1, 0.2]), positive) == 1.0
    assert roc_auc(np.array([0.1, 0.2, 0.9, 0.8]), positive) == 0.0
    # pairs (pos, neg): (0.5, 0.5) tie -> 1/2, (0.5, 0.1) 1, (0.3, 0.5) 0, (0.3, 0.1) 1 -> 2.5 / 4
    assert roc_auc(np.array([0.5, 0.3, 0.5, 0.1]), positive) == pytest.approx(0.625)
    assert np.isnan(roc_auc(np.array([0.1, 0.2]), np.array([True, True])))


def test_probe_finds_a_label_written_in_x_m_and_not_in_noise():
    rng = np.random.default_rng(0)
    n = 200
    labels = rng.integers(0, 2, (n, 2))
    x_m = rng.random((n, 16)) * 0.5
    x_m[:, 3] += labels[:, 0]           # class 0: one cell of X_m lights up; class 1: nothing does
    auc = probe(x_m, labels, l2=1e-2)
    assert auc[0] > 0.95
    assert abs(auc[1] - 0.5) < 0.15
