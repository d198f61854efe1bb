"""Every registered model as the backbone of a torchvision detector (Faster / Mask R-CNN).

:func:`create_backbone` wraps a model's own feature levels (``feature_info``, read through
timm's ``features_only`` getter, ``forward_intermediates``) into a module that returns
an ``OrderedDict`` of ``out_channels``-wide maps named ``"0"``, ``"1"``, ... at ``strides``
(4, 8, 16, 32 by default) plus ``"pool"`` (stride 64, a stride-2 subsampling of the last
one), and has the ``out_channels`` attribute torchvision's detectors read: the wiring of
torchvision's ``BackboneWithFPN``, so ``FasterRCNN(backbone, num_classes)`` and
``MaskRCNN(backbone, num_classes)`` work with their default anchors and RoI pooling.

Two necks (``pyramid``):

* ``"fpn"``: torchvision's ``FeaturePyramidNetwork`` (lateral 1x1 convs, top-down sums,
  3x3 output convs) over the model's own maps at the wanted strides. A wanted stride the
  model lacks is resampled from its own levels (:class:`ecvit.models.pyramid.ScaleLevels`):
  max-pooled from the nearest finer map, or, when there is none, upsampled from the nearest
  coarser one by ViTDet's transposed convs.
* ``"simple"``: ViTDet's simple feature pyramid (Li et al. 2022) from the last map alone,
  no top-down path (:class:`ecvit.models.pyramid.SimpleFeaturePyramid`).

``"auto"`` (the default) picks ``"simple"`` for single-scale models (every level at one
stride: ViT, CaiT, whose only map is at stride 16) and ``"fpn"`` otherwise. What each
family has at the default strides:

======  ==========================================  ========================================
family  own maps (``feature_info``)                 at 4 / 8 / 16 / 32
======  ==========================================  ========================================
ECViT   stem 4, stage 1: 8, each merge x4 more      own / own / pooled from 8 / own
        (32, then 128 for a final merging stage)    (the 128 map is beyond the pyramid)
CvT     stages at 4, 8, 16                          own / own / own / pooled from 16
Swin    stages at 4, 8, 16, 32                      all own (built for one input size:
                                                    the detector's ``fixed_size``)
ViT     every block at 16                           simple pyramid from the last block
CaiT    every patch block at 16                     simple pyramid from the last block
======  ==========================================  ========================================

A model with other strides (e.g. ECViT merging 2x2 / 2: 4, 8, 16, 32) gets whichever of its own
maps fall on ``strides`` and the same rules for the rest; ``strides=(4, 8, 16)`` for CvT
uses only its own maps (then give the detector one anchor size per level plus one for
``"pool"`` and ``MultiScaleRoIAlign(featmap_names=backbone.featmap_names)``).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from timm.models._features import FeatureGetterNet
from torch import nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from ecvit.errors import UsageError
from ecvit.io.weights import create_model
from ecvit.models.pyramid import ScaleLevels, SimpleFeaturePyramid, pick_source

__all__ = ["DetectionBackbone", "create_backbone", "PYRAMIDS"]

PYRAMIDS = ("auto", "fpn", "simple")


class DetectionBackbone(nn.Module):
    """``body`` (the model's maps, timm's ``FeatureGetterNet``) -> ``neck`` -> named maps.

    ``forward`` returns ``OrderedDict`` ``{"0": stride strides[0], ..., "pool": 2 * strides[-1]}``,
    every map ``out_channels`` wide. ``featmap_names``: the names without ``"pool"`` (what
    torchvision's ``MultiScaleRoIAlign`` pools from). ``pretrained_cfg``: the model's (its
    input ``mean``/``std``, for the detector's ``image_mean``/``image_std``).
    """

    def __init__(self, body: FeatureGetterNet, pyramid: str, out_channels: int,
                 strides: Sequence[int]) -> None:
        super().__init__()
        in_strides = body.feature_info.reduction()
        in_channels = body.feature_info.channels()
        self.body = body
        self.pyramid = pyramid
        self.out_channels = out_channels
        self.strides = tuple(strides)
        self.featmap_names = [str(i) for i in range(len(self.strides))]
        self.pretrained_cfg = dict(getattr(body.model, "pretrained_cfg", None) or {})
        if pyramid == "simple":
            self.levels = nn.Identity()
            self.neck = SimpleFeaturePyramid(in_channels[-1], in_strides[-1], out_channels, self.strides)
        else:
            self.levels = ScaleLevels(in_channels, in_strides, self.strides)
            self.neck = FeaturePyramidNetwork(list(self.levels.channels), out_channels,
                                              extra_blocks=LastLevelMaxPool())

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = self.body(x)
        if self.pyramid == "simple":
            out = OrderedDict(zip(self.featmap_names, self.neck(maps[-1])))
            out["pool"] = F.max_pool2d(out[self.featmap_names[-1]], kernel_size=1, stride=2)
            return out
        return self.neck(OrderedDict(zip(self.featmap_names, self.levels(maps))))


def create_backbone(
    name: str,
    out_channels: int = 256,
    pyramid: str = "auto",
    strides: Sequence[int] = (4, 8, 16, 32),
    checkpoint_path: str | Path | None = None,
    **model_kwargs: Any,
) -> DetectionBackbone:
    """A registered model as a detection backbone with an ``out_channels`` attribute.

    ``pyramid``: ``"fpn"``, ``"simple"`` or ``"auto"`` (see the module docstring).
    ``checkpoint_path``: classification weights for the model (any format ``create_model``
    reads; the classifier is dropped). ``model_kwargs`` go to the model's constructor
    (``img_size``, ``depths``, ``drop_path_rate`` ...). Bad arguments raise ``UsageError``.
    """
    if pyramid not in PYRAMIDS:
        raise UsageError(f"pyramid must be one of {', '.join(PYRAMIDS)}, got {pyramid!r}")
    if out_channels < 1:
        raise UsageError(f"out_channels must be >= 1, got {out_channels}")
    strides = tuple(strides)
    if not strides or any(s < 1 for s in strides) or list(strides) != sorted(set(strides)):
        raise UsageError(f"strides must be positive and increasing, got {list(strides)}")
    model_kwargs.pop("num_classes", None)  # the classifier is dropped anyway
    model = create_model(name, checkpoint_path=checkpoint_path, finetune=checkpoint_path is not None,
                         **model_kwargs)
    own_strides = [int(info["reduction"]) for info in model.feature_info]
    if pyramid == "auto":
        pyramid = "simple" if len(set(own_strides)) == 1 else "fpn"
    try:
        if pyramid == "simple":
            used = [len(own_strides) - 1]
            ScaleLevels([1], [own_strides[-1]], strides)  # can the last map reach every stride?
        else:
            used = sorted({pick_source(own_strides, s) for s in strides})
    except ValueError as exc:
        raise UsageError(f"{name} as a backbone at strides {list(strides)}: {exc}") from None
    body = FeatureGetterNet(model, out_indices=used)
    return DetectionBackbone(body, pyramid, out_channels, strides)
