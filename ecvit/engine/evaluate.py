"""Evaluation with exact, rank-independent numbers: top-1, top-5, loss, per-class accuracy.

Each rank sums (correct@1, correct@5, loss, count, confusion matrix) over its exact shard;
the sums are all-reduced, so 1 and N processes report the same counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms.functional import five_crop

from ecvit.config import CROP_TTA, TTA_CHOICES
from ecvit.engine.distributed import DistInfo, all_reduce_sum
from ecvit.engine.loaders import iterate
from ecvit.engine.metrics import ECE_BINS, calibration_bins, expected_calibration_error, precision_recall_f1


def tta_views(images: torch.Tensor, tta: str, crop_size: int | None = None) -> list[torch.Tensor]:
    """The batches whose predictions TEST.TTA ``tta`` averages: ``[images]`` for ``"none"``;
    the images and their mirrors for ``"flip"``; the four corner crops and the center crop
    (torchvision's FiveCrop) for ``"five-crop"``, those and their mirrors for ``"ten-crop"``.

    For the crop modes ``images`` are the ``img_size / crop_pct`` resize and ``crop_size``
    the model's input size.
    """
    if tta in CROP_TTA:
        if crop_size is None:
            raise ValueError(f"tta={tta!r} needs crop_size")
        crops = list(five_crop(images, [crop_size, crop_size]))
        return crops + [c.flip(-1) for c in crops] if tta == "ten-crop" else crops
    if tta == "flip":
        return [images, images.flip(-1)]
    return [images]


@dataclass
class EvalResult:
    top1: float  # percent
    top5: float  # percent (top-k with k = min(5, classes))
    loss: float  # mean cross-entropy
    num_samples: int
    num_bad: int
    confusion: torch.Tensor  # [true, predicted] counts, int64
    calibration: torch.Tensor | None = None  # [ECE_BINS, 3] sums (count, confidence, correct)

    def per_class(self, class_names: list[str]) -> dict[str, float | None]:
        """Accuracy (percent) per true class; None for a class with no samples."""
        totals = self.confusion.sum(1)
        hits = self.confusion.diag()
        return {name: (100.0 * hits[i].item() / totals[i].item() if totals[i] else None)
                for i, name in enumerate(class_names)}


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, num_classes: int, info: DistInfo,
             autocast: Callable[[], ContextManager], channels_last: bool = False,
             tta: str = "none", crop_size: int | None = None) -> EvalResult:
    """Run ``model`` over this rank's shard and reduce the sums over all ranks.

    With ``tta`` other than ``"none"`` the softmax probabilities of the views of
    :func:`tta_views` are averaged (one forward pass per view, so memory stays that of one
    batch); loss, top-k and calibration then use the log of those averaged probabilities.
    """
    was_training = model.training
    model.eval()
    device = info.device
    k = min(5, num_classes)
    correct1 = torch.zeros((), dtype=torch.int64, device=device)
    correct5 = torch.zeros((), dtype=torch.int64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    bad = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    calibration = torch.zeros(ECE_BINS, 3, dtype=torch.float64, device=device)
    for images, labels, num_bad in iterate(loader):
        bad += int(num_bad)
        if labels.numel() == 0:
            continue
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits = _predict(model, images, autocast, tta, crop_size)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        topk = logits.topk(k, dim=1).indices
        # A row with inf/NaN logits predicts nothing: it counts as wrong (topk would pick an
        # arbitrary index, often the true one), and in the confusion matrix as another class.
        finite = torch.isfinite(logits).all(dim=1)
        predicted = torch.where(finite, topk[:, 0], (labels + 1) % num_classes)
        correct1 += ((topk[:, 0] == labels) & finite).sum()
        correct5 += ((topk == labels[:, None]).any(dim=1) & finite).sum()
        count += labels.numel()
        calibration += calibration_bins(logits[finite].softmax(1), (topk[:, 0] == labels)[finite])
        confusion += torch.bincount(labels * num_classes + predicted, minlength=num_classes**2)
    ints = all_reduce_sum(torch.stack([correct1, correct5, count, bad]), info).cpu()
    loss_sum = all_reduce_sum(loss_sum, info).item()
    confusion = all_reduce_sum(confusion, info).cpu().view(num_classes, num_classes)
    calibration = all_reduce_sum(calibration, info).cpu()
    model.train(was_training)
    n = int(ints[2])
    return EvalResult(
        top1=100.0 * int(ints[0]) / n if n else 0.0,
        top5=100.0 * int(ints[1]) / n if n else 0.0,
        loss=loss_sum / n if n else float("nan"),
        num_samples=n,
        num_bad=int(ints[3]),
        confusion=confusion,
        calibration=calibration,
    )


def _predict(model: nn.Module, images: torch.Tensor, autocast: Callable[[], ContextManager],
             tta: str, crop_size: int | None) -> torch.Tensor:
    """fp32 logits; with test-time augmentation, the log of the views' mean probabilities."""
    views = tta_views(images, tta, crop_size)
    if len(views) == 1:
        with autocast():
            return model(views[0]).float()
    probs = None
    for view in views:  # a handful of views at most: one batch in memory at a time
        with autocast():
            p = model(view).float().softmax(1)
        probs = p if probs is None else probs + p
    return (probs / len(views)).log()


def result_dict(result: EvalResult, class_names: list[str]) -> dict[str, Any]:
    """The dict ``validate`` returns and writes to validate.json.

    ``top5`` is None with 5 classes or fewer (it would always be 100); ``ece`` is in percent
    over :data:`~ecvit.engine.metrics.ECE_BINS` bins of the top-1 confidence.
    """
    out = {
        "top1": result.top1,
        "top5": result.top5 if len(class_names) > 5 else None,
        "loss": result.loss,
        "num_samples": result.num_samples,
        "num_bad_images": result.num_bad,
        "per_class": result.per_class(class_names),
    }
    out.update(precision_recall_f1(result.confusion, class_names))
    if result.calibration is not None:
        out["ece"] = expected_calibration_error(result.calibration)
        out["ece_bins"] = ECE_BINS
    return out


__all__ = ["EvalResult", "evaluate", "result_dict", "tta_views", "TTA_CHOICES", "CROP_TTA"]
