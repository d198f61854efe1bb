"""ViT and ViT with depth-wise shortcuts (Zhang et al. 2024, arXiv 2407.19394).

The timm contract is checked for every model in ``test_model_contract.py``, fusing and
compiling in ``test_fuse_compile.py``; here what is this family's own (spans, parallel
kernels, the exact border fold)."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from _model_checks import assert_scripts_and_traces_exactly
from torch import nn

import ecvit
from ecvit.errors import UsageError
from ecvit.flops import count_macs, count_params
from ecvit.models.vit_dw import VisionTransformerDW

NAMES = ["dws_vit_tiny", "dws_vit_small", "dws_vit_tiny_dw", "dws_vit_small_dw"]


def small_vit(**kwargs) -> VisionTransformerDW:
    """A narrow, shallow model so wiring tests run in milliseconds."""
    args = dict(img_size=64, embed_dim=32, depth=6, num_heads=2, num_classes=7)
    args.update(kwargs)
    return VisionTransformerDW(**args)


def randomize_bn(model: nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters, so folding them is really tested."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-1, 1)


# ---------------------------------------------------------------- shapes and sizes

@pytest.mark.parametrize("name", ["dws_vit_tiny_dw", "dws_vit_small_dw"])
def test_output_shape_224_batch_1(name):
    model = ecvit.create_model(name, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 10)


@pytest.mark.parametrize("size", [(32, 32), (48, 80)])
def test_other_input_sizes_interpolate_positions(size):
    model = ecvit.create_model("dws_vit_tiny_dw", num_classes=5).eval()  # positions on the 14x14 grid
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
        single = model(torch.randn(1, 3, *size))
    assert out.shape == (2, 5) and single.shape == (1, 5)
    assert torch.isfinite(out).all()


def test_img_size_argument_sets_position_grid():
    model = ecvit.create_model("dws_vit_tiny_dw", num_classes=3, img_size=32)
    assert model.pos_embed.shape == (1, 1 + 2 * 2, 192)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_sizes_not_divisible_by_patch_raise():
    model = small_vit(dw_kernels=(3,))
    with pytest.raises(ValueError, match="not divisible by the patch size 16"):
        model(torch.randn(1, 3, 60, 64))
    with pytest.raises(UsageError, match="multiples of the patch size"):
        ecvit.create_model("dws_vit_tiny_dw", img_size=100)


@pytest.mark.parametrize("kwargs, message", [
    (dict(dw_kernels=(3,), dw_span=5), "divisor of depth"),
    (dict(dw_kernels=(3,), dw_span=0), "divisor of depth"),
    (dict(dw_kernels=(4,)), "odd positive"),
    (dict(global_pool="max"), "global_pool 'max' is not one of"),
])
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        small_vit(**kwargs)
    with pytest.raises(UsageError, match=message):
        ecvit.create_model("dws_vit_tiny_dw", **kwargs)


# ---------------------------------------------------------------- same architecture as timm's DeiT

def test_vit_tiny_matches_timm_deit_tiny_logits(tmp_path):
    reference = timm.create_model("deit_tiny_patch16_224", num_classes=10).eval()
    path = tmp_path / "deit_tiny.pth"
    torch.save(reference.state_dict(), path)
    ours = ecvit.create_model("dws_vit_tiny", num_classes=10, checkpoint_path=path).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-5)


def test_checkpoint_filter_resamples_positions_like_timm(tmp_path):
    """A 224 checkpoint loads into a 64-px model; logits match timm's dynamic-size ViT."""
    reference = timm.create_model("deit_tiny_patch16_224", num_classes=10, dynamic_img_size=True).eval()
    path = tmp_path / "deit_tiny.pth"
    torch.save(reference.state_dict(), path)
    ours = ecvit.create_model("dws_vit_tiny", num_classes=10, img_size=64, checkpoint_path=path).eval()
    assert ours.pos_embed.shape == (1, 17, 192)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-5)


