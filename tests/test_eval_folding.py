"""Eval-mode BatchNorm folding: ``model.eval()`` under no_grad runs the fused form by itself,
exactly, while the state dict, ``train()`` and autograd paths stay as they were."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import ecvit
from ecvit.models import set_eval_folding
from ecvit.models.layers import FoldedWeights, restore_eval_folding

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


def _caches(model: nn.Module) -> list[FoldedWeights]:
    return [v for m in model.modules() for v in vars(m).values() if isinstance(v, FoldedWeights)]


def _plain(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    folding = set_eval_folding(model, False)
    with torch.no_grad():
        out = model(x)
    restore_eval_folding(folding)
    return out


@pytest.mark.parametrize("name,kwargs", CASES, ids=[c[0] for c in CASES])
def test_eval_without_grad_runs_the_fused_form_exactly(name, kwargs):
    model = _model(name, kwargs)
    x = torch.randn(3, 3, 32, 32)
    keys = {k: v.clone() for k, v in model.state_dict().items()}
    with_grad = model(x)
    assert all(c._value is None for c in _caches(model))  # autograd on: the plain path
    with torch.no_grad():
        folded = model(x)
    assert _caches(model) and all(c._value is not None for c in _caches(model))
    with torch.inference_mode():
        torch.testing.assert_close(model(x), folded, rtol=0, atol=0)
    torch.testing.assert_close(folded, with_grad, rtol=1e-5, atol=1e-5)
    fused = copy.deepcopy(model).fuse()
    with torch.no_grad():
        torch.testing.assert_close(fused(x), folded, rtol=1e-6, atol=1e-6)
    state = model.state_dict()  # nothing was added or changed
    assert state.keys() == keys.keys() and all(torch.equal(state[k], keys[k]) for k in keys)


@pytest.mark.parametrize("name,kwargs", CASES, ids=[c[0] for c in CASES])
def test_folded_weights_follow_training_and_loaded_weights(name, kwargs):
    model = _model(name, kwargs)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        model(x)  # builds the caches
        model.train()
        model(torch.randn(8, 3, 32, 32) * 3 + 1)  # BatchNorm statistics move (no version bump)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), _plain(model, x), rtol=1e-5, atol=1e-5)
    other = _model(name, kwargs, seed=1)
    model.load_state_dict(other.state_dict())  # in eval mode: the version counters tell
    with torch.no_grad():
        torch.testing.assert_close(model(x), _plain(other, x), rtol=1e-5, atol=1e-5)


def test_training_mode_and_the_opt_out_keep_the_plain_path():
    name, kwargs = CASES[0]
    model = _model(name, kwargs)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        model.train()
        model(x)
        assert all(c._value is None for c in _caches(model))
        model.eval()
        set_eval_folding(model, False)
        model(x)
        assert all(c._value is None for c in _caches(model))


@pytest.mark.parametrize("name,kwargs", CASES, ids=[c[0] for c in CASES])
def test_eval_mode_with_autograd_folds_and_still_reaches_every_parameter(name, kwargs):
    """With autograd on, the folded weights are recomputed from the parameters per call (never
    cached), so parameter gradients equal those of the unfolded modules."""
    model = _model(name, kwargs)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        model(x)  # a cache from a no-grad call must not stand in for the parameters
    model(x).square().mean().backward()
    folded = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    set_eval_folding(model, False)
    model(x).square().mean().backward()
    plain = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert folded.keys() == plain.keys() and any("bn" in n for n in plain)
    for n in plain:
        torch.testing.assert_close(folded[n], plain[n], rtol=1e-4, atol=1e-6, msg=n)
