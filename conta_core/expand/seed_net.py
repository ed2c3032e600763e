"""SEC's and DSRG's expansion networks in the workflow: data, training, pseudo-masks.

A round's seed maps (``seeds`` shards, :mod:`conta_core.seeds_step`) train the
method's network (:class:`~conta_core.expand.sec.SecNet` with
:func:`~conta_core.expand.sec.sec_loss`, or :class:`~conta_core.expand.dsrg.DsrgNet`
with :func:`~conta_core.expand.dsrg.dsrg_loss`) through :func:`conta_core.train.train_job`
(checkpoints, resume, DDP). Its CRF-refined predictions on the training images
are the round's pseudo-masks (:func:`pseudo_masks`).

Settings: the ``expand.sec`` / ``expand.dsrg`` config section (the expansion's
``defaults`` in :mod:`conta_core.methods`): ``seeds`` (the seeds step), ``loss``
(the losses' keys), ``pseudo_mask`` (the CRF of the predictions) and ``train``, which holds the
optimiser (``optimizer``, ``lr``, ``momentum``, ``weight_decay``), the length
(``iterations``, ``batch_size``), the step policy (``lr_step``, ``lr_gamma``;
``lr_policy`` poly is accepted too), the data (``crop``, ``scale_range``) and the
network (``weights``: none | imagenet | a path | ``classifier``, the round's
classifier trunk, which the demo uses for lack of ImageNet weights; SEC:
``width``; DSRG: ``depth``, ``output_stride``, ``freeze_bn``).

The dense CRF inside both losses runs per image on the CPU; with ``threads`` > 1
it is spread over that many worker processes (:class:`conta_core.parallel.ProcessMap`),
in order, so the result does not depend on the count.
"""
from __future__ import annotations

import dataclasses
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from ..data.datasets import MEAN, STD, _EpochSeeded, random_scale_flip_crop, to_tensor
from ..parallel import ProcessMap
from ..train import TrainJob, TrainSettings, train_job
from .seeds import UNLABELLED

METHODS = ("sec", "dsrg")


def rgb_of(image: torch.Tensor) -> torch.Tensor:
    """The uint8 [H, W, 3] colours of a normalised [3, H, W] crop (padding: the mean colour).

    Normalisation is affine per channel and the crop's resampling linear, so this equals the
    same crop taken of the uint8 image (up to rounding)."""
    mean = torch.from_numpy(MEAN)[:, None, None]
    std = torch.from_numpy(STD)[:, None, None]
    return ((image * std + mean) * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()


class SeedDataset(_EpochSeeded):
    """(``image``, ``rgb``, ``seeds``, ``labels``) crops for SEC's and DSRG's losses.

    ``seeds``: a reader of the round's seed maps (``get(id)`` -> uint8 [H, W]); the crop
    pads the seed map with :data:`UNLABELLED` (no cue) and the image with its mean colour.
    """

    def __init__(self, index, ids: list[str], seeds, *, crop: int, scale_range: tuple[float, float], seed: int):
        super().__init__(seed)
        self.index, self.ids, self.seeds = index, ids, seeds
        self.crop, self.scale_range = crop, tuple(scale_range)
        self.num_foreground = index.num_classes - 1

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, item: int) -> dict:
        image_id = self.ids[item]
        label = torch.from_numpy(self.seeds.get(image_id).astype(np.int64))
        image, label, _ = random_scale_flip_crop(to_tensor(self.index.read_image(image_id)), label, self.crop,
                                                 self.scale_range, self.rng(item), UNLABELLED)
        labels = torch.zeros(self.num_foreground)
        for cls in self.index.labels(image_id):
            labels[cls - 1] = 1.0
        return {"image": image, "rgb": rgb_of(image), "seeds": label, "labels": labels}


def build_network(method: str, num_classes: int, train: dict, *, load_weights: bool = True):
    """The method's expansion network from its ``train`` settings (``weights: classifier`` builds
    it randomly initialised: :func:`load_classifier_trunk` then copies the trunk in)."""
    weights = train.get("weights", "none")
    if not load_weights or weights == "classifier":
        weights = "none"
    if method == "sec":
        from ..models.vgg import VGG16Trunk, load_vgg16_weights
        from .sec import SecNet

        # LargeFOV: fc6 dilated 12 (the classifier's fc6 is not; the weights' shapes are the same)
        trunk = VGG16Trunk(float(train.get("width", 1.0)), fc6_dilation=12, dropout=float(train.get("dropout", 0.5)),
                           batch_norm=bool(train.get("batch_norm", False)))
        load_vgg16_weights(trunk, weights)
        return SecNet(trunk, num_classes, fc8_std=float(train.get("fc8_std", 0.01)))
    if method == "dsrg":
        from ..models.backbone import build_resnet
        from .dsrg import DsrgNet

        backbone = build_resnet(train["depth"], train["output_stride"], weights, train.get("freeze_bn", True),
                                train.get("freeze_conv1", True))
        return DsrgNet(backbone, num_classes, dropout=float(train.get("dropout", 0.5)))
    raise ValueError(f"expansion network must be one of {METHODS}, got {method!r}")


def trunk_of(model):
    return model.trunk if hasattr(model, "trunk") else model.backbone


