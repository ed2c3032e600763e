"""Why SEAM's CPU demo localised nothing, and what does: one SEAM baseline classifier from random
init on the generated dataset, outside the workflow, scored as CAMs.

Trains ResNet-38 (``--width``) with SEAM's siamese loss (``--loss seam``, weight ``--erw`` on
ER + ECR, ``--warm`` epochs of L_cls alone first) or the classification loss alone (``--loss
cls``), then scores on the training split: the label Jaccard of the pooled class scores (> 0),
PCM CAMs (SEAM's inference, scales 1 / 0.5 / 1.5 with flips) at background powers 1, 2, 4, 16,
and the raw class maps (before PCM, scale 1 with flip, max-normalised) at constant thresholds
0.3 / 0.5 and powers 1 / 2. Prints one JSON line. Numbers: docs/methods.md "SEAM: the CPU demo".

    python bench/seam_scratch_probe.py --index-dir results/demo/dataset --epochs 30 --erw 0.1
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from conta_core import seam
from conta_core.cam_labels import cam_to_label, cam_to_label_power
from conta_core.data.datasets import to_tensor
from conta_core.data.index import DatasetIndex
from conta_core.metrics import ConfusionMatrix
from conta_core.models.resnet38 import build_resnet38
from conta_core.models.seam import SeamClassifier
from conta_core.seam_data import SeamClassificationDataset
from conta_core.train import TrainSettings, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index-dir", required=True)
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--loss", choices=["seam", "cls"], default="seam")
    p.add_argument("--erw", type=float, default=1.0, help="weight of L_ER + L_ECR")
    p.add_argument("--warm", type=int, default=0, help="epochs of L_cls alone before ER/ECR")
    p.add_argument("--scale", type=float, default=seam.SCALE, help="the siamese view's rescale")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    index = DatasetIndex.load(a.index_dir)
    ids = index.ids("train")
    torch.manual_seed(0)
    model = SeamClassifier(build_resnet38(a.width, "none", freeze_bn=False, frozen_blocks=()), index.num_classes - 1)
    data = SeamClassificationDataset(index, ids, crop=96, long_side=(80, 128), seed=0)
    settings = TrainSettings(epochs=a.epochs, batch_size=16, lr=a.lr, optimizer="adamw", weight_decay=1e-4,
                             seed=0, warmup_iters=10)
    steps_per_epoch = -(-len(ids) // settings.batch_size)
    calls = [0]

    def loss_fn(net, batch):
        if a.loss == "cls":
            return seam.classification_loss(net(batch["image"])["cam"], batch["target"])
        calls[0] += 1  # one call per step: this run is never resumed
        parts = seam.seam_losses(net(batch["image"], rescale=a.scale), batch["target"], a.scale)
        weight = 0.0 if calls[0] <= a.warm * steps_per_epoch else a.erw
        return parts["cls"] + weight * (parts["er"] + parts["ecr"])

    start = time.time()
    history = train(model, data, loss_fn, seam.optimizer_groups(model), settings, torch.device("cpu"), "probe")
    out = {"args": vars(a), "train_s": round(time.time() - start), "loss": [round(h, 3) for h in history]}
    model.eval()
    scores = {k: ConfusionMatrix(index.num_classes, index.void) for k in
              ("pcm_a1", "pcm_a2", "pcm_a4", "pcm_a16", "raw_t0.3", "raw_t0.5", "raw_a1", "raw_a2")}
    right = union = 0
    with torch.no_grad():
        for image_id in ids:
            image, classes, truth = index.read_image(image_id), index.labels(image_id), index.read_mask(image_id)
            pcm = seam.infer_seam_cams(model, image[None], [classes], [1.0, 0.5, 1.5], True, torch.device("cpu"))[0]
            for alpha in (1, 2, 4, 16):
                scores[f"pcm_a{alpha}"].update(truth, cam_to_label_power(pcm, classes, alpha))
            x = to_tensor(image)[None]
            logits = model.class_logits(torch.cat([x, x.flip(-1)]), None)
            predicted = set((torch.nonzero(logits.mean(dim=(2, 3))[0] > 0).flatten() + 1).tolist())
            right, union = right + len(predicted & set(classes)), union + len(predicted | set(classes))
            raw = F.relu(logits)
            raw = F.interpolate((raw[0] + raw[1].flip(-1))[None], size=image.shape[:2], mode="bilinear",
                                align_corners=False)[0][[c - 1 for c in classes]]
            raw = (raw / raw.flatten(1).max(1).values.clamp_min(1e-5)[:, None, None]).numpy()
            for t in (0.3, 0.5):
                scores[f"raw_t{t}"].update(truth, cam_to_label(raw, classes, t))
            for alpha in (1, 2):
                scores[f"raw_a{alpha}"].update(truth, cam_to_label_power(raw, classes, alpha))
    out["label_jaccard"] = round(right / max(union, 1), 3)
    out.update({k: round(100 * v.miou(), 1) for k, v in scores.items()})
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
