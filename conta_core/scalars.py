"""Optional TensorBoard scalars of a training loop (``logging.tensorboard: true``).

Tags: ``loss/iteration`` and ``lr/iteration`` (step = iteration, 1-based), and
``loss/epoch`` and ``lr/epoch`` (step = epoch, 1-based); ``lr`` is the base
(backbone) group's rate. The existing logs (tqdm bar, one line per epoch) are
unchanged. Only the main DDP rank writes.

TensorBoard is imported only when a :class:`ScalarLog` is opened: runs with
logging off never import it (``torch.utils.tensorboard`` costs ~0.13 s on top
of torch, and needs the ``tensorboard`` package, an optional extra).
A fresh training run clears the folder's old event files; a resumed one
purges the events from its resume iteration on, so a killed and restarted job
leaves one curve, not two.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

EVENT_PREFIX = "events.out.tfevents."
MISSING = ("logging.tensorboard is true but the `tensorboard` package is not installed; "
           "install it with  pip install 'conta-core[tensorboard]'  (or pip install tensorboard), "
           "or set logging.tensorboard: false")


def require_tensorboard() -> None:
    """Fail now, before any training, when the package is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise RuntimeError(MISSING)


@dataclass
class ScalarLog:
    """Scalars of one training step into ``directory`` (picklable until opened: DDP ranks get a copy)."""
    directory: str
    _writer: object = field(default=None, repr=False)

    def __post_init__(self):
        require_tensorboard()

    def open(self, resume_iteration: int = 0) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise RuntimeError(f"{MISSING} ({err})") from err
        folder = Path(self.directory)
        folder.mkdir(parents=True, exist_ok=True)
        if resume_iteration == 0:
            for old in folder.glob(f"{EVENT_PREFIX}*"):
                old.unlink()
        # purge_step: a resumed writer hides the events of the killed run from that iteration on.
        self._writer = SummaryWriter(str(folder), purge_step=resume_iteration or None)

    def iteration(self, iteration: int, loss: float, lr: float) -> None:
        self._writer.add_scalar("loss/iteration", loss, iteration)
        self._writer.add_scalar("lr/iteration", lr, iteration)

    def epoch(self, epoch: int, loss: float, lr: float) -> None:
        self._writer.add_scalar("loss/epoch", loss, epoch)
        self._writer.add_scalar("lr/epoch", lr, epoch)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
