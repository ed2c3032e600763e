"""Step 3 of CONTA: DeepLab-v2 trained on the pseudo-masks, and its predictions."""
from __future__ import annotations

import sys

import numpy as np
import torch
from tqdm import tqdm

from .crf import dense_crf
from .data.datasets import SegmentationDataset, to_tensor
from .models.backbone import build_resnet
from .models.deeplab import DeepLabV2, msc_loss
from .train import TrainSettings, train


def build_segmenter(settings: dict, num_classes: int, *, load_weights: bool = True) -> DeepLabV2:
    backbone = build_resnet(settings["backbone"], settings["output_stride"],
                            settings["weights"] if load_weights else "none",
                            settings.get("freeze_bn", True), settings.get("freeze_conv1", True))
    return DeepLabV2(backbone, num_classes, settings["aspp_rates"], settings["msc_scales"])


def train_segmenter(index, ids: list[str], masks, settings: dict, seed: int, device: torch.device,
                    round_index: int) -> tuple[DeepLabV2, list[float]]:
    torch.manual_seed(seed)
    model = build_segmenter(settings, index.num_classes)
    dataset = SegmentationDataset(index, ids, masks, crop=settings["crop"],
                                  scale_range=tuple(settings["scale_range"]), seed=seed, ignore_index=index.void)
    groups = model.param_groups()
    # DeepLab-v2: 10x lr on the ASPP weights, 20x and no weight decay on its biases.
    opt_groups = [{"params": groups["backbone"], "lr_mult": 1.0},
                  {"params": groups["aspp_weight"], "lr_mult": 10.0},
                  {"params": groups["aspp_bias"], "lr_mult": 20.0, "weight_decay": 0.0}]
    history = train(model, dataset, lambda m, b: msc_loss(m(b["image"]), b["label"], index.void),
                    opt_groups, TrainSettings.from_config(settings, seed), device, f"segmenter round {round_index}")
    return model, history


@torch.no_grad()
def predict_mask(model: DeepLabV2, image: np.ndarray, device: torch.device, crf: bool) -> np.ndarray:
    logits = model.predict(to_tensor(image)[None].to(device))[0]
    if not crf:
        return logits.argmax(dim=0).to(torch.uint8).cpu().numpy()
    probs = torch.softmax(logits, dim=0).cpu().numpy()
    return dense_crf(image, probs).argmax(axis=0).astype(np.uint8)


def predict_split(model: DeepLabV2, index, ids: list[str], device: torch.device, crf: bool, writer) -> None:
    model.to(device).eval()
    for image_id in tqdm(ids, desc="predict", file=sys.stderr, mininterval=5.0):
        writer.put(image_id, predict_mask(model, index.read_image(image_id), device, crf))
