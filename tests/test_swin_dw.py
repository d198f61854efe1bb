"""Swin-T and Swin-T with depth-wise shortcuts (Zhang et al. 2024, arXiv 2407.19394)."""

from __future__ import annotations

import pytest
import timm
import torch
from _swin_reference import OfficialSwin, official_buffers
from torch import nn

import ecvit
from ecvit.errors import UsageError
from ecvit.flops import count_params
from ecvit.models.swin_dw import SwinTransformerDW, checkpoint_filter_fn

NAMES = ["dws_swin_tiny", "dws_swin_tiny_dw"]
# Two small shapes the official code accepts: a 14 -> 7 grid (shifted windows, then one
# window over the whole grid) and four stages with windows of 2 (16 -> 8 -> 4 -> 2).
SMALL = [dict(img_size=56, patch_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=7),
         dict(img_size=64, patch_size=4, embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=2)]


def randomize(model: nn.Module, seed: int = 0) -> None:
    """Every parameter and BatchNorm statistic non-trivial (a fresh BN or zero bias hides mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = 1.0 if name.endswith("norm1.weight") or name.endswith("norm2.weight") else 0.0
            p.copy_(base + 0.2 * torch.randn(p.shape, generator=gen))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.5 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))


def _input(size: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------- registry and sizes

@pytest.mark.parametrize("name, classes, params", [
    ("dws_swin_tiny_dw", 10, 27_580_036),  # the paper code's Swin-T with shortcuts
    ("dws_swin_tiny", 10, 27_527_044),  # the same code without its shortcuts (= timm's Swin-T)
    ("dws_swin_tiny_dw", 1000, 28_341_346),
    ("dws_swin_tiny", 1000, 28_288_354),
])
def test_parameter_counts_match_the_official_code(name, classes, params):
    """Counted by building the official ``SwinTransformer`` (models/swin_transformer.py)."""
    with torch.device("meta"):
        assert count_params(ecvit.create_model(name, num_classes=classes)) == params


def test_shortcuts_are_one_per_block_with_their_official_sizes():
    with torch.device("meta"):
        model = ecvit.create_model("dws_swin_tiny_dw", num_classes=10)
    widths = [m.branches[0].conv.in_channels for m in model.modules() if type(m).__name__ == "MapDWShortcut"]
    assert widths == [96] * 2 + [192] * 2 + [384] * 6 + [768] * 2
    shortcut_params = sum(p.numel() for n, p in model.named_parameters() if ".shortcut." in n)
    assert shortcut_params == 52_992  # 12 C per block: BN 2C, depthwise 3x3 conv 9C + bias C


def test_paper_settings_and_strides():
    with torch.device("meta"):
        model = ecvit.create_model("dws_swin_tiny_dw")
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for s in model.layers for b in s.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.2, 12).tolist())  # drop path 0.2, linear over blocks
    assert [i["reduction"] for i in model.feature_info] == [4, 8, 16, 32]
    assert [i["num_chs"] for i in model.feature_info] == [96, 192, 384, 768]
    assert [b.window_size for b in model.layers[3].blocks] == [(7, 7)] * 2  # the 7x7 last stage: one window
    assert [b.shift_size for b in model.layers[0].blocks] == [(0, 0), (3, 3)]
    assert model.pretrained_cfg["crop_pct"] == 0.875 and model.pretrained_cfg["fixed_input_size"]


# ---------------------------------------------------------------- weights: timm and the official layout

@pytest.mark.slow  # full-size models at 224 px
def test_timm_swin_tiny_weights_load_into_swin_tiny(tmp_path):
    torch.manual_seed(0)
    theirs = timm.create_model("swin_tiny_patch4_window7_224", num_classes=10).eval()
    randomize(theirs)
    ours = ecvit.create_model("dws_swin_tiny", num_classes=10).eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(checkpoint_filter_fn(theirs.state_dict(), ours), strict=True)
    x = _input(224, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    path = tmp_path / "timm.pth"  # the same through the public loader
    torch.save(theirs.state_dict(), path)
    loaded = ecvit.create_model("dws_swin_tiny", num_classes=10, checkpoint_path=path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), theirs(x), rtol=1e-5, atol=1e-5)


def _official_file(tmp_path, cfg: dict, shortcuts: bool) -> tuple[OfficialSwin, str]:
    """A randomized official-layout model and its checkpoint as the official main.py saves it."""
    torch.manual_seed(0)
    ref = OfficialSwin(num_classes=10, shortcuts=shortcuts, **cfg)
    randomize(ref)
    state = {**ref.state_dict(), **official_buffers(ref)}
    path = tmp_path / "official.pth"
    torch.save({"model": state, "epoch": 299}, path)
    return ref, str(path)


@pytest.mark.parametrize("cfg", SMALL)
def test_dw_with_official_weights_gives_official_logits(tmp_path, cfg):
    ref, path = _official_file(tmp_path, cfg, shortcuts=True)
    assert any(".batchnorms." in k for k in torch.load(path)["model"])
    ours = ecvit.create_model("dws_swin_tiny_dw", num_classes=10, checkpoint_path=path, drop_path_rate=0.0, **cfg)
    x = _input(cfg["img_size"])
    for train in (False, True):  # eval: running statistics (folded); train: batch statistics
        ref.train(train)
        ours.train(train)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
    for ours_bn, ref_bn in zip([m for m in ours.modules() if isinstance(m, nn.BatchNorm2d)],
                               [m for m in ref.modules() if isinstance(m, nn.BatchNorm2d)]):
        torch.testing.assert_close(ours_bn.running_mean, ref_bn.running_mean)  # one update each


def test_official_layout_without_shortcuts_loads_into_swin_tiny(tmp_path):
    cfg = SMALL[1]
    ref, path = _official_file(tmp_path, cfg, shortcuts=False)
    ours = ecvit.create_model("dws_swin_tiny", num_classes=10, checkpoint_path=path, **cfg).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(_input(cfg["img_size"])), ref.eval()(_input(cfg["img_size"])),
                                   rtol=1e-5, atol=1e-5)


def test_official_shortcut_weights_do_not_fit_the_plain_model(tmp_path):
    _, path = _official_file(tmp_path, SMALL[0], shortcuts=True)
    with pytest.raises(Exception, match="unexpected"):
        ecvit.create_model("dws_swin_tiny", num_classes=10, checkpoint_path=path, **SMALL[0])


# ---------------------------------------------------------------- behaviour

def test_shortcut_is_the_only_difference_from_plain_swin():
    """With every shortcut conv zeroed, swin_tiny_dw is swin_tiny with the same block weights."""
    cfg = SMALL[1]
    torch.manual_seed(0)
    dw = ecvit.create_model("dws_swin_tiny_dw", num_classes=10, **cfg).eval()
    randomize(dw)
    plain = ecvit.create_model("dws_swin_tiny", num_classes=10, **cfg).eval()
    plain.load_state_dict({k: v for k, v in dw.state_dict().items() if ".shortcut." not in k})
    x = _input(cfg["img_size"])
    with torch.no_grad():
        assert not torch.allclose(dw(x), plain(x), atol=1e-3)
        for name, p in dw.named_parameters():
            if ".shortcut." in name and ".conv." in name:
                p.zero_()
        dw.eval()  # drop the folded-weight cache: the weights changed through no_grad in place
        torch.testing.assert_close(dw(x), plain(x), rtol=0, atol=0)


def test_grad_checkpointing_updates_batchnorm_statistics_once():
    cfg = SMALL[0]
    runs = []
    for enable in (False, True):
        torch.manual_seed(0)
        model = ecvit.create_model("dws_swin_tiny_dw", num_classes=10, drop_path_rate=0.0, **cfg).train()
        model.set_grad_checkpointing(enable)
        model(_input(cfg["img_size"])).square().mean().backward()
        runs.append([b.running_mean.clone() for b in model.modules() if isinstance(b, nn.BatchNorm2d)])
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_features_only_gives_nchw_maps_at_strides_4_to_32():
    model = timm.create_model("dws_swin_tiny_dw", features_only=True, img_size=64, embed_dim=16,
                              depths=(2, 1, 1, 1), num_heads=(1, 2, 4, 8)).eval()
    with torch.no_grad():
        maps = model(_input(64))
    assert [tuple(m.shape) for m in maps] == [(2, 16, 16, 16), (2, 32, 8, 8), (2, 64, 4, 4), (2, 128, 2, 2)]
    assert model.feature_info.reduction() == [4, 8, 16, 32]


def test_no_weight_decay_names_the_relative_position_tables():
    with torch.device("meta"):
        model = ecvit.create_model("dws_swin_tiny_dw", **SMALL[0])
    assert model.no_weight_decay() == {f"layers.{i}.blocks.{j}.attn.relative_position_bias_table"
                                       for i in range(2) for j in range(2)}


@pytest.mark.parametrize("kwargs, message", [
    (dict(global_pool="token"), "class token"),
    (dict(global_pool="max"), "global_pool"),
    (dict(dw_kernels=(2,)), "dw_kernels"),
    (dict(depths=(2, 2), num_heads=(3,)), "one entry per stage"),
    (dict(img_size=30), "patch size"),
    (dict(embed_dim=64), "divisible by num_heads"),
])
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(UsageError, match=message):
        ecvit.create_model("dws_swin_tiny_dw", **kwargs)
