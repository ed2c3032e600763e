"""Confusion-matrix mIoU with the void label ignored, and per-class IoU tables."""
from __future__ import annotations

import numpy as np
import pandas as pd


class ConfusionMatrix:
    """Accumulates a ``num_classes x num_classes`` matrix (rows: ground truth).

    Pixels whose ground truth is ``void`` are ignored; a prediction equal to
    ``void`` (an "unsure" pseudo-mask pixel) counts as a miss of the true class,
    so leaving pixels unlabelled is never rewarded.
    """

    def __init__(self, num_classes: int, void: int = 255):
        self.num_classes = num_classes
        self.void = void
        self.matrix = np.zeros((num_classes, num_classes + 1), dtype=np.int64)

    def update(self, truth: np.ndarray, pred: np.ndarray) -> None:
        if truth.shape != pred.shape:
            raise ValueError(f"truth shape {truth.shape} != prediction shape {pred.shape}")
        keep = truth != self.void
        t = truth[keep].astype(np.int64)
        p = pred[keep].astype(np.int64)
        if t.size and t.max() >= self.num_classes:
            raise ValueError(f"ground-truth label {t.max()} outside 0..{self.num_classes - 1}")
        # Any prediction outside the class range (void/unsure) goes to the extra column.
        p = np.where((p >= 0) & (p < self.num_classes), p, self.num_classes)
        self.matrix += np.bincount(t * (self.num_classes + 1) + p,
                                   minlength=self.num_classes * (self.num_classes + 1)
                                   ).reshape(self.num_classes, self.num_classes + 1)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from both truth and prediction."""
        square = self.matrix[:, : self.num_classes]
        tp = np.diag(square).astype(np.float64)
        union = self.matrix.sum(axis=1) + square.sum(axis=0) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float:
        return float(np.nanmean(self.iou()))

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix[:, : self.num_classes]) / total) if total else float("nan")


def iou_table(cm: ConfusionMatrix, class_names: list[str]) -> pd.DataFrame:
    """Per-class IoU in percent, with pixel counts, as a table."""
    return pd.DataFrame({
        "class": class_names,
        "iou": 100.0 * cm.iou(),
        "gt_pixels": cm.matrix.sum(axis=1),
        "pred_pixels": cm.matrix[:, : cm.num_classes].sum(axis=0),
    })
