"""Hub-style model folders, read: ``config.json`` + ``model.safetensors`` (or a transformers CvT folder).

A folder ``ecvit export --format hf`` wrote, an ``hf-hub:ORG/NAME`` repository (from the local
Hugging Face cache when ``HF_HUB_OFFLINE=1``) or a transformers CvT folder is read here as a
checkpoint dict (:func:`read_folder`); :mod:`ecvit.io.weights` turns it into a model and
:mod:`ecvit.io.hub` writes such folders. Only safetensors (or the weights-only checkpoint
loader) is read: nothing in a folder runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ecvit.errors import CheckpointError
from ecvit.io.checkpoint import read_checkpoint

SOURCES = ("local-dir:", "hf-hub:")
CONFIG, WEIGHTS, CARD = "config.json", "model.safetensors", "README.md"
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


__all__ = ["SOURCES", "CONFIG", "WEIGHTS", "CARD", "WEIGHT_FILES", "is_folder_source", "resolve_folder",
           "check_folder", "read_folder"]
