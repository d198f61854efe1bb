"""``ecvit export``: ship a trained model as ONNX, safetensors or TorchScript.

- safetensors: the (unfused) weights plus the inference metadata as JSON strings, so the
  file is itself a checkpoint for ``ecvit predict`` / ``ecvit validate`` and nothing in it
  can execute;
- ONNX / TorchScript: the fused eval-mode model (``ecvit.fuse`` folds BatchNorms), input
  ``[batch, 3, img_size, img_size]`` with a dynamic batch dimension, output logits; the
  metadata rides along (ONNX ``metadata_props``, TorchScript extra file ``ecvit_meta.json``).

Every format is written to a temp file and renamed, like checkpoints: a full disk or a
refused write leaves nothing partial behind and is one line naming the file.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ecvit.config import EXPORT_FORMATS
from ecvit.engine.outputs import check_output_dir
from ecvit.errors import CheckpointError, UsageError
from ecvit.io.checkpoint import safetensors_bytes, write_atomic
from ecvit.io.hub import export_hf
from ecvit.io.weights import load_for_inference
from ecvit.models import fuse

SUFFIXES = {"onnx": ".onnx", "safetensors": ".safetensors", "torchscript": ".torchscript.pt"}
ONNX_OPSET = 18
META_FILE = "ecvit_meta.json"


def export_model(checkpoint: str | Path, fmt: str, out: str | Path | None = None,
                 use_ema: bool | None = None) -> Path:
    """Export ``checkpoint`` to ``fmt``; ``out`` defaults to the checkpoint path with the
    format's suffix; ``use_ema`` None exports the EMA weights when the checkpoint has them.
    Returns the written path."""
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"checkpoint not found: {checkpoint}")
    if fmt == "hf":  # a folder (config.json, model.safetensors, README.md), not one file

        return export_hf(checkpoint, Path(out) if out else None, use_ema)
    out = Path(out) if out else checkpoint.with_suffix(SUFFIXES[fmt])
    if out.resolve() == checkpoint.resolve():
        raise UsageError(f"--out {out} would overwrite the checkpoint being exported")
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; name the file to write, e.g. "
                         f"{out / checkpoint.with_suffix(SUFFIXES[fmt]).name}")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: folder {out.parent} does not exist")
    check_output_dir(out.parent, "--out")
    model, spec = load_for_inference(str(checkpoint), use_ema)
    meta = spec.to_meta()
    if fmt == "safetensors":
        export_safetensors(model, meta, out)
    elif fmt == "onnx":
        export_onnx(inference_form(model), meta, out)
    else:
        export_torchscript(inference_form(model), meta, out)
    return out


def inference_form(model: nn.Module) -> nn.Module:
    """The fused form in eval mode (``ecvit.models.fuse``: BatchNorms folded)."""
    return fuse(model)


def example_input(meta: dict[str, Any], batch: int = 2) -> torch.Tensor:
    size = int(meta["img_size"])
    return torch.randn(batch, 3, size, size)


def _meta_strings(meta: dict[str, Any]) -> dict[str, str]:
    return {key: json.dumps(value) for key, value in meta.items()}


def export_safetensors(model: nn.Module, meta: dict[str, Any], out: Path) -> None:
    """Weights + JSON metadata; ``ecvit.io.checkpoint.read_checkpoint`` reads the metadata back."""
    data = safetensors_bytes(model, _meta_strings(meta))
    write_atomic(out, lambda fh: fh.write(data), what="export")


def export_onnx(model: nn.Module, meta: dict[str, Any], out: Path) -> None:
    """ONNX through the ``torch.export`` (dynamo) exporter, opset 18, dynamic batch."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError as exc:
        raise UsageError(f"--format onnx needs the onnx extra ({exc.name} is not installed): "
                         "pip install 'ecvit[onnx]'") from None

    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (example_input(meta),), dynamo=True, opset_version=ONNX_OPSET,
            input_names=["images"], output_names=["logits"],
            dynamic_shapes=({0: batch},),
            external_data=False, verbose=False,
        )
    proto = program.model_proto
    onnx.helper.set_model_props(proto, _meta_strings(meta))
    data = proto.SerializeToString()
    write_atomic(out, lambda fh: fh.write(data), what="export")


def export_torchscript(model: nn.Module, meta: dict[str, Any], out: Path) -> None:
    """``torch.jit.trace`` at batch 2 (traced shapes stay symbolic in the batch dim).

    TorchScript is deprecated upstream in favour of ``torch.export``, but it is still what
    C++ (libtorch) deployments load; the deprecation warnings are silenced here.
    """
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example_input(meta), check_trace=False)
        buffer = io.BytesIO()  # serialised in memory: a full disk is an OSError, not an abort
        torch.jit.save(traced, buffer, _extra_files={META_FILE: json.dumps(meta)})
    write_atomic(out, lambda fh: fh.write(buffer.getvalue()), what="export")


__all__ = ["export_model", "export_safetensors", "export_onnx", "export_torchscript",
           "inference_form"]
