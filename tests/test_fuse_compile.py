"""Inference forms give the same outputs: ``ecvit.fuse`` (the fused form) and ``torch.compile``.

Every registered model is checked for fusion, with non-trivial BatchNorm statistics (a
fresh BN is the identity and would hide a wrong fold). Compilation is slow on CPU, so one
model per family is compiled, plain and fused: the smallest of those with the most kinds
of modules (e.g. the depth-wise-shortcut ViT rather than the plain one).
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch
from _model_checks import assert_scripts_and_traces_exactly
from test_model_contract import _cheap
from torch import nn

from ecvit.flops import count_params
from ecvit.models import create_model, fuse, list_models, model_entry

IMG = 64  # a size every family accepts (multiple of 16 for the ViTs)
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


def _randomize_bn(model: nn.Module) -> int:
    """Give every BatchNorm non-trivial affine parameters and running statistics."""
    gen = torch.Generator().manual_seed(0)
    count = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BN_TYPES):
                count += 1
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                    m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
    return count


def _input(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))


def _family(name: str) -> str:
    return model_entry(name).fn.__module__


def _zoo() -> list[str]:
    """The shipped families' models (test files may register probe models of their own)."""
    return [n for n in list_models() if _family(n).startswith("ecvit.models.")]


def _compile_choices() -> list[str]:
    """Per family: the smallest model among those with the most module types."""
    by_family: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for name in _zoo():
        with torch.device("meta"):
            model = create_model(name, num_classes=10, img_size=IMG)
        kinds = len({type(m) for m in model.modules()})
        by_family[_family(name)].append((-kinds, count_params(model), name))
    return [min(entries)[2] for _, entries in sorted(by_family.items())]


def test_every_family_is_registered():
    families = {_family(n) for n in _zoo()}
    assert {"ecvit.models.cvt", "ecvit.models.ecvit", "ecvit.models.dws_vit"} <= families


def _fuse_params() -> list:
    """Every model; the very large ones (building them takes long) are marked slow."""
    out = []
    for name in _zoo():
        with torch.device("meta"):
            big = count_params(create_model(name)) > 100e6
        out.append(pytest.param(name, marks=pytest.mark.slow) if big else name)
    return out


@pytest.mark.parametrize("name", _fuse_params())
def test_fuse_keeps_eval_outputs(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, img_size=IMG)
    n_bn = _randomize_bn(model)
    model.eval()
    x = _input()
    with torch.no_grad():
        ref = model(x)
        fused = fuse(model)
        out = fused(x)
    assert fused is model
    assert not fused.training
    assert not any(isinstance(m, BN_TYPES) for m in fused.modules()), "a BatchNorm was left unfused"
    assert out.shape == (2, 10)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    if n_bn:  # the BN statistics matter here, so an exact match means a correct fold
        torch.manual_seed(0)
        plain = create_model(name, num_classes=10, img_size=IMG).eval()
        with torch.no_grad():
            assert not torch.allclose(plain(x), out, atol=1e-4)
    with torch.no_grad():  # fusing twice is harmless; the model's own method is the same swap
        torch.testing.assert_close(fuse(model)(x), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused"])
@pytest.mark.parametrize("name", _compile_choices())
def test_compiled_model_matches_eager(name, fused):
    """The eval model, plain and in the inference form the benchmark times (fused), compiled
    with fewer blocks (the same module types and code paths: compilation time grows with
    depth), equals the eager model."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, img_size=IMG, **_cheap(name))
    _randomize_bn(model)
    model.eval()
    x = _input()
    with torch.no_grad():
        ref = model(x)
        compiled = torch.compile(fuse(model) if fused else model, fullgraph=True)
        torch.testing.assert_close(compiled(x), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated upstream
@pytest.mark.parametrize("name", _compile_choices())
def test_fused_model_scripts_and_traces(name):
    """The inference form (folded convs, in-place activations) keeps TorchScript and FX working."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, img_size=IMG)
    _randomize_bn(model)
    model = fuse(model)
    x = _input()
    assert_scripts_and_traces_exactly(model, x)


def test_compile_choice_covers_each_family_once():
    choices = _compile_choices()
    assert len({_family(n) for n in choices}) == len(choices) == len({_family(n) for n in _zoo()})
    assert all(n in list_models() for n in choices)
