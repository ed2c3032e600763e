"""Scores of a round (CAM, pseudo-mask, segmentation) and the run's Table-1 summary."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .cam_labels import cam_to_label, label_stored_cam
from .metrics import ConfusionMatrix, iou_table

STEPS = ("cam", "pseudo_mask", "seg")
STEP_TITLES = {"cam": "CAM", "pseudo_mask": "Pseudo-Mask", "seg": "Seg. Mask"}


def score_masks(index, ids: list[str], predict) -> ConfusionMatrix:
    """``predict(image_id) -> uint8 [H, W]`` scored against the ground-truth masks."""
    cm = ConfusionMatrix(index.num_classes, index.void)
    missing = [i for i in ids if not index.has_mask(i)]
    if missing:
        raise ValueError(f"no ground-truth mask for {len(missing)} images, e.g. {missing[:5]}")
    for image_id in ids:
        cm.update(index.read_mask(image_id), predict(image_id))
    return cm


def score_round(index, train_ids: list[str], eval_ids: list[str], cams, pseudo_masks, seg_preds,
                cam_labels: float | Callable) -> dict[str, ConfusionMatrix]:
    """``cam_labels``: ``label(cams, class_ids)`` scoring a CAM as a mask (the method's,
    ``Recipe.cam_labeller``), or a constant background score for :func:`cam_to_label`."""
    if not callable(cam_labels):
        cam_labels = partial(cam_to_label, bg_threshold=float(cam_labels))
        cam_labels.takes_levels = True

    def cam_label(image_id: str) -> np.ndarray:  # on the stored levels where exact (label_stored_cam)
        classes = [int(c) for c in cams.item_attrs(image_id)["classes"]]
        return label_stored_cam(cam_labels, cams, image_id, classes)

    return {
        "cam": score_masks(index, train_ids, cam_label),
        "pseudo_mask": score_masks(index, train_ids, pseudo_masks.get),
        "seg": score_masks(index, eval_ids, seg_preds.get),
    }


def round_tables(scores: dict[str, ConfusionMatrix], class_names: list[str], round_index: int
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one-row summary in percent, per-class IoU long table) of a round."""
    summary = pd.DataFrame([{"round": round_index, **{f"{s}_miou": 100.0 * scores[s].miou() for s in STEPS}}])
    per_class = []
    for step in STEPS:
        table = iou_table(scores[step], class_names)
        table.insert(0, "step", step)
        table.insert(0, "round", round_index)
        per_class.append(table)
    return summary, pd.concat(per_class, ignore_index=True)


def table1_markdown(summary: pd.DataFrame, title: str) -> str:
    """The summary laid out like the paper's Table 1 (rows: baseline, round 1..T)."""
    rows = ["| Setting | CAM | Pseudo-Mask | Seg. Mask |", "|---|---:|---:|---:|"]
    for _, row in summary.sort_values("round").iterrows():
        name = "Baseline" if row["round"] == 0 else f"Round = {int(row['round'])}"
        rows.append(f"| {name} | {row['cam_miou']:.1f} | {row['pseudo_mask_miou']:.1f} | {row['seg_miou']:.1f} |")
    return f"### {title}\n\nmIoU (%). CAM and Pseudo-Mask on the training split, Seg. Mask on the evaluation split.\n\n" \
           + "\n".join(rows) + "\n"


def per_class_markdown(per_class: pd.DataFrame) -> str:
    """One table per step: classes as rows, rounds as columns."""
    parts = []
    for step in STEPS:
        wide = per_class[per_class["step"] == step].pivot(index="class", columns="round", values="iou")
        wide = wide.reindex(per_class["class"].drop_duplicates())
        wide.columns = ["Baseline" if r == 0 else f"Round {r}" for r in wide.columns]
        parts.append(f"### {STEP_TITLES[step]} IoU per class (%)\n\n" + wide.round(1).to_markdown() + "\n")
    return "\n".join(parts)


def plot_rounds(summary: pd.DataFrame, path: str | Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for step in STEPS:
        ax.plot(summary["round"], summary[f"{step}_miou"], marker="o", label=STEP_TITLES[step])
    ax.set_xlabel("round (0 = baseline)")
    ax.set_ylabel("mIoU (%)")
    ax.set_xticks(list(summary["round"]))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
