import shutil
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


# -- one tiny run shared by tests/test_report.py and tests/test_workflow.py -------------------------
TINY_RUN_ARGS = ("--configfile", str(REPO / "tests" / "configs" / "tiny.yaml"),
                 # the segmenter trained 4 epochs instead of 1, so that its masks are not one class
                 # everywhere (test_report's conta-predict check), and the TensorBoard scalars written
                 "--config", "segment={epochs: 4}", "logging={tensorboard: true}")


class TinyRun:
    """The finished tiny run (baseline + one CONTA round), made once per session. `fresh()` puts
    the pristine copy back into the folder it was made in (no path-valued setting differs;
    modification times kept, so nothing is out of date) for a test that changes it."""

    args = TINY_RUN_ARGS  # the run's snakemake arguments: rerun with them, nothing is to be done

    def __init__(self, root: Path):
        from workflow_helpers import run_snakemake

        self.workdir, self._pristine = root / "run", root / "pristine"
        self.workdir.mkdir()
        run_snakemake(self.workdir, *TINY_RUN_ARGS, timeout=1500)
        shutil.copytree(self.workdir, self._pristine, symlinks=True)

    def fresh(self) -> Path:
        shutil.rmtree(self.workdir)
        shutil.copytree(self._pristine, self.workdir, symlinks=True)
        return self.workdir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    return TinyRun(tmp_path_factory.mktemp("tiny_run"))
