"""The preflight builds the configured model once, on the meta device: the variant's class and
``pretrained_cfg`` come from the registry, not from extra builds."""

from __future__ import annotations

import torch

from _engine_helpers import ProbeNet, tiny_cfg
from ecvit.engine import resolve

PROBE = "engine_probe_net"


def test_resolve_builds_the_model_once_on_the_meta_device(tmp_path):
    before = len(ProbeNet.created)
    plan = resolve(tiny_cfg(tmp_path / "run", "MODEL.ARGS.WIDTH", "16", model=PROBE))
    built = ProbeNet.created[before:]
    assert len(built) == 1 and all(t.is_meta for t in built[0].values())
    assert plan.cfg.model.args == {"width": 16} and plan.num_params > 0
    assert torch.Size([16]) == built[0]["cls_token"].shape[1:]
