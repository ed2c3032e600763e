"""What every step's entry point shares: arguments, threads, seeds, device, shards.

The entry points are thin: parse the rule's inputs/outputs/settings, call
conta_core, write the outputs. Settings arrive as one JSON object (the rule's
config section) so that Snakemake reruns a step exactly when its settings change.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import numpy as np


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--settings", type=json.loads, required=True,
                   help="the step's settings as a JSON object")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (the rule's threads)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    return p


def setup(args: argparse.Namespace):
    """Threads and seeds from the arguments; returns the torch device."""
    import torch
    from conta_core.devices import resolve_device

    settings = args.settings
    threads = args.threads
    torch.set_num_threads(threads)
    seed = int(settings.get("seed", 0))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    device = resolve_device(args.device)
    print(f"[{os.path.basename(sys.argv[0])}] start {time.strftime('%H:%M:%S')} device {device} "
          f"threads {threads} seed {seed}", file=sys.stderr, flush=True)
    return device


def shard_ids(ids: list[str], shard: int, shards: int) -> list[str]:
    """Shard k of S holds every S-th image, starting at k (balanced, deterministic)."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} outside 0..{shards - 1}")
    return ids[shard::shards]


def provenance(step: str, round_index: int | None, settings: dict, class_names: list[str], **extra) -> dict:
    from conta_core.store import digest

    attrs = {"step": step, "config_digest": digest(settings), "class_names": class_names, **extra}
    if round_index is not None:
        attrs["round"] = round_index
    return attrs
