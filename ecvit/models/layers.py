"""Small pieces shared by the model families: token <-> feature-map views, attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Key sequences up to this length run their attention in fp32 when training under CPU
# autocast. Measured fwd+bwd on 2 cores without AMX (benchmarks/NOTES.md), fp32 time / bf16
# time: 0.39 at 50 keys (ECViT windows), 0.45 at 100, 0.60 at 50 keys with 197 queries
# (CvT stage 3); 0.90 at 197 and 1.20 at 196 keys with 784 queries (CvT stage 2).
FP32_ATTENTION_MAX_KEYS = 128


def tokens_to_grid(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, H*W, C]`` tokens -> ``[B, C, H, W]`` map (for convolutions over the token grid)."""
    b, n, c = x.shape
    return x.transpose(1, 2).reshape(b, c, height, width)


def grid_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` map -> ``[B, H*W, C]`` tokens."""
    return x.flatten(2).transpose(1, 2)


def cpu_autocast_training(x: torch.Tensor) -> bool:
    """Whether ``x`` is on the CPU while autograd records under CPU autocast (a training step).

    The condition under which the families run a few cheap ops in fp32, because the
    reduced-precision CPU backward kernels for them are the slow path without AMX.
    """
    return x.device.type == "cpu" and torch.is_grad_enabled() and torch.is_autocast_enabled("cpu")


def fp32_attention(x: torch.Tensor, num_keys: int) -> bool:
    """Whether attention over ``num_keys`` keys runs in fp32: short keys, training, CPU autocast.

    The reduced-precision CPU SDPA backward is 2-3x slower than fp32 on short key sequences
    on CPUs without AMX; the casts cost less than that. Inference keeps the autocast dtype
    (its forward alone gains nothing measurable), and so does everything off the CPU.
    """
    return num_keys <= FP32_ATTENTION_MAX_KEYS and cpu_autocast_training(x)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, attn_mask: torch.Tensor | None = None,
              dropout_p: float = 0.0, scale: float | None = None) -> torch.Tensor:
    """``scaled_dot_product_attention`` over ``[..., heads, tokens, head_dim]``, in the fastest dtype.

    Every family calls this, so they share the rule of ``fp32_attention``: q/k/v go to fp32
    (a no-op if the caller cast them already) and autocast is off for the call; the fp32
    output is cast back by the autocast Linear that follows.
    """
    if fp32_attention(q, k.shape[-2]):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask,
                                                  dropout_p=dropout_p, scale=scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale)
