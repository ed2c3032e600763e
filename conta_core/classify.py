"""Step 1 of CONTA: train the image-level classifier (Eq. 2) on [X, M_t].

Round 0 (and every round with ``conta.mode: off``) is the plain CAM
classifier. In round t >= 1 the classifier reads the confounder file of round
t - 1: the confounder set C_t, its class counts and the reduced masks X_m of
the training images.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_model_file, save_model_file
from .confounder import class_prior
from .data.datasets import ClassificationDataset
from .models.backbone import build_resnet
from .models.classifier import CamClassifier, multilabel_soft_margin, parse_blocks
from .store import MapReader
from .train import Checkpointing, TrainJob, TrainSettings, train_job


class ConfounderInputs:
    """The previous round's confounder file: C, counts and X_m by image id."""

    def __init__(self, path: str | Path, class_names: list[str]):
        self.reader = MapReader(path, kind="confounder", expect={"class_names": class_names})
        self.confounder = self.reader.array("confounder")
        self.counts = self.reader.array("counts")

    def x_m(self, image_id: str) -> np.ndarray:
        return self.reader.get(image_id).astype(np.float32)


def uses_context(conta: dict, round_index: int) -> bool:
    return round_index > 0 and conta["mode"] != "off"


def build_classifier(settings: dict, num_classes: int, conta: dict, round_index: int,
                     confounder: ConfounderInputs | None, *, load_weights: bool = True) -> CamClassifier:
    """The classifier for a round; CONTA layers only where the round uses them."""
    backbone = build_resnet(settings["backbone"], settings["output_stride"],
                            settings["weights"] if load_weights else "none",
                            settings.get("freeze_bn", True), settings.get("freeze_conv1", True))
    if not uses_context(conta, round_index):
        return CamClassifier(backbone, num_classes - 1)
    map_size = tuple(conta["map_size"])
    kwargs = dict(conta_mode=conta["mode"], blocks=parse_blocks(conta["block"]), map_size=map_size)
    if conta["mode"] == "adjust":
        if confounder is None:
            raise ValueError("conta.mode 'adjust' in a round > 0 needs the previous round's confounder file")
        if tuple(confounder.confounder.shape[1:]) != map_size:
            raise ValueError(f"{confounder.reader.path}: confounder maps are {confounder.confounder.shape[1:]}, "
                             f"conta.map_size is {list(map_size)}")
        kwargs["confounder"] = torch.from_numpy(confounder.confounder)
        kwargs["prior"] = torch.from_numpy(class_prior(confounder.counts, conta["prior"]))
    return CamClassifier(backbone, num_classes - 1, **kwargs)


def classification_loss(model: CamClassifier, batch: dict) -> torch.Tensor:
    x_m = batch["x_m"] if batch["x_m"].numel() else None
    return multilabel_soft_margin(model(batch["image"], x_m, batch["view"] if x_m is not None else None),
                                  batch["target"])


def _classifier_job(index, ids: list[str], settings: dict, conta: dict, round_index: int, seed: int,
                    confounder: ConfounderInputs | None, ctx) -> TrainJob:
    """Model, data, loss and optimizer groups of the classifier (run in every DDP rank)."""
    torch.manual_seed(seed)
    model = build_classifier(settings, index.num_classes, conta, round_index, confounder)
    x_m = confounder.x_m if uses_context(conta, round_index) else None
    dataset = ClassificationDataset(index, ids, crop=settings["crop"], scale_range=tuple(settings["scale_range"]),
                                    seed=seed, x_m=x_m)
    backbone_params, new_params = model.param_groups()
    groups = [{"params": backbone_params, "lr_mult": 1.0},
              {"params": new_params, "lr_mult": settings.get("new_layer_lr_mult", 10.0)}]
    # A mean over the batch: DDP's gradient average over equal shares is the global-batch gradient.
    return TrainJob(model, dataset, classification_loss, groups)


def train_classifier(index, ids: list[str], settings: dict, conta: dict, round_index: int, seed: int,
                     device: torch.device, confounder: ConfounderInputs | None, *, world_size: int = 1,
                     checkpoint: Checkpointing | None = None) -> tuple[CamClassifier, list[float]]:
    """Train the round's classifier; ``world_size`` > 1 trains with DDP (see :func:`train_job`)."""
    build = partial(_classifier_job, index, ids, settings, conta, round_index, seed, confounder)
    result = train_job(build, TrainSettings.from_config(settings, seed), device, f"classifier round {round_index}",
                       world_size=world_size, checkpoint=checkpoint)
    model = build_classifier(settings, index.num_classes, conta, round_index, confounder, load_weights=False)
    model.load_state_dict(result.state_dict)
    return model.eval(), result.history


def save_model(path: str | Path, model: torch.nn.Module, meta: dict) -> None:
    """A checkpoint loadable with ``weights_only=True``, with its payload checksum; written atomically."""
    save_model_file(path, {"model": model.state_dict(), "meta": meta})


def load_model(path: str | Path, model: torch.nn.Module) -> dict:
    """Load verified weights into ``model``; a damaged file is deleted and named (``DamagedArtifact``)."""
    state = load_model_file(path)
    model.load_state_dict(state["model"])
    return state["meta"]
