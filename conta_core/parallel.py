"""Per-image CPU work (dense CRFs) spread over a job's threads as worker processes.

pydensecrf runs on one core; a CRF job given N threads maps its images over N
spawned workers (spawn, not fork: the parent holds open HDF5 files and may hold
CUDA). The order of the results is the order of the inputs, so the output does
not depend on N.

Spawned workers import the parent's main script and the module of the mapped
function: both must be torch-free for the workers to load no torch (2-3 s and
~300 MB each); ``conta_core.crf`` is.
"""
from __future__ import annotations

import multiprocessing
import sys
from collections import deque
from typing import Any, Callable, Hashable, Iterable, Iterator


def loaded(module: str) -> bool:
    """Whether ``module`` is imported in this process (a worker's view of its imports: tests)."""
    return module in sys.modules


class _Done:
    """The result of a task run inline (one process): the same ``get()`` as a pool's."""

    def __init__(self, value):
        self._value = value

    def get(self):
        return self._value


class ProcessMap:
    def __init__(self, processes: int):
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.processes = processes
        self._pool = multiprocessing.get_context("spawn").Pool(processes) if processes > 1 else None

    def __call__(self, fn: Callable, *iterables: Iterable) -> list:
        """``[fn(*args) for args in zip(*iterables)]``, in worker processes when there are several."""
        if self._pool is None:
            return [fn(*args) for args in zip(*iterables)]
        return self._pool.starmap(fn, zip(*iterables))

    def submit(self, fn: Callable, *args):
        """``fn(*args)`` in a worker (run here, now, with one process); ``.get()`` gives its result."""
        if self._pool is None:
            return _Done(fn(*args))
        return self._pool.apply_async(fn, args)

    def ordered(self, fn: Callable, tasks: Iterable[tuple[Hashable, tuple]],
                pending: int | None = None) -> Iterator[tuple[Hashable, Any]]:
        """``(key, fn(*args))`` for each ``(key, args)`` of ``tasks``, in the order of ``tasks``.

        ``tasks`` is consumed lazily while the workers run: a generator that computes
        its next arguments (a network's next batch) does so while the workers refine
        the tasks already submitted. At most ``pending`` tasks (default: 2 per worker,
        so that none idles while its next task is pickled) are submitted and not yet
        yielded: their arguments are the memory this holds.
        """
        limit = max(1, 2 * self.processes if pending is None else pending)
        queue: deque = deque()
        for key, args in tasks:
            while len(queue) >= limit:
                done_key, result = queue.popleft()
                yield done_key, result.get()
            queue.append((key, self.submit(fn, *args)))
        while queue:
            done_key, result = queue.popleft()
            yield done_key, result.get()

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