def test_vit_small_has_timm_vit_small_layout():
    with torch.device("meta"):
        ours = ecvit.create_model("dws_vit_small").state_dict()
        theirs = timm.create_model("vit_small_patch16_224").state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


# ---------------------------------------------------------------- parameters and MACs

def test_dw_shortcut_adds_exactly_27648_parameters_to_vit_tiny():
    with torch.device("meta"):
        plain = count_params(ecvit.create_model("dws_vit_tiny"))
        dw = count_params(ecvit.create_model("dws_vit_tiny_dw"))
        deit = count_params(timm.create_model("deit_tiny_patch16_224"))
    assert plain == deit == 5_717_416
    assert dw - plain == 27_648 == 12 * 2_304  # BN 2*192 + depthwise 3x3 192*9 + bias 192


@pytest.mark.parametrize("kwargs, extra", [
    (dict(dw_kernels=(3,), dw_span=3), 4 * 2_304),
    (dict(dw_kernels=(3,), dw_span=12), 2_304),
    # per span: 3 BNs 3*384, kernels 192*(9+25+49), biases 3*192
    (dict(dw_kernels=(3, 5, 7)), 12 * 17_664),
    (dict(dw_kernels=(3, 5, 7), dw_span=2), 6 * 17_664),
])
def test_span_and_parallel_variant_parameter_counts(kwargs, extra):
    with torch.device("meta"):
        plain = count_params(ecvit.create_model("dws_vit_tiny"))
        variant = count_params(ecvit.create_model("dws_vit_tiny_dw", **kwargs))
    assert variant - plain == extra


def test_macs_at_224():
    with torch.device("meta"):
        plain = count_macs(ecvit.create_model("dws_vit_tiny"))
        dw = count_macs(ecvit.create_model("dws_vit_tiny_dw"))
        deit = count_macs(timm.create_model("deit_tiny_patch16_224"))
    assert plain == deit
    assert abs(plain / 1.26e9 - 1) < 0.03  # DeiT-Tiny: 1.3 GMACs
    assert dw - plain == 12 * 196 * 192 * 9  # one 3x3 depthwise conv per block


# ---------------------------------------------------------------- wiring of the shortcut

def reference_features(model: VisionTransformerDW, x: torch.Tensor) -> torch.Tensor:
    """Straightforward re-statement of Sec. 3: spans of blocks plus GELU->BN->DWConv, zero-padded."""
    b, _, h, w = x.shape
    grid = (h // 16, w // 16)
    tokens = model.patch_embed(x)
    pos = timm.layers.resample_abs_pos_embed(model.pos_embed, new_size=grid,
                                             old_size=model.patch_embed.grid_size, num_prefix_tokens=1)
    x = torch.cat([model.cls_token.expand(b, -1, -1), tokens], dim=1) + pos
    k = model.dw_span
    for s in range(len(model.blocks) // k):
        span_in = x
        for blk in model.blocks[s * k:(s + 1) * k]:
            x = blk(x)
        if model.shortcuts:
            z = F.gelu(span_in[:, 1:]).permute(0, 2, 1).reshape(b, -1, *grid)
            dw = sum(br.conv(br.bn(z)) for br in model.shortcuts[s].branches)
            x = x + F.pad(dw.flatten(2).permute(0, 2, 1), (0, 0, 1, 0))  # zeros at the class token
    return model.norm(x)


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(dw_kernels=(3,)),
    dict(dw_kernels=(3,), dw_span=3),
    dict(dw_kernels=(3, 5, 7), dw_span=2),
    dict(dw_kernels=(3, 5, 7), dw_span=6),
])
def test_forward_matches_reference_statement(kwargs):
    model = small_vit(**kwargs).eval()
    randomize_bn(model)
    x = torch.randn(2, 3, 48, 80)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), reference_features(model, x))


