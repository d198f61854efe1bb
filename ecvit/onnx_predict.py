"""Running an ONNX file written by ``ecvit export --format onnx`` in onnxruntime.

The export stores the checkpoint's description (model name, class names, input size,
mean/std, interpolation, crop) as JSON strings in the ONNX ``metadata_props``; they are read
back into the same :class:`~ecvit.io.spec.CheckpointSpec` a checkpoint gives, so
``ecvit predict --checkpoint model.onnx`` preprocesses exactly as the ``.pth`` does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ecvit.errors import CheckpointError, UsageError
from ecvit.io.spec import CheckpointSpec

MAX_ONNX_BATCH = 4096  # the export's dynamic batch bound (``torch.export.Dim("batch", max=4096)``)


class OnnxClassifier:
    """``logits = OnnxClassifier(path)(images)`` for a ``[B, C, H, W]`` float tensor."""

    def __init__(self, path: str | Path, device: str | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise UsageError(f"{path} is an ONNX model; running it needs onnxruntime: "
                             "pip install 'ecvit[onnx]'") from None
        self.path = str(path)
        providers = _providers(ort.get_available_providers(), device)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings are not the user's business
        try:
            self.session = ort.InferenceSession(self.path, options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(f"{path}: onnxruntime cannot load this ONNX model: {reason}") from None
        self.device = "cuda" if providers[0].startswith("CUDA") else "cpu"
        self.input_name = self.session.get_inputs()[0].name
        self.spec = spec_of(self.session.get_modelmeta().custom_metadata_map, self.path)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.detach().cpu().float().numpy()
        outputs = [self.session.run(None, {self.input_name: batch[i:i + MAX_ONNX_BATCH]})[0]
                   for i in range(0, len(batch), MAX_ONNX_BATCH)]
        return torch.from_numpy(np.concatenate(outputs))


def spec_of(props: dict[str, str], source: str) -> CheckpointSpec:
    """The checkpoint description stored in an ONNX file's ``metadata_props``."""
    meta = {}
    for key, text in props.items():
        try:
            meta[key] = json.loads(text)
        except json.JSONDecodeError:
            meta[key] = text
    spec = CheckpointSpec.from_checkpoint(meta, source)
    if spec is None:
        raise CheckpointError(
            f"{source} is an ONNX model without the description `ecvit export --format onnx` "
            "stores (model_name, class_names, img_size, mean/std in its metadata_props); "
            "export the checkpoint with `ecvit export --format onnx`")
    return spec.single_weights()


def _providers(available: list[str], device: str | None) -> list[str]:
    """onnxruntime providers for ``--device``: CUDA when asked (or by default when present)."""
    cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not cuda:
        raise UsageError("--device cuda: this onnxruntime has no CUDA provider (install "
                         "onnxruntime-gpu); use --device cpu")
    if device in (None, "", "cuda") and cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


__all__ = ["OnnxClassifier", "spec_of"]
