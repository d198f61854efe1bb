"""The preflight: ``plan = resolve(cfg)`` checks everything a run needs before any file is written.

A config says what the user asked for (``None`` meaning "the variant's own"); a
:class:`RunPlan` says what will run: the device and precision, the model arguments
(checked against the family's constructor and by building the model on the meta device),
the data settings (image size, mean/std, interpolation and crop from the user, else the
dataset, else the model's ``pretrained_cfg`` as timm's ``resolve_data_config`` does), the
datasets themselves (root and layout read, augmentation specs parsed) and, for training,
whether the run starts fresh, resumes or is already finished. ``--dry-run`` and run.sh's
pre-check print exactly this plan; the engine runs it without checking again.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ecvit import openmp
from ecvit.config import CROP_TTA, Config, check_config, config_from_dict, get_key
from ecvit.data import build_datasets, canonical_dataset_name
from ecvit.data.build import NATIVE_IMG_SIZE, OWN_STATS, fill_data_defaults
from ecvit.engine.builder import model_kwargs
from ecvit.engine.distributed import launched_by_torchrun
from ecvit.engine.outputs import check_output_dir, earlier_run_files, new_run_dir
from ecvit.engine.precision import Precision, resolve_device
from ecvit.engine.runlock import check_unlocked
from ecvit.engine.state import find_resume_checkpoint, load_training_checkpoint
from ecvit.errors import CheckpointError, DataError, UsageError
from ecvit.flops import count_macs
from ecvit.io.folders import check_folder, is_folder_source
from ecvit.model_table import human, human_macs
from ecvit.models.registry import check_model_args, create_model, default_cfg, model_class, model_entry

# Config keys that must match for a checkpoint to continue this run, and how to read them
# from the config a checkpoint saved.
RUN_IDENTITY = (("model", "MODEL.NAME"), ("model arguments", "MODEL.ARGS"),
                ("dataset", "DATA.DATASET"), ("optimizer", "TRAIN.OPTIMIZER"))
# Hyper-parameters a resumed run may change: applied from the resume on, and recorded.
RESUMABLE_CHANGES = ("TRAIN.EPOCHS", "TRAIN.LR", "TRAIN.WEIGHT_DECAY", "TRAIN.MIN_LR",
                     "TRAIN.CLIP_GRAD", "TRAIN.BATCH_SIZE")


@dataclass(frozen=True)
class ResumePlan:
    """``fresh``, ``resume`` (continue at ``epoch``) or ``finished`` (nothing left to train)."""

    mode: str = "fresh"
    path: str = ""
    epoch: int = 0
    step: int = 0  # > 0: a mid-epoch checkpoint, continuing epoch ``epoch + 1`` at this step
    changes: tuple[tuple[str, Any, Any], ...] = ()  # (key, checkpoint value, new value)
    replace: bool = False  # fresh start over an earlier run's files (--overwrite-output-dir)
    state: dict[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class RunPlan:
    """A resolved, checked run. ``cfg`` holds concrete values only (no ``None`` left)."""

    cfg: Config
    device: torch.device
    precision: Precision
    num_classes: int
    class_names: tuple[str, ...]
    num_params: int
    num_macs: int  # multiply-accumulates of one image's forward pass, attention included
    drop_path_rate: float
    train_size: int
    val_size: int
    resume: ResumePlan = ResumePlan()
    datasets: Any = field(default=None, repr=False, compare=False)  # the DataBundle, built once
    notes: tuple[str, ...] = ()  # one line each, shown with the plan (e.g. an official file's "no effect:")
    new_folder: bool = False  # OUTPUT_DIR was not given: this run's own folder under output/train

    def describe(self) -> list[str]:
        """The plan in a few lines: what ``--dry-run`` prints and the run banner shows."""
        c = self.cfg
        args = ", ".join(f"{k}={v}" for k, v in c.model.args.items()) or "the variant's own"
        r = self.resume
        state = {"fresh": "fresh start" + (", replacing the earlier run's files" if r.replace else ""),
                 "resume": f"resume from {r.path} at epoch {r.epoch}/{c.train.epochs}"
                           + (f", step {r.step} of epoch {r.epoch + 1}" if r.step else ""),
                 "finished": f"finished ({r.path} is at epoch {r.epoch}/{c.train.epochs})"}[r.mode]
        lines = [
            f"model {c.model.name}: {human(self.num_params)} parameters, "
            f"{human_macs(self.num_macs)} MACs, {self.num_classes} classes, drop path "
            f"{self.drop_path_rate:g}, arguments: {args}",
            f"data {c.data.dataset}{' at ' + c.data.root if c.data.root else ''}: "
            f"{self.train_size} train / {self.val_size} val images, {c.data.img_size}x{c.data.img_size} px, "
            f"{c.data.interpolation}, "
            + ("squash resize" if c.data.crop_mode == "squash" else f"crop {c.data.crop_pct:g}")
            + (f", tested at {c.test.img_size} px" if c.test.img_size not in (None, c.data.img_size) else "")
            + f", mean {_fmt(c.data.mean)} std {_fmt(c.data.std)}",
            f"device {self.device}, precision {self.precision}"
            + (", torch.compile" if c.train.compile else "")
            + (", gradient checkpointing" if c.train.grad_checkpointing else "")
            + (f"; {torch.get_num_threads()} CPU threads, {openmp.describe()}" if self.device.type == "cpu" else ""),
            f"output {c.output_dir}: {state}",
        ]
        lines += [f"resume changes {key}: {old} -> {new} (applied from epoch {r.epoch + 1})"
                  for key, old, new in r.changes]
        return lines + list(self.notes)


def _fmt(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def resolve(cfg: Config, training: bool = True, overwrite_output_dir: bool = False) -> RunPlan:
    """Check ``cfg`` and turn it into a :class:`RunPlan`; a UsageError names what is wrong.

    Nothing is written. ``training=False`` (``validate``) skips the resume and lock checks.
    A training run without OUTPUT_DIR gets a new folder of its own (``output/train/...``);
    ``overwrite_output_dir`` lets a fresh start replace an earlier run's files in OUTPUT_DIR.
    """
    check_config(cfg)
    cfg = copy.deepcopy(cfg)
    device = resolve_device(cfg.device)
    notes = []
    if cfg.train.amp == "fp16" and device.type != "cuda" and cfg.train.amp_fallback:
        notes.append(f"fp32: {_amp_key(cfg)} asks for fp16 mixed precision, which needs CUDA; "
                     f"running in fp32 on {device.type}")
        cfg.train.amp = "off"
    precision = Precision(cfg.train.amp, device.type)
    cfg.data.dataset = canonical_dataset_name(cfg.data.dataset)
    cfg.model.name = model_entry(cfg.model.name).name  # a deprecated name becomes the new one
    cfg.model.args = check_model_args(cfg.model.name, cfg.model.args)
    _resolve_data_settings(cfg)
    _check_augment(cfg)
    data_cfg = cfg
    if not training and cfg.test.tta in CROP_TTA:
        data_cfg = _crop_tta_data_cfg(cfg)
        notes.append(f"TEST.TTA {cfg.test.tta}: crops of {eval_size(cfg)} px from the "
                     f"{data_cfg.test.img_size} px resize, softmax averaged")
    data = build_datasets(data_cfg)
    if training:
        _check_streamed(cfg, data.train)
    cfg.data.mean, cfg.data.std = [float(v) for v in data.mean], [float(v) for v in data.std]
    num_classes = int(data.num_classes)
    if num_classes < 2:
        where = f" at {cfg.data.root}" if cfg.data.root else ""
        raise DataError(f"{cfg.data.dataset}{where} has {num_classes} class: a classifier needs at "
                        "least 2 classes (with one, every prediction is trivially right)")
    notes += _official_notes(cfg, num_classes)
    model = _meta_model(cfg, num_classes)
    _check_layer_names(cfg, model)
    num_params = sum(p.numel() for p in model.parameters())
    num_macs = count_macs(model, cfg.data.img_size, cfg.data.in_chans)  # on the meta device: no compute
    drop_path = _max_drop_path(model)
    if cfg.model.drop_path_rate is None:
        cfg.model.drop_path_rate = drop_path
    if cfg.train.grad_checkpointing and not hasattr(model, "set_grad_checkpointing"):
        raise UsageError(f"TRAIN.GRAD_CHECKPOINTING: {cfg.model.name} has no set_grad_checkpointing()")
    if cfg.model.pretrained and is_folder_source(cfg.model.pretrained):
        check_folder(cfg.model.pretrained)  # a bad folder fails before any data is read
    elif cfg.model.pretrained and not Path(cfg.model.pretrained).is_file():
        raise CheckpointError(f"MODEL.PRETRAINED: file not found: {cfg.model.pretrained}")
    resume = ResumePlan()
    new_folder = training and not cfg.output_dir
    if new_folder:
        cfg.output_dir = str(new_run_dir(cfg.model.name, cfg.data.img_size))
    if training:
        check_output_dir(cfg.output_dir, "OUTPUT_DIR")
        if int(os.environ.get("RANK", "0")) == 0:  # other ranks would find the lock their rank 0 took
            check_unlocked(cfg.output_dir)
        resume = _resume_plan(cfg, num_classes, overwrite_output_dir)
    return RunPlan(cfg=cfg, device=device, precision=precision, num_classes=num_classes,
                   class_names=tuple(str(c) for c in data.class_names), num_params=num_params,
                   num_macs=num_macs, drop_path_rate=drop_path, train_size=len(data.train), val_size=len(data.val),
                   resume=resume, datasets=data, notes=tuple(notes), new_folder=new_folder)


TTA_CROP_PCT = 0.875  # crop TTA's resize when DATA.CROP_PCT is 1 (resize 256, crops of 224)


def eval_size(cfg: Config) -> int:
    """The model's input size at evaluation: TEST.IMG_SIZE, else DATA.IMG_SIZE."""
    return int(cfg.test.img_size or cfg.data.img_size)


