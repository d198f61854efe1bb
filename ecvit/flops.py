"""Parameter and MAC counts the way the papers report them.

MACs come from ``torch.utils.flop_counter`` (which counts matmuls, convolutions and
``scaled_dot_product_attention``) divided by two: the papers' "FLOPs" are multiply-adds.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """All parameters (trainable or not), as the papers count them."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, img_size: int | tuple[int, int] = 224, in_chans: int = 3) -> int:
    """Multiply-accumulates of one forward pass on one ``img_size`` image (eval mode)."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    param = next(model.parameters())
    x = torch.zeros(1, in_chans, h, w, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
