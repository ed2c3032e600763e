"""Training AffinityNet on a round's confident labels, through the shared training loop.

The loop (:func:`conta_core.train.train_job`) gives resumable checkpoints and
DDP as for the classifier and DeepLab. Data: image crops and the matching crops
of the full-resolution confident labels (:func:`~.affinitynet.make_aff_label`,
255 unsure, padding 255), as :class:`~conta_core.data.datasets.SegmentationDataset`
makes them for DeepLab. The trunk starts from ImageNet ResNet-38 weights (the
authors' choice) or, with ``weights: classifier`` (runs without pretrained
weights, like IRNet's demo setting), from the round's trained SEAM classifier.
Settings (``expand.affinitynet.train``): the authors' SGD, lr 0.1 poly 0.9,
weight decay 5e-4, batch 8, 8 epochs, new layers at 10x; conv1a and B2 frozen.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from ..data.datasets import SegmentationDataset
from ..models.resnet38 import build_resnet38
from ..train import Checkpointing, TrainJob, TrainSettings, train_job
from .affinitynet import AffinityNet, affinity_training_loss

FROZEN = ("conv1a", "b2", "b2_1", "b2_2")


def build_affinity_net(settings: dict, *, load_weights: bool = True, classifier: str | Path | None = None
                       ) -> AffinityNet:
    """AffinityNet on ResNet-38 (``width``, ``weights``: none | classifier | <.params or .pth>)."""
    weights = settings.get("weights", "none")
    from_classifier = weights == "classifier"
    net = AffinityNet(build_resnet38(float(settings.get("width", 1.0)),
                                     "none" if from_classifier or not load_weights else weights,
                                     freeze_bn=settings.get("freeze_bn", True),
                                     frozen_blocks=tuple(settings.get("frozen_blocks", FROZEN))))
    if from_classifier and load_weights:
        if classifier is None:
            raise ValueError("expand.affinitynet.train.weights 'classifier' needs the round's classifier file")
        load_trunk(net, classifier)
    return net


def load_trunk(net: AffinityNet, path: str | Path) -> None:
    """Copy the ResNet-38 trunk (``backbone.*``) of a SEAM classifier checkpoint into ``net``."""
    from ..checkpoint import load_model_file

    state = load_model_file(path)["model"]
    own = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    if not own:
        raise ValueError(f"{path}: no backbone.* weights in the checkpoint")
    missing, unexpected = net.backbone.load_state_dict(own, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: the classifier's trunk does not fit the affinity network's (missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]}); use the classifier's width")


def _affinity_job(index, ids: list[str], labels, settings: dict, seed: int, classifier, ctx) -> TrainJob:
    torch.manual_seed(seed)
    model = build_affinity_net(settings, classifier=classifier)
    dataset = SegmentationDataset(index, ids, labels, crop=settings["crop"],
                                  scale_range=tuple(settings.get("scale_range", (0.9, 1.1))), seed=seed)
    groups = model.param_groups()
    radius = int(settings.get("radius", 5))
    return TrainJob(model, dataset, partial(affinity_training_loss, radius=radius),
                    [{"params": groups["backbone"], "lr_mult": 1.0},
                     {"params": groups["new"], "lr_mult": float(settings.get("new_layer_lr_mult", 10.0))}])


def train_affinity_net(index, ids: list[str], labels, settings: dict, seed: int, device: torch.device, *,
                       classifier: str | Path | None = None, world_size: int = 1,
                       checkpoint: Checkpointing | None = None) -> tuple[AffinityNet, list[float]]:
    """Train the round's affinity network; ``labels``: confident label maps by id (``.get(image_id)``)."""
    build = partial(_affinity_job, index, ids, labels, settings, seed, classifier)
    result = train_job(build, TrainSettings.from_config(settings, seed), device, "affinity net",
                       world_size=world_size, checkpoint=checkpoint)
    model = build_affinity_net(settings, load_weights=False)
    model.load_state_dict(result.state_dict)
    return model.eval(), result.history