def _crop_tta_data_cfg(cfg: Config) -> Config:
    """The data settings of validate's crop TTA: the validation images resized to
    ``floor(size / DATA.CROP_PCT)`` and not cropped; the crops are taken per batch. A crop
    of 1 (no border to crop from, as for in-memory datasets) uses timm's 0.875 instead."""
    size = eval_size(cfg)
    crop_pct = cfg.data.crop_pct if cfg.data.crop_pct < 1.0 else TTA_CROP_PCT
    data_cfg = copy.deepcopy(cfg)
    data_cfg.test.img_size, data_cfg.data.crop_pct = max(size + 1, math.floor(size / crop_pct)), 1.0
    return data_cfg


def _amp_key(cfg: Config) -> str:
    return "AMP.ENABLED" if cfg.official.file else "TRAIN.AMP fp16"


def _official_notes(cfg: Config, num_classes: int) -> list[str]:
    """What a translated microsoft/CvT file asked for that does nothing (there too) or differs."""
    o = cfg.official
    notes = []
    if o.no_effect:
        notes.append(f"no effect: {', '.join(o.no_effect)} (accepted from {Path(o.file).name}; "
                     "the official code ignores them too)")
    if o.num_classes and o.num_classes != num_classes and not cfg.test.valid_labels:
        notes.append(f"MODEL.NUM_CLASSES {o.num_classes}: the head follows the dataset's "
                     f"{num_classes} classes")
    return notes


