"""Per-image CPU work (dense CRFs) spread over a job's threads as worker processes.

pydensecrf runs on one core; a CRF job given N threads maps its images over N
spawned workers (spawn, not fork: the parent holds open HDF5 files). The order
of the results is the order of the inputs, so the output does not depend on N.
"""
from __future__ import annotations

import multiprocessing
from typing import Callable, Iterable


class ProcessMap:
    def __init__(self, processes: int):
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self._pool = multiprocessing.get_context("spawn").Pool(processes) if processes > 1 else None

    def __call__(self, fn: Callable, *iterables: Iterable) -> list:
        """``[fn(*args) for args in zip(*iterables)]``, in worker processes when there are several."""
        if self._pool is None:
            return [fn(*args) for args in zip(*iterables)]
        return self._pool.starmap(fn, zip(*iterables))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> "ProcessMap":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None and exc[0] is not None:
            self._pool.terminate()
        self.close()
