"""The speed forms (``ecvit.models.speed``): the fused inference form and the CPU bf16
training policy are explicit swaps that compute the plain model's function.

Every registered model is fused in ``test_fuse_compile.py`` and switched in and out of the
policy in ``test_model_contract.py``; here are the pieces: BatchNorm folding, the product
Linear, the fp32 ops under the policy, and that the plain model has one path only.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from torch import nn

import ecvit
from ecvit.models import set_cpu_autocast_training
from ecvit.models import speed
from ecvit.models.cvt import ConvProjection, QuickGeluMlp
from ecvit.models.ecvit import InteractiveFFN, PartitionedAttention, Tokenizer
from ecvit.models.speed import (FusedDWConv, FusedInteractiveFFN, SiluMlp, cpu_autocast_training_on, fold_conv_bn,
                                fuse, linear_after_linear)
from ecvit.models.vit_dw import DWBranch

CASES = [("ecvit_tiny", {"img_size": 32}),
         ("dws_vit_tiny_dw", {"img_size": 32, "patch_size": 4, "depth": 4, "embed_dim": 48, "num_heads": 2,
                          "dw_kernels": (3, 5, 7), "dw_span": 2}),
         ("cvt_13", {"img_size": 32, "depths": (1, 1, 1), "embed_dims": (16, 32, 48), "num_heads": (1, 2, 3)})]


def _model(name: str, kwargs: dict, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = ecvit.create_model(name, num_classes=5, **kwargs)
    for m in model.modules():  # BatchNorm statistics far from the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)
    return model.eval()


# ---------------------------------------------------------------- the fused form


def test_one_documented_function():
    assert ecvit.fuse is ecvit.models.fuse is speed.fuse


@pytest.mark.parametrize("name,kwargs", CASES, ids=[c[0] for c in CASES])
def test_fuse_swaps_modules_and_keeps_the_function(name, kwargs):
    model = _model(name, kwargs)
    x = torch.randn(3, 3, 32, 32)
    keys = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        plain = model(x)
    fused = fuse(copy.deepcopy(model))
    with torch.no_grad():
        torch.testing.assert_close(fused(x), plain, rtol=1e-5, atol=1e-5)
    assert not fused.training and not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    kinds = {type(m) for m in fused.modules()}
    expected = {"ecvit_tiny": FusedInteractiveFFN, "dws_vit_tiny_dw": FusedDWConv, "cvt_13": SiluMlp}[name]
    assert expected in kinds
    # the plain model is untouched, and eval mode ran it as written: no caches, same state
    state = model.state_dict()
    assert state.keys() == keys.keys() and all(torch.equal(state[k], keys[k]) for k in keys)
    assert not any(isinstance(m, (FusedDWConv, FusedInteractiveFFN, SiluMlp)) for m in model.modules())


@pytest.mark.parametrize("name,kwargs", CASES, ids=[c[0] for c in CASES])
def test_eval_mode_has_one_path_with_or_without_autograd(name, kwargs):
    """No eval-only form: with and without autograd, eval mode gives the same bits, and
    gradients reach every BatchNorm parameter."""
    model = _model(name, kwargs)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        no_grad = model(x)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), no_grad, rtol=0, atol=0)
    out = model(x)
    torch.testing.assert_close(out.detach(), no_grad, rtol=0, atol=0)
    out.square().mean().backward()
    assert all(m.weight.grad is not None for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_fuse_leaves_unknown_modules_and_is_idempotent():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    assert fuse(model) is model and not model.training
    assert isinstance(model[1], nn.BatchNorm2d)  # not ours: left as it is
    ours = _model(*CASES[0])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        once = fuse(ours)(x)
        torch.testing.assert_close(fuse(ours)(x), once, rtol=0, atol=0)


@pytest.mark.parametrize("bias", [False, True])
def test_fold_conv_bn_is_bn_after_conv(bias):
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(6, 6, 3, 2, 1, groups=6, bias=bias), nn.BatchNorm2d(6)
    bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2.0), nn.init.normal_(bn.weight), nn.init.normal_(bn.bias)
    bn.eval()
    x = torch.randn(2, 6, 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(fold_conv_bn(conv, bn)(x), bn(conv(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(7, 7), (3, 5), (1, 2)])
def test_fused_dw_conv_is_exact_at_the_border(size):
    """BN before a zero-padded conv: the fold needs the border term (grids smaller than the kernel too)."""
    torch.manual_seed(0)
    branches = nn.ModuleList([DWBranch(8, 3), DWBranch(8, 5)]).eval()
    for br in branches:
        br.bn.running_mean.normal_(), br.bn.running_var.uniform_(0.5, 2.0), nn.init.normal_(br.bn.bias)
    z = torch.randn(2, 8, *size)
    with torch.no_grad():
        torch.testing.assert_close(FusedDWConv.from_branches(branches)(z), branches[0](z) + branches[1](z),
                                   rtol=1e-5, atol=1e-5)


def test_fused_ffn_saves_the_pointwise_conv():
    """The fused I-FFN runs the pointwise conv and fc1 as one Linear: the plain form's MACs
    less ``tokens x dim x dim``."""
    torch.manual_seed(0)
    ffn = InteractiveFFN(16, mlp_ratio=2.0, conv_pos="input").eval()
    cls, x = torch.randn(1, 16), torch.randn(1, 7, 7, 16)
    fused = FusedInteractiveFFN(copy.deepcopy(ffn)).eval()
    macs = {}
    for form, m in (("plain", ffn), ("fused", fused)):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = m(cls, x)
        macs[form] = counter.get_total_flops() // 2
        if form == "plain":
            ref = out
    for got, want in zip(out, ref):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert macs["plain"] - macs["fused"] == 49 * 16 * 16


# ---------------------------------------------------------------- products of Linear maps


@pytest.mark.parametrize("tokens, chained", [(40, True), (8, False)])
def test_linear_after_linear_is_the_two_linears(tokens, chained):
    """Same output and gradients for both layers; the product is taken only when the tokens
    outnumber the output features (fewer MACs than the intermediate Linear)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, tokens // 2, 12, generator=g, requires_grad=True)
    params = [torch.randn(s, generator=g, requires_grad=True) for s in ([12, 12], [12], [16, 12], [16])]
    w1, b1, w2, b2 = params
    out = linear_after_linear(x, w1, b1, w2, b2)
    ref = F.linear(F.linear(x, w1, b1), w2, b2)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    grads = torch.autograd.grad(out.square().sum(), [x, *params])
    ref_grads = torch.autograd.grad(ref.square().sum(), [x, *params])
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-4)
    with FlopCounterMode(display=False) as counter:
        linear_after_linear(x, w1, b1, w2, b2)
    two_linears = 2 * (tokens * 12 * 12 + tokens * 12 * 16)
    assert (counter.get_total_flops() < two_linears) == chained


