"""``validate(cfg, checkpoint)``: evaluate one checkpoint on the validation split.

The model is rebuilt from the checkpoint's own metadata (name, constructor arguments,
class count) and evaluated with the checkpoint's preprocessing (image size, mean/std,
interpolation, crop), so the numbers match what training reported. Checkpoints without
metadata (plain state dicts, official CvT weights) are loaded into MODEL.NAME instead.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ecvit.checkpoint import read_checkpoint
from ecvit.config import Config
from ecvit.config import validate as check_config
from ecvit.engine import distributed as D
from ecvit.engine.builder import build_model, model_from_checkpoint
from ecvit.engine.evaluate import evaluate, result_dict
from ecvit.engine.loaders import eval_loader
from ecvit.engine.optim import autocast_factory
from ecvit.engine.outputs import plot_confusion, write_json
from ecvit.errors import CheckpointError, UsageError


def validate(cfg: Config, checkpoint: str | None = None) -> dict[str, Any]:
    """Top-1/top-5 (percent), mean loss, sample count and per-class accuracy of ``checkpoint``.

    ``checkpoint`` defaults to TEST.MODEL_FILE. Rank 0 writes ``validate.json`` and
    ``confusion.png`` to OUTPUT_DIR. Under torchrun the shards are exact, so the numbers
    do not depend on the number of processes.
    """
    check_config(cfg)
    path = checkpoint or cfg.test.model_file
    if not path:
        raise UsageError("no checkpoint to validate: pass --checkpoint PATH or TEST.MODEL_FILE PATH")
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return _validate(cfg, str(path), D.setup(cfg))


def _validate(cfg: Config, path: str, info: D.DistInfo) -> dict[str, Any]:
    from ecvit.data import build_datasets

    autocast = autocast_factory(cfg.train.amp, info.device)
    cfg = copy.deepcopy(cfg)
    model, class_names = _load_model(cfg, path)
    data = build_datasets(cfg)
    if class_names is None:
        class_names = [str(c) for c in data.class_names]
        model = _fit_plain_weights(cfg, path, int(data.num_classes))
    elif len(class_names) != int(data.num_classes):
        raise CheckpointError(f"{path} predicts {len(class_names)} classes but the {cfg.data.dataset} "
                              f"validation set has {data.num_classes}")
    model = model.to(info.device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    result = evaluate(model, eval_loader(data.val, cfg, info), len(class_names), info, autocast,
                      cfg.train.channels_last)
    out = result_dict(result, class_names)
    out["checkpoint"] = path
    if info.is_main:
        folder = Path(cfg.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(out, folder / "validate.json")
        plot_confusion(result.confusion, class_names, folder / "confusion.png")
        print(f"validate {path}: top1 {out['top1']:.2f}  top5 {out['top5']:.2f}  "
              f"loss {out['loss']:.4f}  samples {out['num_samples']}  "
              f"bad_images {out['num_bad_images']}", flush=True)
    return out


def _load_model(cfg: Config, path: str) -> tuple[nn.Module | None, list[str] | None]:
    """Rebuild from metadata and adopt its preprocessing; (None, None) for plain weights."""
    ckpt = read_checkpoint(path)
    if "model_name" not in ckpt:
        return None, None
    model, meta = model_from_checkpoint(ckpt, path)
    cfg.model.name = meta["model_name"]
    cfg.data.img_size = meta["img_size"]
    cfg.data.mean, cfg.data.std = list(meta["mean"]), list(meta["std"])
    cfg.data.interpolation, cfg.data.crop_pct = meta["interpolation"], meta["crop_pct"]
    return model, list(meta["class_names"])


def _fit_plain_weights(cfg: Config, path: str, num_classes: int) -> nn.Module:
    cfg.model.pretrained, cfg.model.finetune = path, False
    model = build_model(cfg, num_classes)
    return model.eval()


__all__ = ["validate"]
