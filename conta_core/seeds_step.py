"""The ``seeds`` step of SEC and DSRG: one CAM shard -> one seed-map shard (kind ``seeds``).

Per image: foreground seeds from its CAMs (:func:`conta_core.expand.seeds.seeds_from_cams`,
top 20 % per class by default) plus the method's background cue:

* SEC (:func:`sec_background`): the 10 % least salient pixels of the gradient
  saliency of the round's classifier (:func:`conta_core.expand.sec.gradient_saliency`,
  same-sized images batched); needs torch and the classifier.
* DSRG (:func:`dsrg_background`): normalised saliency < 0.06, the saliency read from
  ``dataset.saliency_root`` or computed by the OpenCV fallback
  (:func:`conta_core.expand.saliency.load_saliency`); numpy only.

This module imports no torch itself (the DSRG seeds job loads none); the SEC cue
imports it when built. Where the index has ground-truth masks, :func:`make_seeds`
also counts how many seed pixels agree with them (a log line; never used by a step).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .cam_labels import same_size_batches
from .expand.seeds import UNLABELLED, lowest_fraction, saliency_background, seeds_from_cams

# background(ids, images) -> one boolean [H, W] cue per image
Background = Callable[[Sequence[str], Sequence[np.ndarray]], list]
BATCH = 8  # same-sized images per saliency pass (gradients of a batch are held at once)


def sec_background(model, device, fraction: float = 0.1, median: int = 3) -> Background:
    """SEC's cue from the round's classifier ``model`` (a CamClassifier, eval mode)."""
    from .data.datasets import to_batch
    from .expand.sec import gradient_saliency

    def background(ids, images):
        saliency = gradient_saliency(model, to_batch(np.stack(images), device), median=median)
        return [lowest_fraction(s, fraction) for s in saliency]
    return background


def dsrg_background(index, saliency_root: str | None, threshold: float = 0.06) -> Background:
    """DSRG's cue: saliency below ``threshold`` (folder maps, or the OpenCV stand-in without a folder)."""
    from .expand.saliency import load_saliency

    def background(ids, images):
        return [saliency_background(load_saliency(index, i, saliency_root), threshold) for i in ids]
    return background


def make_seeds(index, ids: list[str], cams, writer, background: Background, *, fraction: float = 0.2,
               rule: str = "top_fraction", batch_size: int = BATCH, progress=None) -> dict[str, float]:
    """Write the seed map of every id ``writer`` does not hold yet; returns pixel shares.

    ``cams``: a ``cam`` MapReader (item attr ``classes``); ``writer``: a ``seeds`` MapWriter.
    Returns the shares of foreground-seed, background-cue and unlabelled pixels over the
    ids written now, and ``correct``: the share of seed pixels equal to the ground truth
    (NaN without ground truth).
    """
    counts = {"foreground": 0, "background": 0, "unlabelled": 0}
    right = checked = 0
    for batch in same_size_batches(writer.pending(ids), index.size, batch_size):
        images = [index.read_image(i) for i in batch]
        cues = background(batch, images)
        for image_id, cue in zip(batch, cues):
            classes = [int(c) for c in cams.item_attrs(image_id)["classes"]]
            if getattr(cams, "levels", None):  # the stored integers: the same seeds, no float32 read
                cam, levels = cams.get_levels(image_id)
            else:
                cam, levels = cams.get(image_id).astype(np.float32, copy=False), None
            seeds = seeds_from_cams(cam, classes, cue, fraction=fraction, rule=rule, levels=levels)
            writer.put(image_id, seeds, classes=classes)
            labelled = seeds != UNLABELLED
            counts["background"] += int((seeds == 0).sum())
            counts["foreground"] += int((labelled & (seeds != 0)).sum())
            counts["unlabelled"] += int((~labelled).sum())
            if index.has_mask(image_id):
                truth = index.read_mask(image_id)
                known = labelled & (truth != index.void)
                right += int((seeds[known] == truth[known]).sum())
                checked += int(known.sum())
        if progress is not None:
            progress.update(len(batch))
    total = max(sum(counts.values()), 1)
    shares = {k: v / total for k, v in counts.items()}
    shares["correct"] = right / checked if checked else float("nan")
    return shares


def classifier_without_m(path, num_classes: int):
    """The round's classifier from its ``classifier.pt`` as SEC's saliency reads it: trunk and class
    convolution, no CONTA splice (built from the file's own classifier settings, so no confounder
    is needed in CONTA rounds). Returns the model in eval mode."""
    from . import methods
    from .checkpoint import load_model_file

    state = load_model_file(path)  # verified: a damaged file is deleted for a rebuild
    settings = state["meta"]["settings"]
    build = methods.get(settings.get("method", "irnet")).build_round_classifier.load()
    model = build(settings["classifier"], num_classes, {"mode": "off"}, 0, None, load_weights=False)
    own = model.state_dict()
    missing = [k for k in own if k not in state["model"]]
    if missing:
        raise ValueError(f"{path}: no {missing[:3]} in the classifier's weights")
    model.load_state_dict({k: state["model"][k] for k in own})
    return model.eval()
