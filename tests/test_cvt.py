"""CvT (arXiv 2103.15808): architecture, official key layout, transformers equivalence, counts.

The timm contract is checked for every model in ``test_model_contract.py``, fusing and
compiling in ``test_fuse_compile.py``; here only what is CvT's own."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from _model_checks import assert_scripts_and_traces_exactly
from torch import nn

import ecvit
from ecvit.errors import UsageError
from ecvit.flops import count_macs, count_params
from ecvit.models.cvt import CvT, checkpoint_filter_fn

SMALL = dict(depths=(1, 2, 3))  # CvT-13 widths and heads, fewer blocks (transformers needs depth[i] > i)


def small_cvt(**kwargs) -> CvT:
    return ecvit.create_model("cvt_13", **{"num_classes": 10, **SMALL, **kwargs})


def randomize_(model: nn.Module) -> nn.Module:
    """Non-trivial weights everywhere, BatchNorm running statistics included."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or "bn" in name or "normalization" in name) and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.add_(0.05 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.normal_(0, 0.2)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
    return model


def official_keys(depths, num_classes=True) -> set[str]:
    """The state-dict keys of microsoft/CvT's ConvolutionalVisionTransformer ('dw_bn')."""
    keys = {"stage2.cls_token", "norm.weight", "norm.bias"}
    if num_classes:
        keys |= {"head.weight", "head.bias"}
    wb = ("weight", "bias")
    for i, depth in enumerate(depths):
        keys |= {f"stage{i}.patch_embed.{m}.{t}" for m in ("proj", "norm") for t in wb}
        for j in range(depth):
            b = f"stage{i}.blocks.{j}."
            keys |= {f"{b}{m}.{t}" for m in ("norm1", "norm2", "attn.proj", "mlp.fc1", "mlp.fc2") for t in wb}
            for p in "qkv":
                keys |= {f"{b}attn.proj_{p}.{t}" for t in wb}
                keys.add(f"{b}attn.conv_proj_{p}.conv.weight")
                keys |= {
                    f"{b}attn.conv_proj_{p}.bn.{t}"
                    for t in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
                }
    return keys


# ---------------------------------------------------------------- transformers reference


def transformers_cvt(depths=(1, 2, 3), num_labels=10, stride_kv=2):
    """transformers' CvtForImageClassification, built offline, made to match the official model."""
    transformers = pytest.importorskip("transformers")
    from timm.layers import QuickGELU

    config = transformers.CvtConfig(depth=list(depths), num_labels=num_labels, stride_kv=[stride_kv] * 3)
    model = transformers.CvtForImageClassification(config)
    for module in model.modules():
        if type(module).__name__ == "CvtIntermediate":
            module.activation = QuickGELU()  # transformers hard-codes exact GELU
        if isinstance(module, nn.LayerNorm):
            module.eps = 1e-5
    return randomize_(model).eval()


def assert_logits_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    scale = theirs.abs().max().item()
    assert scale > 0.1  # the comparison is not between near-zero logits
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * scale)


@pytest.fixture(scope="module")
def small_pair():
    torch.manual_seed(1)
    hf = transformers_cvt()
    ours = small_cvt()
    ours.load_state_dict(checkpoint_filter_fn(hf.state_dict(), ours), strict=True)
    return ours.eval(), hf


@pytest.mark.parametrize("batch,size", [(1, 224), (3, 224), (1, 288), (3, 288)])
def test_matches_transformers(small_pair, batch, size):
    ours, hf = small_pair
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        assert_logits_close(ours(x), hf(x).logits)


def test_matches_transformers_stride_kv_1():
    hf = transformers_cvt(stride_kv=1)
    ours = small_cvt(stride_kv=1)
    ours.load_state_dict(checkpoint_filter_fn(hf.state_dict(), ours), strict=True)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert_logits_close(ours.eval()(x), hf(x).logits)