@pytest.mark.parametrize("grid", [(7, 9), (2, 2)])  # 126 tokens: chained in training; 8: not
def test_training_form_of_the_ffn_is_the_plain_function_with_the_same_gradients(grid):
    torch.manual_seed(0)
    plain = InteractiveFFN(16, mlp_ratio=2.0, conv_pos="input").train()
    policy = set_cpu_autocast_training(copy.deepcopy(plain), True)
    assert type(policy) is speed.InteractiveFFNChained
    cls, x = torch.randn(2, 16), torch.randn(2, *grid, 16)
    out, ref = policy(cls, x), plain(cls, x)
    for got, want in zip(out, ref):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    grads = torch.autograd.grad(sum(t.square().sum() for t in out), list(policy.parameters()))
    ref_grads = torch.autograd.grad(sum(t.square().sum() for t in ref), list(plain.parameters()))
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_training_form_of_cvts_mlp_is_quick_gelu_with_the_same_gradients():
    torch.manual_seed(0)
    plain = QuickGeluMlp(24, 96).train()
    policy = set_cpu_autocast_training(copy.deepcopy(plain), True)
    assert type(policy) is speed.QuickGeluMlpSilu
    x = torch.randn(2, 9, 24)
    out, ref = policy(x), plain(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), list(policy.parameters()))
    ref_grads = torch.autograd.grad(ref.square().sum(), list(plain.parameters()))
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- the CPU bf16 training policy


def _sdpa_spy(monkeypatch) -> list:
    seen = []
    real_sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        seen.append((k.shape[-2], q.dtype, torch.is_autocast_enabled("cpu")))
        return real_sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    return seen


