"""MAC counts include attention whatever device the model sits on."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ecvit.flops import count_macs


class OnlyAttention(nn.Module):
    """A model whose whole cost is one attention call: 2 * B * H * N * N * D MACs."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2).unsqueeze(1)  # [B, 1, H*W, C]
        return F.scaled_dot_product_attention(tokens, tokens, tokens) + self.anchor


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_attention_is_counted_on_every_device(device):
    model = OnlyAttention().to(device)
    tokens, channels = 8 * 8, 3
    assert count_macs(model, 8) == 2 * tokens * tokens * channels


def test_attention_backward_is_counted_on_cpu():
    from torch.utils.flop_counter import FlopCounterMode

    q = torch.randn(1, 2, 16, 8, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        F.scaled_dot_product_attention(q, q, q).sum().backward()
    forward = 2 * 2 * 16 * 16 * 8 * 2  # two matmuls, FLOPs
    assert counter.get_total_flops() >= 3 * forward
