"""The optimisation recipe, assembled from timm's building blocks.

- optimizer: ``timm.optim.create_optimizer_v2`` (AdamW / SGD / Adam / momentum); norms,
  biases (1-d parameters) and the names in ``model.no_weight_decay()`` (class tokens,
  positional embeddings) get no weight decay, as in the CvT and DW-ViT recipes
  (``TRAIN.NO_WEIGHT_DECAY`` names the kinds instead, the official CvT ``WITHOUT_WD_LIST``);
  parameters with ``requires_grad`` off (MODEL.FROZEN_LAYERS) are left out;
- schedule: timm's cosine (constant, step, multistep, tanh) scheduler with linear warmup,
  stepped after every optimizer update so warmup and decay are smooth, or once per epoch
  (``TRAIN.SCHED_ON_EPOCHS``, the official CvT loop);
- loss: cross-entropy, label smoothing, or soft targets when Mixup/CutMix mix the labels;
- precision: :mod:`ecvit.engine.precision`.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

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
    kwargs = {"momentum": t.momentum} if t.optimizer in ("sgd", "momentum") else {}
    if t.layer_decay > 0:  # per-layer lr scales from the model's group_matcher, as timm's --layer-decay
        if t.no_weight_decay is not None:
            raise UsageError("TRAIN.LAYER_DECAY and TRAIN.NO_WEIGHT_DECAY cannot be combined (layer "
                             "decay groups parameters by timm's rule)")
        kwargs["layer_decay"] = t.layer_decay
    if t.no_weight_decay is not None:
        return create_optimizer_v2(named_decay_groups(model, t.no_weight_decay), opt=t.optimizer, lr=lr,
                                   weight_decay=t.weight_decay, **kwargs)
    return create_optimizer_v2(model, opt=t.optimizer, lr=lr, weight_decay=t.weight_decay,
                               filter_bias_and_bn=True, **kwargs)


def named_decay_groups(model: nn.Module, kinds: list[str]) -> list[dict[str, Any]]:
    """Two groups by the official CvT rule: no decay for ``model.no_weight_decay()`` names
    (matched as substrings, class tokens), and for the listed kinds: ``bn``/``ln``/``gn``
    norms, ``bias`` (names ending ``.bias``), ``dw`` (depth-wise conv weights)."""
    kinds_set = set(kinds)
    norm_types = tuple(t for k, t in (("bn", nn.BatchNorm2d), ("ln", nn.LayerNorm), ("gn", nn.GroupNorm))
                       if k in kinds_set)
    exempt: set[int] = set()
    for module in model.modules():
        if "dw" in kinds_set and isinstance(module, nn.Conv2d) and \
                module.groups == module.in_channels == module.out_channels:
            exempt.add(id(module.weight))
        elif norm_types and isinstance(module, norm_types):
            exempt |= {id(p) for p in module.parameters(recurse=False)}
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if (any(s in name for s in skip) or id(param) in exempt
                or ("bias" in kinds_set and name.endswith(".bias"))):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Config, updates_per_epoch: int) -> Scheduler:
    """Per-update warmup then cosine decay to TRAIN.MIN_LR (or a constant LR after warmup).

    ``constant`` is timm's step scheduler with a decay rate of 1: the same warmup, no decay;
    ``step``/``multistep``/``tanh`` are timm's, with TRAIN.SCHED_ARGS (``decay_epochs``,
    ``decay_milestones``, ``decay_rate`` ...). Call ``step_update(num_updates)`` after every
    optimizer step, and ``step(epoch)`` at the start of each epoch (what TRAIN.SCHED_ON_EPOCHS
    schedules follow; per-update schedules ignore it).
    """
    t = cfg.train
    allowed = set(inspect.signature(create_scheduler_v2).parameters) - {"optimizer", "sched", "num_epochs",
                                                                         "warmup_epochs", "warmup_lr", "min_lr",
                                                                         "step_on_epochs", "updates_per_epoch"}
    bad = sorted(set(t.sched_args) - allowed)
    if bad:
        raise UsageError(f"TRAIN.SCHED_ARGS: timm's create_scheduler_v2 takes no {bad[0]!r}; "
                         f"it takes {', '.join(sorted(allowed))}")
    common = dict(num_epochs=t.epochs, warmup_epochs=t.warmup_epochs, warmup_lr=t.warmup_lr,
                  min_lr=t.min_lr, step_on_epochs=t.sched_on_epochs, updates_per_epoch=updates_per_epoch)
    if t.sched == "constant":
        scheduler, _ = create_scheduler_v2(optimizer, sched="step", decay_epochs=t.epochs + 1,
                                           decay_rate=1.0, **common)
    else:
        scheduler, _ = create_scheduler_v2(optimizer, sched=t.sched, **{**t.sched_args, **common})
    return scheduler


def build_mixup(cfg: Config, num_classes: int) -> Mixup | None:
    """timm's Mixup/CutMix (it also applies label smoothing to the mixed targets)."""
    a = cfg.aug
    if a.mixup <= 0 and a.cutmix <= 0 and not a.cutmix_minmax:
        return None
    if cfg.train.batch_size % 2:
        raise UsageError(f"AUG.MIXUP/AUG.CUTMIX pair samples within a batch: TRAIN.BATCH_SIZE must "
                         f"be even, got {cfg.train.batch_size}")
    return Mixup(mixup_alpha=a.mixup, cutmix_alpha=a.cutmix, cutmix_minmax=a.cutmix_minmax or None,
                 prob=a.mixup_prob, switch_prob=a.mixup_switch_prob, mode=a.mixup_mode,
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