def test_window_attention_runs_in_fp32_when_training_under_the_policy(monkeypatch):
    """Training under CPU bf16 autocast: SDPA gets fp32 q/k/v with autocast off (its
    short-window bf16 backward is the slow path); eval keeps bf16, and so does training with
    the policy off; the block's output stays in the autocast dtype."""
    attn = PartitionedAttention(16, 2, block_size=4)
    seen = _sdpa_spy(monkeypatch)
    cls, x = torch.randn(2, 16, requires_grad=True), torch.randn(2, 6, 5, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attn(cls, x)
    assert seen[-1][1:] == (torch.bfloat16, True)  # off by default
    set_cpu_autocast_training(attn, True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        c_out, p_out = attn(cls, x)
    assert seen[-1][1:] == (torch.float32, False)
    assert c_out.dtype == p_out.dtype == torch.bfloat16
    (c_out.float().sum() + p_out.float().sum()).backward()
    ref_c, ref_p = attn(cls.detach(), x.detach())  # fp32 reference
    torch.testing.assert_close(c_out.float(), ref_c, atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(p_out.float(), ref_p, atol=3e-2, rtol=3e-2)
    attn.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attn(cls, x)
    assert seen[-1][1] == torch.bfloat16


def test_stem_depthwise_convs_run_in_fp32_when_training_under_the_policy():
    """The tokenizer's strided depth-wise convs compute in fp32, the pointwise convs stay bf16,
    every parameter gets a gradient; eval mode and the policy off keep bf16."""
    torch.manual_seed(0)
    stem = Tokenizer(3, 8, 16)
    seen: list[tuple[str, torch.dtype]] = []
    for name, conv in (("dw", stem.conv_v.conv.dw), ("pw", stem.conv_v.conv.pw)):
        conv.register_forward_hook(lambda m, args, out, name=name: seen.append((name, out.dtype)))
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        stem(x)
    assert seen[-2:] == [("dw", torch.bfloat16), ("pw", torch.bfloat16)]  # off by default
    set_cpu_autocast_training(stem, True)
    assert type(stem.conv_v.conv.dw) is speed.Conv2dFp32 and type(stem.conv_v.conv.pw) is nn.Conv2d
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = stem(x)
    assert seen[-2:] == [("dw", torch.float32), ("pw", torch.bfloat16)]
    out.float().sum().backward()
    assert all(p.grad is not None for p in stem.parameters())
    reference = set_cpu_autocast_training(stem, False)(x)  # fp32, the plain path
    torch.testing.assert_close(out.float(), reference, atol=5e-2, rtol=5e-2)
    set_cpu_autocast_training(stem, True).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        stem(x)
    assert seen[-2:] == [("dw", torch.bfloat16), ("pw", torch.bfloat16)]


def test_cvt_runs_short_key_attention_and_projections_in_fp32_under_the_policy(monkeypatch):
    """The key/value-squeezed attention of the later stages (<= 128 keys) and every depth-wise
    projection run in fp32 with autocast off; the first stage's long attention keeps bf16.
    Eval is untouched."""
    seen = _sdpa_spy(monkeypatch)
    convs, projections = [], []
    model = ecvit.create_model("cvt_13", num_classes=10, depths=(1, 1, 1))
    model = set_cpu_autocast_training(model.train(), True)
    for m in model.modules():
        if isinstance(m, ConvProjection):
            m.conv.register_forward_hook(lambda mod, args, out: convs.append(out.dtype))
            m.register_forward_hook(lambda mod, args, out: projections.append(out.dtype))
    x = torch.randn(1, 3, 128, 128)  # stage keys: 16x16 = 256, 8x8 = 64, 1 + 4x4 = 17
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x).float().sum().backward()
    assert seen == [(256, torch.bfloat16, True), (64, torch.float32, False), (17, torch.float32, False)]
    assert convs == [torch.float32] * 9
    seen.clear(), projections.clear()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model.eval()(x)
    assert [dtype for _, dtype, _ in seen] == [torch.bfloat16] * 3 and projections == [torch.bfloat16] * 9


def test_policy_walks_through_wrappers_and_only_swaps_its_convs():
    model = ecvit.create_model("ecvit_tiny", num_classes=3, img_size=32)
    wrapper = nn.Sequential(model)
    set_cpu_autocast_training(wrapper, True)
    assert cpu_autocast_training_on(wrapper)
    fp32_convs = [n for n, m in model.named_modules() if type(m) is speed.Conv2dFp32]
    assert fp32_convs == ["tokenizer.conv_h.conv.dw", "tokenizer.conv_v.conv.dw"]  # not the I-FFN's
    set_cpu_autocast_training(wrapper, False)
    assert not cpu_autocast_training_on(wrapper)


@pytest.mark.slow
def test_torch_compile_fullgraph_attention_training_under_the_policy():
    attn = set_cpu_autocast_training(PartitionedAttention(16, 2, block_size=4), True)
    cls, x = torch.randn(2, 16, requires_grad=True), torch.randn(2, 6, 5, 16)
    compiled = torch.compile(attn, fullgraph=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = compiled(cls, x), attn(cls, x)
    (out[0].float().sum() + out[1].float().sum()).backward()
    assert cls.grad is not None
    for o, r in zip(out, ref):
        assert o.dtype == torch.bfloat16
        torch.testing.assert_close(o.float(), r.float(), atol=3e-2, rtol=3e-2)
