"""The paper code's ViT (``vit_*_paper``, ``vit_*_paper_dw``): counts, layout, init, weight
decay and logits against an independent statement of the official forward."""

from __future__ import annotations

import pytest
import torch
from _vit_paper_reference import official_forward, official_state_dict
from torch import nn

import ecvit
from ecvit.config import Config
from ecvit.engine.optim import build_optimizer
from ecvit.errors import UsageError
from ecvit.flops import count_params

PAPER = ["dws_vit_tiny_paper", "dws_vit_small_paper", "dws_vit_tiny_paper_dw", "dws_vit_small_paper_dw"]


# Counted by building ZTX-100/Efficient_ViT_with_DW's ``models/vit.py`` ViT at 224 px
# (dim_head 64; Tiny 192/3 heads/MLP 768, Small 384/6/1536); the plain counts are those
# minus its ``transformer.convs`` and ``transformer.batchnorms`` (12 x 12 x dim).
@pytest.mark.parametrize("name, classes, expected", [
    ("dws_vit_tiny_paper_dw", 10, 5_547_082),
    ("dws_vit_tiny_paper_dw", 100, 5_564_452),
    ("dws_vit_tiny_paper_dw", 200, 5_583_752),
    ("dws_vit_small_paper_dw", 10, 21_710_986),
    ("dws_vit_small_paper_dw", 100, 21_745_636),
    ("dws_vit_small_paper_dw", 200, 21_784_136),
    ("dws_vit_tiny_paper", 10, 5_547_082 - 12 * 12 * 192),
    ("dws_vit_small_paper", 10, 21_710_986 - 12 * 12 * 384),
])
def test_parameter_counts_match_the_official_code(name, classes, expected):
    with torch.device("meta"):
        assert count_params(ecvit.create_model(name, num_classes=classes)) == expected


def test_differs_from_deit_only_where_the_paper_code_does():
    """Same keys as the DeiT-layout model except the qkv biases (+6,912 on Tiny), LayerNorm
    eps 1e-5, heads of 64 channels, no drop path by default."""
    with torch.device("meta"):
        deit = ecvit.create_model("dws_vit_tiny_dw", num_classes=10)
        paper = ecvit.create_model("dws_vit_tiny_paper_dw", num_classes=10)
    deit_keys = {k for k in deit.state_dict() if not k.endswith("attn.qkv.bias")}
    assert set(paper.state_dict()) == deit_keys
    assert count_params(deit) - count_params(paper) == 6_912
    norms = [m for m in paper.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 25 and all(m.eps == 1e-5 for m in norms)
    assert all(b.attn.head_dim == 64 and b.attn.qkv.bias is None for b in paper.blocks)
    assert all(isinstance(b.drop_path1, nn.Identity) for b in paper.blocks)


def test_head_dim_decouples_attention_width():
    model = ecvit.create_model("dws_vit_tiny_paper", num_classes=3, img_size=32, embed_dim=48, num_heads=2,
                               head_dim=40, depth=1)
    assert model.blocks[0].attn.qkv.weight.shape == (240, 48)
    assert model.blocks[0].attn.proj.weight.shape == (48, 80)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_init_is_pytorchs_default_with_randn_tokens():
    paper = ecvit.create_model("dws_vit_tiny_paper_dw", num_classes=10)
    deit = ecvit.create_model("dws_vit_tiny_dw", num_classes=10)
    assert 0.9 < paper.pos_embed.std() < 1.1 and 0.7 < paper.cls_token.std() < 1.3  # randn
    assert deit.pos_embed.std() < 0.03
    fc1 = paper.blocks[0].mlp.fc1  # kaiming-uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    bound = 192 ** -0.5
    assert fc1.weight.abs().max() <= bound and fc1.weight.std() > 0.9 * bound / 3 ** 0.5
    assert fc1.bias.abs().max() <= bound and fc1.bias.abs().max() > 0.5 * bound  # not zero-initialised
    paper.reset_classifier(7)
    assert paper.head.bias.abs().max() > 0 and paper.head.weight.abs().max() <= bound


def test_bad_weight_init_is_a_usage_error():
    with pytest.raises(UsageError, match="weight_init 'jax' is not one of"):
        ecvit.create_model("dws_vit_tiny_paper", weight_init="jax")


def _decayed(model: nn.Module) -> set[str]:
    optimizer = build_optimizer(model, Config(), lr=1e-3)
    ids = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_weight_decay_follows_the_paper_code():
    """The official ``set_weight_decay``: no decay for 1-d parameters and biases only; its ViT
    names no other exemption, so positions and class token are decayed (DeiT exempts them)."""
    paper = ecvit.create_model("dws_vit_tiny_paper_dw", num_classes=10, depth=2)
    official_rule = {n for n, p in paper.named_parameters() if p.ndim > 1 and not n.endswith(".bias")}
    assert paper.no_weight_decay() == set()
    assert _decayed(paper) == official_rule and {"pos_embed", "cls_token"} <= official_rule
    deit = ecvit.create_model("dws_vit_tiny_dw", num_classes=10, depth=2)
    assert not {"pos_embed", "cls_token"} & _decayed(deit)


SMALL = dict(dim=32, depth=3, heads=2, dim_head=24, mlp_dim=64, num_classes=5, img_size=48, patch=16)


@pytest.mark.parametrize("spec, name, kwargs", [
    (SMALL, "dws_vit_tiny_paper_dw", dict(embed_dim=32, depth=3, num_heads=2, head_dim=24, mlp_ratio=2.0, img_size=48)),
    (dict(dim=192, depth=12, heads=3, dim_head=64, mlp_dim=768, num_classes=10, img_size=224, patch=16),
     "dws_vit_tiny_paper_dw", {}),
], ids=["small", "tiny-224"])
def test_official_weights_give_the_official_logits(tmp_path, spec, name, kwargs):
    """Weights in the official layout load through the public loader (checkpoint_filter_fn
    maps keys, reshapes the patch Linear into the conv); eval and training logits equal the
    official forward's."""
    state = official_state_dict(**spec, seed=3)
    path = tmp_path / "official.pth"
    torch.save(state, path)
    model = ecvit.create_model(name, num_classes=spec["num_classes"], checkpoint_path=path, **kwargs)
    x = torch.randn(2, 3, spec["img_size"], spec["img_size"])
    for training in (False, True):
        model.train(training)
        with torch.no_grad():
            expected = official_forward(state, x, spec["heads"], spec["dim_head"], spec["patch"], training=training)
            torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)


def test_official_layout_maps_every_key():
    state = official_state_dict(**SMALL)
    with torch.device("meta"):
        model = ecvit.create_model("dws_vit_tiny_paper_dw", num_classes=5, embed_dim=32, depth=3, num_heads=2,
                                   head_dim=24, mlp_ratio=2.0, img_size=48)
    mapped = ecvit.models.vit_dw.checkpoint_filter_fn(state, model)
    assert set(mapped) == set(model.state_dict())
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # patch (row, column, channel) order: official weight column (r*16 + c)*3 + ch is conv tap [ch, r, c]
    w, conv = state["to_patch_embedding.1.weight"], mapped["patch_embed.proj.weight"]
    assert torch.equal(conv[:, 2, 5, 7], w[:, (5 * 16 + 7) * 3 + 2])
