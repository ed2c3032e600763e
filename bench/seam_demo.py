"""SEAM + AffinityNet on the generated dataset, on CPU, outside the workflow (sizing for the demo).

Trains a narrow ResNet-38 SEAM classifier from random init (baseline round,
no CONTA), infers PCM CAMs, scores them as masks at several background powers,
makes AffinityNet's confident labels, trains the affinity network on the
classifier's trunk and walks the CAMs; prints mIoU against the ground truth and
the all-background score, and the time per step.

    python bench/seam_demo.py --index-dir results/<run>/dataset [--width 0.0625 --epochs 4]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from conta_core import seam
from conta_core.data.datasets import SegmentationDataset, to_tensor
from conta_core.data.reader import DatasetIndex
from conta_core.expand import affinitynet as an
from conta_core.metrics import ConfusionMatrix
from conta_core.models.resnet38 import build_resnet38
from conta_core.models.seam import SeamClassifier
from conta_core.seam_data import SeamClassificationDataset
from conta_core.train import TrainSettings, train


def miou(index, ids, masks) -> float:
    cm = ConfusionMatrix(index.num_classes, index.void)
    for image_id in ids:
        cm.update(index.read_mask(image_id), masks[image_id])
    return float(np.nanmean(cm.iou()))


class Masks:
    def __init__(self, masks):
        self.masks = masks

    def get(self, image_id):
        return self.masks[image_id]


def cls_only_loss(model, batch: dict) -> torch.Tensor:
    return seam.classification_loss(model(batch["image"])["cam"], batch["target"])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--index-dir", required=True)
    p.add_argument("--width", type=float, default=0.0625)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--aff-epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--loss", choices=["seam", "cls"], default="seam",
                   help="cls: a control with the classification loss of view 1 only (same network and schedule)")
    p.add_argument("--skip-aff", action="store_true", help="stop after scoring the CAMs")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    index = DatasetIndex.load(a.index_dir)
    ids = index.ids("train")
    device = torch.device("cpu")
    n_fg = index.num_classes - 1

    t0 = time.time()
    torch.manual_seed(0)
    model = SeamClassifier(build_resnet38(a.width, "none", freeze_bn=False, frozen_blocks=()), n_fg)
    data = SeamClassificationDataset(index, ids, crop=96, long_side=(80, 128), seed=0)
    s = TrainSettings(epochs=a.epochs, batch_size=16, lr=a.lr, optimizer="adam", weight_decay=5e-4, seed=0)
    loss_fn = seam.seam_loss if a.loss == "seam" else cls_only_loss
    history = train(model, data, loss_fn, seam.optimizer_groups(model), s, device, a.loss)
    t_cls = time.time() - t0

    t0 = time.time()
    cams = {}
    for image_id in ids:
        classes = index.labels(image_id)
        cams[image_id] = seam.infer_seam_cams(model, index.read_image(image_id)[None], [classes],
                                              [1.0, 0.5, 1.5], True, device)[0]
    t_cam = time.time() - t0
    background = {i: np.zeros(index.size(i), np.uint8) for i in ids}
    print(f"classifier: {t_cls:.0f} s, losses {[round(h, 3) for h in history]}; CAMs {t_cam:.0f} s")
    print(f"all-background mIoU {miou(index, ids, background):.3f}")
    best = None
    for alpha in (1, 2, 4, 8, 16):
        score = miou(index, ids, {i: an.cam_labels(cams[i], index.labels(i), alpha) for i in ids})
        print(f"CAM alpha {alpha}: mIoU {score:.3f}")
        best = (score, alpha) if best is None or score > best[0] else best
    if a.skip_aff:
        return

    t0 = time.time()
    alpha = best[1]
    low, high = max(alpha / 4, 0.5), alpha * 1.5          # the paper's 4 / 16 / 24, scaled to the best alpha
    labels = {i: an.make_aff_label(index.read_image(i), cams[i], index.labels(i), alpha_low=low,
                                   alpha_high=high) for i in ids}
    sure = np.mean([np.mean(labels[i] != 255) for i in ids])
    right = np.mean([np.mean((labels[i] == index.read_mask(i))[labels[i] != 255]) for i in ids
                     if (labels[i] != 255).any()])
    t_lab = time.time() - t0
    print(f"confident labels (alpha {low}/{high}): {sure:.2f} sure, {right:.2f} of them right; {t_lab:.0f} s")

    t0 = time.time()
    torch.manual_seed(0)
    aff_net = an.AffinityNet(build_resnet38(a.width, "none", freeze_bn=False, frozen_blocks=()))
    aff_net.backbone.load_state_dict(model.backbone.state_dict())
    aff_data = SegmentationDataset(index, ids, Masks(labels), crop=96, scale_range=(0.8, 1.2), seed=0)
    groups = aff_net.param_groups()
    s2 = TrainSettings(epochs=a.aff_epochs, batch_size=16, lr=a.lr, optimizer="adam", weight_decay=5e-4, seed=0)
    aff_hist = train(aff_net, aff_data, an.affinity_training_loss,
                     [{"params": groups["backbone"], "lr_mult": 1.0}, {"params": groups["new"], "lr_mult": 10.0}],
                     s2, device, "affinity")
    t_aff = time.time() - t0
    t0 = time.time()
    masks = {}
    for i in ids:
        f = an.image_features(aff_net.eval(), to_tensor(index.read_image(i)))
        masks[i] = an.expand_affinitynet(cams[i], f, index.labels(i), index.size(i), alpha=alpha, steps=a.steps)
    t_walk = time.time() - t0
    print(f"affinity net: {t_aff:.0f} s, losses {[round(h, 3) for h in aff_hist]}; walk {t_walk:.0f} s")
    print(f"pseudo-mask (alpha {alpha}, t {a.steps}): mIoU {miou(index, ids, masks):.3f}")


if __name__ == "__main__":
    main()
