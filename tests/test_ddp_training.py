"""Data-parallel training of the real models: 2 gloo ranks follow single-process training.

The tiny configuration's classifier and DeepLab, on the generated dataset, with
the same global batch: DDP must reproduce the single-process loss curve and
weights up to float rounding. BatchNorm is frozen here (``freeze_bn: true``):
with training BN every rank would normalise with the statistics of its own half
batch, a different model; on CUDA the workers use SyncBatchNorm instead, which
gloo on a CPU does not support.
"""
from __future__ import annotations

import copy
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conta_core import classify, segment
from conta_core.data.index import DatasetIndex, build_index
from conta_core.data.synthetic import generate_synthetic
from conta_core.train import Checkpointing, TrainSettings, train_job

REPO = Path(__file__).resolve().parents[1]


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(config, index) of tests/configs/tiny.yaml over config.yaml, dataset generated."""
    config = _merge(yaml.safe_load((REPO / "config.yaml").read_text()),
                    yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text()))
    root = tmp_path_factory.mktemp("ddp")
    generate_synthetic(root / "synthetic", **config["dataset"]["synthetic"])
    dataset = dict(config["dataset"], root=str(root / "synthetic"))
    build_index(dataset, root / "index")
    return config, DatasetIndex.load(root / "index")


class GroundTruthMasks:
    """Stands in for the pseudo-mask store (``get(id)``); picklable for the spawned ranks."""

    def __init__(self, index: DatasetIndex):
        self.index = index

    def get(self, image_id: str) -> np.ndarray:
        return self.index.read_mask(image_id)


def _assert_same_training(single, ddp, init: dict, atol: float):
    """Same loss curve; weights that moved the same way.

    Per-element weights are compared through the update (trained - initial):
    AdamW's first steps move every weight by about +-lr whatever the size of
    its gradient, so an element with a near-zero gradient can take either sign
    from float rounding alone; the relative difference of the whole update is
    what must be small.
    """
    assert len(single.step_losses) == len(ddp.step_losses) >= 4
    np.testing.assert_allclose(ddp.step_losses, single.step_losses, rtol=atol, atol=atol)
    np.testing.assert_allclose(ddp.history, single.history, rtol=atol, atol=atol)
    moved, differ = 0.0, 0.0
    for name, value in single.state_dict.items():
        if value.is_floating_point():
            moved += float(((value - init[name]) ** 2).sum())
            differ += float(((ddp.state_dict[name] - value) ** 2).sum())
        else:
            assert torch.equal(ddp.state_dict[name], value), name
    print(f"relative difference of the weight updates: {(differ / moved) ** 0.5:.2e}")
    assert moved > 0 and (differ / moved) ** 0.5 < 1e-2


def test_ddp_classifier_matches_single_process_and_resumes(tiny, tmp_path):
    config, index = tiny
    # 24 images, global batch 8: 3 steps per epoch, 2 epochs.
    settings = dict(config["classifier"], freeze_bn=True, epochs=2)
    ids = index.ids("train")
    build = partial(classify._classifier_job, index, ids, settings, config["conta"], 0, config["seed"], None)
    s = TrainSettings.from_config(settings, config["seed"])
    torch.set_num_threads(1)
    single = train_job(build, s, torch.device("cpu"), "single")
    checkpoint = Checkpointing.prepare(tmp_path / "ckpt", every=2, digest="tiny")
    ddp = train_job(build, s, torch.device("cpu"), "ddp", world_size=2, checkpoint=checkpoint)
    _assert_same_training(single, ddp, build(_single_ctx()).model.state_dict(), atol=1e-5)

    # Rank 0 saved at iterations 2 and 4; two DDP ranks resume from the newer one (mid-epoch)
    # and end where the uninterrupted run ended.
    resumed_from = Checkpointing.prepare(tmp_path / "ckpt", every=2, digest="tiny")
    assert resumed_from.resume_from is not None and resumed_from.resume_from.name == "iter00000004.pt"
    resumed = train_job(build, s, torch.device("cpu"), "resumed", world_size=2, checkpoint=resumed_from)
    assert len(resumed.step_losses) == 2
    np.testing.assert_allclose(resumed.step_losses, ddp.step_losses[4:], rtol=0, atol=1e-6)
    assert resumed.history == pytest.approx(ddp.history, abs=1e-6)
    for name, value in ddp.state_dict.items():
        torch.testing.assert_close(resumed.state_dict[name], value, rtol=0, atol=1e-6, msg=name)


def test_ddp_segmenter_matches_single_process(tiny):
    """DeepLab's loss is normalised by the global labelled-pixel count under DDP."""
    config, index = tiny
    settings = dict(config["segment"], freeze_bn=True, epochs=2, msc_scales=[1.0, 0.5])
    ids = index.ids("train")
    build = partial(segment._segmenter_job, index, ids, GroundTruthMasks(index), settings, config["seed"])
    s = TrainSettings.from_config(settings, config["seed"])
    torch.set_num_threads(1)
    single = train_job(build, s, torch.device("cpu"), "single")
    ddp = train_job(build, s, torch.device("cpu"), "ddp", world_size=2)
    # 1e-4: the losses are means over thousands of pixels summed in another order under DDP,
    # and this random-init, frozen-BN net spikes to a loss of ~100 at step 2, which amplifies
    # that rounding to 1.5e-5..2.5e-5 relative by step 6 (measured). A per-rank normalisation
    # (the bug this guards against) differs by 1.3e-4 at step 0 and 4e-3..7e-3 at steps 1-2.
    _assert_same_training(single, ddp, build(_single_ctx()).model.state_dict(), atol=1e-4)


def test_batch_must_split_evenly(tiny):
    config, index = tiny
    settings = dict(config["classifier"], freeze_bn=True, batch_size=6)
    build = partial(classify._classifier_job, index, index.ids("train"), settings, config["conta"], 0,
                    config["seed"], None)
    with pytest.raises(ValueError, match="divisible"):  # raised before any rank is started
        train_job(build, TrainSettings.from_config(settings, 0), torch.device("cpu"), "odd", world_size=4)


def _single_ctx():
    from conta_core.distributed import DistributedContext

    return DistributedContext(0, 1, torch.device("cpu"), None)
