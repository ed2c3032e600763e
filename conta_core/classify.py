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
from .scalars import ScalarLog
from .train import Checkpointing, TrainJob, TrainSettings, train_job


# The config's conta modes; permuted and oracle build the adjust model and differ only in
# which X_m the confounder file holds (conta_core.confounder.x_m_sources).
CONTEXT_MODES = ("adjust", "permuted", "oracle", "seg_mask")

# The original, inert design (issue 11): a 1x1 identity splice with zero M weights at the
# backbone rate, M exactly as Eq. 3 prints it, nn.Linear's W1/W2. Kept runnable; the
# defaults (schema and config.yaml) are the measured choices (README, "Does M_t act?"): on the
# demo's round-1 classifier the linear fusion with the other live keys let M act 100-200 times
# more than the conv block (CAM change own vs permuted X_m 0.10-0.19 % vs 0.001 % of the peak).
INERT_CONTA = {"fusion": "linear", "m_init": "zero", "m_scale": "prior", "attention_init": "default",
               "m_lr_mult": 1.0, "fusion_channels": None}
LIVE_CONTA = {"fusion": "linear", "m_init": "balanced", "m_scale": "normalised", "attention_init": "scaled",
              "m_lr_mult": 10.0, "fusion_channels": None}


def conta_option(conta: dict, key: str):
    """A conta key, with the live defaults where a (test or old) config leaves it out."""
    return conta.get(key, LIVE_CONTA[key])


class ConfounderInputs:
    """The previous round's confounder file: C, counts and X_m by image id."""

    def __init__(self, path: str | Path, class_names: list[str]):
        self.reader = MapReader(path, kind="confounder", expect={"class_names": class_names})
        self.confounder = self.reader.array("confounder")
        self.counts = self.reader.array("counts")

    def x_m(self, image_id: str) -> np.ndarray:
        return self.reader.get(image_id).astype(np.float32, copy=False)

    def mean_x_norm(self, ids: list[str]) -> float:
        """The root-mean-square norm of X_m over ``ids`` (scale of W1's start)."""
        return float(np.sqrt(np.mean([np.square(self.x_m(i)).sum() for i in ids]))) if ids else 1.0


def uses_context(conta: dict, round_index: int) -> bool:
    return round_index > 0 and conta["mode"] != "off"


def build_backbone(settings: dict, load_weights: bool = True):
    """The classifier's trunk: ``backbone: vgg16`` (SEC's VGG-16 LargeFOV, keys ``width``,
    ``fc6_dilation``; the recipe ``sec``'s backbone) or a ResNet depth (irnet, dsrg)."""
    weights = settings["weights"] if load_weights else "none"
    if settings["backbone"] == "vgg16":
        from .models.vgg import build_vgg16

        return build_vgg16(weights, width=float(settings.get("width", 1.0)),
                           fc6_dilation=int(settings.get("fc6_dilation", 1)),
                           output_stride=settings.get("output_stride", 8),
                           batch_norm=bool(settings.get("batch_norm", False)))
    # IRNet's CAM network: a stage that drops its stride is not dilated (classifier.dilate)
    return build_resnet(settings["backbone"], settings["output_stride"], weights,
                        settings.get("freeze_bn", True), settings.get("freeze_conv1", True),
                        dilate=settings.get("dilate", False))


def build_classifier(settings: dict, num_classes: int, conta: dict, round_index: int,
                     confounder: ConfounderInputs | None, *, load_weights: bool = True,
                     x_norm: float | None = None) -> CamClassifier:
    """The classifier for a round; CONTA layers only where the round uses them.

    ``x_norm``: the typical norm of X_m (``attention_init: scaled``; only the
    start of W1 depends on it, so inference may leave it out)."""
    backbone = build_backbone(settings, load_weights)
    if not uses_context(conta, round_index):
        return CamClassifier(backbone, num_classes - 1)
    if conta["mode"] not in CONTEXT_MODES:
        raise ValueError(f"conta.mode must be off or one of {CONTEXT_MODES}, got {conta['mode']!r}")
    map_size = tuple(conta["map_size"])
    model_mode = "seg_mask" if conta["mode"] == "seg_mask" else "adjust"
    kwargs = dict(conta_mode=model_mode, blocks=parse_blocks(conta["block"]), map_size=map_size,
                  fusion=conta_option(conta, "fusion"), fusion_channels=conta_option(conta, "fusion_channels"),
                  m_init=conta_option(conta, "m_init"))
    if model_mode == "adjust":
        if confounder is None:
            raise ValueError("conta.mode 'adjust' in a round > 0 needs the previous round's confounder file")
        if tuple(confounder.confounder.shape[1:]) != map_size:
            raise ValueError(f"{confounder.reader.path}: confounder maps are {confounder.confounder.shape[1:]}, "
                             f"conta.map_size is {list(map_size)}")
        kwargs["confounder"] = torch.from_numpy(confounder.confounder)
        kwargs["prior"] = torch.from_numpy(class_prior(confounder.counts, conta["prior"]))
        kwargs.update(m_scale=conta_option(conta, "m_scale"), attention_init=conta_option(conta, "attention_init"),
                      x_norm=x_norm)
    return CamClassifier(backbone, num_classes - 1, **kwargs)