# ----------------------------------------------------------------------------- model


def _meta_model(cfg: Config, num_classes: int) -> nn.Module:
    """The configured model on the meta device: its constructor checks every argument."""
    with torch.device("meta"):
        return create_model(cfg.model.name, num_classes=num_classes, img_size=cfg.data.img_size,
                            drop_path_rate=cfg.model.drop_path_rate, **model_kwargs(cfg))


def _check_layer_names(cfg: Config, model: nn.Module) -> None:
    """MODEL.FROZEN_LAYERS and MODEL.PRETRAINED_LAYERS name top-level modules of the model."""
    tops = [name for name, _ in model.named_children()]
    for key, names in (("MODEL.FROZEN_LAYERS", cfg.model.frozen_layers),
                       ("MODEL.PRETRAINED_LAYERS", [n for n in cfg.model.pretrained_layers if n != "*"])):
        for name in names:
            if name not in tops:
                raise UsageError(f"{key}: {cfg.model.name} has no top-level module {name!r}; it has "
                                 f"{', '.join(tops)}")


def _max_drop_path(model: nn.Module) -> float:
    """The deepest block's stochastic-depth rate: what MODEL.DROP_PATH_RATE names."""
    rates = [float(m.drop_prob) for m in model.modules() if hasattr(m, "drop_prob")]
    return round(max(rates), 6) if rates else 0.0


def _model_data_cfg(cfg: Config) -> dict[str, Any]:
    """The variant's ``pretrained_cfg`` (input size, mean/std, interpolation, crop), read from
    the registry: the preflight builds the model once, in :func:`_meta_model`."""
    pcfg = default_cfg(cfg.model.name)
    if "input_size" not in pcfg:  # not a timm-style model: its img_size default, else 224
        params = inspect.signature(model_class(cfg.model.name).__init__).parameters
        default = params["img_size"].default if "img_size" in params else 224
        pcfg["input_size"] = (3, default, default)
    return pcfg


def _resolve_data_settings(cfg: Config) -> None:
    """Fill the data settings the user left unset: dataset first, then the model, then the
    data-only defaults (:func:`ecvit.data.build.fill_data_defaults`)."""
    d = cfg.data
    pcfg = _model_data_cfg(cfg)
    if d.img_size is None:
        d.img_size = NATIVE_IMG_SIZE.get(d.dataset) or int(pcfg["input_size"][-1])
    if not d.interpolation and pcfg.get("interpolation") in ("bilinear", "bicubic", "nearest"):
        d.interpolation = str(pcfg["interpolation"])
    if d.crop_pct is None and pcfg.get("crop_pct"):
        d.crop_pct = float(pcfg["crop_pct"])
    cfg.data = d = fill_data_defaults(cfg, d.dataset).data
    if d.dataset not in OWN_STATS:
        if not d.mean and pcfg.get("mean"):
            d.mean = [float(v) for v in pcfg["mean"]]
        if not d.std and pcfg.get("std"):
            d.std = [float(v) for v in pcfg["std"]]


