"""CaiT-XXS of the depth-wise shortcut paper: parameter counts against the paper's code, its
checkpoints (official key layout) give its logits, talking heads through SDPA, layer dropout."""

import hashlib

import pytest
import timm
import torch

import ecvit
from ecvit.models.cait import CaiT, checkpoint_filter_fn, layer_scale_init
from tests._cait_reference import official_logits, official_state

# Counted by building the paper code's CaiT (models/cait.py; config MODEL.CaiT_XXS) with 10
# classes at 224 px; the plain one is its Transformer without height/width (no shortcuts).
OFFICIAL_PARAMS = {"dws_cait_xxs12": 6_413_642, "dws_cait_xxs12_dw": 6_441_290,
                   "dws_cait_xxs24": 11_750_090, "dws_cait_xxs24_dw": 11_805_386}
XXS = dict(dim=192, heads=4, dim_head=48, mlp=768, patch=16, img=224, classes=10, cls_depth=2)
# sha256 of the sorted "key:shape" lines of the official model's state_dict at depth 2, cls_depth 2,
# dim 16, 2 heads of 8, MLP 24, patch 16, 32 px, 5 classes: with shortcuts (86 keys), without (72).
TINY = dict(depth=2, cls_depth=2, dim=16, heads=2, dim_head=8, mlp=24, patch=16, img=32, classes=5)
OFFICIAL_TINY_KEYS = {True: ("2843200a848f41e8a2692d64af906433928ad9299dcc9fbea57638d1473b9e9d", 86),
                      False: ("5da19ea974b7d5a736b7428e2af7a2c3a8b9be387b6ecf0bccd03d9d84b1ed63", 72)}


def _key_digest(state: dict[str, torch.Tensor]) -> tuple[str, int]:
    lines = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(state.items()))
    return hashlib.sha256(lines.encode()).hexdigest(), len(state)


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_counts_match_the_papers_code(name):
    with torch.device("meta"):
        model = ecvit.create_model(name, num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[name]
    # the re-statement's official layout has the same count (parameters: no BN statistics)
    depth = 12 if "xxs12" in name else 24
    with torch.device("meta"):
        state = official_state(depth=depth, dw=name.endswith("_dw"), **XXS)
    stats = ("running_mean", "running_var", "num_batches_tracked")
    assert sum(v.numel() for k, v in state.items() if not k.endswith(stats)) == OFFICIAL_PARAMS[name]


@pytest.mark.parametrize("dw", [True, False])
def test_reference_layout_is_the_official_one(dw):
    assert _key_digest(official_state(dw=dw, **TINY)) == OFFICIAL_TINY_KEYS[dw]


def _ours(dw: bool, **kwargs) -> CaiT:
    t = TINY
    return CaiT(img_size=t["img"], patch_size=t["patch"], num_classes=t["classes"], embed_dim=t["dim"],
                depth=t["depth"], cls_depth=t["cls_depth"], num_heads=t["heads"], head_dim=t["dim_head"],
                mlp_hidden=t["mlp"], dw_kernels=(3,) if dw else (), **kwargs)


@pytest.mark.parametrize("dw", [True, False])
@pytest.mark.parametrize("fused", [True, False])
def test_official_checkpoint_gives_the_official_logits(dw, fused):
    state = official_state(dw=dw, **TINY)
    model = _ours(dw)
    model.load_state_dict(checkpoint_filter_fn(state, model), strict=True)
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = fused
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    expected = official_logits(state, x, TINY["depth"], TINY["cls_depth"], TINY["heads"], TINY["patch"])
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ecvit.fuse(model)(x), expected, rtol=1e-4, atol=1e-4)


def test_official_checkpoint_file_loads_through_create_model(tmp_path):
    state = official_state(depth=2, dw=True, **{k: v for k, v in XXS.items() if k != "img"}, img=64)
    path = tmp_path / "official.pth"
    torch.save({"model": state}, path)
    model = ecvit.create_model("dws_cait_xxs12_dw", num_classes=10, img_size=64, depth=2, checkpoint_path=path).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(x), official_logits(state, x, 2, 2, 4, 16), rtol=1e-4, atol=1e-4)


def test_layer_scale_init_follows_block_position():
    assert [layer_scale_init(i) for i in (1, 18, 19, 24, 25)] == [0.1, 0.1, 1e-5, 1e-5, 1e-6]
    model = timm.create_model("dws_cait_xxs24_dw", num_classes=10)
    assert model.blocks[17].gamma1.flatten()[0].item() == pytest.approx(0.1)
    assert model.blocks[18].gamma2.flatten()[0].item() == pytest.approx(1e-5)
    assert model.blocks_token_only[1].gamma1.flatten()[0].item() == pytest.approx(0.1)
    assert "dws_cait_xxs12_dw" in ecvit.list_models("dws_cait*")


def test_layer_dropout_skips_whole_blocks_in_training_only():
    torch.manual_seed(0)
    model = _ours(False, layer_dropout=0.5)  # no BatchNorm: train and eval differ only by the dropout
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model.eval()(x)
        model.train()
        torch.manual_seed(5)
        outs = {tuple(model(x).flatten().tolist()) for _ in range(12)}
        model.layer_dropout = 0.0
        torch.testing.assert_close(model(x), ref, rtol=0, atol=0)
    assert len(outs) > 1  # different blocks dropped from call to call
    with pytest.raises(ValueError, match="layer_dropout"):
        _ours(True, layer_dropout=1.0)


def test_argument_errors():
    with pytest.raises(ecvit.errors.UsageError, match="img_size"):
        ecvit.create_model("dws_cait_xxs12", img_size=40)
    with pytest.raises(ecvit.errors.UsageError, match="dw_kernels"):
        ecvit.create_model("dws_cait_xxs12_dw", dw_kernels=(4,))


def test_weight_decay_groups_are_the_paper_codes():
    """The paper's code decays every parameter but 1-d ones and biases: its positions, class
    token, talking-heads mixes and LayerScale vectors ([1, 1, C]) included. The engine's
    optimizer groups ours the same way."""
    from ecvit.config import Config
    from ecvit.engine.optim import build_optimizer

    model = ecvit.create_model("dws_cait_xxs12_dw", num_classes=10, img_size=32, patch_size=4)
    official = {name for name, p in model.named_parameters() if p.ndim > 1 and not name.endswith(".bias")}
    optimizer = build_optimizer(model, Config(), lr=1e-3)
    names = {id(p): name for name, p in model.named_parameters()}
    decayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == official
    assert {"blocks.0.gamma1", "blocks_token_only.1.gamma2", "pos_embed", "cls_token"} <= decayed


def test_layer_scale_vectors_saved_as_1d_still_load():
    model = ecvit.create_model("dws_cait_xxs12", num_classes=10, img_size=32, patch_size=4)
    old = {k: (v.flatten() if k.endswith((".gamma1", ".gamma2")) else v) for k, v in model.state_dict().items()}
    again = ecvit.create_model("dws_cait_xxs12", num_classes=10, img_size=32, patch_size=4)
    again.load_state_dict(checkpoint_filter_fn(old, again))
    assert torch.equal(again.blocks[3].gamma2, model.blocks[3].gamma2)
