"""``validate(cfg, checkpoint)``: evaluate one checkpoint on the validation split.

A checkpoint written by ``train`` brings its :class:`~ecvit.io.spec.CheckpointSpec`:
the model is rebuilt from it and fed with its preprocessing (image size, mean/std,
interpolation, crop), so the numbers match what training reported. The dataset is the
config's (``ecvit validate`` starts from the checkpoint's own config, so by default the
dataset and root it was trained on); a dataset whose classes differ from the checkpoint's
is refused instead of producing a meaningless number. Plain weight files (official CvT
weights, state dicts) are loaded into MODEL.NAME instead.

Results go beside the checkpoint (or to ``output_dir``), named after it:
``model_best.validate.json`` and ``model_best.confusion.png``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from ecvit.config import Config
from ecvit.engine import distributed as D
from ecvit.engine.builder import build_model
from ecvit.engine.evaluate import evaluate, result_dict
from ecvit.engine.loaders import eval_loader
from ecvit.engine.outputs import check_output_dir, plot_confusion, write_json
from ecvit.engine.plan import RunPlan, eval_size, resolve
from ecvit.engine.precision import apply_cudnn
from ecvit.errors import CheckpointError, UsageError, printable
from ecvit.io.checkpoint import extract_state_dict, read_checkpoint
from ecvit.io.spec import CheckpointSpec, choose_ema
from ecvit.io.weights import model_from_checkpoint
from ecvit.models import fuse


def result_paths(checkpoint: str | Path, output_dir: str | Path | None = None) -> tuple[Path, Path]:
    """``(<stem>.validate.json, <stem>.confusion.png)`` beside the checkpoint or in ``output_dir``."""
    ckpt = Path(checkpoint)
    folder = Path(output_dir) if output_dir else ckpt.parent
    return folder / f"{ckpt.stem}.validate.json", folder / f"{ckpt.stem}.confusion.png"


def validate(cfg: Config, checkpoint: str | None = None, output_dir: str | None = None,
             ckpt: dict[str, Any] | None = None) -> dict[str, Any]:
    """Top-1/top-5 (percent), mean loss, sample count and per-class accuracy of ``checkpoint``.

    ``checkpoint`` defaults to TEST.MODEL_FILE; ``ckpt`` is that file already read (the CLI
    reads it once for its saved config). TEST.USE_EMA picks the weights (default: EMA when
    the checkpoint has them). Under torchrun the shards are exact, so the numbers
    do not depend on the number of processes; rank 0 writes the results.
    """
    plan, ckpt, spec = validation_plan(cfg, checkpoint, ckpt)
    path = plan.cfg.test.model_file
    check_output_dir(result_paths(path, output_dir)[0].parent,
                     "--output-dir" if output_dir else "the checkpoint's folder")
    apply_cudnn(plan.cfg.cudnn, plan.device)
    info = D.setup(plan.device)
    data = plan.datasets
    class_names = [str(c) for c in data.class_names]
    valid = read_valid_labels(plan.cfg.test.valid_labels, len(class_names)) if plan.cfg.test.valid_labels else None
    if spec is None:
        pcfg = copy.deepcopy(plan.cfg)
        pcfg.model.pretrained, pcfg.model.finetune = str(path), False
        outputs = _head_rows(ckpt) if valid is not None else None
        model, weights = build_model(pcfg, outputs or plan.num_classes).eval(), "weights"
    else:
        if valid is None:
            _check_classes(spec, class_names, str(path), plan.cfg)
        ema = choose_ema(spec, plan.cfg.test.use_ema, str(path))
        model, _ = model_from_checkpoint(ckpt, str(path), use_ema=ema)
        weights = "EMA weights" if ema else "weights"
    model = fuse(model)  # the inference form: BatchNorms folded
    if valid is not None:
        model = SelectOutputs(model, valid, plan.cfg.test.valid_labels)
    if info.is_main:
        for note in plan.notes:
            print(note, flush=True)
    model = model.to(info.device)
    if plan.cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    result = evaluate(model, eval_loader(data.val, plan.cfg, info), len(class_names), info,
                      plan.precision.autocast, plan.cfg.train.channels_last, plan.cfg.test.tta,
                      crop_size=eval_size(plan.cfg))
    out = result_dict(result, class_names)
    out["tta"] = plan.cfg.test.tta
    out.update(checkpoint=str(path), weights=weights, dataset=plan.cfg.data.dataset,
               data_root=plan.cfg.data.root)
    if info.is_main:
        json_path, png_path = result_paths(path, output_dir)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, json_path)
        plot_confusion(result.confusion, class_names, png_path)
        top5 = f"top5 {out['top5']:.2f}  " if out["top5"] is not None else ""
        tta = f", tta {out['tta']}" if out["tta"] != "none" else ""
        print(f"validate {path} ({weights}{tta}) on {plan.cfg.data.dataset}: top1 {out['top1']:.2f}  "
              f"{top5}loss {out['loss']:.4f}  samples {out['num_samples']}  "
              f"bad_images {out['num_bad_images']}; wrote {json_path}, {png_path}", flush=True)
        for line in metric_lines(out):
            print(line, flush=True)
    return out


MAX_CLASS_ROWS = 20  # per-class rows on the console (all of them are in the JSON)


def metric_lines(out: dict[str, Any]) -> list[str]:
    """Macro precision/recall/F1 and ECE, then a per-class table for up to 20 classes."""
    lines = [f"macro precision {out['precision_macro']:.2f}  recall {out['recall_macro']:.2f}  "
             f"f1 {out['f1_macro']:.2f}  ece {out['ece']:.2f} ({out['ece_bins']} bins of top-1 "
             "confidence)"]
    rows = out["per_class_metrics"]
    if len(rows) > MAX_CLASS_ROWS:
        return lines + [f"per-class metrics of the {len(rows)} classes: see the JSON file"]
    width = max(len("class"), *(len(printable(n)) for n in rows))
    lines.append(f"{'class':<{width}}  accuracy  precision  recall      f1  support")
    for name, m in rows.items():
        acc = out["per_class"][name]
        shown = f"{acc:8.2f}" if acc is not None else f"{'-':>8}"
        lines.append(f"{printable(name):<{width}}  {shown}  {m['precision']:9.2f}  {m['recall']:6.2f}"
                     f"  {m['f1']:6.2f}  {m['support']:7d}")
    return lines


class SelectOutputs(torch.nn.Module):
    """The model's logits at the given output indices only (TEST.VALID_LABELS): e.g. an
    ImageNet-22k model evaluated on the 1k classes it shares, as the official CvT test does."""

    def __init__(self, model: torch.nn.Module, indices: list[int], source: str) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("indices", torch.tensor(indices, dtype=torch.long), persistent=False)
        self.source = source

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if int(self.indices.max()) >= logits.shape[-1]:
            raise UsageError(f"TEST.VALID_LABELS {self.source}: index {int(self.indices.max())} is "
                             f"beyond the model's {logits.shape[-1]} outputs")
        return logits.index_select(-1, self.indices)


def read_valid_labels(path: str, num_classes: int) -> list[int]:
    """Sorted output indices from a file with one integer per line (as the official test reads it)."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"TEST.VALID_LABELS: file not found: {path}")
    try:
        indices = sorted({int(line.strip()) for line in file.read_text().splitlines() if line.strip()})
    except ValueError:
        raise UsageError(f"TEST.VALID_LABELS {path}: expected one integer (an output index) per line") from None
    if not indices or indices[0] < 0:
        raise UsageError(f"TEST.VALID_LABELS {path}: expected non-negative output indices")
    if len(indices) != num_classes:
        raise UsageError(f"TEST.VALID_LABELS {path} lists {len(indices)} outputs; the dataset has "
                         f"{num_classes} classes (one output per class, in index order)")
    return indices