def load_classifier_trunk(model, classifier_state: dict, source: str = "classifier.pt") -> None:
    """Copy the round's classifier trunk (its ``backbone.*`` weights) into the network's trunk.

    SEC: the VGG trunk (fc6's dilation differs, its weights' shape does not); DSRG: the ResNet.
    The trunks must have the same shapes (classifier.width / backbone vs the train keys)."""
    trunk = trunk_of(model)
    state = {k[len("backbone."):]: v for k, v in classifier_state.items() if k.startswith("backbone.")}
    own = trunk.state_dict()
    bad = sorted(k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape))
    if bad:
        raise ValueError(f"{source}: the classifier's trunk does not fit the expansion network's "
                         f"({len(bad)} tensors missing or of another shape, e.g. {bad[:3]}); with "
                         "train.weights classifier, make the network's width/depth/batch_norm the classifier's")
    trunk.load_state_dict({k: state[k] for k in own})


def settings_of(train: dict, seed: int) -> TrainSettings:
    s = TrainSettings.from_config(train, seed)
    return dataclasses.replace(s, lr_policy=train.get("lr_policy", "step"), warmup_iters=train.get("warmup_iters", 0))


def loss_of(method: str, section: dict, workers):
    """``loss(model, batch)`` with the section's ``loss`` keys."""
    loss = section["loss"]
    if method == "sec":
        from .sec import sec_loss

        return partial(sec_loss, crf=loss["crf"], fg_decay=loss["fg_decay"], bg_decay=loss["bg_decay"],
                       scale=loss["crf_scale"], workers=workers)
    from .dsrg import dsrg_loss

    return partial(dsrg_loss, fg_threshold=loss["fg_threshold"], bg_threshold=loss["bg_threshold"],
                   grow_on=loss["grow_on"], connectivity=loss["connectivity"], crf=loss["crf"],
                   clip=tuple(loss["constrain_clip"]), scale=loss["crf_scale"], workers=workers)


def groups_of(method: str, model) -> list[dict]:
    if method == "sec":
        from .sec import optimizer_groups
    else:
        from .dsrg import optimizer_groups
    return optimizer_groups(model)


def _seed_job(method, index, ids, seeds, section, num_classes, seed, classifier_state, workers, ctx) -> TrainJob:
    """Model, data, loss and groups (in every DDP rank; ranks > 1 run their CRFs in-process)."""
    train = section["train"]
    torch.manual_seed(seed)
    model = build_network(method, num_classes, train)
    if train.get("weights") == "classifier":
        if classifier_state is None:
            raise ValueError(f"expand.{method}.train.weights is 'classifier' but no classifier was given")
        load_classifier_trunk(model, classifier_state)
    dataset = SeedDataset(index, ids, seeds, crop=train["crop"], scale_range=tuple(train.get("scale_range", (1, 1))),
                          seed=seed)
    return TrainJob(model, dataset, loss_of(method, section, workers if ctx.world_size == 1 else None),
                    groups_of(method, model))


def train_seed_network(method: str, index, ids: list[str], seeds, section: dict, seed: int, device, *,
                       threads: int = 1, classifier_state: dict | None = None, world_size: int = 1,
                       checkpoint=None, scalars=None, name: str | None = None):
    """Train SEC's or DSRG's network on the round's seeds; returns (model in eval mode, loss per epoch)."""
    if method not in METHODS:
        raise ValueError(f"expansion network must be one of {METHODS}, got {method!r}")
    s = settings_of(section["train"], seed)
    with ProcessMap(max(1, threads) if world_size == 1 else 1) as workers:
        build = partial(_seed_job, method, index, ids, seeds, section, index.num_classes, seed, classifier_state,
                        workers if world_size == 1 else None)
        result = train_job(build, s, device, name or f"{method} network", world_size=world_size,
                           checkpoint=checkpoint, scalars=scalars)
    model = build_network(method, index.num_classes, section["train"], load_weights=False)
    model.load_state_dict(result.state_dict)
    return model.eval(), result.history


@torch.no_grad()
def class_probabilities(model, image: np.ndarray, class_ids: list[int], device) -> np.ndarray:
    """Softmax over background + ``class_ids`` of the network's output resized to the image, [K+1, H, W]."""
    model.eval()
    x = to_tensor(image)[None].to(device)
    logits = F.interpolate(model(x), size=image.shape[:2], mode="bilinear", align_corners=False)[0]
    keep = [0] + list(class_ids)
    return F.softmax(logits[keep].float(), dim=0).cpu().numpy()


def pseudo_masks(model, images: list[np.ndarray], classes: list[list[int]], device, crf: dict,
                 workers: ProcessMap | None = None) -> list[np.ndarray]:
    """:func:`conta_core.expand.sec.predict_pseudo_mask` for several images, the network here and the
    CRFs (unscaled kernels, ``crf``) over ``workers``; uint8 [H, W] each."""
    from ..crf import crf_labels  # torch-free: the workers that unpickle it load no torch

    probs = [class_probabilities(model, image, cls, device) for image, cls in zip(images, classes)]
    keeps = [[0] + list(cls) for cls in classes]
    one = partial(crf_labels, **crf)
    if workers is None:
        return [one(i, p, k) for i, p, k in zip(images, probs, keeps)]
    return workers(one, images, probs, keeps)
