"""Where a model's class token looks: attention maps per stage, and a PNG of them over the image.

Two steps, as ``ecvit attention`` runs them::

    maps = class_token_attention(model, image_tensor)   # one [h, w] map per stage / block
    save_attention_png(maps, image_tensor, "attention.png")

The weights come from ``timm.utils.AttentionExtract`` (its FX method, which names every
``attn.softmax``): the attention layers are switched to their explicit softmax path for the
call (``fused_attn = False``) and back afterwards. Each attention layer turns its softmax
into a class-token map itself (``class_token_map``), so this module knows no family.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["class_token_attention", "save_attention_png"]


def _single_image(image: torch.Tensor) -> torch.Tensor:
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image [3, H, W] or [1, 3, H, W], got {tuple(image.shape)}")
    return image


def _level_of(path: str, feature_info: list[dict[str, Any]]) -> int:
    """Index of the feature level (stage or block) whose module holds the module at ``path``."""
    for i, info in enumerate(feature_info):
        if path.startswith(info["module"] + "."):
            return i
    raise ValueError(f"{path} is in none of the model's feature levels")


@torch.no_grad()
def _softmax_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every attention softmax of one forward pass, by FX node name (explicit attention path)."""
    from timm.utils import AttentionExtract

    layers = [m for m in model.modules() if hasattr(m, "fused_attn")]
    if not layers:
        raise TypeError(f"{type(model).__name__} has no attention layers with a fused_attn switch")
    fused = [m.fused_attn for m in layers]
    training = model.training
    try:
        for m in layers:
            m.fused_attn = False
        return AttentionExtract(model, method="fx")(x)
    finally:
        for m, flag in zip(layers, fused):
            m.fused_attn = flag
        model.train(training)


@torch.no_grad()
def class_token_attention(model: nn.Module, image_tensor: torch.Tensor) -> list[torch.Tensor]:
    """The class token's attention over the patch tokens: one 2-D map per feature level.

    Args:
        model: a registered model (ECViT, CvT, ViT); eval mode is used for the pass and the
            model's own mode is restored.
        image_tensor: one image as the model takes it (normalised), ``[3, H, W]`` or ``[1, 3, H, W]``.

    Returns:
        For each feature level whose blocks have a class token (ECViT and CvT: a stage, ViT:
        a block), in forward order, a float ``[h, w]`` map on the grid of the level's keys
        (ECViT: its patch grid; CvT: the stride-2 key grid of its last stage; ViT: the patch
        grid): the attention weight the class token gives each patch, averaged over heads
        and over the level's blocks. A map's sum is the share of attention that goes to the
        patches, at most 1 (the rest is the class token's attention to itself).
    """
    x = _single_image(image_tensor)
    feature_info = list(getattr(model, "feature_info", []))
    if not feature_info or not hasattr(model, "forward_intermediates"):
        raise TypeError(f"{type(model).__name__} has no feature levels (feature_info, forward_intermediates)")
    softmaxes = _softmax_outputs(model, x)
    training = model.training
    try:
        grids = [tuple(f.shape[-2:]) for f in model.eval().forward_intermediates(x, intermediates_only=True)]
    finally:
        model.train(training)
    per_level: dict[int, list[torch.Tensor]] = defaultdict(list)
    for name, weights in softmaxes.items():
        path = name.rsplit(".", 1)[0]  # "stages.0.blocks.1.attn.softmax" -> the attention module
        level = _level_of(path, feature_info)
        cls_map = model.get_submodule(path).class_token_map(weights.float(), *grids[level])
        if cls_map is not None:
            per_level[level].append(cls_map[0])
    return [torch.stack(maps).mean(0) for _, maps in sorted(per_level.items())]


def _display_image(image: Any) -> np.ndarray:
    """``[H, W, 3]`` floats in [0, 1] from a PIL image, an array or a (normalised) tensor."""
    if isinstance(image, torch.Tensor):
        t = image.detach().float().cpu()
        t = t[0] if t.ndim == 4 else t
        array = t.permute(1, 2, 0).numpy() if t.ndim == 3 else t.numpy()
    else:
        array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    array = array[..., :3]
    lo, hi = float(array.min()), float(array.max())
    return (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array)


def save_attention_png(maps: list[torch.Tensor], image: Any, path: str | Path) -> Path:
    """Save the image and, beside it, one panel per map: the map over the image (Agg backend).

    Args:
        maps: ``class_token_attention``'s result (2-D maps, any grid sizes).
        image: the picture the maps belong to, as the model saw it: the input tensor
            ``[3, H, W]`` / ``[1, 3, H, W]`` (min-max scaled for display), or a PIL image or
            ``[H, W(, 3)]`` array of that same view.
        path: the PNG to write (parent folders are created).

    Each map is upsampled (bilinear) to the image size and scaled to its own maximum; the
    panel title gives its position in ``maps`` and its grid.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    picture = _display_image(image)
    height, width = picture.shape[:2]
    panels = 1 + len(maps)
    figure = Figure(figsize=(2.6 * panels, 2.8), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    axes[0].imshow(picture)
    axes[0].set_title("image")
    for i, (ax, attn) in enumerate(zip(axes[1:], maps), start=1):
        grid = attn.detach().float().cpu()
        up = F.interpolate(grid[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
        up = up / up.max().clamp_min(1e-12)
        ax.imshow(picture)
        ax.imshow(up.numpy(), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
        ax.set_title(f"attention {i} ({grid.shape[0]}x{grid.shape[1]})")
    for ax in axes:
        ax.axis("off")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