def _head_rows(ckpt: dict[str, Any]) -> int | None:
    """Output count of a plain weights file's classifier (``head.weight`` / ``classifier.weight``)."""
    state = extract_state_dict(ckpt)
    for key, value in state.items():
        if key.endswith(("head.weight", "classifier.weight")) and getattr(value, "ndim", 0) == 2:
            return int(value.shape[0])
    return None


def validation_plan(cfg: Config, checkpoint: str | None = None, ckpt: dict[str, Any] | None = None
                    ) -> tuple[RunPlan, dict[str, Any], CheckpointSpec | None]:
    """The preflight of ``validate``: the checkpoint read (unless ``ckpt`` is given), its model
    and preprocessing adopted."""
    path = checkpoint or cfg.test.model_file
    if not path:
        raise UsageError("no checkpoint to validate: pass --checkpoint PATH or TEST.MODEL_FILE PATH")
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if ckpt is None:
        ckpt = read_checkpoint(path)
    spec = CheckpointSpec.from_checkpoint(ckpt, str(path))
    cfg = copy.deepcopy(cfg)
    cfg.test.model_file = str(path)
    if spec is not None:  # the checkpoint's own model and preprocessing
        cfg.model.name, cfg.model.args = spec.model_name, dict(spec.model_args)
        cfg.data.in_chans = int(cfg.model.args.pop("in_chans", 3))
        cfg.data.img_size, cfg.data.mean, cfg.data.std = spec.img_size, list(spec.mean), list(spec.std)
        cfg.data.interpolation, cfg.data.crop_pct = spec.interpolation, spec.crop_pct
        cfg.data.crop_mode, cfg.test.img_size = spec.crop_mode, None
        cfg.model.pretrained = ""  # the checkpoint holds the weights
    return resolve(cfg, training=False), ckpt, spec


def _check_classes(spec: CheckpointSpec, class_names: list[str], path: str, cfg: Config) -> None:
    """The dataset must have the checkpoint's classes, in its order: else the number means nothing.

    Classes named only by their index ("0", "1", ...: digits, simulated data) say nothing
    about what they are, so for them the dataset itself must be the one trained on.
    """
    where = f"{cfg.data.dataset}{' at ' + cfg.data.root if cfg.data.root else ''}"
    trained = f"{spec.dataset or 'its training data'}{' at ' + spec.data_root if spec.data_root else ''}"
    by_index = list(spec.class_names) == [str(i) for i in range(spec.num_classes)]
    if by_index and spec.dataset and spec.dataset != cfg.data.dataset:
        raise CheckpointError(
            f"{path} was trained on {trained}, whose classes are only numbered "
            f"(0..{spec.num_classes - 1}); {where} is another dataset, so its top-1 would mean "
            "nothing: validate on the checkpoint's own dataset (drop --dataset)")
    if list(spec.class_names) == class_names:
        return
    raise CheckpointError(
        f"{path} was trained on {trained} with {spec.num_classes} classes "
        f"({_names(spec.class_names)}); {where} has {len(class_names)} ({_names(class_names)}): "
        "validate on a dataset with the same classes, or drop --dataset/--data-path to use the "
        "checkpoint's own"
    )


def _names(names: Any, limit: int = 4) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


__all__ = ["validate", "result_paths"]
