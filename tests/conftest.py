from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo() -> Path:
    return REPO


_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@pytest.fixture(autouse=True)
def _restore_thread_environment():
    """Code run in-process (conta_core.devices.set_threads) sets the thread variables for its
    children; restored after each test so they do not leak into later tests' subprocesses
    (nproc honours OMP_NUM_THREADS: the SLURM test's one-node cluster came up with 1 CPU)."""
    import os

    saved = {name: os.environ.get(name) for name in _THREAD_VARS}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
