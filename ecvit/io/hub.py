"""Hub-style model folders, written: ``config.json`` + ``model.safetensors`` + a README model card.

``ecvit export --format hf`` writes the folder timm's ``local-dir:`` / ``hf-hub:`` loaders
read (``architecture``, ``num_classes``, ``label_names``, ``model_args`` and a
``pretrained_cfg`` holding the checkpoint's own preprocessing, not timm's 224 px ImageNet
defaults). Such a folder is accepted wherever weights are (:mod:`ecvit.io.folders` reads it):
``create_model("local-dir:DIR")``, ``checkpoint_path=``, ``--pretrained``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from ecvit.errors import StorageError, UsageError
from ecvit.io.checkpoint import read_checkpoint, safetensors_bytes, storage_message, write_files_atomic
from ecvit.io.folders import CARD, CONFIG, WEIGHTS
from ecvit.io.weights import load_for_inference
from ecvit.models.registry import model_entry

CARD_MARK = "Image classifier built with ecvit:"  # how an export recognises a card it wrote


# ---------------------------------------------------------------- export


def export_hf(checkpoint: Path, out: Path | None, use_ema: bool | None = None) -> Path:
    """``ecvit export --format hf``: config.json, model.safetensors and a README.md model card
    in ``out``. An existing folder (a cloned hub repository, an earlier export) keeps every
    other file: only those files are replaced, and a README.md that ecvit did not write is
    kept, as timm keeps a repository's own card. The files are staged beside their targets
    and renamed together, so a refused write leaves the folder as it was."""
    out = Path(out) if out else checkpoint.with_name(checkpoint.stem + "-hf")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder; name a folder (new, or a "
                         "model repository to export into)")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: folder {out.parent} does not exist")
    names = [CONFIG, WEIGHTS] + ([CARD] if _card_is_ours(out / CARD) else [])
    if checkpoint.resolve() in {(out / name).resolve() for name in names}:
        raise UsageError(f"--out {out} would overwrite the checkpoint being exported "
                         f"({checkpoint}); export into another folder")
    model, spec = load_for_inference(str(checkpoint), use_ema)
    files = {WEIGHTS: safetensors_bytes(model),
             CONFIG: (json.dumps(hf_config(model, spec), indent=2) + "\n").encode()}
    if CARD in names:
        files[CARD] = model_card(checkpoint, spec).encode()
    try:
        out.mkdir(exist_ok=True)
    except OSError as exc:
        raise StorageError(storage_message(out, exc, "export")) from None
    write_files_atomic({out / name: data for name, data in files.items()}, what="export")
    return out


def _card_is_ours(path: Path) -> bool:
    """True when ``path`` is absent or a model card that :func:`model_card` wrote."""
    if not path.is_file():
        return True
    try:
        return CARD_MARK in path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def hf_config(model: nn.Module, spec: Any) -> dict[str, Any]:
    """timm's config.json layout with the checkpoint's own preprocessing and class names."""
    pre = {k: v for k, v in spec.pretrained_cfg().items() if k != "label_names"}
    in_chans = int(spec.model_args.get("in_chans", 3))
    pre["input_size"] = [in_chans, spec.img_size, spec.img_size]
    timm_cfg = getattr(model, "pretrained_cfg", None) or {}
    for key in ("first_conv", "classifier", "fixed_input_size"):
        if key in timm_cfg:
            pre[key] = timm_cfg[key]
    pre.update(architecture=spec.model_name, mean=list(spec.mean), std=list(spec.std),
               custom_load=False)
    config: dict[str, Any] = {
        "architecture": spec.model_name,
        "num_classes": spec.num_classes,
        "num_features": int(getattr(model, "num_features", 0)),
        "label_names": list(spec.class_names),
        "model_args": {**spec.model_args, "img_size": spec.img_size},
        "pretrained_cfg": pre,
    }
    return config


def model_card(checkpoint: Path, spec: Any) -> str:
    """README.md: what the model is, what it was trained on and how, and how well it did."""
    from huggingface_hub import ModelCard, ModelCardData


    data = ModelCardData(library_name="timm", pipeline_tag="image-classification",
                         tags=["image-classification", "timm", "ecvit"])
    paper = model_entry(spec.model_name).paper
    lines = [f"---\n{data.to_yaml()}\n---", f"# {spec.model_name} ({spec.dataset or 'custom data'})", "",
             f"{CARD_MARK} `{spec.model_name}`, "
             f"{spec.num_classes} classes.", "",
             "## Model details", "",
             f"- Architecture: `{spec.model_name}`"
             + (f" with `{json.dumps(spec.model_args)}`" if spec.model_args else ""),
             f"- Paper: {paper}",
             f"- Input: {spec.img_size} x {spec.img_size} px, {spec.interpolation} resize, "
             f"crop {spec.crop_mode} ({spec.crop_pct:g}), mean {_nums(spec.mean)}, std {_nums(spec.std)}",
             f"- Classes: {', '.join(spec.class_names)}", "",
             "## Training data", "",
             f"- Dataset: `{spec.dataset or 'not recorded'}`"
             + (f" (root `{spec.data_root}`)" if spec.data_root else ""), ""]
    lines += _metrics_section(checkpoint)
    lines += _command_section(checkpoint)
    lines += ["## Use", "", "```python", "import timm, ecvit  # ecvit registers the architecture in timm",
              "model = timm.create_model('local-dir:THIS_FOLDER', pretrained=True)",
              "# or: ecvit.create_model('hf-hub:ORG/NAME')", "```", ""]
    return str(ModelCard("\n".join(lines)))


def _metrics_section(checkpoint: Path) -> list[str]:
    """The run's last epoch and best top-1 (the checkpoint's history), plus validate's result."""
    ckpt = read_checkpoint(checkpoint)
    history = [r for r in ckpt.get("history") or [] if isinstance(r, dict)]
    lines = ["## Metrics", ""]
    if history:
        last = history[-1]
        lines.append("| epoch | val top-1 | val top-5 | best top-1 | val loss |")
        lines.append("|---|---|---|---|---|")
        lines.append("| " + " | ".join(_num(last.get(k)) for k in
                                         ("epoch", "val_top1", "val_top5", "best_top1", "val_loss")) + " |")
    validated = checkpoint.with_name(checkpoint.stem + ".validate.json")
    if validated.is_file():
        try:
            result = json.loads(validated.read_text())
            shown = {k: v for k, v in result.items() if isinstance(v, (int, float))}
            lines.append("")
            lines.append("`ecvit validate`: " + ", ".join(f"{k} {_num(v)}" for k, v in shown.items()))
        except (json.JSONDecodeError, AttributeError):
            pass
    if len(lines) == 2:
        lines.append("No metrics recorded with this checkpoint.")
    return lines + [""]


def _command_section(checkpoint: Path) -> list[str]:
    config = checkpoint.parent / "config.yaml"
    if not config.is_file():
        return []
    return ["## Training", "", "Trained with (the run's resolved config):", "", "```bash",
            "ecvit train --cfg config.yaml", "```", "", "```yaml", config.read_text().rstrip(), "```", ""]


def _nums(values: Any) -> str:
    return "[" + ", ".join(_num(float(v)) for v in values) + "]"


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


__all__ = ["export_hf", "hf_config", "model_card"]

