"""One device resolver and one precision object, shared by train, validate, predict,
export and benchmark, so the rules for ``--device`` and ``--amp`` live in one place.

- ``off``: fp32 everywhere;
- ``bf16``: autocast to bfloat16 on CPU or CUDA, no loss scaling;
- ``fp16``: autocast to float16 with a gradient scaler, CUDA only (the scaler and the
  fp16 kernels it protects are GPU features).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, ContextManager

import torch

from ecvit.config import AMP_CHOICES, DEVICES
from ecvit.errors import UsageError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # TRAIN.AMP / --amp (config.AMP_CHOICES) but off


def resolve_device(name: str | torch.device | None, flag: str = "DEVICE") -> torch.device:
    """``""``/``None``: CUDA when available, else CPU; ``cuda`` without a GPU is refused."""
    if name is None or name == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"{flag} must be {' or '.join(DEVICES)}, got {name!r}") from None
    if device.type not in DEVICES:
        raise UsageError(f"{flag} must be {' or '.join(DEVICES)}, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{flag} {name} was asked for but no CUDA device is available; use {flag} cpu")
    return device


def apply_cudnn(cudnn: Any, device: torch.device) -> None:
    """CUDNN.BENCHMARK / DETERMINISTIC / ENABLED on a CUDA device; None keeps PyTorch's setting."""
    if device.type != "cuda":
        return
    for name in ("benchmark", "deterministic", "enabled"):
        value = getattr(cudnn, name)
        if value is not None:
            setattr(torch.backends.cudnn, name, bool(value))


@dataclass(frozen=True)
class Precision:
    """What ``--amp`` means on one device: the autocast context and whether to scale losses."""

    amp: str
    device_type: str
    flag: str = field(default="TRAIN.AMP", compare=False)  # named in errors (``--amp`` for benchmark)

    def __post_init__(self) -> None:
        if self.amp not in AMP_CHOICES:
            raise UsageError(f"{self.flag} must be one of {', '.join(map(repr, AMP_CHOICES))}; got {self.amp!r}")
        if self.amp == "fp16" and self.device_type != "cuda":
            raise UsageError(f"{self.flag} fp16 needs a CUDA device (fp16 training relies on a "
                             f"gradient scaler and GPU kernels); use {self.flag} bf16 on CPU")

    @property
    def dtype(self) -> torch.dtype:
        """The dtype autocast computes matmuls and convolutions in (fp32 when off)."""
        return AMP_DTYPES.get(self.amp, torch.float32)

    @property
    def enabled(self) -> bool:
        return self.amp != "off"

    def autocast(self) -> ContextManager:
        """A fresh autocast context (a no-op context when AMP is off)."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 needs loss scaling (overflowing steps are skipped by the scaler); bf16 does not."""
        return torch.amp.GradScaler(self.device_type) if self.amp == "fp16" else None

    @property
    def cpu_autocast_training(self) -> bool:
        """Training under CPU bf16 autocast: where the models' CPU precision policy pays off."""
        return self.device_type == "cpu" and self.amp == "bf16"

    def __str__(self) -> str:
        return "fp32" if not self.enabled else f"{self.amp} autocast"


__all__ = ["Precision", "resolve_device", "apply_cudnn", "AMP_DTYPES"]
