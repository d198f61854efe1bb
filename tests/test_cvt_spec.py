"""A model built from an official ``MODEL.SPEC`` is the official model: the official
state-dict keys and shapes, and, with the same weights, the official logits.

The reference is ``_cvt_reference``: a re-statement of the official forward pass written
from the stated facts; the first tests check it against those facts and against
transformers' CvT, so the equivalence tests compare with something known to be right.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from _cvt_reference import official_forward, official_shapes
from _official_cvt_files import NAMES, official_experiment
from test_cvt import randomize_, transformers_cvt

import ecvit
from ecvit.io.official_cvt.spec import spec_to_model


def build(spec: dict, num_classes: int = 10, img_size: int = 64) -> torch.nn.Module:
    """Our model from an official SPEC, through the same translation ``--cfg FILE`` uses."""
    name, args, drop_path = spec_to_model(spec, "test")
    return ecvit.create_model(name, num_classes=num_classes, img_size=img_size, drop_path_rate=drop_path, **args)


def assert_same_logits(model: torch.nn.Module, spec: dict, size: int = 64, batch: int = 2) -> None:
    state = randomize_(model).eval().state_dict()
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        ours = model(x)
        theirs, read = official_forward(state, spec, x)
    assert read == set(state) - {k for k in state if k.endswith("num_batches_tracked")}  # every weight used
    scale = theirs.abs().max().item()
    assert scale > 0.1
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * scale)


def assert_official_layout(model: torch.nn.Module, spec: dict, num_classes: int) -> None:
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == official_shapes(spec, num_classes)


# ----------------------------------------------------------- the reference against the facts


def small_spec(**changes) -> dict:
    """CvT-13's SPEC with fewer blocks and narrower stages (fast), changed by ``changes``."""
    spec = copy.deepcopy(official_experiment("cvt-13-224x224")["MODEL"]["SPEC"])
    spec.update(DEPTH=[1, 1, 2], DIM_EMBED=[32, 48, 64], NUM_HEADS=[1, 2, 4])
    spec.update(changes)
    return spec


@pytest.mark.parametrize("name, millions", [("cvt-13-224x224", 19.997), ("cvt-21-224x224", 31.6),
                                            ("cvt-w24-384x384", 277.2)])
def test_reference_layout_has_the_papers_parameter_counts(name, millions):
    spec = official_experiment(name)["MODEL"]["SPEC"]
    shapes = official_shapes(spec, 1000)
    total = sum(math.prod(s) for k, s in shapes.items() if "running_" not in k and "num_batches" not in k)
    digits = 3 if millions < 20 else 1
    assert round(total / 1e6, digits) == millions
    assert "stage2.cls_token" in shapes and "stage0.cls_token" not in shapes


def test_reference_grids_scale_and_activation_follow_the_facts():
    spec = official_experiment("cvt-13-224x224")["MODEL"]["SPEC"]
    model = randomize_(build(spec, num_classes=5, img_size=224)).eval()
    grids = []
    with torch.no_grad():
        official_forward(model.state_dict(), spec, torch.randn(1, 3, 224, 224), grids)
    assert grids == [(56, 56), (28, 28), (14, 14)]  # strides 4, 2, 2


def test_reference_matches_transformers_cvt():
    """An independent third implementation (QuickGELU, LayerNorm eps 1e-5) gives the same logits."""
    from ecvit.models.cvt import checkpoint_filter_fn

    torch.manual_seed(0)
    hf = transformers_cvt(depths=(1, 2, 3), num_labels=10)
    spec = small_spec(DEPTH=[1, 2, 3], DIM_EMBED=[64, 192, 384], NUM_HEADS=[1, 3, 6])
    state = checkpoint_filter_fn(hf.state_dict(), None)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        theirs = hf(x).logits
        ours, _ = official_forward(state, spec, x)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * theirs.abs().max().item())


# ----------------------------------------------------------------- the five official files


