"""Training checkpoints that resume bit-for-bit.

A resumed run must continue exactly where the killed one stopped: same
weights, optimizer moments, learning-rate schedule, random streams and the
same next batch. So a checkpoint holds the model and optimizer state dicts,
the scheduler state, the RNG states of python ``random``, numpy's global
generator, torch CPU and (when in use) torch CUDA, and the counters
``iteration``, ``epoch`` and ``batch_in_epoch``.

The data order is not a sampler's hidden state: :class:`EpochOrder` derives the
permutation of epoch ``e`` from ``(seed, e)`` alone, so ``(epoch,
batch_in_epoch)`` pins the next batch.

Files are ``iter{N:08d}.pt`` in one folder, written atomically (temp name in
the same folder, fsync, rename), holding only tensors and primitive
containers so they load with ``torch.load(..., weights_only=True)`` and never
run pickled code. The newest ``keep`` files are kept; a resume takes the
newest one that loads and whose checksum matches, skipping (and deleting) a
truncated or corrupt file with a log line.

Checksums: ``torch.load`` verifies nothing (zip CRCs are not checked), so a
file with garbage in its tensor data loads and trains on garbage. Every file
written here (training states and the final model files ``classifier.pt``,
``segmenter.pt``, ``relation_net.pt``, see :func:`save_model_file`) carries
``payload_sha256``: a SHA-256 over its whole content (every tensor's dtype,
shape and bytes, every key and value), recomputed on load. A final model file
that fails it is deleted for a rebuild (:mod:`conta_core.integrity`).
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .integrity import DamagedArtifact, discard

log = logging.getLogger(__name__)

FORMAT = "conta-train-state/1"
REQUIRED_KEYS = frozenset({"format", "model", "optimizer", "rng", "iteration", "epoch",
                           "batch_in_epoch", "scheduler", "extra"})
_NAME = re.compile(r"^iter(\d{8})\.pt$")
CHECKSUM_KEY = "payload_sha256"


def _feed(h, obj: Any) -> None:
    """Hash ``obj`` in a canonical, unambiguous encoding (type tag, length, content)."""
    if isinstance(obj, torch.Tensor):
        data = obj.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        head = f"T{obj.dtype}{tuple(obj.shape)}{data.nbytes}".encode()
        h.update(struct.pack("<I", len(head)) + head)
        h.update(memoryview(data))
    elif isinstance(obj, dict):
        h.update(b"d" + struct.pack("<Q", len(obj)))
        for key in sorted(obj, key=repr):  # int keys (optimizer state) and str keys alike
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update((b"l" if isinstance(obj, list) else b"t") + struct.pack("<Q", len(obj)))
        for value in obj:
            _feed(h, value)
    elif obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        # repr of a float round-trips exactly; bool before int (True == 1).
        text = obj if isinstance(obj, bytes) else repr(obj).encode("utf-8", "surrogatepass")
        tag = type(obj).__name__.encode()
        h.update(struct.pack("<I", len(tag)) + tag + struct.pack("<Q", len(text)) + text)
    else:
        raise TypeError(f"cannot checksum a {type(obj).__name__} in a checkpoint (tensors and "
                        "primitive containers only)")


def payload_digest(payload: dict) -> str:
    """SHA-256 of everything in ``payload`` except its own checksum entry."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != CHECKSUM_KEY})
    return h.hexdigest()


def _seal(payload: dict) -> dict:
    return {**payload, CHECKSUM_KEY: payload_digest(payload)}


def _verified_load(path: str | os.PathLike) -> dict:
    """``torch.load`` plus the checksum check; ValueError (or torch's own error) when damaged."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"holds a {type(state).__name__}, not a checkpoint dict")
    stored = state.get(CHECKSUM_KEY)
    if stored is None:
        raise ValueError(f"has no {CHECKSUM_KEY} (written by an older version or another program)")
    actual = payload_digest(state)
    if actual != stored:
        raise ValueError(f"checksum mismatch: content hashes to {actual[:12]}..., "
                         f"the file says {str(stored)[:12]}...")
    return state


def _is_environment_error(err: BaseException) -> bool:
    """Errors that say nothing about the file's content: keep the file, re-raise."""
    return isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError, MemoryError))


def save_model_file(path: str | os.PathLike, payload: dict) -> None:
    """A final model file (``{"model": state_dict, "meta": ...}``): sealed with its checksum, atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_save(_seal(payload), path)


def load_model_file(path: str | os.PathLike, *, remove_damaged: bool = True) -> dict:
    """The verified content of a model file written by :func:`save_model_file`.

    A file that does not load, is not a dict, has no checksum or fails it is
    damaged: it is deleted (``remove_damaged``) and :class:`DamagedArtifact`
    names it and says that the next run rebuilds it.
    """
    try:
        return _verified_load(path)
    except Exception as err:  # torch raises several types for damaged zip files
        if _is_environment_error(err):
            raise
        raise discard(path, f"model file: {_short(err)}", remove=remove_damaged) from err


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) < 200 else text[:200] + "..."


class EpochOrder:
    """Deterministic shuffled order of ``num_items`` items, one permutation per epoch.

    Each epoch's permutation depends only on ``(seed, epoch)``, so resuming in
    the middle of an epoch needs nothing but the epoch number and the batch
    position, and every DDP rank computes the same global order.
    """

    def __init__(self, num_items: int, seed: int):
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        self.num_items = num_items
        self.seed = seed

    def permutation(self, epoch: int) -> torch.Tensor:
        """int64 permutation of ``range(num_items)`` for ``epoch``."""
        # SeedSequence mixes (seed, epoch) so neighbouring seeds give unrelated orders.
        mixed = np.random.SeedSequence([self.seed, epoch]).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(mixed) & (2**63 - 1))
        return torch.randperm(self.num_items, generator=generator)

    def num_batches(self, batch_size: int, drop_last: bool = True) -> int:
        full, rest = divmod(self.num_items, batch_size)
        return full if drop_last or rest == 0 else full + 1

    def batches(self, epoch: int, batch_size: int, start_batch: int = 0,
                drop_last: bool = True) -> list[list[int]]:
        """Index lists of epoch ``epoch`` from batch ``start_batch`` on.

        Usable directly as a DataLoader ``batch_sampler``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        order = self.permutation(epoch).tolist()
        count = self.num_batches(batch_size, drop_last)
        return [order[b * batch_size:(b + 1) * batch_size] for b in range(start_batch, count)]


