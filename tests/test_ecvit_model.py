"""ECViT (Qian 2025, arXiv 2504.14825): shapes, gradients, P-MSA against a per-window
reference, padding masks, paper parameter/MAC counts, timm integration, fuse, compile."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from _model_checks import assert_scripts_and_traces_exactly

import ecvit
from ecvit.errors import UsageError
from ecvit.flops import count_macs, count_params
from ecvit.models import set_cpu_autocast_training
from ecvit.models.ecvit import (ECViT, EncoderBlock, InteractiveFFN, PairDropPath, PartitionedAttention, SeparableConv,
                                Tokenizer, linear_after_linear, sincos_table)
from ecvit.models.layers import set_eval_folding

TINY = dict(embed_dims=(32, 64), depths=(1, 1), num_heads=(2, 4), mlp_ratios=(2.0, 2.0))


def tiny_model(**kwargs) -> ECViT:
    return ECViT(**{**TINY, "num_classes": 5, **kwargs})


# ---------------------------------------------------------------- shapes and gradients

@pytest.mark.parametrize("size", [32, 56, 64, 96, 224])
def test_ecvit_tiny_output_shapes_any_size(size):
    model = ecvit.create_model("ecvit_tiny", num_classes=7, img_size=64).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 7)
        assert model(torch.randn(2, 3, size, size + 8)).shape == (2, 7)


def test_ecvit_small_batch1_at_224():
    model = ecvit.create_model("ecvit_small", num_classes=10).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("stride", ["both", "kernel_axis"])
def test_tokenizer_grid_size_matches_output(stride):
    tok = Tokenizer(3, 8, 16, stem_stride=stride).eval()
    for h, w in [(1, 1), (7, 9), (32, 32), (33, 47), (64, 56), (96, 96)]:
        out = tok(torch.randn(1, 3, h, w))
        assert tuple(out.shape[1:3]) == tok.grid_size((h, w)), (h, w)


def _no_grad(model):
    return {n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}


@pytest.mark.parametrize("size", [64, 96])  # 8x8 and 12x12 token grids: windows need padding
def test_every_parameter_gets_a_gradient(size):
    model = ecvit.create_model("ecvit_tiny", num_classes=4, img_size=size)
    model.train()
    x = torch.randn(2, 3, size, size)
    model(x).logsumexp(1).sum().backward()
    # The class logits never see the patch tokens leaving the last encoder's I-FFN convs.
    last = f"stages.{len(model.stages) - 1}.blocks.{len(model.stages[-1].blocks) - 1}.ffn.conv_"
    assert _no_grad(model) == {n for n, _ in model.named_parameters() if n.startswith(last)}
    model.zero_grad(set_to_none=True)
    final, feats = model.forward_intermediates(x)
    (model.forward_head(final).logsumexp(1).sum() + sum(f.square().mean() for f in feats)).backward()
    assert not _no_grad(model)


@pytest.mark.parametrize("kwargs", [
    dict(ffn_conv="hidden", cls_merge="max", head_hidden=0),
    dict(stem_stride="kernel_axis", pos_embed="sincos", pos_interp="bilinear", head_hidden=24),
    dict(block_size=3, merge_kernel=2, merge_stride=2, embed_dims=(16, 32, 48), depths=(1, 1, 1),
         num_heads=(2, 2, 3), mlp_ratios=(1.0, 2.0, 3.0)),
])
def test_open_choices_build_run_and_train(kwargs):
    model = tiny_model(img_size=48, **kwargs)
    out = model(torch.randn(2, 3, 40, 40))
    assert out.shape == (2, 5)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_architecture_options_change_the_network():
    base = tiny_model()
    assert base.head.pre_logits.fc.out_features == 64  # head_hidden defaults to the last width
    assert isinstance(tiny_model(head_hidden=0).head.pre_logits, torch.nn.Identity)
    assert tiny_model(pos_embed="sincos").pos_embed is None
    conv_chs = base.stages[0].blocks[0].ffn.conv_h.pw.in_channels  # default: convs at the block width
    assert conv_chs == 32 and tiny_model(ffn_conv="hidden").stages[0].blocks[0].ffn.conv_h.pw.in_channels == 64
    assert base.grid_size == (28, 28) and tiny_model(stem_stride="kernel_axis").grid_size == (56, 56)
    assert [f["reduction"] for f in base.feature_info] == [4, 8, 32]  # stem, then the stages
    assert [f["reduction"] for f in tiny_model(merge_stride=2, merge_kernel=2).feature_info] == [4, 8, 16]
    assert [f["reduction"] for f in tiny_model(stem_stride="kernel_axis").feature_info] == [2, 4, 16]


# ---------------------------------------------------------------- P-MSA vs. per-window reference

def reference_pmsa(attn: PartitionedAttention, cls: torch.Tensor, x: torch.Tensor):
    """Straightforward P-MSA: loop over windows, no padding (edge windows are just smaller)."""
    b, h, w, c = x.shape
    nh, hd, ws = attn.num_heads, attn.head_dim, attn.block_size
    wh, ww = min(ws, h), min(ws, w)

    def heads(t):  # [B, T, C] -> [B, nh, T, hd]
        return t.view(b, -1, nh, hd).transpose(1, 2)

    out_x = torch.zeros_like(x)
    cls_outs, counts = [], []
    for i in range(0, h, wh):
        for j in range(0, w, ww):
            win = x[:, i:i + wh, j:j + ww]
            th, tw = win.shape[1:3]
            tokens = torch.cat([cls[:, None], win.reshape(b, th * tw, c)], dim=1)
            q, k, v = attn.qkv(tokens).chunk(3, dim=-1)
            q, k, v = heads(q), heads(k), heads(v)
            weights = torch.softmax(q @ k.transpose(-2, -1) * hd ** -0.5, dim=-1)
            o = (weights @ v).transpose(1, 2).reshape(b, 1 + th * tw, c)
            cls_outs.append(o[:, 0])
            counts.append(th * tw)
            out_x[:, i:i + th, j:j + tw] = o[:, 1:].view(b, th, tw, c)
    stacked = attn.proj(torch.stack(cls_outs, dim=1))  # [B, nW, C]: each window's MSA output
    if attn.cls_merge == "max":
        merged = stacked.amax(1)
    else:  # windows weighted by how many real tokens they hold
        weight = torch.tensor(counts, dtype=x.dtype) / (h * w)
        merged = (stacked * weight[None, :, None]).sum(1)
    return merged, attn.proj(out_x)


@pytest.mark.parametrize("grid", [(14, 14), (9, 9), (4, 4), (5, 12), (7, 15)])
@pytest.mark.parametrize("merge", ["mean", "max"])
def test_windowed_attention_matches_per_window_reference(grid, merge):
    attn = PartitionedAttention(24, 3, block_size=7, cls_merge=merge).eval()
    cls, x = torch.randn(2, 24), torch.randn(2, *grid, 24)
    with torch.no_grad():
        got_cls, got_x = attn(cls, x)
        ref_cls, ref_x = reference_pmsa(attn, cls, x)
    assert got_x.shape == x.shape and got_cls.shape == cls.shape
    torch.testing.assert_close(got_x, ref_x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_cls, ref_cls, atol=1e-5, rtol=1e-5)


def test_windowed_attention_gradients_match_reference():
    attn = PartitionedAttention(24, 3, block_size=7)
    cls = torch.randn(2, 24, requires_grad=True)
    x = torch.randn(2, 9, 11, 24, requires_grad=True)  # padded windows
    g_cls, g_x = torch.randn(2, 24), torch.randn(2, 9, 11, 24)
    grads = []
    for fn in (attn, lambda c, t: reference_pmsa(attn, c, t)):
        out_cls, out_x = fn(cls, x)
        torch.autograd.backward([out_cls, out_x], [g_cls, g_x])
        grads.append([cls.grad, x.grad] + [p.grad for p in attn.parameters()])
        cls.grad = x.grad = None
        attn.zero_grad(set_to_none=True)
    for got, ref in zip(*grads):
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_padding_is_masked_out_of_attention(monkeypatch):
    """Whatever the padded slots hold, real tokens and the class token never see it."""
    attn = PartitionedAttention(16, 2, block_size=7).eval()
    cls, x = torch.randn(1, 16), torch.randn(1, 9, 10, 16)  # pads to 14x14
    with torch.no_grad():
        clean = attn(cls, x)
        real_pad = F.pad

        monkeypatch.setattr(F, "pad", lambda t, pad, **kw: real_pad(t, pad, value=1e4))
        dirty = attn(cls, x)
    torch.testing.assert_close(dirty[0], clean[0])
    torch.testing.assert_close(dirty[1], clean[1])


def test_padded_keys_get_zero_attention_weight(monkeypatch):
    """Capture the mask handed to SDPA: padded keys are excluded, the class key never is."""
    attn = PartitionedAttention(16, 2, block_size=4).eval()
    seen = {}
    real_sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        seen["mask"], seen["q"] = attn_mask, q
        return real_sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        attn(torch.randn(2, 16), torch.randn(2, 6, 5, 16))  # 2x2 windows of 4x4, 6x5 real
    mask = seen["mask"].view(2, 2, 2, 17)  # [B, gh, gw, 1 + 16]
    assert seen["q"].shape == (2 * 4, 2, 17, 8)  # every window in one batched call
    assert mask[..., 0].all()
    assert mask[:, 0, 0, 1:].all()  # the top-left window is all real
    assert mask[0, 0, 1, 1:].view(4, 4).sum() == 4 * 1  # 4 rows x 1 real column
    assert mask[0, 1, 0, 1:].view(4, 4).sum() == 2 * 4
    assert mask[0, 1, 1, 1:].view(4, 4)[:2, :1].all() and mask[0, 1, 1, 1:].sum() == 2
    with torch.no_grad():
        attn(torch.randn(2, 16), torch.randn(2, 8, 8, 16))
    assert seen["mask"] is None  # divisible grid: no mask at all


# ---------------------------------------------------------------- paper numbers

def test_ecvit_small_matches_paper_params_and_macs():
    with torch.device("meta"):
        model = ecvit.create_model("ecvit_small", num_classes=10, img_size=224)
    params, macs = count_params(model), count_macs(model, 224)
    assert abs(params / 4.888e6 - 1) < 0.05, params
    assert abs(macs / 0.698e9 - 1) < 0.05, macs


def test_variants_grow():
    sizes = []
    for name in ("ecvit_tiny", "ecvit_small", "ecvit_base"):
        with torch.device("meta"):
            sizes.append(count_params(ecvit.create_model(name, num_classes=10)))
    assert sizes == sorted(sizes) and len(set(sizes)) == 3


# ---------------------------------------------------------------- constructor validation

@pytest.mark.parametrize("kwargs", [
    dict(embed_dims=(32, 64), depths=(1,), num_heads=(2, 4), mlp_ratios=(2.0, 2.0)),
    dict(embed_dims=(32, 64), depths=(1, 1), num_heads=(2, 4, 8), mlp_ratios=(2.0, 2.0)),
    dict(embed_dims=(32, 64), depths=(1, 1), num_heads=(2, 4), mlp_ratios=(2.0,)),
])
def test_bad_per_stage_lists_raise(kwargs):
    with pytest.raises(ValueError, match="same length"):
        ECViT(**kwargs)
    with pytest.raises(UsageError, match="same length"):
        ecvit.create_model("ecvit_tiny", **kwargs)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="divisible"):
        tiny_model(num_heads=(3, 4))
    with pytest.raises(ValueError, match="too small"):
        tiny_model(img_size=0)
    with pytest.raises(ValueError, match="no tokens"):
        tiny_model()(torch.randn(1, 3, 0, 8))
    for bad in (dict(cls_merge="sum"), dict(ffn_conv="after"), dict(stem_stride=3),
                dict(pos_embed="rope"), dict(block_size=0)):
        with pytest.raises(ValueError):
            tiny_model(**bad)


# ---------------------------------------------------------------- timm API

def test_timm_registration_and_listing():
    assert {"ecvit_tiny", "ecvit_small", "ecvit_base"} <= set(ecvit.list_models("ecvit*"))
    model = timm.create_model("ecvit_small", num_classes=3)
    assert isinstance(model, ECViT) and model.get_classifier() is model.head.fc  # cfg classifier 'head.fc'
    assert model.no_weight_decay() <= {n for n, _ in model.named_parameters()}


@pytest.mark.parametrize("size", [64, 96])
def test_features_keep_partial_windows(size):
    """Ceil-mode merging: each level's side is ceil(size / reduction), stem and stages alike."""
    net = timm.create_model("ecvit_tiny", features_only=True, img_size=size).eval()
    with torch.no_grad():
        feats = net(torch.randn(2, 3, size, size))
    assert net.feature_info.channels() == [32, 64, 128]  # stem and the two stages
    for f, red in zip(feats, net.feature_info.reduction()):
        assert f.shape[2] == -(-size // red)


def test_forward_intermediates_and_prune():
    model = tiny_model(img_size=64).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, feats = model.forward_intermediates(x)
        torch.testing.assert_close(model.forward_head(final), model(x))
        assert [f.shape for f in feats] == [(1, 32, 16, 16), (1, 32, 8, 8), (1, 64, 2, 2)]
        torch.testing.assert_close(feats[0], model.tokenizer.stem(x))  # the stem, before the pool
        only = model.forward_intermediates(x, indices=[1], intermediates_only=True)
        torch.testing.assert_close(only[0], feats[1])
        nhwc = model.forward_intermediates(x, indices=2, output_fmt="NHWC", intermediates_only=True)
        assert [f.shape for f in nhwc] == [(1, 8, 8, 32), (1, 2, 2, 64)]  # the last two levels
        early = model.forward_intermediates(x, indices=[0, 1], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[1], feats[1])
        assert model.forward_head(final, pre_logits=True).shape == (1, 64)
        assert model.prune_intermediate_layers(indices=[1]) == [1]
        assert len(model.stages) == 1 and model.num_classes == 0 and model.num_features == 32
        pruned = model.forward_intermediates(x, indices=[1], intermediates_only=True)
        torch.testing.assert_close(pruned[0], feats[1])
        model.prune_intermediate_layers(indices=[0])
        assert len(model.stages) == 0
        torch.testing.assert_close(model.forward_intermediates(x, indices=[0], intermediates_only=True)[0],
                                   feats[0])


def test_reset_classifier_keeps_the_hidden_layer_and_pools_before_it():
    model = tiny_model().eval()
    hidden = model.head.pre_logits.fc
    model.reset_classifier(11, "avg")
    assert model.head.pre_logits.fc is hidden and model.head.fc.out_features == 11
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        tokens = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(tokens, pre_logits=True),
                                   model.head.pre_logits(tokens[:, 1:].mean(1)))
        model.reset_classifier(0, "token")
        torch.testing.assert_close(model(x), model.head.pre_logits(tokens[:, 0]))


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")  # jit deprecation, FX node notes
@pytest.mark.parametrize("size", [64, 72])  # 8x8 and 9x9 grids: padded windows, masks, weighted merge
@pytest.mark.parametrize("kwargs", [
    dict(pos_embed="sincos", cls_merge="max", ffn_conv="hidden", head_hidden=0),
    dict(stem_stride="kernel_axis", block_size=3, merge_kernel=2, merge_stride=2, pos_interp="bilinear"),
])
def test_torchscript_and_fx_of_the_open_choices(kwargs, size):
    model = tiny_model(img_size=48, **kwargs).eval()
    x = torch.randn(2, 3, size, size)
    assert_scripts_and_traces_exactly(model, x)


