"""Checks several model test files share."""

from __future__ import annotations

import torch
from torch import nn


def assert_scripts_and_traces_exactly(model: nn.Module, x: torch.Tensor) -> None:
    """TorchScript and an FX feature extractor of the last node give eager's output, bit for bit."""
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), ref, rtol=0, atol=0)
        fx = create_feature_extractor(model, return_nodes=[get_graph_node_names(model)[1][-1]])
        torch.testing.assert_close(list(fx(x).values())[0], ref, rtol=0, atol=0)