@pytest.mark.slow  # full-size models at 224 px
def test_full_cvt13_matches_transformers():
    hf = transformers_cvt(depths=(1, 2, 10), num_labels=1000)
    ours = ecvit.create_model("cvt_13")
    ours.load_state_dict(checkpoint_filter_fn(hf.state_dict(), ours), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert_logits_close(ours.eval()(x), hf(x).logits)


@pytest.mark.parametrize("filename", ["model.safetensors", "pytorch_model.bin"])
def test_transformers_files_load(small_pair, tmp_path, filename):
    from safetensors.torch import save_file

    _, hf = small_pair
    path = tmp_path / filename
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    if filename.endswith(".safetensors"):
        save_file(state, str(path))
    else:
        torch.save(state, path)
    model = ecvit.create_model("cvt_13", num_classes=10, checkpoint_path=path, **SMALL).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert_logits_close(model(x), hf(x).logits)


# ---------------------------------------------------------------- official layout


def test_official_key_layout():
    model = ecvit.create_model("cvt_13")
    assert set(model.state_dict()) == official_keys((1, 2, 10))
    assert model.state_dict()["stage2.cls_token"].shape == (1, 1, 384)
    assert model.state_dict()["stage1.blocks.0.attn.conv_proj_k.conv.weight"].shape == (192, 1, 3, 3)
    with torch.device("meta"):
        w24 = ecvit.create_model("cvt_w24", num_classes=0)
    assert set(w24.state_dict()) == official_keys((2, 2, 20), num_classes=False)


def test_official_checkpoint_loads_strict(tmp_path):
    """An official-layout .pth (optionally saved from DataParallel) loads and reproduces outputs."""
    src = randomize_(small_cvt()).eval()
    state = src.state_dict()
    torch.save(state, tmp_path / "official.pth")
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "ddp.pth")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = src(x)
        for name in ("official.pth", "ddp.pth"):
            model = ecvit.create_model("cvt_13", num_classes=10, checkpoint_path=tmp_path / name, **SMALL)
            torch.testing.assert_close(model.eval()(x), ref)
    dst = small_cvt()
    assert checkpoint_filter_fn(state, dst).keys() == state.keys()
    dst.load_state_dict(state, strict=True)


def test_wrong_checkpoint_is_a_usage_error(tmp_path):
    torch.save(small_cvt().state_dict(), tmp_path / "small.pth")
    with pytest.raises(UsageError, match="does not fit"):
        ecvit.create_model("cvt_13", num_classes=10, checkpoint_path=tmp_path / "small.pth")


