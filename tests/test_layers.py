"""Shared pieces: token-grid views, pool names, cfg overlays, head splitting."""

from __future__ import annotations

import pytest
import torch

from ecvit.models.layers import GLOBAL_POOLS, grid_to_tokens, img_size_cfg_overlay, split_heads, tokens_to_grid


def test_global_pool_names_have_one_owner():
    """Every family accepts the pools named in ``layers.GLOBAL_POOLS`` (one definition)."""
    from ecvit.models import cait, cvt, ecvit, swin_dw, vit_dw

    for family in (cait, cvt, ecvit, swin_dw, vit_dw):
        assert family.GLOBAL_POOLS is GLOBAL_POOLS, family.__name__


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
