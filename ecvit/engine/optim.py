"""The optimisation recipe, assembled from timm's building blocks.

- optimizer: ``timm.optim.create_optimizer_v2`` (AdamW / SGD); norms, biases (1-d
  parameters) and the names in ``model.no_weight_decay()`` (class tokens, positional
  embeddings) get no weight decay, as in the CvT and DW-ViT recipes;
- schedule: timm's cosine (or constant) scheduler with linear warmup, stepped after every
  optimizer update so warmup and decay are smooth;
- loss: cross-entropy, label smoothing, or soft targets when Mixup/CutMix mix the labels;
- precision: :mod:`ecvit.engine.precision`.
"""

from __future__ import annotations

import math

import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler
from torch import nn

from ecvit.config import Config
from ecvit.errors import UsageError


def scaled_lr(cfg: Config, world_size: int) -> float:
    """TRAIN.LR, scaled linearly by the global batch when TRAIN.LR_BASE_BATCH > 0.

    Global batch = per-process batch x processes x accumulation steps (the CvT recipe
    quotes its LR per 256 images and scales it with the number of GPUs).
    """
    t = cfg.train
    if t.lr_base_batch <= 0:
        return t.lr
    return t.lr * t.batch_size * world_size * t.accum_steps / t.lr_base_batch


def build_optimizer(model: nn.Module, cfg: Config, lr: float) -> torch.optim.Optimizer:
    """AdamW or SGD over two parameter groups (with and without weight decay).

    With TRAIN.LAYER_DECAY the groups are per layer too (lr scaled by decay^(depth - layer)).

    ``sgd`` is timm's: Nesterov momentum (TRAIN.MOMENTUM), as in timm's training recipes.
    """
    t = cfg.train
    kwargs = {"momentum": t.momentum} if t.optimizer == "sgd" else {}
    if t.layer_decay > 0:  # per-layer lr scales from the model's group_matcher, as timm's --layer-decay
        kwargs["layer_decay"] = t.layer_decay
    return create_optimizer_v2(model, opt=t.optimizer, lr=lr, weight_decay=t.weight_decay,
                               filter_bias_and_bn=True, **kwargs)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Config, updates_per_epoch: int) -> Scheduler:
    """Per-update warmup then cosine decay to TRAIN.MIN_LR (or a constant LR after warmup).

    ``constant`` is timm's step scheduler with a decay rate of 1: the same warmup, no decay.
    Call ``step_update(num_updates)`` after every optimizer step.
    """
    t = cfg.train
    common = dict(num_epochs=t.epochs, warmup_epochs=t.warmup_epochs, warmup_lr=t.warmup_lr,
                  min_lr=t.min_lr, step_on_epochs=False, updates_per_epoch=updates_per_epoch)
    if t.sched == "cosine":
        scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", **common)
    else:
        scheduler, _ = create_scheduler_v2(optimizer, sched="step", decay_epochs=t.epochs + 1,
                                           decay_rate=1.0, **common)
    return scheduler


def build_mixup(cfg: Config, num_classes: int) -> Mixup | None:
    """timm's Mixup/CutMix (it also applies label smoothing to the mixed targets)."""
    a = cfg.aug
    if a.mixup <= 0 and a.cutmix <= 0:
        return None
    if cfg.train.batch_size % 2:
        raise UsageError(f"AUG.MIXUP/AUG.CUTMIX pair samples within a batch: TRAIN.BATCH_SIZE must "
                         f"be even, got {cfg.train.batch_size}")
    return Mixup(mixup_alpha=a.mixup, cutmix_alpha=a.cutmix, prob=a.mixup_prob,
                 label_smoothing=a.label_smoothing, num_classes=num_classes)


def build_train_loss(cfg: Config, mixup: Mixup | None) -> nn.Module:
    if mixup is not None:
        return SoftTargetCrossEntropy()
    if cfg.aug.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=cfg.aug.label_smoothing)
    return nn.CrossEntropyLoss()


def updates_per_epoch(num_batches: int, accum_steps: int) -> int:
    return max(1, math.ceil(num_batches / accum_steps))


__all__ = ["scaled_lr", "build_optimizer", "build_scheduler", "build_mixup", "build_train_loss",
           "updates_per_epoch"]