def test_span_shortcut_feeds_from_first_block_and_adds_after_last():
    model = small_vit(dw_kernels=(3,), dw_span=3).eval()
    seen: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(module, args, output):
            seen[name + ".in"] = args[0].detach().clone()
            seen[name + ".out"] = output.detach().clone()  # the model adds into it in place later
        return hook

    for i, blk in enumerate(model.blocks):
        blk.register_forward_hook(keep(f"block{i}"))
    for s, sc in enumerate(model.shortcuts):
        sc.register_forward_hook(keep(f"dw{s}"))
    model.norm.register_forward_hook(keep("norm"))
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))

    for s, (first, last) in enumerate([(0, 2), (3, 5)]):
        torch.testing.assert_close(seen[f"dw{s}.in"], seen[f"block{first}.in"], rtol=0, atol=0)
        nxt = seen[f"block{last + 1}.in"] if last + 1 < 6 else seen["norm.in"]
        torch.testing.assert_close(nxt[:, 0], seen[f"block{last}.out"][:, 0], rtol=0, atol=0)
        torch.testing.assert_close(nxt[:, 1:], seen[f"block{last}.out"][:, 1:] + seen[f"dw{s}.out"])
    for mid in (0, 1, 3, 4):  # inside a span nothing is added
        torch.testing.assert_close(seen[f"block{mid + 1}.in"], seen[f"block{mid}.out"], rtol=0, atol=0)


def test_in_place_shortcut_add_gives_reference_gradients():
    model = small_vit(dw_kernels=(3, 5), dw_span=2).train()
    x = torch.randn(2, 3, 48, 64)
    grads = []
    for forward in (model.forward_features, lambda inp: reference_features(model, inp)):
        model.zero_grad()
        forward(x).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any(n.startswith("shortcuts.2.") for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


def test_identity_blocks_leave_class_token_untouched():
    model = small_vit(dw_kernels=(3, 5), dw_span=2)
    with torch.no_grad():
        for blk in model.blocks:  # zero residual branches: every block is the identity
            for lin in (blk.attn.proj, blk.mlp.fc2):
                lin.weight.zero_()
                lin.bias.zero_()
    model.norm = nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    embedded, _ = model._embed(x)
    out = model.forward_features(x)
    torch.testing.assert_close(out[:, 0], embedded[:, 0], rtol=0, atol=0)
    assert (out[:, 1:] - embedded[:, 1:]).abs().max() > 1e-3


def test_every_parameter_gets_a_gradient():
    model = small_vit(dw_kernels=(3, 5, 7), dw_span=2, drop_path_rate=0.1).train()
    feats = model.forward_features(torch.randn(2, 3, 64, 64))
    # the logits see only the class token, which the last shortcut (patch tokens only) never
    # reaches; the dense features see every module
    (model.forward_head(feats).logsumexp(-1).sum() + feats[:, 1:].square().mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    for s in model.shortcuts:
        for br in s.branches:
            assert br.conv.weight.grad.abs().sum() > 0 and br.bn.weight.grad.abs().sum() > 0


def test_drop_path_and_in_chans():
    model = small_vit(dw_kernels=(3,), drop_path_rate=0.1, in_chans=1)
    rates = [getattr(blk.drop_path1, "drop_prob", 0.0) for blk in model.blocks]
    assert rates == pytest.approx([0.0, 0.02, 0.04, 0.06, 0.08, 0.1])
    x = torch.randn(2, 1, 64, 64)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))


def test_batch_one_trains():
    model = ecvit.create_model("dws_vit_tiny_dw", num_classes=4, img_size=32).train()
    model(torch.randn(1, 3, 32, 32)).sum().backward()
    assert model.shortcuts[0].branches[0].conv.weight.grad is not None


def test_bf16_autocast_forward():
    model = small_vit(dw_kernels=(3,)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)


# ---------------------------------------------------------------- fuse

@pytest.mark.parametrize("kwargs", [dict(dw_kernels=(3,)), dict(dw_kernels=(3, 5, 7), dw_span=2)])
@pytest.mark.parametrize("size", [(64, 64), (48, 80), (16, 32)])
def test_fuse_is_exact_including_borders(kwargs, size):
    model = small_vit(**kwargs).eval()
    randomize_bn(model)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        before = model(x)
        fused = ecvit.fuse(model)
        after = fused(x)
    assert fused is model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(len(s.branches) == 1 for s in model.shortcuts)  # parallel kernels merged
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)


