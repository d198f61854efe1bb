"""Small pieces shared by the model families: token <-> feature-map views."""

from __future__ import annotations

import torch


def tokens_to_grid(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, H*W, C]`` tokens -> ``[B, C, H, W]`` map (for convolutions over the token grid)."""
    b, n, c = x.shape
    return x.transpose(1, 2).reshape(b, c, height, width)


def grid_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` map -> ``[B, H*W, C]`` tokens."""
    return x.flatten(2).transpose(1, 2)