@pytest.mark.parametrize("method", ["avg", "linear"])
def test_other_projection_methods(method):
    model = small_cvt(qkv_method=method)
    keys = set(model.state_dict())
    assert not any("conv_proj" in k for k in keys)
    assert keys == {k for k in official_keys(SMALL["depths"]) if "conv_proj" not in k}
    attn = model.stage1.blocks[0].attn
    assert attn.conv_proj_q is None
    if method == "avg":
        assert isinstance(attn.conv_proj_k, nn.AvgPool2d) and attn.conv_proj_k.ceil_mode
    else:
        assert attn.conv_proj_k is None and attn.conv_proj_v is None
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_avg_method_pools_keys_and_values():
    """'avg': q is the plain token, k/v are 3x3 stride-2 average pools (ceil mode) of the grid."""
    model = small_cvt(qkv_method="avg").eval()
    attn = model.stage0.blocks[0].attn
    x = torch.randn(1, 64, 64)
    grid = x.transpose(1, 2).reshape(1, 64, 8, 8)
    pooled = nn.functional.avg_pool2d(grid, 3, 2, 1, ceil_mode=True).flatten(2).transpose(1, 2)
    k = attn.proj_k(pooled)
    q = attn.proj_q(x)
    v = attn.proj_v(pooled)
    ref = attn.proj(nn.functional.softmax(q @ k.transpose(1, 2) * 64**-0.5, dim=-1) @ v)
    torch.testing.assert_close(attn(x, 8, 8), ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- counts


@pytest.mark.parametrize(
    "name,params,macs224,macs384",
    [
        ("cvt_13", 19.997e6, 4.5e9, 16.3e9),
        ("cvt_21", 31.6e6, 7.1e9, 24.9e9),
        ("cvt_w24", 277.2e6, None, 193.2e9),
    ],
)
def test_params_and_macs(name, params, macs224, macs384):
    with torch.device("meta"):
        model = ecvit.create_model(name)
    assert count_params(model) == pytest.approx(params, rel=0.03)
    if macs224:
        assert count_macs(model, 224) == pytest.approx(macs224, rel=0.03)
    assert count_macs(model, 384) == pytest.approx(macs384, rel=0.03)


def test_stride_kv_controls_the_squeeze():
    with torch.device("meta"):
        squeezed = count_macs(ecvit.create_model("cvt_13", **SMALL), 224)
        full = count_macs(ecvit.create_model("cvt_13", stride_kv=1, **SMALL), 224)
    assert full > squeezed * 1.2


# ---------------------------------------------------------------- behaviour


def token_grid(size: int) -> int:
    """Side of the last stage's token grid: conv 7/4/2, then conv 3/2/1 twice."""
    size = (size + 4 - 7) // 4 + 1
    for _ in range(2):
        size = (size - 1) // 2 + 1
    return size


@pytest.mark.parametrize("size", [64, 96, 224, (64, 96), (50, 37)])
def test_output_shapes(size):
    model = small_cvt().eval()
    h, w = (size, size) if isinstance(size, int) else size
    with torch.no_grad():
        assert model(torch.randn(1, 3, h, w)).shape == (1, 10)
        assert model(torch.randn(2, 3, h, w)).shape == (2, 10)
        feats = model.forward_features(torch.randn(1, 3, h, w))
    assert feats.shape == (1, 1 + token_grid(h) * token_grid(w), 384)


def test_batch_one_keeps_batch_dim():
    model = ecvit.create_model("cvt_13").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
        assert model.forward_head(model.forward_features(torch.randn(1, 3, 64, 64)), pre_logits=True).shape == (1, 384)


def test_every_parameter_gets_a_gradient():
    model = small_cvt().train()
    feats = model.forward_features(torch.randn(4, 3, 64, 64))
    # The classifier reads only the class token, whose query skips the last block's q conv:
    # the patch-token outputs join the loss so that conv is exercised too.
    (model.forward_head(feats).logsumexp(-1).sum() + feats[:, 1:].square().mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_layer_norms_and_init():
    model = small_cvt()
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 3 + 2 * sum(SMALL["depths"]) + 1
    assert all(m.eps == 1e-5 for m in norms)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert all(m.bias is None or not m.bias.any() for m in linears)
    w = torch.cat([m.weight.flatten() for m in linears])
    assert w.std().item() == pytest.approx(0.02, rel=0.1)
    assert model.stage2.cls_token.std().item() == pytest.approx(0.02, rel=0.3)
    assert model.stage0.cls_token is None and model.stage1.cls_token is None
    assert type(model.stage0.blocks[0].mlp).__name__ == "QuickGeluMlp"


def _quick_gelu_reference(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The official MLP written out: fc2(QuickGELU(fc1(x))), QuickGELU(z) = z * sigmoid(1.702 z)."""
    z = mlp.fc1(x)
    return mlp.fc2(z * torch.sigmoid(1.702 * z))


def test_quick_gelu_mlp_is_the_official_function_with_the_same_gradients():
    torch.manual_seed(0)
    mlp = small_cvt().stage1.blocks[0].mlp
    randomize_(mlp)
    twin = copy.deepcopy(mlp)
    x = torch.randn(2, 9, 192, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    out, ref = mlp(x), _quick_gelu_reference(twin, x2)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    (out * torch.linspace(-1, 1, 192)).sum().backward()
    (ref * torch.linspace(-1, 1, 192)).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-5, rtol=1e-5)
    for name, p in mlp.named_parameters():
        torch.testing.assert_close(p.grad, dict(twin.named_parameters())[name].grad, atol=1e-5, rtol=1e-5)
    assert set(mlp.state_dict()) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}


def test_layer_norm_runs_in_fp32_under_bf16_autocast():
    """Statistics in fp32: with a large common offset, bf16 arithmetic would cancel badly.

    The output keeps the input dtype, autocast or not (no global state is read).
    """
    model = small_cvt().eval()
    norm = model.stage2.blocks[0].norm1
    with torch.no_grad():
        randomize_(norm)
        x = (100 + torch.randn(2, 17, 384)).bfloat16()
        ref = nn.functional.layer_norm(x.float(), (384,), norm.weight, norm.bias, 1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = norm(x)
            out32 = norm(x.float())
        plain = norm(x.float())
    assert out.dtype == torch.bfloat16 and out32.dtype == plain.dtype == torch.float32
    torch.testing.assert_close(plain, ref)
    torch.testing.assert_close(out32, ref)
    # bf16 results equal the fp32 computation up to the final rounding (one bf16 ulp)
    assert ((out.float() - ref).abs() <= ref.abs() * 2**-7 + 1e-5).all()


def test_attention_gets_the_stage_compute_dtype_under_autocast(monkeypatch):
    """Under autocast the class token promotes the last stage's residual stream to fp32; each
    block hands its attention the normalised tokens in the embedding's dtype (one cast)."""
    model = small_cvt().eval()
    seen = []
    for i in range(3):
        attn = getattr(model, f"stage{i}").blocks[0].attn
        attn.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
    assert seen == [torch.bfloat16] * 3
    seen.clear()
    with torch.no_grad():
        model(x)
    assert seen == [torch.float32] * 3


def test_bf16_autocast_close_to_fp32():
    model = randomize_(small_cvt()).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() <= 0.05 * ref.abs().max()


def test_attention_scale_is_stage_width():
    model = small_cvt()
    assert model.stage1.blocks[0].attn.scale == 192**-0.5
    assert model.stage2.blocks[0].attn.scale == 384**-0.5


def test_drop_path_linear_within_stage():
    with torch.device("meta"):
        w24 = ecvit.create_model("cvt_w24")
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in w24.stage2.blocks]
    assert rates == pytest.approx([0.3 * j / 19 for j in range(20)])
    assert all(isinstance(b.drop_path, nn.Identity) for b in list(w24.stage0.blocks) + list(w24.stage1.blocks))
    model = small_cvt(drop_path_rate=0.2)
    assert [getattr(b.drop_path, "drop_prob", 0.0) for b in model.stage2.blocks] == pytest.approx([0, 0.1, 0.2])
    model = small_cvt(drop_path_rate=(0.0, 0.4, 0.0))
    assert [getattr(b.drop_path, "drop_prob", 0.0) for b in model.stage1.blocks] == pytest.approx([0, 0.4])
    assert all(isinstance(b.drop_path, nn.Identity) for b in model.stage2.blocks)


def test_fused_form_folds_the_projections_and_bakes_the_quick_gelu_scale():
    from ecvit.models.speed import SiluMlp

    model = randomize_(small_cvt()).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        ref = model(x)
        fused = ecvit.fuse(copy.deepcopy(model))
        out = fused(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    keys = set(fused.state_dict())
    assert not any(".bn." in k for k in keys)
    assert "stage2.blocks.0.attn.conv_proj_q.conv.bias" in keys
    assert all(isinstance(b.mlp, SiluMlp) for b in fused.stage2.blocks)
    torch.testing.assert_close(fused.stage2.blocks[0].mlp.fc1.weight, model.stage2.blocks[0].mlp.fc1.weight * 1.702)
    assert not fused.training


def test_global_pool_and_reset_classifier():
    model = small_cvt().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = model.forward_features(x)
        assert torch.equal(model.forward_head(tokens, pre_logits=True), tokens[:, 0])
        model.reset_classifier(5, "avg")
        assert model(x).shape == (2, 5)
        torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), tokens[:, 1:].mean(1))
        model.reset_classifier(0, "")
        assert model(x).shape == tokens.shape
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, "max")


