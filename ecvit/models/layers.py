"""Small pieces shared by the model families: token <-> feature-map views, pool names.

Model ``forward`` code reads no global state (autocast, grad mode): it computes in whatever
dtype autocast or the caller gives it, as timm's models do. Speed forms (fused BatchNorm,
the CPU bf16 training policy) are swaps in :mod:`ecvit.models.speed`, not branches here.
"""

from typing import Any

import torch
from timm.layers import to_2tuple

# The ``global_pool`` values the families accept: the class token, the mean of the patch
# tokens, or none ('': the head runs on every token). Families without a class token refuse
# 'token' before checking this list.
GLOBAL_POOLS = ("token", "avg", "")


def tokens_to_grid(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, H*W, C]`` tokens -> ``[B, C, H, W]`` map (for convolutions over the token grid)."""
    b, n, c = x.shape
    return x.transpose(1, 2).reshape(b, c, height, width)


def grid_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` map -> ``[B, H*W, C]`` tokens."""
    return x.flatten(2).transpose(1, 2)


def split_heads(packed: torch.Tensor, parts: int, num_heads: int) -> list[torch.Tensor]:
    """``[B, N, parts * heads * head_dim]`` (a fused q/k/v Linear's output) -> ``parts`` views
    ``[B, heads, N, head_dim]``.

    Unbinding the ``parts`` axis in place (not after moving it first, as timm does) gives the
    same views, but autograd's backward then stacks the attention gradients straight into the
    Linear's layout: one copy instead of a stack and a strided copy (-8 ms of a 45 ms
    attention forward + backward on ECViT's stage-1 windows, benchmarks/NOTES.md).
    """
    b, n = packed.shape[0], packed.shape[1]
    views = packed.reshape(b, n, parts, num_heads, -1).unbind(2)
    return [views[i].transpose(1, 2) for i in range(parts)]  # indexed: FX cannot iterate a traced value


def img_size_cfg_overlay(kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """``pretrained_cfg_overlay`` for a model built at ``kwargs['img_size']``, merged with the caller's.

    The data pipeline reads the input size from the pretrained cfg, so a model built at
    another size records it there (``in_chans`` too). Pops ``pretrained_cfg_overlay``.
    """
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    img_size = kwargs.get("img_size")
    if img_size is not None:
        overlay["input_size"] = (kwargs.get("in_chans", 3), *(int(s) for s in to_2tuple(img_size)))
    return overlay or None