def test_fuse_keeps_outputs():
    model = tiny_model(img_size=64)
    model.train()
    with torch.no_grad():  # give the BatchNorms non-trivial statistics
        for _ in range(3):
            model(torch.randn(4, 3, 64, 64) * 2 + 0.5)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        fused = model.fuse()
        after = fused(x)
    assert fused is model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_pos_embed_resampled_when_loading_other_img_size(tmp_path):
    src = ecvit.create_model("ecvit_tiny", num_classes=4, img_size=64)
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    dst = ecvit.create_model("ecvit_tiny", num_classes=4, img_size=32, checkpoint_path=path)
    assert dst.pos_embed.shape[1:3] == (4, 4) and src.pos_embed.shape[1:3] == (8, 8)
    torch.testing.assert_close(dst.cls_token, src.cls_token)
    expected = F.interpolate(src.pos_embed.permute(0, 3, 1, 2), size=(4, 4), mode="bicubic",
                             align_corners=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(dst.pos_embed, expected)


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_eager():
    model = tiny_model(img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)  # 8x8 grid: padded windows and the mask are compiled too
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-4, rtol=1e-4)


def _sdpa_spy(monkeypatch) -> list:
    seen = []
    real_sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        seen.append((q.dtype, k.dtype, v.dtype, torch.is_autocast_enabled("cpu")))
        return real_sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    return seen