def test_the_384_files_share_the_224_files_models():
    for name in ("cvt-13", "cvt-21"):
        assert official_experiment(f"{name}-384x384")["MODEL"] == official_experiment(f"{name}-224x224")["MODEL"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cvt-13-224x224", "cvt-21-224x224", "cvt-w24-384x384"])
def test_each_official_file_builds_the_official_model(name):
    spec = official_experiment(name)["MODEL"]["SPEC"]
    torch.manual_seed(0)
    model = build(spec, num_classes=1000, img_size=64)
    assert_official_layout(model, spec, 1000)
    assert_same_logits(model, spec, size=64, batch=1)  # batch 1: the official squeeze bug is not copied


# ---------------------------------------------------------------------------- SPEC variations

VARIATIONS = {
    "no class token": dict(CLS_TOKEN=[False, False, False]),
    "class token in the second stage only": dict(CLS_TOKEN=[False, True, False]),
    "class token in every stage": dict(CLS_TOKEN=[True, True, True]),
    "avg projection": dict(QKV_PROJ_METHOD=["avg", "avg", "avg"]),
    "linear projection": dict(QKV_PROJ_METHOD=["linear", "linear", "linear"]),
    "mixed projections": dict(QKV_PROJ_METHOD=["linear", "dw_bn", "avg"]),
    "kernel 5, stride_kv 1": dict(KERNEL_QKV=[5, 5, 5], PADDING_KV=[2, 2, 2], PADDING_Q=[2, 2, 2],
                                  STRIDE_KV=[1, 1, 1]),
    "padding_kv 0": dict(PADDING_KV=[0, 0, 0]),
    "qkv_bias false": dict(QKV_BIAS=[False, False, False]),
    "per-stage mlp ratio and stride_kv": dict(MLP_RATIO=[2.0, 3.0, 4.0], STRIDE_KV=[2, 1, 2]),
    "dropouts (identity in eval)": dict(DROP_RATE=[0.1, 0.1, 0.2], ATTN_DROP_RATE=[0.1, 0.0, 0.1],
                                        DROP_PATH_RATE=[0.1, 0.1, 0.2]),
    "xavier init": dict(INIT="xavier"),
}


@pytest.mark.parametrize("changes", VARIATIONS.values(), ids=VARIATIONS.keys())
def test_spec_variation_equals_the_official_model(changes):
    spec = small_spec(**changes)
    torch.manual_seed(0)
    model = build(spec)
    assert_official_layout(model, spec, 10)
    assert_same_logits(model, spec, size=48 if spec["KERNEL_QKV"][0] == 3 else 64)


def test_avg_projection_without_class_token_pools_the_last_stage():
    spec = small_spec(CLS_TOKEN=[False, False, False])
    model = build(spec)
    assert model.global_pool == "avg" and model.num_prefix_tokens == 0
    assert not [k for k in model.state_dict() if "cls_token" in k]


def test_xavier_init_is_xavier_uniform_and_the_head_stays_trunc_normal():
    torch.manual_seed(0)
    xavier, trunc = build(small_spec(INIT="xavier")), build(small_spec())
    w = xavier.stage2.blocks[0].mlp.fc1.weight
    bound = math.sqrt(6 / (w.shape[0] + w.shape[1]))
    assert w.abs().max() <= bound and w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert trunc.stage2.blocks[0].mlp.fc1.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert xavier.head.weight.std().item() == pytest.approx(0.02, rel=0.15)  # official: head trunc_normal
    assert xavier.stage2.blocks[0].attn.proj_q.bias.abs().max() == 0


def test_dropout_rates_reach_the_modules():
    model = build(small_spec(DROP_RATE=[0.0, 0.1, 0.2], ATTN_DROP_RATE=[0.3, 0.0, 0.0]))
    assert isinstance(model.stage0.pos_drop, torch.nn.Identity)
    assert model.stage2.pos_drop.p == 0.2 and model.stage2.blocks[0].mlp.drop.p == 0.2
    assert model.stage2.blocks[0].attn.proj_drop.p == 0.2 and model.stage0.blocks[0].attn.attn_drop_p == 0.3
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        model.train()
        torch.manual_seed(0)
        a = model(x)
        torch.manual_seed(1)
        assert not torch.equal(a, model(x))  # dropout is active in training
        model.eval()
        assert torch.equal(model(x), model(x))


def test_a_query_projection_that_changes_the_grid_is_refused():
    with pytest.raises(ecvit.errors.UsageError, match="stride_q"):
        build(small_spec(STRIDE_Q=[2, 1, 1]))
    with pytest.raises(ecvit.errors.UsageError, match="padding_q"):
        build(small_spec(PADDING_Q=[0, 1, 1]))


def test_published_specs_need_no_model_arguments():
    for name in NAMES:
        model, args, drop_path = spec_to_model(official_experiment(name)["MODEL"]["SPEC"], name)
        assert args == {} and model == {"13": "cvt_13", "21": "cvt_21", "w2": "cvt_w24"}[name[4:6]]
        assert drop_path == (0.3 if "w24" in name else 0.1)
