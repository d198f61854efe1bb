"""The paper code's Swin with shortcuts, re-stated for the equivalence test (official keys).

``models/swin_transformer.py`` of ZTX-100/Efficient_ViT_with_DW, written here from its
description, on timm's Swin block (the official block's function, parameter names and
shapes): per stage, blocks alternating regular and shifted windows, each block ``j`` with
``s = convs[j](batchnorms[j](gelu(x)))`` on its input grid and ``x = s + block(x)``; then the
patch merging (``downsample``) at the end of every stage but the last; LayerNorm, mean over
the tokens, ``head``. Independent of ``ecvit.models.swin_dw``: the shortcut is computed
here in the official order and layout (contiguous NCHW copy), the attention by timm's
explicit softmax path, and the keys are the official ones (its ``attn_mask`` and
``relative_position_index`` buffers aside, which timm does not save).
"""

from __future__ import annotations

import torch
from timm.layers import PatchEmbed
from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock
from torch import nn


class OfficialStage(nn.Module):
    """The official ``BasicLayer``: blocks, their shortcuts (lists), then patch merging."""

    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, heads: int, window: int,
                 downsample: bool, shortcuts: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, resolution, num_heads=heads, window_size=window,
                                 shift_size=0 if i % 2 == 0 else window // 2)
            for i in range(depth))
        self.shortcuts = shortcuts
        if shortcuts:
            self.gelu = nn.GELU()
            self.batchnorms = nn.ModuleList(nn.BatchNorm2d(dim) for _ in range(depth))
            self.convs = nn.ModuleList(nn.Conv2d(dim, dim, 3, padding=1, groups=dim) for _ in range(depth))
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, H, W, C]
        for i, block in enumerate(self.blocks):
            if self.shortcuts:
                s = self.convs[i](self.batchnorms[i](self.gelu(x.permute(0, 3, 1, 2).contiguous())))
                x = s.permute(0, 2, 3, 1) + block(x)
            else:
                x = block(x)
        return x if self.downsample is None else self.downsample(x)


class OfficialSwin(nn.Module):
    """The official ``SwinTransformer`` (no absolute positions, patch norm on, dropouts 0)."""

    def __init__(self, img_size: int, patch_size: int, embed_dim: int, depths: tuple[int, ...],
                 num_heads: tuple[int, ...], window_size: int, num_classes: int, shortcuts: bool = True) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim, norm_layer=nn.LayerNorm, output_fmt="NHWC")
        grid = img_size // patch_size
        self.layers = nn.ModuleList(
            OfficialStage(embed_dim * 2 ** i, (grid // 2 ** i, grid // 2 ** i), depths[i], num_heads[i],
                          window_size, i < len(depths) - 1, shortcuts)
            for i in range(len(depths)))
        width = embed_dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x.flatten(1, 2)).mean(dim=1))


def official_buffers(model: OfficialSwin) -> dict[str, torch.Tensor]:
    """The persistent buffers an official checkpoint also holds (the loader must drop them)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, SwinTransformerBlock):
            out[f"{name}.attn.relative_position_index"] = module.attn.relative_position_index
            if module.attn_mask is not None:
                out[f"{name}.attn_mask"] = module.attn_mask
    return out