def test_window_attention_runs_in_fp32_when_training_under_the_cpu_switch(monkeypatch):
    """set_cpu_autocast_training on, training under CPU bf16 autocast: SDPA gets fp32 q/k/v (its
    short-window bf16 backward is the slow path); eval keeps bf16, and so does training with
    the switch off; the block's output stays in the autocast dtype."""
    attn = PartitionedAttention(16, 2, block_size=4)
    seen = _sdpa_spy(monkeypatch)
    cls, x = torch.randn(2, 16, requires_grad=True), torch.randn(2, 6, 5, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attn(cls, x)
    assert seen[-1] == (torch.bfloat16,) * 3 + (True,)  # off by default
    set_cpu_autocast_training(attn, True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        c_out, p_out = attn(cls, x)
    assert seen[-1] == (torch.float32, torch.float32, torch.float32, False)
    assert c_out.dtype == p_out.dtype == torch.bfloat16
    (c_out.float().sum() + p_out.float().sum()).backward()
    ref_c, ref_p = attn(cls.detach(), x.detach())  # fp32 reference
    torch.testing.assert_close(c_out.float(), ref_c, atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(p_out.float(), ref_p, atol=3e-2, rtol=3e-2)
    attn.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attn(cls, x)
    assert seen[-1][:3] == (torch.bfloat16,) * 3
    attn(cls, x)  # no autocast: fp32 as before
    assert seen[-1][:3] == (torch.float32,) * 3


def test_stem_depthwise_convs_run_in_fp32_when_training_under_the_cpu_switch():
    """The switch on, training under CPU bf16 autocast: the tokenizer's strided depth-wise convs
    get fp32 inputs (their bf16 backward is the slow path), the pointwise convs stay bf16, and
    the stem computes the same function with gradients for every parameter; eval mode and the
    switch off keep the depth-wise convs in bf16."""
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
    assert seen[-1] == ("dw", torch.bfloat16)  # eval folds the BN into the pointwise conv (no hook)


@pytest.mark.slow
def test_torch_compile_fullgraph_attention_training_under_the_cpu_switch():
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


def test_sincos_table_is_timms():
    from timm.layers import build_sincos2d_pos_embed

    for h, w, dim in [(8, 8, 32), (5, 9, 64), (1, 3, 4)]:
        ref = build_sincos2d_pos_embed([h, w], dim=dim).view(1, h, w, dim)
        torch.testing.assert_close(sincos_table(h, w, dim, torch.device("cpu")), ref, rtol=0, atol=0)


def test_separable_conv_token_path_matches_conv_path():
    """The I-FFN's token-map path (1x1 conv as a Linear on NHWC tokens) is the same function."""
    conv = SeparableConv(16, 16, (3, 1))
    x = torch.randn(2, 5, 7, 16)  # [B, H, W, C]
    ref = conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    torch.testing.assert_close(conv.forward_nhwc(x), ref, atol=1e-5, rtol=1e-5)


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
    with torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
        linear_after_linear(x, w1, b1, w2, b2)
    two_linears = 2 * (tokens * 12 * 12 + tokens * 12 * 16)
    assert (counter.get_total_flops() < two_linears) == chained


def _ffn_as_written(ffn: InteractiveFFN, cls: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's I-FFN step by step: convs on the patch map, then fc1 -> GELU -> fc2 on all tokens."""
    x = ffn.conv_v(ffn.conv_h(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
    return ffn.fc2(ffn.act(ffn.fc1(cls))), ffn.fc2(ffn.act(ffn.fc1(x)))


@pytest.mark.parametrize("grid", [(7, 9), (2, 2)])  # 126 tokens: chained in training; 8: not
def test_interactive_ffn_chains_pointwise_conv_and_fc1_exactly(grid):
    torch.manual_seed(0)
    ffn = InteractiveFFN(16, mlp_ratio=2.0, conv_pos="input").train()
    cls, x = torch.randn(2, 16), torch.randn(2, *grid, 16)
    out, ref = ffn(cls, x), _ffn_as_written(ffn, cls, x)
    for got, want in zip(out, ref):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    grads = torch.autograd.grad(sum(t.square().sum() for t in out), list(ffn.parameters()))
    ref_grads = torch.autograd.grad(sum(t.square().sum() for t in ref), list(ffn.parameters()))
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)

    ffn.eval()  # cached product in eval; rebuilt after the weights change (an optimizer step)
    for _ in range(2):
        with torch.no_grad():
            out, ref = ffn(cls, x), _ffn_as_written(ffn, cls, x)
            for got, want in zip(out, ref):
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
            ffn.fc1.weight.add_(0.5)
            ffn.conv_v.pw.bias.add_(0.5)


def test_interactive_ffn_runs_as_written_with_eval_folding_off():
    """``set_eval_folding(model, False)`` (used to count the model's own MACs) skips the product."""
    ffn = InteractiveFFN(16, mlp_ratio=2.0, conv_pos="input").eval()
    x = torch.randn(1, 7, 7, 16)
    macs = {}
    for folding in (True, False):
        set_eval_folding(ffn, folding)
        with torch.no_grad():
            ffn(torch.randn(1, 16), x)  # builds the cached product (folding on)
        with torch.no_grad(), torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
            ffn(torch.randn(1, 16), x)
        macs[folding] = counter.get_total_flops() // 2
    assert macs[False] - macs[True] == 49 * 16 * 16  # the pointwise conv as a separate Linear


def test_drop_path_draws_one_mask_per_sample_for_class_and_patch_tokens():
    torch.manual_seed(0)
    drop = PairDropPath(0.5).train()
    cls, x = torch.ones(256, 8), torch.ones(256, 3, 3, 8)
    out_cls, out_x = drop(cls, x)
    cls_kept = out_cls.ne(0).all(dim=1)
    x_kept = out_x.flatten(1).ne(0).all(dim=1)
    assert out_cls.eq(0).all(dim=1).logical_or(cls_kept).all()  # a sample is dropped whole
    assert torch.equal(cls_kept, x_kept)
    assert 0 < int(cls_kept.sum()) < 256  # both outcomes happen
    assert torch.allclose(out_cls[cls_kept], torch.full_like(out_cls[cls_kept], 2.0))  # 1 / keep
    drop.eval()
    assert drop(cls, x)[0] is cls


def test_encoder_block_drops_a_sample_branch_as_a_whole():
    """Same sample: class-token and patch-token updates are both dropped or both kept."""
    torch.manual_seed(0)
    block = EncoderBlock(16, 2, 2.0, block_size=2, drop_path=0.6).train()
    cls, x = torch.randn(128, 16), torch.randn(128, 4, 4, 16)
    out_cls, out_x = block(cls, x)
    cls_same = (out_cls - cls).abs().amax(dim=1).eq(0)
    x_same = (out_x - x).flatten(1).abs().amax(dim=1).eq(0)
    assert torch.equal(cls_same, x_same)
    assert 0 < int(cls_same.sum()) < 128  # some samples lost both branches, others not
