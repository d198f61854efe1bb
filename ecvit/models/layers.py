"""Small pieces shared by the model families: token <-> feature-map views, the CPU precision switch.

Model ``forward`` code reads no global state (autocast, grad mode): it computes in whatever
dtype autocast or the caller gives it, as timm's models do. The one precision policy the
families have, for training on CPUs under bf16 autocast, is opt-in through
``set_cpu_autocast_training``; it flips plain module attributes that ``forward`` reads.
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# With set_cpu_autocast_training on, attention over key sequences up to this length runs in
# fp32 in training. Measured fwd+bwd on 2 cores without AMX (benchmarks/NOTES.md), fp32 time
# / bf16 time: 0.39 at 50 keys (ECViT windows), 0.45 at 100, 0.60 at 50 keys with 197
# queries (CvT stage 3); 0.90 at 197 and 1.20 at 196 keys with 784 queries (CvT stage 2).
FP32_ATTENTION_MAX_KEYS = 128


def tokens_to_grid(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, H*W, C]`` tokens -> ``[B, C, H, W]`` map (for convolutions over the token grid)."""
    b, n, c = x.shape
    return x.transpose(1, 2).reshape(b, c, height, width)


def grid_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` map -> ``[B, H*W, C]`` tokens."""
    return x.flatten(2).transpose(1, 2)


@torch.jit.unused
def fp32_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
                   dropout_p: float = 0.0, scale: float | None = None) -> torch.Tensor:
    """``scaled_dot_product_attention`` in fp32 with CPU autocast off: the switch's training path.

    The reduced-precision CPU SDPA backward is 2-3x slower than fp32 on short key sequences
    on CPUs without AMX; the casts cost less than that. q/k/v go to fp32 (a no-op if the
    caller cast them already); the fp32 output is cast back by the autocast Linear that
    follows. TorchScript cannot turn autocast off inside a scripted graph, so a scripted
    model raises here: script a model with the switch off (the default).
    """
    with torch.autocast("cpu", enabled=False):
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask,
                                              dropout_p=dropout_p, scale=scale)


def set_cpu_autocast_training(model: nn.Module, enabled: bool) -> nn.Module:
    """Turn the CPU precision policy for training under CPU bf16 autocast on or off; returns ``model``.

    On, and only while a module is in training mode: attention over at most
    ``FP32_ATTENTION_MAX_KEYS`` keys runs in fp32 (ECViT's windows, CvT's last stage), and
    CvT's depth-wise conv projections run in fp32; both are the slow reduced-precision CPU
    backward kernels on CPUs without AMX (``benchmarks/NOTES.md``). Inference (eval mode)
    and everything else are unchanged. Off (the default) the models compute in the dtype
    autocast or the caller gives them and are pure functions of their inputs and weights.

    Call it when training on the CPU under bf16 autocast. It sets the ``cpu_autocast_training``
    attribute of every submodule that has one (wrappers such as DDP or feature extractors
    are walked through), so families opt in by giving their modules that attribute.
    """
    for module in model.modules():
        if isinstance(getattr(module, "cpu_autocast_training", None), bool):
            module.cpu_autocast_training = bool(enabled)
    return model


def img_size_cfg_overlay(kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """``pretrained_cfg_overlay`` for a model built at ``kwargs['img_size']``, merged with the caller's.

    The data pipeline reads the input size from the pretrained cfg, so a model built at
    another size records it there (``in_chans`` too). Pops ``pretrained_cfg_overlay``.
    """
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    img_size = kwargs.get("img_size")
    if img_size is not None:
        size = tuple(img_size) if isinstance(img_size, (list, tuple)) else (img_size, img_size)
        overlay["input_size"] = (kwargs.get("in_chans", 3), *(int(s) for s in size))
    return overlay or None

