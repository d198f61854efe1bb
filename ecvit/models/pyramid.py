"""Feature maps at the strides a detector wants, from the maps a backbone has.

Hierarchical backbones (CvT, ECViT, Swin) have their own maps at some of the strides
4/8/16/32 of a detection pyramid; plain ViTs (ViT, CaiT) have one map at stride 16.
ViTDet (Li et al. 2022, "Exploring Plain Vision Transformer Backbones for Object
Detection", Sec. 3 and Fig. 2c) builds the whole pyramid from that last map alone:

    stride  4: ConvTranspose 2x2/2 -> LayerNorm -> GELU -> ConvTranspose 2x2/2
    stride  8: ConvTranspose 2x2/2
    stride 16: the map itself
    stride 32: MaxPool 2x2/2

each transposed conv halving the channels, then per level a 1x1 conv -> LayerNorm -> 3x3 conv
-> LayerNorm to the pyramid's width, no top-down path. :class:`ScaleLevels` generalises
the resampling to any set of own levels (a missing stride is pooled from the nearest finer
own map, or upsampled from the nearest coarser one when no finer exists) and
:class:`SimpleFeaturePyramid` is ViTDet's module on top of it.
"""

from __future__ import annotations

from typing import Sequence

import torch
from timm.layers import LayerNorm2d
from torch import nn

__all__ = ["ScaleLevels", "SimpleFeaturePyramid", "scale_op"]


def scale_op(channels: int, in_stride: int, out_stride: int) -> tuple[nn.Module, int]:
    """The module taking a map from ``in_stride`` to ``out_stride``, and its output width.

    Coarser: a ``k x k`` / stride ``k`` max pool (``ceil_mode``, so a partial border window
    is kept, as the models' own merging layers do). Finer: ViTDet's chain of 2x2 / stride 2
    transposed convs (LayerNorm and GELU between them), each halving the channels; only
    power-of-two upsampling exists.
    """
    if out_stride == in_stride:
        return nn.Identity(), channels
    if out_stride > in_stride:
        if out_stride % in_stride:
            raise ValueError(f"stride {out_stride} is not a multiple of stride {in_stride}")
        k = out_stride // in_stride
        return nn.MaxPool2d(k, k, ceil_mode=True), channels
    factor = in_stride // out_stride
    if in_stride % out_stride or factor & (factor - 1):
        raise ValueError(f"stride {out_stride} is not stride {in_stride} over a power of two")
    layers: list[nn.Module] = []
    while factor > 1:
        if layers:
            layers += [LayerNorm2d(channels), nn.GELU()]
        layers.append(nn.ConvTranspose2d(channels, max(1, channels // 2), 2, stride=2))
        channels, factor = max(1, channels // 2), factor // 2
    return nn.Sequential(*layers), channels


def pick_source(in_strides: Sequence[int], stride: int) -> int:
    """Index of the own level a map at ``stride`` comes from (see the module docstring)."""
    if stride in in_strides:
        return max(i for i, s in enumerate(in_strides) if s == stride)  # the deepest of equals
    finer = [i for i, s in enumerate(in_strides) if s < stride and stride % s == 0]
    if finer:
        return max(finer, key=lambda i: (in_strides[i], i))
    coarser = [i for i, s in enumerate(in_strides)
               if s > stride and s % stride == 0 and not (s // stride) & (s // stride - 1)]
    if coarser:
        return min(coarser, key=lambda i: (in_strides[i], -i))
    raise ValueError(f"no level at strides {list(in_strides)} can be resampled to stride {stride}")


class ScaleLevels(nn.Module):
    """Maps at ``strides`` from maps at ``in_strides``: an own map where one exists, else one
    resampled from the nearest finer own map (max pool), else from the nearest coarser one
    (transposed convs). ``channels``: the output widths, level by level."""

    def __init__(self, in_channels: Sequence[int], in_strides: Sequence[int], strides: Sequence[int]) -> None:
        super().__init__()
        if len(in_channels) != len(in_strides):
            raise ValueError(f"{len(in_channels)} channel counts for {len(in_strides)} strides")
        self.strides = tuple(strides)
        self.sources = tuple(pick_source(in_strides, s) for s in strides)
        ops, channels = [], []
        for src, stride in zip(self.sources, self.strides):
            op, chs = scale_op(in_channels[src], in_strides[src], stride)
            ops.append(op)
            channels.append(chs)
        self.ops = nn.ModuleList(ops)
        self.channels = tuple(channels)

    def forward(self, maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [op(maps[src]) for op, src in zip(self.ops, self.sources)]


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid: one map at ``in_stride`` -> maps at ``strides``, each
    ``out_channels`` wide (1x1 conv -> LayerNorm -> 3x3 conv -> LayerNorm after resampling;
    the convs have no bias since a norm follows)."""

    def __init__(self, in_channels: int, in_stride: int, out_channels: int,
                 strides: Sequence[int] = (4, 8, 16, 32)) -> None:
        super().__init__()
        self.scales = ScaleLevels([in_channels], [in_stride], strides)
        self.strides = self.scales.strides
        self.out_channels = out_channels
        self.outputs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(chs, out_channels, 1, bias=False), LayerNorm2d(out_channels),
                          nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                          LayerNorm2d(out_channels))
            for chs in self.scales.channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [out(y) for out, y in zip(self.outputs, self.scales([x]))]
