"""Parameter and MAC counts the way the papers report them.

MACs come from ``torch.utils.flop_counter`` (which counts matmuls, convolutions and
``scaled_dot_product_attention``) divided by two: the papers' "FLOPs" are multiply-adds.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode



def _register_cpu_attention_formulas() -> None:
    """Count the CPU flash-attention kernels, which some torch releases leave uncounted.

    ``scaled_dot_product_attention`` on CPU dispatches to
    ``aten._scaled_dot_product_flash_attention_for_cpu``; torch counts it on some releases
    and silently counts 0 on others (2.14), which would drop attention from every MAC
    count. The formulas are torch's own SDPA ones, registered only where missing.
    """
    aten = torch.ops.aten
    forward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if forward is not None and forward not in flop_counter.flop_registry:

        @flop_counter.register_flop_formula(forward, get_raw=True)
        def _forward_flops(query, key, value, *args, out_val=None, **kwargs) -> int:
            return flop_counter.sdpa_flop_count(query.shape, key.shape, value.shape)

    if backward is not None and backward not in flop_counter.flop_registry:

        @flop_counter.register_flop_formula(backward, get_raw=True)
        def _backward_flops(grad_out, query, key, value, *args, out_val=None, **kwargs) -> int:
            return flop_counter.sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape,
                                                         value.shape)


_register_cpu_attention_formulas()


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