def test_no_weight_decay():
    assert small_cvt().no_weight_decay() == {"stage2.cls_token"}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(qkv_method="conv"), "qkv_method"),
        (dict(img_size=2), "too small"),
        (dict(num_heads=(1, 5, 6)), "divisible"),
        (dict(depths=(1, 2)), "depths"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(UsageError, match=match):
        ecvit.create_model("cvt_13", **kwargs)


# ---------------------------------------------------------------- timm integration


def test_pretrained_cfgs_follow_the_official_files():
    with torch.device("meta"):
        assert timm.create_model("cvt_13").pretrained_cfg["interpolation"] == "bicubic"
        assert timm.create_model("cvt_w24").pretrained_cfg["input_size"] == (3, 384, 384)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated upstream
def test_forward_intermediates_and_prune():
    model = small_cvt().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, inters = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert [f.shape[1] for f in inters] == [64, 192, 384]
        assert [i["reduction"] for i in model.feature_info] == [4, 8, 16]
        # norm=True normalises the last map: channel-wise LayerNorm of the last stage's patch tokens
        normed = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        torch.testing.assert_close(normed[0], final[:, 1:].transpose(1, 2).reshape(1, 384, 4, 4))
        early = model.forward_intermediates(x, indices=[0], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[0], inters[0])
        with pytest.raises(ValueError, match="NCHW"):
            model.forward_intermediates(x, output_fmt="NHWC")
        assert model.prune_intermediate_layers([0, 1]) == [0, 1]
        assert not hasattr(model, "stage2") and model.num_features == 192
        assert model(x).shape == (1, 64, 192)
        assert torch.jit.script(model)(x).shape == (1, 64, 192)  # the written-out stage chain stops at stage1
    features = timm.create_model("cvt_13", features_only=True, out_indices=(0, 1), **SMALL)
    assert not any(k.startswith("model.stage2") or ".stage2." in k for k in features.state_dict())


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")  # jit deprecation, FX node notes
@pytest.mark.parametrize("kwargs", [dict(qkv_method="avg"), dict(qkv_method=("linear", "dw_bn", "avg")),
                                    dict(embed_dims=(32, 64, 96, 128), depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 4),
                                         patch_sizes=(7, 3, 3, 3), patch_strides=(4, 2, 2, 2),
                                         patch_paddings=(2, 1, 1, 1))])
def test_torchscript_and_fx_of_other_configurations(kwargs):
    """Projections that are None or pooling, and four stages, script and trace like the default."""
    model = small_cvt(**kwargs).eval()
    x = torch.randn(2, 3, 64, 96)
    assert_scripts_and_traces_exactly(model, x)


def test_more_stages_than_forward_features_names_are_refused():
    with pytest.raises(UsageError, match="1 to 4 stages"):
        ecvit.create_model("cvt_13", embed_dims=(8,) * 5, depths=(1,) * 5, num_heads=(1,) * 5,
                           patch_sizes=(3,) * 5, patch_strides=(1,) * 5, patch_paddings=(1,) * 5)
