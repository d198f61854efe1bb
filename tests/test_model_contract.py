"""timm's model contract, checked for every registered model (``ecvit.list_models()``).

A new family passes this file by being registered. What is checked: forward/backward,
pretrained_cfg consistency, features_only and forward_intermediates, TorchScript and FX
(outputs equal to eager), gradient checkpointing (identical gradients), layer-decay groups,
classifier reset with every pool type, pretrained loading with a new head through timm,
the opt-in CPU precision policy (a class swap: same state dict, plain again when switched
off; no global state is read) and attention extraction. The inference form (``ecvit.fuse``)
of every model is checked in ``test_fuse_compile.py``.

The CPU is slow, so inputs are small and the code-path tests build the models with fewer
blocks (``_cheap``); a family not listed there runs at full depth.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import pytest
import timm
import torch
from timm.models import get_notrace_functions, get_notrace_modules
from timm.optim import param_groups_layer_decay
from timm.utils import AttentionExtract
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import ecvit
from ecvit.models.registry import TIMM_MODULES
from ecvit.models import model_entry, set_cpu_autocast_training
from ecvit.models.speed import cpu_autocast_training_on

pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:FutureWarning",  # still part of timm's contract
    "ignore:NOTE. The nodes obtained by tracing the model in eval mode:UserWarning",  # dropout nodes
)

# Every model the package registers (test modules may register probe models of their own).
NAMES = [n for n in ecvit.list_models() if ecvit.models.model_entry(n).fn.__module__.startswith("ecvit.")]
IMG = 64  # a size every family accepts (a multiple of 16 for the ViTs)
POOLS = ("", "avg", "token")
CFG_KEYS = {"url", "num_classes", "input_size", "crop_pct", "interpolation", "mean", "std", "first_conv",
            "classifier"}


def _cheap(name: str) -> dict:
    """Fewer blocks for the families that take a depth argument (same code paths, less time)."""
    family = model_entry(name).fn.__module__
    if family == "ecvit.models.cvt":
        return dict(depths=(1, 1, 1))
    if family == "ecvit.models.dws_vit":
        return dict(depth=3)
    if family == "ecvit.models.dws_cait":
        return dict(depth=3, cls_depth=1)  # timm.create_model(features_only=True) takes the last 3 blocks
    if family == "ecvit.models.dws_swin":
        return dict(depths=(2, 1, 1, 1), embed_dim=32, num_heads=(1, 2, 4, 8))  # shifted windows in stage 1
    if family == "ecvit.models.ecvit":
        with torch.device("meta"):
            model = ecvit.create_model(name)
        return dict(depths=tuple(min(len(stage.blocks), 1) for stage in model.stages))
    return {}


def _build(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, img_size=IMG, **{**_cheap(name), **kwargs})


def _input(batch: int = 2, size: int | tuple[int, int] = IMG) -> torch.Tensor:
    h, w = (size, size) if isinstance(size, int) else size
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(1))


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# ---------------------------------------------------------------- forward, backward, cfg


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward(name):
    model = _build(name, num_classes=7).train()
    out = model(_input())
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no (finite) gradient for {missing[:5]}"


@pytest.mark.parametrize("name", NAMES)
def test_pretrained_cfg_matches_the_model(name):
    with torch.device("meta"):
        model = timm.create_model(name)
        resized = timm.create_model(name, img_size=(48, 80), in_chans=1)
    cfg = model.pretrained_cfg
    assert CFG_KEYS <= set(cfg), f"missing {CFG_KEYS - set(cfg)}"
    assert len(cfg["input_size"]) == 3 and cfg["input_size"][0] == 3
    assert cfg["num_classes"] == model.num_classes == 1000
    assert resized.pretrained_cfg["input_size"] == (1, 48, 80)
    state = model.state_dict()
    classifiers = (cfg["classifier"],) if isinstance(cfg["classifier"], str) else cfg["classifier"]
    for c in classifiers:
        assert c + ".weight" in state, f"classifier {c} is not a module with weights"
    assert model.get_classifier() is model.get_submodule(classifiers[0])
    assert model.get_classifier().out_features == model.num_classes
    first = model.get_submodule(cfg["first_conv"])
    assert cfg["first_conv"] + ".weight" in state and isinstance(first, nn.Conv2d) and first.in_channels == 3
    assert isinstance(resized.get_submodule(cfg["first_conv"]), nn.Conv2d)
    assert model.num_features > 0 and model.head_hidden_size > 0


@pytest.mark.parametrize("name", NAMES)
def test_registered_alike_in_ecvit_and_timm(name):
    assert name in ecvit.list_models() and name in timm.list_models(name)
    assert name in ecvit.list_models(name.split("_")[0] + "*")  # listed under its family's prefix
    with torch.device("meta"):
        ours = ecvit.create_model(name, num_classes=10)
        via_timm = timm.create_model(name, num_classes=10)
    assert type(via_timm) is type(ours) and via_timm.num_classes == 10
    assert sum(p.numel() for p in via_timm.parameters()) == sum(p.numel() for p in ours.parameters())
    module = type(ours).__module__  # timm lists the renamed families under their own module names
    shown = "ecvit.models." + TIMM_MODULES.get(module.rsplit(".", 1)[-1], module.rsplit(".", 1)[-1])
    assert model_entry(name).fn.__module__ == shown
    assert ours.no_weight_decay() <= {n for n, _ in ours.named_parameters()}


# ---------------------------------------------------------------- features


@pytest.mark.parametrize("name", NAMES)
def test_features_only(name):
    model = timm.create_model(name, features_only=True, img_size=IMG, **_cheap(name)).eval()
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert len(channels) >= 3, "timm's features_only needs at least 3 levels"
    assert reductions == sorted(reductions)
    with torch.no_grad():
        feats = model(_input())
    assert len(feats) == len(channels)
    for f, c, r in zip(feats, channels, reductions):
        assert f.shape[:2] == (2, c)
        for side in f.shape[2:]:
            assert IMG // r <= side <= math.ceil(IMG / r) + 1, (tuple(f.shape), r)


@pytest.mark.parametrize("name", NAMES)
def test_forward_intermediates(name):
    model = _build(name).eval()
    x = _input()
    levels = len(model.feature_info)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
        assert len(inter) == levels >= 3
        assert [f.shape[1] for f in inter] == [i["num_chs"] for i in model.feature_info]
        picked = model.forward_intermediates(x, indices=[0, levels - 1], intermediates_only=True)
        torch.testing.assert_close(picked, [inter[0], inter[-1]], rtol=0, atol=0)
        early = model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[0], inter[1], rtol=0, atol=0)
        normed = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        assert normed[0].shape == inter[-1].shape
        model.set_grad_checkpointing(True)
        again, _ = model.forward_intermediates(x)
    torch.testing.assert_close(again, final, rtol=0, atol=0)


# ---------------------------------------------------------------- TorchScript and FX


@pytest.mark.parametrize("name", NAMES)
def test_torchscript_matches_eager(name):
    with timm.layers.set_scriptable(True):
        model = _build(name).eval()
    scripted = torch.jit.script(model)
    x = _input()
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=0, atol=0)
        torch.testing.assert_close(scripted.forward_features(x), model.forward_features(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_fx_feature_extraction_matches_forward(name):
    """torchvision's FX tools as they come (no timm leaf lists), and with timm's, as timm tests them."""
    model = _build(name).eval()
    x = _input()
    with torch.no_grad():
        ref = model(x)
    timm_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())
    for tracer_kwargs in (None, timm_kwargs):
        train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
        assert train_nodes and eval_nodes
        fx = create_feature_extractor(model, return_nodes=[eval_nodes[-1]], tracer_kwargs=tracer_kwargs)
        with torch.no_grad():
            out = list(fx(x).values())[0]
        assert torch.equal(out, ref)


@pytest.mark.parametrize("name", NAMES)
def test_fx_backward_in_train_mode(name):
    model = _build(name, num_classes=7, drop_path_rate=0.1).train()
    train_nodes, _ = get_graph_node_names(model)
    fx = create_feature_extractor(model, return_nodes=[train_nodes[-1]]).train()
    out = list(fx(_input()).values())[0]
    assert out.shape == (2, 7)
    out.mean().backward()
    assert all(p.grad is not None for p in fx.parameters())


# ---------------------------------------------------------------- training helpers


@pytest.mark.parametrize("name", NAMES)
def test_grad_checkpointing_gives_identical_gradients(name):
    model = _build(name, num_classes=7, drop_path_rate=0.0).train()
    x = _input()
    results = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad(set_to_none=True)
        out = model(x)
        out.square().mean().backward()
        results.append((out.detach(), _grads(model)))
    (out0, g0), (out1, g1) = results
    torch.testing.assert_close(out1, out0, rtol=0, atol=0)
    assert g0.keys() == g1.keys() == {n for n, _ in model.named_parameters()}
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=0, atol=0, msg=n)


@pytest.mark.parametrize("name", NAMES)
def test_group_matcher_orders_layers_for_layer_decay(name):
    with torch.device("meta"):
        model = timm.create_model(name, **_cheap(name))
    layer_of = timm.models.group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    names = [n for n, _ in model.named_parameters()]
    assert set(layer_of) == set(names)
    last = max(layer_of.values())
    assert last >= 3  # stem, at least two blocks, head
    assert layer_of[model.pretrained_cfg["first_conv"] + ".weight"] == 0
    assert layer_of[model.pretrained_cfg["classifier"] + ".weight"] == last
    coarse = timm.models.group_parameters(model, model.group_matcher(coarse=True), reverse=True)
    assert set(coarse) == set(names) and max(coarse.values()) <= last
    groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.5)
    scales = {g["lr_scale"] for g in groups}
    assert len(scales) == last + 1 and max(scales) == 1.0


# ---------------------------------------------------------------- heads and pools


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("pool", POOLS)
def test_reset_classifier_and_global_pool(name, pool):
    model = _build(name).eval()
    if pool == "token" and getattr(model, "num_prefix_tokens", 1) == 0:  # no class token (Swin)
        with pytest.raises(ValueError, match="token"):
            model.reset_classifier(3, pool)
        return
    x = _input()
    with torch.no_grad():
        tokens = model.forward_features(x)
        pre = model.forward_head(tokens, pre_logits=True)
        assert pre.shape == (2, model.head_hidden_size)
        model.reset_classifier(0)
        assert model.num_classes == 0
        torch.testing.assert_close(model(x), pre, rtol=0, atol=0)
        model.reset_classifier(0, pool)
        unpooled = model(x)
        model.reset_classifier(5, pool)
        logits = model(x)
        built = _build(name, num_classes=0, global_pool=pool).eval()(x)
    if pool:
        assert unpooled.shape == (2, model.head_hidden_size) and logits.shape == (2, 5)
    else:  # no pooling: every token, each through the head
        assert unpooled.shape == (*tokens.shape[:2], model.head_hidden_size)
        assert logits.shape == (*tokens.shape[:2], 5)
    assert built.shape == unpooled.shape
    with pytest.raises(ValueError):
        model.reset_classifier(3, "max")


@pytest.mark.parametrize("name", NAMES)
def test_pretrained_load_with_a_new_head(name, tmp_path):
    """timm drops the pretrained cfg's classifier when the class count changes."""
    source = _build(name)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    model = _build(name, pretrained=True, num_classes=5, pretrained_cfg_overlay=dict(file=str(path)))
    classifier = model.pretrained_cfg["classifier"]
    src_state = source.state_dict()
    for key, value in model.state_dict().items():
        if key.startswith(classifier + "."):
            assert value.shape[0] == 5
        else:
            torch.testing.assert_close(value, src_state[key], rtol=0, atol=0, msg=key)
    assert model.pretrained_cfg["input_size"] == (3, IMG, IMG)
    same = _build(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    for key, value in same.state_dict().items():
        torch.testing.assert_close(value, src_state[key], rtol=0, atol=0, msg=key)
    finetuned = ecvit.create_model(name, num_classes=5, img_size=IMG, checkpoint_path=path, finetune=True,
                                   **_cheap(name))
    assert finetuned.get_classifier().out_features == 5


# ---------------------------------------------------------------- precision switch


@contextmanager
def _no_global_state(monkeypatch):
    """Global autocast and grad-mode queries raise inside (forward must not decide on them)."""
    def refuse(*args, **kwargs):
        raise AssertionError("forward read global autocast / grad state")

    with monkeypatch.context() as m:
        for fn in ("is_autocast_enabled", "get_autocast_dtype", "is_grad_enabled", "is_autocast_cpu_enabled",
                   "get_autocast_cpu_dtype", "is_inference_mode_enabled"):
            if hasattr(torch, fn):
                m.setattr(torch, fn, refuse)
        m.setattr(torch.amp, "is_autocast_available", refuse)
        yield


def _classes(model: nn.Module) -> dict[str, type]:
    return {n: type(m) for n, m in model.named_modules()}


@pytest.mark.parametrize("name", NAMES)
def test_forward_reads_no_global_state(name, monkeypatch):
    model = _build(name, drop_path_rate=0.0)
    assert not cpu_autocast_training_on(model)  # off by default
    x = _input()
    for train in (True, False):
        model.train(train)
        with _no_global_state(monkeypatch):
            out = model(x)
            feats = model.forward_intermediates(x, intermediates_only=True)
        assert torch.isfinite(out).all() and len(feats) == len(model.feature_info)
    set_cpu_autocast_training(model, True)
    assert cpu_autocast_training_on(model)  # every family has modules in the policy
    model.eval()
    with _no_global_state(monkeypatch):
        model(x)


@pytest.mark.parametrize("name", NAMES)
def test_precision_policy_keeps_the_state_dict_and_switches_off_exactly(name, tmp_path):
    """The policy is a class swap: same parameters and keys (a checkpoint saved with it on
    loads without it), eval mode unchanged, fp32 training the same function, and switched
    off the model is the plain one again (it scripts, bit for bit)."""
    x = _input()
    plain = _build(name, drop_path_rate=0.0)
    classes = _classes(plain)
    model = _build(name, drop_path_rate=0.0)
    assert set_cpu_autocast_training(model, True) is model
    assert _classes(model) != classes
    assert list(model.state_dict()) == list(plain.state_dict())
    path = tmp_path / "policy_on.pth"
    torch.save(model.state_dict(), path)
    plain.load_state_dict(torch.load(path, weights_only=True), strict=True)
    results = {}
    for form, m in (("plain", plain), ("policy", model)):
        m.eval()
        with torch.no_grad():
            results[form, "eval"] = m(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                results[form, "eval_bf16"] = m(x)
        m.train()
        results[form, "train"] = m(x).detach()  # BatchNorm statistics move the same way in both
    for key in ("eval", "eval_bf16"):
        torch.testing.assert_close(results["policy", key], results["plain", key], rtol=0, atol=0, msg=key)
    # fp32 training: the same function, up to the rounding of product weights (I-FFN, CvT's MLP)
    torch.testing.assert_close(results["policy", "train"], results["plain", "train"], rtol=1e-5, atol=1e-5)
    set_cpu_autocast_training(model, False)
    assert _classes(model) == classes and not cpu_autocast_training_on(model)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(model)(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_training_under_cpu_bf16_autocast_with_the_switch(name):
    model = set_cpu_autocast_training(_build(name, num_classes=7, drop_path_rate=0.0).train(), True)
    x = _input()
    ref = model(x).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    out.float().mean().backward()
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0.1, atol=0.1 * ref.abs().max().item())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# ---------------------------------------------------------------- attention maps


@pytest.mark.parametrize("name", NAMES)
def test_attention_extract_finds_every_attention_softmax(name):
    model = _build(name)
    attention = [m for m in model.modules() if hasattr(m, "fused_attn")]
    assert attention
    for m in attention:
        m.fused_attn = False  # the explicit path, whose softmax FX can name
    maps = AttentionExtract(model)(_input(batch=1))
    assert len(maps) == len(attention)
    for key, attn in maps.items():
        assert key.endswith("attn.softmax") and attn.ndim == 4
        torch.testing.assert_close(attn.sum(-1), torch.ones_like(attn[..., 0]))
