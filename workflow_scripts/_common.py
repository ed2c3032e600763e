"""What every step's entry point shares: arguments, GPUs, threads, seeds, device, shards, checkpoints.

The entry points are thin: parse the rule's inputs/outputs/settings, call
conta_core, write the outputs. Settings arrive as one JSON object (the rule's
config section) so that Snakemake reruns a step exactly when its settings change.

Each job logs one ``start`` line (script, time, claimed GPUs, device, threads,
seed) and one ``end`` line to stderr, i.e. the rule's log; both carry the wall
clock as ``unix=<seconds>`` so tools and tests can see which jobs overlapped.
"""
from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

# The conta_core package beside these scripts, also where it is not installed (a conda env
# from envs/conta.yaml holds only the dependencies); an installed one comes first.
_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.append(_REPO)

from _provenance import StepParser, check_inputs, settings_digest  # noqa: E402

STEP_DELAY_ENV = "CONTA_TEST_STEP_DELAY_S"  # test hook, see conta_core.train
_claim = None  # the job's GPU claim: held (its lock files open) until the process exits
_threads = None  # the job's CPU thread count (set by setup, recorded by provenance)


def parser(description: str) -> argparse.ArgumentParser:
    """The step's arguments; --runtime and --expect come with --settings (see _provenance)."""
    p = StepParser(description=description)
    p.add_argument("--settings", type=json.loads, required=True,
                   help="the step's settings as a JSON object")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (the rule's threads)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--gpus", type=int, default=None,
                   help="GPUs this job holds (the rule's gpu resource): claimed so that no other "
                        "running job uses them; a scheduler's CUDA_VISIBLE_DEVICES is respected; "
                        "0 hides all GPUs. Without it the visible devices are left as they are.")
    return p


def round_parser(description: str, *, shard: bool = False, out: bool = True) -> argparse.ArgumentParser:
    """:func:`parser` with what a round's step takes: ``--index-dir``, ``--round``, and
    ``--shard`` (a sharded step) and ``--out`` where asked."""
    p = parser(description)
    p.add_argument("--index-dir", type=Path, required=True)
    p.add_argument("--round", type=int, required=True)
    if shard:
        p.add_argument("--shard", type=int, required=True)
    if out:
        p.add_argument("--out", type=Path, required=True)
    return p


def add_training_args(p: argparse.ArgumentParser) -> None:
    """A training step's resumable checkpoints and optional TensorBoard scalars."""
    add_checkpoint_args(p)
    p.add_argument("--tensorboard", type=Path, help="write TensorBoard scalars here (logging.tensorboard)")


def add_checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint-dir", type=Path,
                   help="folder for resumable training state (not a Snakemake output)")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="save the training state every N iterations (0: never)")


def _log(message: str) -> None:
    print(f"[{os.path.basename(sys.argv[0])}] {message}", file=sys.stderr, flush=True)


def setup(args: argparse.Namespace, *, uses_torch: bool = True):
    """GPU claim, threads, seeds and determinism from the arguments; returns the torch device.

    The GPU claim comes first, before anything initialises CUDA: it sets
    CUDA_VISIBLE_DEVICES to the job's devices (see conta_core.devices.claim_gpus).
    A CPU-only step passes ``uses_torch=False``: torch is then never imported
    (2-3 s per job) and the returned device is None.
    """
    global _claim, _threads
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="[%(name)s] %(levelname)s %(message)s")
    settings = args.settings
    threads = _threads = args.threads
    seed = int(settings.get("seed", 0))
    random.seed(seed)
    np.random.seed(seed)
    device = None
    if uses_torch:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        import torch
        from conta_core.devices import claim_gpus, resolve_device, set_threads, use_deterministic_algorithms

        if args.gpus is not None:
            _claim = claim_gpus(0 if str(args.device).strip().lower() == "cpu" else max(0, args.gpus))
        set_threads(threads)
        # Same inputs, same numbers: a resumed run must reproduce the uninterrupted one.
        use_deterministic_algorithms()
        torch.backends.cudnn.benchmark = False
        torch.manual_seed(seed)
        device = resolve_device(args.device)
    gpus = "unclaimed" if _claim is None else ",".join(map(str, _claim.devices)) or "none"
    start = time.time()
    _log(f"start {time.strftime('%H:%M:%S')} unix={start:.3f} pid={os.getpid()} gpus={gpus} "
         f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r} device {device or 'none (CPU step)'} "
         f"threads {threads} seed {seed}")
    atexit.register(lambda: _log(f"end {time.strftime('%H:%M:%S')} unix={time.time():.3f} "
                                 f"({time.time() - start:.1f}s)"))
    # Provenance: every input artifact must come from this run's settings and round.
    check_inputs(getattr(args, "expect", None))
    return device


def step_delay() -> None:
    """Sleep ``$CONTA_TEST_STEP_DELAY_S`` seconds (tests only: makes a step slow enough to kill)."""
    delay = float(os.environ.get(STEP_DELAY_ENV) or 0)
    if delay:
        time.sleep(delay)


def checkpointing(args: argparse.Namespace, inputs: list[str | os.PathLike]):
    """The step's :class:`conta_core.train.Checkpointing`, or None without ``--checkpoint-dir``.

    A checkpoint is resumed only by the same settings over the same inputs
    (paths, sizes and modification times), so a rebuilt input or a changed
    setting starts training afresh.
    """
    if args.checkpoint_dir is None:
        return None
    from conta_core.store import digest
    from conta_core.train import Checkpointing

    # The thread count is part of what is trained: float sums split per thread differ, so a
    # checkpoint written with another count is not resumed (the run starts afresh).
    # The result settings' digest, not the runtime keys: more loader workers resume the same run.
    identity = {"settings": getattr(args, "config_digest", args.settings), "inputs": [], "threads": args.threads}
    for path in inputs:
        stat = os.stat(path)
        identity["inputs"].append([str(path), stat.st_size, stat.st_mtime_ns])
    return Checkpointing.prepare(args.checkpoint_dir, args.checkpoint_every, digest(identity))


def shard_ids(ids: list[str], shard: int, shards: int) -> list[str]:
    """Shard k of S holds every S-th image, starting at k (balanced, deterministic)."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} outside 0..{shards - 1}")
    return ids[shard::shards]


def provenance(step: str, round_index: int | None, settings: dict, class_names: list[str], **extra) -> dict:
    attrs = {"step": step, "config_digest": settings_digest(settings), "class_names": class_names, **extra}
    if _threads is not None:  # results depend on the CPU thread count: record it with every artifact
        attrs["threads"] = _threads
    if round_index is not None:
        attrs["round"] = round_index
    return attrs
