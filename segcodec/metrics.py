"""Overlap of label maps: the Dice and IoU that training, ``segcodec evaluate`` and the bench
report, per foreground class."""
from __future__ import annotations

import numpy as np


def scores(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> dict[str, list[float]]:
    """Dice and IoU of each foreground class 1..n_classes-1 (1.0 where both maps lack it)."""
    if pred.shape != truth.shape:
        raise ValueError(f"labels of shape {pred.shape} against truth of shape {truth.shape}")
    dice, iou = [], []
    for c in range(1, n_classes):
        a, b = pred == c, truth == c
        inter, union = int((a & b).sum()), int((a | b).sum())
        dice.append(1.0 if union == 0 else 2 * inter / (int(a.sum()) + int(b.sum())))
        iou.append(1.0 if union == 0 else inter / union)
    return {"dice": dice, "iou": iou}