def classification_loss(model: CamClassifier, batch: dict) -> torch.Tensor:
    x_m = batch["x_m"] if batch["x_m"].numel() else None
    return multilabel_soft_margin(model(batch["image"], x_m, batch["view"] if x_m is not None else None),
                                  batch["target"])


def initial_classifier(index, ids: list[str], settings: dict, conta: dict, round_index: int, seed: int,
                       confounder: ConfounderInputs | None, *, load_weights: bool = True) -> CamClassifier:
    """The classifier before training (seeded: the same call gives the same weights)."""
    x_norm = None
    if uses_context(conta, round_index) and conta_option(conta, "attention_init") == "scaled":
        x_norm = confounder.mean_x_norm(ids)
    torch.manual_seed(seed)
    return build_classifier(settings, index.num_classes, conta, round_index, confounder,
                            load_weights=load_weights, x_norm=x_norm)


def context_motion(start: CamClassifier, trained: CamClassifier) -> dict[str, float]:
    """How far the CONTA weights moved in training: ||W - W_0|| / ||W_0|| (W1, W2, M weights)."""
    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a.detach(), b.detach()
        return float((b - a).norm() / a.norm().clamp_min(1e-12))

    out = {}
    if getattr(trained, "context", None) is not None:
        out["w1_rel_change"] = rel(start.context.w1.weight, trained.context.w1.weight)
        out["w2_rel_change"] = rel(start.context.w2.weight, trained.context.w2.weight)
    m0 = torch.cat([p.detach().flatten() for f in start.fusion.values() for p in f.m_parameters()] or [torch.zeros(0)])
    m1 = torch.cat([p.detach().flatten() for f in trained.fusion.values() for p in f.m_parameters()] or [torch.zeros(0)])
    if m0.numel():
        out["m_weight_norm_start"] = float(m0.norm())
        out["m_weight_norm_end"] = float(m1.norm())
    return out


def _classifier_job(index, ids: list[str], settings: dict, conta: dict, round_index: int, seed: int,
                    confounder: ConfounderInputs | None, ctx) -> TrainJob:
    """Model, data, loss and optimizer groups of the classifier (run in every DDP rank)."""
    model = initial_classifier(index, ids, settings, conta, round_index, seed, confounder)
    x_m = confounder.x_m if uses_context(conta, round_index) else None
    dataset = ClassificationDataset(index, ids, crop=settings["crop"], scale_range=tuple(settings["scale_range"]),
                                    seed=seed, x_m=x_m)
    params = model.param_groups()
    groups = [{"params": params["backbone"], "lr_mult": 1.0},
              {"params": params["new"], "lr_mult": settings.get("new_layer_lr_mult", 10.0)},
              {"params": params["context_m"], "lr_mult": float(conta_option(conta, "m_lr_mult"))}]
    # A mean over the batch: DDP's gradient average over equal shares is the global-batch gradient.
    return TrainJob(model, dataset, classification_loss, groups)


def train_classifier(index, ids: list[str], settings: dict, conta: dict, round_index: int, seed: int,
                     device: torch.device, confounder: ConfounderInputs | None, *, world_size: int = 1,
                     checkpoint: Checkpointing | None = None,
                     scalars: ScalarLog | None = None) -> tuple[CamClassifier, list[float], dict]:
    """Train the round's classifier; ``world_size`` > 1 trains with DDP (see :func:`train_job`).

    Returns the model, the loss per epoch and :func:`context_motion` (empty in rounds without M)."""
    build = partial(_classifier_job, index, ids, settings, conta, round_index, seed, confounder)
    result = train_job(build, TrainSettings.from_config(settings, seed), device, f"classifier round {round_index}",
                       world_size=world_size, checkpoint=checkpoint, scalars=scalars)
    model = build_classifier(settings, index.num_classes, conta, round_index, confounder, load_weights=False)
    model.load_state_dict(result.state_dict)
    motion = {}
    if uses_context(conta, round_index):
        start = initial_classifier(index, ids, settings, conta, round_index, seed, confounder, load_weights=False)
        motion = context_motion(start, model)
    return model.eval(), result.history, motion


def save_model(path: str | Path, model: torch.nn.Module, meta: dict) -> None:
    """A checkpoint loadable with ``weights_only=True``, with its payload checksum; written atomically."""
    save_model_file(path, {"model": model.state_dict(), "meta": meta})


def load_model(path: str | Path, model: torch.nn.Module) -> dict:
    """Load verified weights into ``model``; a damaged file is deleted and named (``DamagedArtifact``)."""
    state = load_model_file(path)
    model.load_state_dict(state["model"])
    return state["meta"]