def _check_streamed(cfg: Config, train_set: Any) -> None:
    """A streamed source (webdataset shards) has no indices to sample, and each process and
    loader worker reads shards of its own: refuse what cannot work now, not at the first batch."""
    from torch.utils.data import IterableDataset

    if not isinstance(train_set, IterableDataset):
        return
    if cfg.data.sampler != "default":
        raise UsageError(f"DATA.SAMPLER {cfg.data.sampler}: {cfg.data.dataset} streams its shards in "
                         "shuffled order; the samplers are for map-style datasets")
    world = int(os.environ.get("WORLD_SIZE", "1")) if launched_by_torchrun() else 1
    train_set.check_world(world, cfg.data.workers)


RAND_AUGMENT_PART = re.compile(r"(mstd|mmax|inc|m|n|p|w)(\d+(\.\d+)?|inf)")


def _check_augment(cfg: Config) -> None:
    """AUG.RAND_AUGMENT parsed now, strictly: timm silently ignores the parts it cannot read."""
    spec = cfg.aug.rand_augment
    if not spec:
        return
    parts = spec.split("-")
    bad = [p for p in parts[1:] if not RAND_AUGMENT_PART.fullmatch(p)]
    if parts[0] != "rand" or bad:
        what = f"unknown part {bad[0]!r}" if parts[0] == "rand" else "it must start with 'rand'"
        raise UsageError(f"AUG.RAND_AUGMENT: cannot parse {spec!r} as a timm RandAugment spec "
                         f"such as 'rand-m9-mstd0.5-inc1' ({what}; parts: m magnitude, n ops, "
                         "mstd, mmax, inc, p, w)")


# ---------------------------------------------------------------------------- resume


def _resume_plan(cfg: Config, num_classes: int, overwrite: bool = False) -> ResumePlan:
    """Fresh, resume or finished; another run's checkpoint is refused, naming the fields, and
    so is a fresh start over another run's files unless ``overwrite`` says to replace them."""
    t = cfg.train
    if overwrite and t.resume:
        raise UsageError("--overwrite-output-dir starts the run over in OUTPUT_DIR; it cannot be "
                         f"combined with --resume {t.resume} (TRAIN.RESUME)")
    path = None if overwrite else find_resume_checkpoint(t.resume, t.auto_resume, cfg.output_dir)
    if path is None:
        earlier = earlier_run_files(cfg.output_dir)
        if earlier and not overwrite:
            raise UsageError(f"OUTPUT_DIR {cfg.output_dir} holds another run ({', '.join(earlier)}) "
                             "and this run starts fresh; pick another --output-dir, or pass "
                             "--overwrite-output-dir to replace that run's files")
        return ResumePlan(replace=overwrite)
    ckpt = load_training_checkpoint(path)
    how = "--resume" if t.resume else "auto-resume"
    try:
        saved = config_from_dict(ckpt.get("config") or {}, source=str(path))
    except UsageError:
        saved = None
    differ = []
    if saved is not None:
        for label, key in RUN_IDENTITY:
            old, new = get_key(saved, key), get_key(cfg, key)
            if key == "MODEL.ARGS":
                old = {k: _plain(v) for k, v in old.items()}
                new = {k: _plain(v) for k, v in new.items()}
            if old != new:
                differ.append(f"{label} {old} -> {new}")
    if ckpt.get("num_classes", num_classes) != num_classes:
        differ.append(f"classes {ckpt.get('num_classes')} -> {num_classes}")
    fresh = ("start fresh in another --output-dir, or over it with --overwrite-output-dir"
             if how == "auto-resume" else "pass the checkpoint of this run, or drop --resume")
    if differ:
        raise CheckpointError(f"{how}: {path} is another run ({'; '.join(differ)}); it was left "
                              f"untouched; {fresh}")
    epoch = int(ckpt["epoch"])
    changes = tuple((key, get_key(saved, key), get_key(cfg, key)) for key in RESUMABLE_CHANGES
                    if saved is not None and get_key(saved, key) != get_key(cfg, key))
    mode = "finished" if epoch >= t.epochs else "resume"
    step = int((ckpt.get("progress") or {}).get("step", 0))
    return ResumePlan(mode=mode, path=str(path), epoch=epoch, step=step, changes=changes, state=ckpt)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


__all__ = ["RunPlan", "ResumePlan", "resolve", "eval_size", "RUN_IDENTITY",
           "RESUMABLE_CHANGES"]
