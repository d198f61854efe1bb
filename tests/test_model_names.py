"""Registered names that cannot be confused with timm's own, and the old names kept as
deprecated aliases (``vit_tiny`` -> ``dws_vit_tiny``) for ecvit's own lookups and checkpoints."""

from __future__ import annotations

import pkgutil
import warnings

import pytest
import timm
import timm.models
import torch

import ecvit
from ecvit.config import Config
from ecvit.engine.state import load_training_checkpoint, rng_state
from ecvit.io.checkpoint import save_atomic
from ecvit.io.weights import load_for_inference
from ecvit.models.registry import PREFIX, TIMM_MODULES, model_entry

TIMM_OWN_MODULES = {m.name for m in pkgutil.iter_modules(timm.models.__path__)} | {
    m.name.lstrip("_") for m in pkgutil.iter_modules(timm.models.__path__)}
RENAMED = {"vit_tiny": "dws_vit_tiny", "vit_small_paper_dw": "dws_vit_small_paper_dw",
           "cait_xxs24_dw": "dws_cait_xxs24_dw", "swin_tiny": "dws_swin_tiny"}


def test_timm_lists_our_models_under_modules_of_their_own():
    ours = set(ecvit.list_models())
    assert not set(TIMM_MODULES.values()) & TIMM_OWN_MODULES
    for module in TIMM_OWN_MODULES:
        assert not set(timm.list_models(module=module)) & ours, module
    assert set(timm.list_models(module="dws_cait")) == set(ecvit.list_models("dws_cait*"))
    assert not set(timm.list_models(module="cait")) & ours  # timm's CaiT only
    own_names = set(timm.list_models()) - ours
    assert not {n for n in ours if n.startswith(PREFIX)} & own_names


def test_the_new_names_carry_their_own_timm_config():
    with torch.device("meta"):
        model = timm.create_model("dws_vit_tiny", num_classes=3)
        resized = timm.create_model("dws_swin_tiny", num_classes=3, img_size=64)
    assert model.pretrained_cfg["architecture"] == "dws_vit_tiny"
    assert model.pretrained_cfg["input_size"] == (3, 224, 224)
    assert resized.pretrained_cfg["input_size"] == (3, 64, 64)


@pytest.mark.parametrize("old, new", RENAMED.items())
def test_old_names_still_resolve_with_a_deprecation_warning(old, new):
    assert old not in ecvit.list_models() and new in ecvit.list_models()
    with pytest.warns(DeprecationWarning, match=f"'{old}' is deprecated; use '{new}'"):
        assert model_entry(old).name == new
    with pytest.warns(DeprecationWarning, match=new):
        assert ecvit.list_models(old) == [new]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ecvit.list_models(new) == [new]  # the new name: no warning
    with torch.device("meta"), pytest.warns(DeprecationWarning, match=new):
        assert type(ecvit.create_model(old, num_classes=3)) is type(ecvit.create_model(new, num_classes=3))


def test_a_checkpoint_naming_an_old_model_still_loads(tmp_path):
    model = ecvit.create_model("dws_vit_tiny", num_classes=3, img_size=32, depth=1)
    path = tmp_path / "old.pth"
    save_atomic({"model": model.state_dict(), "model_name": "vit_tiny", "num_classes": 3, "img_size": 32,
                 "model_args": {"depth": 1}}, path)
    with pytest.warns(DeprecationWarning, match="dws_vit_tiny"):
        loaded, spec = load_for_inference(str(path))
    assert spec.model_name == "dws_vit_tiny" and type(loaded) is type(model)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x))


def test_a_run_saved_under_an_old_name_resumes_as_the_same_model(tmp_path):
    """A training checkpoint whose saved config says MODEL.NAME vit_tiny is the run of
    dws_vit_tiny: resuming compares the new name, so the run is not refused as another one."""
    cfg = Config()
    cfg.model.name = "vit_tiny"
    path = tmp_path / "checkpoint.pth"
    save_atomic({"model": {}, "epoch": 1, "optimizer": {"state": {}, "param_groups": []},
                 "model_name": "vit_tiny", "num_classes": 3, "config": cfg.to_dict(), "rng": rng_state()}, path)
    with pytest.warns(DeprecationWarning, match="dws_vit_tiny"):
        ckpt = load_training_checkpoint(path)
    assert ckpt["config"]["MODEL"]["NAME"] == "dws_vit_tiny"
