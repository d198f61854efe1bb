"""The shared attention helper: SDPA, in fp32 for short keys when training under CPU autocast."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ecvit.models.layers import FP32_ATTENTION_MAX_KEYS, attention


def _qkv(keys: int, requires_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 7, 8, generator=g)
    k, v = torch.randn(2, 3, keys, 8, generator=g), torch.randn(2, 3, keys, 8, generator=g)
    return tuple(t.bfloat16().requires_grad_(requires_grad) for t in (q, k, v))


def _spy(monkeypatch) -> list:
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        seen.append((q.dtype, torch.is_autocast_enabled("cpu")))
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    return seen


@pytest.mark.parametrize("keys, fp32", [(50, True), (FP32_ATTENTION_MAX_KEYS, True), (FP32_ATTENTION_MAX_KEYS + 1, False)])
def test_training_under_cpu_autocast_uses_fp32_for_short_keys_only(monkeypatch, keys, fp32):
    seen = _spy(monkeypatch)
    q, k, v = _qkv(keys)
    mask = torch.rand(2, 1, 7, keys, generator=torch.Generator().manual_seed(1)) > 0.2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, v, attn_mask=mask, scale=0.3)
    assert seen == [(torch.float32 if fp32 else torch.bfloat16, not fp32)]
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, scale=0.3)
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)
    out.float().sum().backward()
    assert q.grad is not None and q.grad.dtype == torch.bfloat16


def test_inference_and_plain_precision_keep_the_input_dtype(monkeypatch):
    seen = _spy(monkeypatch)
    q, k, v = _qkv(50, requires_grad=False)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        attention(q, k, v)
    attention(q.float(), k.float(), v.float())  # no autocast: fp32 stays fp32
    attention(q, k, v)  # no autocast: bf16 stays bf16
    assert seen == [(torch.bfloat16, True), (torch.float32, False), (torch.bfloat16, False)]


def test_compiles_without_graph_breaks_in_both_branches():
    compiled = torch.compile(lambda q, k, v: attention(q, k, v), fullgraph=True)
    for keys in (50, FP32_ATTENTION_MAX_KEYS + 1):
        q, k, v = _qkv(keys)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, ref = compiled(q, k, v), attention(q, k, v)
        torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=2e-2)