def test_fuse_plain_vit_changes_nothing():
    model = small_vit().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        torch.testing.assert_close(ecvit.fuse(model)(x), before, rtol=0, atol=0)


# ---------------------------------------------------------------- heads and features

def test_head_api():
    model = small_vit(dw_kernels=(3,))
    assert model.no_weight_decay() == {"pos_embed", "cls_token"}
    feats = model.forward_features(torch.randn(2, 3, 64, 64))
    assert feats.shape == (2, 17, 32)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 32)
    model.reset_classifier(3)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 32)
    model.reset_classifier(0, "avg")
    torch.testing.assert_close(model.forward_head(feats), feats[:, 1:].mean(1))
    with pytest.raises(ValueError, match="not one of"):
        model.reset_classifier(3, global_pool="max")


def test_forward_intermediates():
    model = small_vit(dw_kernels=(3,), dw_span=2).eval()
    x = torch.randn(2, 3, 48, 80)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert len(maps) == 6 and all(m.shape == (2, 32, 3, 5) for m in maps)
        nlc = model.forward_intermediates(x, indices=[1, 3], output_fmt="NLC", intermediates_only=True)
        assert [m.shape for m in nlc] == [(2, 15, 32)] * 2
        torch.testing.assert_close(nlc[1], maps[3].flatten(2).transpose(1, 2))
        early = model.forward_intermediates(x, indices=2, stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[0], maps[4])
        normed = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        torch.testing.assert_close(normed[0], final[:, 1:].transpose(1, 2).reshape(2, 32, 3, 5))
    assert [f["reduction"] for f in model.feature_info] == [16] * 6
    assert [f["module"] for f in model.feature_info] == [f"blocks.{i}" for i in range(6)]


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")  # jit deprecation, FX node notes
@pytest.mark.parametrize("kwargs", [dict(dw_kernels=(3, 5, 7), dw_span=2), dict(dw_kernels=(3,), dw_span=3)])
@pytest.mark.parametrize("fused", [False, True])
def test_torchscript_and_fx_of_spans_and_fused_shortcuts(kwargs, fused):
    """Spans of several blocks and parallel kernels (a scripted model looks the shortcut up by
    index), before and after fuse(), script and trace to the eager outputs."""
    model = small_vit(**kwargs).eval()
    randomize_bn(model)
    if fused:
        ecvit.fuse(model)
    x = torch.randn(2, 3, 48, 80)
    assert_scripts_and_traces_exactly(model, x)


def test_grad_checkpointing_with_spans_gives_the_same_gradients():
    model = small_vit(dw_kernels=(3, 5), dw_span=3).train()
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        model.forward_features(x).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any(n.startswith("shortcuts.1.") for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=0, atol=0, msg=name)


def test_group_matcher_puts_each_shortcut_with_the_last_block_of_its_span():
    from timm.models import group_parameters

    model = small_vit(dw_kernels=(3,), dw_span=3)
    layer_of = group_parameters(model, model.group_matcher(), reverse=True)
    assert layer_of["shortcuts.0.branches.0.conv.weight"] == layer_of["blocks.2.mlp.fc2.weight"]
    assert layer_of["shortcuts.1.branches.0.conv.weight"] == layer_of["blocks.5.mlp.fc2.weight"]
    assert layer_of["blocks.0.norm1.weight"] == layer_of["patch_embed.proj.weight"] + 1


def test_pruned_features_match_full_model_mid_span():
    """Pruning keeps only whole spans' shortcuts, so mid-span maps equal the full model's."""
    full = small_vit(dw_kernels=(3,), dw_span=3).eval()
    randomize_bn(full)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = full.forward_intermediates(x, indices=[1, 4], intermediates_only=True)
        taken = full.prune_intermediate_layers([1, 4])
        got = full.forward_intermediates(x, indices=taken, intermediates_only=True)
    assert len(full.blocks) == 5 and len(full.shortcuts) == 1
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
