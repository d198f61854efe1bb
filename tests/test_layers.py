"""Shared pieces: the fp32 attention of the CPU precision switch, the switch itself, cfg overlays."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ecvit.models import set_cpu_autocast_training
from ecvit.models.layers import fp32_attention, grid_to_tokens, img_size_cfg_overlay, split_heads, tokens_to_grid


def _qkv(keys: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 7, 8, generator=g)
    k, v = torch.randn(2, 3, keys, 8, generator=g), torch.randn(2, 3, keys, 8, generator=g)
    return tuple(t.bfloat16().requires_grad_() for t in (q, k, v))


def test_fp32_attention_runs_sdpa_in_fp32_with_autocast_off(monkeypatch):
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        seen.append((q.dtype, torch.is_autocast_enabled("cpu")))
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    q, k, v = _qkv(50)
    mask = torch.rand(2, 1, 7, 50, generator=torch.Generator().manual_seed(1)) > 0.2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fp32_attention(q, k, v, attn_mask=mask, scale=0.3)
    assert seen == [(torch.float32, False)] and out.dtype == torch.float32
    ref = real(q.float(), k.float(), v.float(), attn_mask=mask, scale=0.3)
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    assert q.grad is not None and q.grad.dtype == torch.bfloat16


class _Probe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cpu_autocast_training = False
        self.inner = nn.Sequential(nn.Linear(2, 2), _Leaf())


class _Leaf(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cpu_autocast_training = False
        self.other_flag = False


def test_switch_sets_the_attribute_of_every_module_that_has_one():
    model = nn.Sequential(_Probe(), nn.ReLU())
    assert set_cpu_autocast_training(model, True) is model
    flags = [m.cpu_autocast_training for m in model.modules() if hasattr(m, "cpu_autocast_training")]
    assert flags == [True, True]
    assert not model[0].inner[1].other_flag and not hasattr(model[1], "cpu_autocast_training")
    set_cpu_autocast_training(model, False)
    assert not any(m.cpu_autocast_training for m in model.modules() if hasattr(m, "cpu_autocast_training"))


def test_token_grid_views_round_trip():
    x = torch.randn(2, 12, 5)
    grid = tokens_to_grid(x, 3, 4)
    assert grid.shape == (2, 5, 3, 4)
    torch.testing.assert_close(grid_to_tokens(grid), x, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs, expected", [
    (dict(), None),
    (dict(img_size=64), dict(input_size=(3, 64, 64))),
    (dict(img_size=(48, 80), in_chans=1), dict(input_size=(1, 48, 80))),
    (dict(img_size=32, pretrained_cfg_overlay=dict(crop_pct=1.0)), dict(crop_pct=1.0, input_size=(3, 32, 32))),
])
def test_img_size_cfg_overlay(kwargs, expected):
    kwargs = dict(kwargs)
    assert img_size_cfg_overlay(kwargs) == expected
    assert "pretrained_cfg_overlay" not in kwargs


@pytest.mark.parametrize("parts", [2, 3])
def test_split_heads_gives_timms_views_and_gradients(parts):
    """The q/k/v views timm takes (move the parts axis first, unbind) and the same gradient."""
    packed = torch.randn(2, 5, parts * 4 * 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    ours = split_heads(packed, parts, num_heads=4)
    ref = packed.reshape(2, 5, parts, 4, 6).permute(2, 0, 3, 1, 4).unbind(0)
    assert len(ours) == parts
    for got, want in zip(ours, ref):
        assert got.shape == (2, 4, 5, 6) and torch.equal(got, want) and got.stride() == want.stride()
    weights = [torch.randn(2, 4, 5, 6) for _ in range(parts)]
    grad = torch.autograd.grad(sum((t * w).sum() for t, w in zip(ours, weights)), packed)[0]
    ref_grad = torch.autograd.grad(sum((t * w).sum() for t, w in zip(ref, weights)), packed)[0]
    assert torch.equal(grad, ref_grad)
