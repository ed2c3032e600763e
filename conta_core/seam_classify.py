"""Step 1 for ``method: seam``: the round's SEAM classifier, built and trained.

The counterpart of :mod:`conta_core.classify` with the same signatures: round
0 (and ``conta.mode: off``) is plain SEAM; in round t >= 1 CONTA's parts come
from the same conta options, Eq. 3 module and fusion builder the IRNet
classifier uses, spliced into ResNet-38 at B_k.
"""
from __future__ import annotations

from functools import partial

import torch

from . import seam
from .classify import CONTEXT_MODES, ConfounderInputs, conta_option, context_motion, uses_context
from .confounder import class_prior
from .conta import ContextAdjustment
from .models.classifier import parse_blocks
from .models.fusion import build_fusion
from .models.resnet38 import build_resnet38
from .models.seam import SeamClassifier
from .seam_data import SeamClassificationDataset
from .train import Checkpointing, TrainJob, TrainSettings, train_job

SEAM_FROZEN = ("conv1a", "b2", "b2_1", "b2_2")


def build_seam_classifier(settings: dict, num_classes: int, conta: dict, round_index: int,
                          confounder: ConfounderInputs | None, *, load_weights: bool = True,
                          x_norm: float | None = None) -> SeamClassifier:
    """The SEAM classifier of a round (``classify.build_classifier``'s signature)."""
    backbone = build_resnet38(float(settings.get("width", 1.0)), settings["weights"] if load_weights else "none",
                              freeze_bn=settings.get("freeze_bn", True),
                              frozen_blocks=tuple(settings.get("frozen_blocks", SEAM_FROZEN)))
    n = num_classes - 1
    if not uses_context(conta, round_index):
        return SeamClassifier(backbone, n)
    if conta["mode"] not in CONTEXT_MODES:
        raise ValueError(f"conta.mode must be off or one of {CONTEXT_MODES}, got {conta['mode']!r}")
    mode = "seg_mask" if conta["mode"] == "seg_mask" else "adjust"
    make_context = None
    if mode == "adjust":
        if confounder is None:
            raise ValueError("conta.mode 'adjust' in a round > 0 needs the previous round's confounder file")
        map_size = tuple(conta["map_size"])
        if tuple(confounder.confounder.shape[1:]) != map_size:
            raise ValueError(f"{confounder.reader.path}: confounder maps are {confounder.confounder.shape[1:]}, "
                             f"conta.map_size is {list(map_size)}")
        make_context = partial(ContextAdjustment, torch.from_numpy(confounder.confounder),
                               torch.from_numpy(class_prior(confounder.counts, conta["prior"])),
                               m_scale=conta_option(conta, "m_scale"),
                               attention_init=conta_option(conta, "attention_init"), x_norm=x_norm)
    make_fusion = partial(build_fusion, conta_option(conta, "fusion"), m_init=conta_option(conta, "m_init"),
                          hidden=conta_option(conta, "fusion_channels"))
    return SeamClassifier(backbone, n, conta_mode=mode, blocks=parse_blocks(conta["block"]),
                          make_context=make_context, make_fusion=make_fusion)


def initial_seam_classifier(index, ids: list[str], settings: dict, conta: dict, round_index: int, seed: int,
                            confounder: ConfounderInputs | None, *, load_weights: bool = True) -> SeamClassifier:
    """The classifier before training (seeded: the same call gives the same weights)."""
    x_norm = None
    if uses_context(conta, round_index) and conta_option(conta, "attention_init") == "scaled":
        x_norm = confounder.mean_x_norm(ids)
    torch.manual_seed(seed)
    return build_seam_classifier(settings, index.num_classes, conta, round_index, confounder,
                                 load_weights=load_weights, x_norm=x_norm)


def _seam_job(index, ids: list[str], settings: dict, conta: dict, round_index: int, seed: int,
              confounder: ConfounderInputs | None, ctx) -> TrainJob:
    """Model, data, loss and optimizer groups of the SEAM classifier (run in every DDP rank)."""
    model = initial_seam_classifier(index, ids, settings, conta, round_index, seed, confounder)
    x_m = confounder.x_m if uses_context(conta, round_index) else None
    dataset = SeamClassificationDataset(index, ids, crop=settings["crop"], long_side=tuple(settings["long_side"]),
                                        seed=seed, x_m=x_m)
    groups = seam.optimizer_groups(model, float(conta_option(conta, "m_lr_mult")))
    loss = partial(seam.seam_loss, scale=float(settings.get("siamese_scale", seam.SCALE)),
                   ohem_fraction=float(settings.get("ohem_fraction", seam.OHEM_FRACTION)),
                   equivariance_weight=float(settings.get("equivariance_weight", 1.0)))
    return TrainJob(model, dataset, loss, groups)


def train_seam_classifier(index, ids: list[str], settings: dict, conta: dict, round_index: int, seed: int,
                          device: torch.device, confounder: ConfounderInputs | None, *, world_size: int = 1,
                          checkpoint: Checkpointing | None = None, scalars=None
                          ) -> tuple[SeamClassifier, list[float], dict]:
    """Train the round's SEAM classifier (``classify.train_classifier``'s signature and returns: the
    model, the loss per epoch and how far the CONTA weights moved); ``world_size`` > 1 trains with DDP."""
    build = partial(_seam_job, index, ids, settings, conta, round_index, seed, confounder)
    result = train_job(build, TrainSettings.from_config(settings, seed), device, f"seam classifier round {round_index}",
                       world_size=world_size, checkpoint=checkpoint, scalars=scalars)
    model = build_seam_classifier(settings, index.num_classes, conta, round_index, confounder, load_weights=False)
    model.load_state_dict(result.state_dict)
    motion = {}
    if uses_context(conta, round_index):
        start = initial_seam_classifier(index, ids, settings, conta, round_index, seed, confounder,
                                        load_weights=False)
        motion = context_motion(start, model)
    return model.eval(), result.history, motion
