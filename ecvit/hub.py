"""Hub-style model folders: ``config.json`` + ``model.safetensors`` (+ a README model card).

``ecvit export --format hf`` writes the folder timm's ``local-dir:`` / ``hf-hub:`` loaders
read (``architecture``, ``num_classes``, ``label_names``, ``model_args`` and a
``pretrained_cfg`` holding the checkpoint's own preprocessing, not timm's 224 px ImageNet
defaults). Such a folder, an ``hf-hub:ORG/NAME`` repository (from the local Hugging Face
cache when ``HF_HUB_OFFLINE=1``) or a transformers CvT folder is accepted wherever weights
are: ``create_model("local-dir:DIR")``, ``checkpoint_path=``, ``--pretrained``.
Only safetensors (or the weights-only checkpoint loader) is read: nothing in a folder runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from ecvit.checkpoint import read_checkpoint, storage_message, write_files_atomic
from ecvit.errors import CheckpointError, StorageError, UsageError

SOURCES = ("local-dir:", "hf-hub:")
CONFIG, WEIGHTS, CARD = "config.json", "model.safetensors", "README.md"
CARD_MARK = "Image classifier built with ecvit:"  # how an export recognises a card it wrote
WEIGHT_FILES = (WEIGHTS, "pytorch_model.bin")  # in the order timm and transformers prefer them


def is_folder_source(ref: str | Path) -> bool:
    """True for ``local-dir:DIR``, ``hf-hub:ORG/NAME`` and plain folders."""
    text = str(ref)
    return text.startswith(SOURCES) or Path(text).is_dir()


def resolve_folder(ref: str | Path) -> Path:
    """The local folder behind ``ref``; ``hf-hub:`` goes through ``huggingface_hub``'s cache."""
    text = str(ref)
    if text.startswith("hf-hub:"):
        from huggingface_hub import snapshot_download

        repo_id, _, revision = text[len("hf-hub:"):].partition("@")
        try:
            return Path(snapshot_download(repo_id, revision=revision or None,
                                          allow_patterns=[CONFIG, "*.safetensors", "*.bin", CARD]))
        except Exception as exc:  # offline cache miss, unknown repo, bad id: one line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"{text}: not found in the Hugging Face cache and not "
                                  f"downloadable ({first})") from None
    folder = Path(text[len("local-dir:"):] if text.startswith("local-dir:") else text)
    if not folder.is_dir():
        raise CheckpointError(f"{text}: no such folder")
    return folder


def check_folder(ref: str | Path) -> tuple[Path, Path]:
    """``(config.json, weights file)`` of a model folder, or one line naming what is missing."""
    folder = resolve_folder(ref)
    config_file = folder / CONFIG
    if not config_file.is_file():
        raise CheckpointError(f"{config_file}: missing; a model folder holds {CONFIG} and {WEIGHTS}")
    weights = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{folder}: no {' or '.join(WEIGHT_FILES)} beside {CONFIG}")
    return config_file, weights


def read_folder(ref: str | Path) -> dict[str, Any]:
    """A model folder as a checkpoint dict (``read_checkpoint``'s shape): weights under
    ``"model"`` and, for folders this project or timm wrote, the model description."""
    config_file, weights = check_folder(ref)
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_file}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_file}: expected a JSON object")
    ckpt = read_checkpoint(weights)
    state = ckpt.get("model", ckpt)
    if "architecture" in config:
        return {"model": state, **_description(config, config_file)}
    if config.get("model_type") == "cvt":  # transformers' CvtForImageClassification.save_pretrained
        return {"model": state}
    raise CheckpointError(f"{config_file}: neither a timm/ecvit config (no 'architecture') "
                          "nor a transformers CvT config (model_type 'cvt')")


def _description(config: dict[str, Any], source: Path) -> dict[str, Any]:
    """The CheckpointSpec fields a timm-style config.json holds."""
    pre = config.get("pretrained_cfg") or {}
    size = pre.get("input_size") or (3, 224, 224)
    if not isinstance(pre, dict) or not isinstance(size, (list, tuple)) or len(size) != 3:
        raise CheckpointError(f"{source}: pretrained_cfg.input_size must be [channels, height, width]")
    names = config.get("label_names", pre.get("label_names"))
    return {
        "model_name": config["architecture"],
        "num_classes": config.get("num_classes", pre.get("num_classes")),
        "class_names": list(names) if isinstance(names, (list, tuple)) else None,
        "img_size": size[-1],
        "mean": pre.get("mean"), "std": pre.get("std"),
        "interpolation": pre.get("interpolation"),
        "crop_pct": pre.get("crop_pct"), "crop_mode": pre.get("crop_mode"),
        "model_args": {k: v for k, v in (config.get("model_args") or {}).items() if k != "img_size"},
    }


def model_from_folder(ref: str, pretrained: bool = True) -> nn.Module:
    """``create_model("local-dir:DIR" | "hf-hub:ORG/NAME")``: the model the folder describes,
    its weights loaded (``pretrained=False``: freshly initialised) and its preprocessing in
    ``pretrained_cfg``."""
    from ecvit.engine.builder import adopt_preprocessing, model_from_checkpoint
    from ecvit.engine.spec import CheckpointSpec
    from ecvit.models.registry import create_model

    ckpt = read_folder(ref)
    if "model_name" not in ckpt:
        raise CheckpointError(f"{ref}: a transformers CvT folder names no ecvit model; load it "
                              "with create_model('cvt_13', checkpoint_path=...) (or the variant "
                              "it was trained as)")
    if pretrained:
        return model_from_checkpoint(ckpt, f"{ref}/{CONFIG}")[0]
    spec = CheckpointSpec.from_checkpoint(ckpt, f"{ref}/{CONFIG}")
    model = create_model(spec.model_name, num_classes=spec.num_classes, img_size=spec.img_size,
                         **spec.model_args)
    adopt_preprocessing(model, spec)
    return model


# ---------------------------------------------------------------- export


def export_hf(checkpoint: Path, out: Path | None, use_ema: bool | None = None) -> Path:
    """``ecvit export --format hf``: config.json, model.safetensors and a README.md model card
    in ``out``. An existing folder (a cloned hub repository, an earlier export) keeps every
    other file: only those files are replaced, and a README.md that ecvit did not write is
    kept, as timm keeps a repository's own card. The files are staged beside their targets
    and renamed together, so a refused write leaves the folder as it was."""
    from ecvit.engine import load_for_inference

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
    from safetensors.torch import save

    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    files = {WEIGHTS: save(state, metadata={"format": "pt"}),
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

    from ecvit.models.registry import model_entry

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


__all__ = ["export_hf", "check_folder", "read_folder", "resolve_folder", "model_from_folder", "is_folder_source",
           "hf_config", "model_card", "SOURCES"]

