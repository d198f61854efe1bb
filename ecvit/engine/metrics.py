"""Classification metrics ``ecvit validate`` reports beyond top-k: precision, recall and F1
(macro and per class, from the all-reduced confusion matrix through ``sklearn.metrics``) and
the expected calibration error.

ECE uses :data:`ECE_BINS` equal-width bins of the top-1 confidence (the largest softmax
probability): ``sum_b |B_b| / N * |accuracy(B_b) - mean confidence(B_b)|``, in percent.
The per-bin sums are collected by :func:`ecvit.engine.evaluate.evaluate`, so they reduce
exactly across processes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

ECE_BINS = 15


def calibration_bins(probs: torch.Tensor, correct: torch.Tensor, bins: int = ECE_BINS) -> torch.Tensor:
    """``[bins, 3]`` float64 sums (count, confidence, correct) of a batch's top-1 confidence.

    Bin ``b`` holds confidences in ``(b / bins, (b + 1) / bins]`` (the first also holds 0).
    """
    confidence = probs.max(dim=1).values.double()
    index = (confidence * bins).ceil().long().sub(1).clamp(0, bins - 1)
    out = torch.zeros(bins, 3, dtype=torch.float64, device=probs.device)
    out[:, 0].index_add_(0, index, torch.ones_like(confidence))
    out[:, 1].index_add_(0, index, confidence)
    out[:, 2].index_add_(0, index, correct.double())
    return out


def expected_calibration_error(bins: torch.Tensor) -> float:
    """ECE in percent from the ``[bins, 3]`` sums of :func:`calibration_bins`; 0 with no samples."""
    count, confidence, correct = bins.double().unbind(1)
    total = count.sum().item()
    if not total:
        return 0.0
    gap = (correct - confidence).abs()  # |B| * |acc - conf| per bin
    return 100.0 * gap.sum().item() / total


def precision_recall_f1(confusion: torch.Tensor, class_names: list[str]) -> dict[str, Any]:
    """Macro and per-class precision, recall and F1 (percent) from a ``[true, predicted]`` matrix.

    A class with no true and no predicted samples scores 0 (sklearn's ``zero_division=0``).
    """
    from sklearn.metrics import precision_recall_fscore_support

    n = len(class_names)
    counts = confusion.reshape(-1).cpu().numpy()
    pairs = np.repeat(np.arange(n * n), counts)
    y_true, y_pred = pairs // n, pairs % n
    labels = list(range(n))
    per = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    macro = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro",
                                            zero_division=0)
    return {
        "precision_macro": 100.0 * float(macro[0]),
        "recall_macro": 100.0 * float(macro[1]),
        "f1_macro": 100.0 * float(macro[2]),
        "per_class_metrics": {
            name: {"precision": 100.0 * float(per[0][i]), "recall": 100.0 * float(per[1][i]),
                   "f1": 100.0 * float(per[2][i]), "support": int(per[3][i])}
            for i, name in enumerate(class_names)},
    }


__all__ = ["ECE_BINS", "calibration_bins", "expected_calibration_error", "precision_recall_f1"]