def checkpoint_path(directory: str | os.PathLike, iteration: int) -> Path:
    return Path(directory) / f"iter{iteration:08d}.pt"


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of the checkpoint files in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def _unwrap(model: nn.Module) -> nn.Module:
    # Saving the DDP wrapper would prefix every key with "module.".
    return model.module if isinstance(model, DistributedDataParallel) else model


def _rng_state() -> dict[str, Any]:
    version, mt, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [version, torch.tensor(mt, dtype=torch.int64), gauss],
        "numpy": [np_kind, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos),
                  int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    # Only when CUDA is in use: querying it would otherwise start a CUDA context.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt.tolist()), gauss))
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_kind, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss,
                         np_gauss))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all(cuda)
        else:
            log.warning("checkpoint has CUDA RNG state for %d device(s) but %d are visible; "
                        "CUDA random streams will differ from the original run",
                        len(cuda), torch.cuda.device_count() if torch.cuda.is_available() else 0)


def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # Make the rename itself durable, not only the bytes.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_training_state(directory: str | os.PathLike, *, model: nn.Module,
                        optimizer: torch.optim.Optimizer | None,
                        scheduler_state: dict | None, iteration: int, epoch: int,
                        batch_in_epoch: int, extra: dict | None = None,
                        keep: int = 2) -> Path:
    """Write ``<directory>/iter{iteration:08d}.pt`` and prune all but the newest ``keep``.

    ``epoch`` and ``batch_in_epoch`` name the *next* batch to train on
    (``EpochOrder.batches(epoch, bs, start_batch=batch_in_epoch)``);
    ``iteration`` counts the optimizer steps already taken. ``extra`` must hold
    only tensors and primitive containers (config digest, loss history, ...).
    Call on one rank only under DDP.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT,
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler_state,
        "rng": _rng_state(),
        "iteration": int(iteration),
        "epoch": int(epoch),
        "batch_in_epoch": int(batch_in_epoch),
        "extra": extra if extra is not None else {},
    }
    path = checkpoint_path(directory, iteration)
    _atomic_save(_seal(state), path)
    for _, old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def _load(path: str | os.PathLike) -> dict:
    try:
        state = _verified_load(path)
    except ValueError as err:
        raise ValueError(f"{path} {err}") from err
    if not REQUIRED_KEYS <= state.keys():
        raise ValueError(f"{path} is not a training-state checkpoint")
    if state["format"] != FORMAT:
        raise ValueError(f"{path} has format {state['format']!r}, expected {FORMAT!r}")
    return state


def newest_valid_state(directory: str | os.PathLike) -> tuple[Path, dict] | None:
    """``(path, state)`` of the newest ``iter*.pt`` that loads and passes its checksum, else None.

    Newer files that fail are skipped with a warning and deleted: they can never
    be resumed, and a later save of the same iteration replaces them anyway.
    """
    for _, path in reversed(list_checkpoints(directory)):
        try:
            state = _load(path)
        except Exception as err:  # torch raises several types for damaged zip files
            if _is_environment_error(err) and not isinstance(err, FileNotFoundError):
                raise
            log.warning("skipping damaged checkpoint %s (%s); deleting it and trying the previous one",
                        path, _short(err))
            path.unlink(missing_ok=True)
            continue
        return path, state
    return None


def latest_valid_checkpoint(directory: str | os.PathLike) -> Path | None:
    """Newest ``iter*.pt`` in ``directory`` that loads, passes its checksum and has the expected keys."""
    found = newest_valid_state(directory)
    return None if found is None else found[0]


def load_training_state(path: str | os.PathLike, model: nn.Module,
                        optimizer: torch.optim.Optimizer | None,
                        *, restore_rng: bool = True) -> dict:
    """Load weights, optimizer state and RNG states from ``path`` into the live objects.

    Returns ``{"iteration", "epoch", "batch_in_epoch", "scheduler_state",
    "extra"}``; the caller rebuilds its scheduler from ``scheduler_state``
    (e.g. ``scheduler.load_state_dict``). Tensors land on the devices of the
    model's parameters. Call this after building the model and optimizer and
    before drawing any random number the original run drew after saving.
    """
    state = _load(path)
    return restore_training_state(state, model, optimizer, restore_rng=restore_rng, path=path)


def restore_training_state(state: dict, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                           *, restore_rng: bool = True, path: str | os.PathLike = "checkpoint") -> dict:
    """:func:`load_training_state` for a state already loaded (and verified) by :func:`newest_valid_state`."""
    _unwrap(model).load_state_dict(state["model"])
    if optimizer is not None:
        if state["optimizer"] is None:
            raise ValueError(f"{path} holds no optimizer state")
        optimizer.load_state_dict(state["optimizer"])
    if restore_rng:
        _set_rng_state(state["rng"])
    return {
        "iteration": state["iteration"],
        "epoch": state["epoch"],
        "batch_in_epoch": state["batch_in_epoch"],
        "scheduler_state": state["scheduler"],
        "extra": state["extra"],
    }
