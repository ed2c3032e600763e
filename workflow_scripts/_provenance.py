"""Which settings made an artifact, and the check that a step's inputs are the ones it expects.

Every rule passes its step three JSON objects (rules/conta_steps.py):

- ``--settings``: the keys that make the step's output. Their digest is the
  output's ``config_digest`` (HDF5 root attribute, or ``meta["config_digest"]`` of a
  model file), recorded with the round.
- ``--runtime``: keys that change only the speed (batch sizes of inference, loader
  workers). Merged over the settings for the step to read; never in the digest.
- ``--expect``: for each input artifact, its path, kind, the round and the digest its
  producer must have recorded. A file made by other settings or another round (copied
  from another run, or left from an earlier config) is refused with a message that
  names it and says what to do, before anything reads it.
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

from conta_core.store import digest

MODEL_KINDS = {"classifier", "segmenter", "relation_net", "seed_net"}  # seed_net: SEC/DSRG network
_digests: dict[int, str] = {}  # id(merged settings) -> digest of the result settings


def merge(base: dict, extra: dict) -> dict:
    """``extra`` laid over a copy of ``base``, nested dicts key by key."""
    out = copy.deepcopy(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class StepParser(argparse.ArgumentParser):
    """argparse with the step's --settings/--runtime/--expect; after parsing, ``args.settings``
    holds both settings and runtime keys, ``args.config_digest`` the digest of the settings."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.add_argument("--runtime", type=json.loads, default={},
                          help="speed-only settings (JSON), merged over --settings, not in the digest")
        self.add_argument("--expect", type=json.loads, default=[],
                          help="JSON list of {path, kind, round, config_digest} of the inputs to check")

    def parse_args(self, *a, **k):
        args = super().parse_args(*a, **k)
        if isinstance(getattr(args, "settings", None), dict):
            args.config_digest = digest(args.settings)
            args.settings = merge(args.settings, args.runtime)
            _digests[id(args.settings)] = args.config_digest
        return args


def settings_digest(settings: dict) -> str:
    """The config digest to record for ``settings``: that of the result settings when these
    are a step's parsed (merged) settings, else the digest of ``settings`` itself."""
    return _digests.get(id(settings)) or digest(settings)


class ForeignArtifact(SystemExit):
    """An input made by other settings or another round than the run expects."""


def _refuse(path: str, kind: str, what: str) -> ForeignArtifact:
    return ForeignArtifact(
        f"{path}: {what}. This {kind} file was not made by this run's settings (copied from "
        f"another run, or left by an earlier config), so it is not used. Delete it and rerun: "
        f"Snakemake rebuilds it and everything that depends on it.")


def _model_meta(path: str) -> dict | None:
    """The model file's meta, or None when it cannot be read here: the step's own loader
    then reports (and for a damaged file, removes) it."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # damaged or foreign format: left to the loader's own checks
        return None
    meta = state.get("meta") if isinstance(state, dict) else None
    return meta if isinstance(meta, dict) else None


def _artifact_attrs(path: str, kind: str) -> dict:
    from conta_core.store import MapReader

    with MapReader(path, kind=kind) as reader:
        return dict(reader.attrs)


def check_inputs(expectations: list[dict]) -> None:
    """Refuse (SystemExit) any input whose recorded digest or round is not the expected one."""
    for want in expectations or []:
        path, kind = want["path"], want["kind"]
        if not Path(path).exists():
            raise SystemExit(f"{path}: input {kind} file does not exist")
        if kind in MODEL_KINDS or str(path).endswith(".pt"):  # every network file is a .pt
            attrs = _model_meta(path)
            if attrs is None:
                continue
        else:
            attrs = _artifact_attrs(path, kind)
        got_digest, got_round = attrs.get("config_digest"), attrs.get("round")
        if got_digest is None:
            raise _refuse(path, kind, "it records no config_digest (made by an older version of "
                                      "the workflow or another program)")
        problems = []
        if got_digest != want["config_digest"]:
            problems.append(f"config_digest {got_digest}, expected {want['config_digest']}")
        if want.get("round") is not None and got_round is not None and int(got_round) != int(want["round"]):
            problems.append(f"round {got_round}, expected {want['round']}")
        if problems:
            raise _refuse(path, kind, "its " + "; ".join(problems))
