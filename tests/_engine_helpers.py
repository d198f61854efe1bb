"""Shared pieces of the engine tests: a tiny config and a tiny probe model.

The probe model (``engine_probe_net``) is small enough to run dozens of steps per second
and records what the engine did to it (autocast dtype, memory format); with
``nan_after=N`` its training forward passes return NaN from the (N+1)-th on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from timm.layers import DropPath
from torch import nn

from ecvit.config import Config, load_config
from ecvit.models.registry import list_models, register_model

MODEL = "ecvit_tiny"


class ProbeNet(nn.Module):
    """conv stem -> GELU -> drop path residual -> pool -> LayerNorm -> linear head."""

    seen: list[dict[str, Any]] = []  # one record per training forward pass
    created: list[dict[str, torch.Tensor]] = []  # the initial weights of every instance

    def __init__(self, num_classes: int = 10, img_size: int = 32, drop_path_rate: float = 0.0,
                 width: int = 8, nan_after: int = -1) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.mix = nn.Conv2d(width, width, 3, padding=1)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.cls_token = nn.Parameter(torch.zeros(1, width))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)
        self.nan_after = nan_after
        self.calls = 0
        ProbeNet.created.append({k: v.clone() for k, v in self.state_dict().items()})

    def no_weight_decay(self) -> set[str]:
        return {"cls_token"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            ProbeNet.seen.append({
                "autocast": torch.is_autocast_enabled(x.device.type),
                "dtype": torch.get_autocast_dtype(x.device.type),
                "channels_last": x.is_contiguous(memory_format=torch.channels_last)
                and not x.is_contiguous(),
            })
        x = nn.functional.gelu(self.stem(x))
        x = x + self.drop_path(self.mix(x))
        out = self.head(self.norm(x.mean((2, 3)) + self.cls_token))
        if self.training:
            self.calls += 1
            if 0 <= self.nan_after < self.calls:
                out = out * float("nan")
        return out


if "engine_probe_net" not in list_models():

    @register_model(paper="test probe")
    def engine_probe_net(pretrained: bool = False, **kwargs: Any) -> ProbeNet:
        return ProbeNet(**kwargs)


def tiny_cfg(out: Path | str, *overrides: Any, model: str = MODEL) -> Config:
    """Simulated data, 32 px, 2 epochs of a few batches; ``overrides`` are KEY VALUE pairs."""
    base = [
        "MODEL.NAME", model, "MODEL.DROP_PATH_RATE", "0.0",
        "DATA.DATASET", "simulated", "DATA.IMG_SIZE", "32", "DATA.NUM_CLASSES", "4",
        "DATA.TRAIN_SIZE", "48", "DATA.VAL_SIZE", "21",
        "TRAIN.EPOCHS", "2", "TRAIN.BATCH_SIZE", "16", "TRAIN.WARMUP_EPOCHS", "1",
        "TRAIN.LR", "0.002", "TEST.BATCH_SIZE", "16",
        "OUTPUT_DIR", str(out), "DEVICE", "cpu",
    ]
    return load_config(None, base + [str(o) for o in overrides])


def weights(path: Path | str, key: str = "model") -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)[key]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"
