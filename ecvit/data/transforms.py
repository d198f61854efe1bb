"""Image transforms: timm's ImageNet pipelines for decoded images, a cheap tensor path for
the small in-memory datasets (digits, simulated).

Training (images), ``AUG.PIPELINE``:

- ``timm`` (default): random-resized-crop (``AUG.SCALE``, ``AUG.RATIO``), flips
  (``AUG.HFLIP``, ``AUG.VFLIP``), RandAugment (``AUG.RAND_AUGMENT``), colour jitter
  (``AUG.COLOR_JITTER``; timm turns it off while RandAugment is on), normalisation, random
  erasing (``AUG.REPROB``, ``AUG.REMODE``, ``AUG.RECOUNT``; ``AUG.RESPLIT``: on the second
  half of each batch only, applied by :class:`SplitErasingCollate`);
- ``torchvision``: the official CvT pipeline without timm: torchvision's random-resized crop,
  horizontal flip, and optionally colour jitter (``AUG.JITTER``), grey (``AUG.GRAYSCALE``)
  and Gaussian blur (``AUG.GAUSSIAN_BLUR``);
- ``resize-crop``: the official fine-tuning pipeline: resize to ``img_size + 32`` (square),
  random ``img_size`` crop, horizontal flip.

Evaluation: resize the short side to ``img_size / crop_pct`` and center crop
(``DATA.CROP_MODE center``), or resize to ``img_size x img_size`` (``squash``); normalise.
Mixup/CutMix act on whole batches and live in the engine.
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from timm.data import create_transform
from timm.data.random_erasing import RandomErasing
from torchvision import transforms

from ecvit.config import AugConfig
from ecvit.data.images import to_rgb

# timm's train.py default: erased boxes are filled with per-pixel normal noise.
RANDOM_ERASING_MODE = "pixel"

Stats = tuple[float, float, float]


class ToRGB:
    """Make any PIL image 8-bit RGB (see :func:`ecvit.data.images.to_rgb`)."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return to_rgb(img)

    def __repr__(self) -> str:
        return "ToRGB()"


class ToGrey:
    """Make any PIL image 8-bit grey ('L'), for one-channel models (``DATA.IN_CHANS 1``)."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return img if img.mode == "L" else to_rgb(img).convert("L")

    def __repr__(self) -> str:
        return "ToGrey()"


def _to_mode(channels: int) -> ToRGB | ToGrey:
    if channels not in (1, 3):
        raise ValueError(f"images have 1 or 3 channels, got {channels}")
    return ToGrey() if channels == 1 else ToRGB()


class CapAspect:
    """Center-crop the long side of an image to at most ``max_ratio`` times the short side.

    Evaluation keeps only a centered square of the short side, so trimming a 1000x3 strip
    to 12x3 first changes the result by at most a sub-pixel shift, while the resize to
    ``img_size / crop_pct`` stays small (un-trimmed, that strip would be resized to
    ~85,000 x 256 at 224 px). Images within the ratio are untouched.
    """

    def __init__(self, max_ratio: float = 4.0) -> None:
        self.max_ratio = max_ratio

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        short = min(w, h)
        limit = max(1, int(short * self.max_ratio))
        if max(w, h) <= limit:
            return img
        limit += (max(w, h) - limit) % 2  # same parity: the crop keeps the exact centre
        left = (w - min(w, limit)) // 2
        top = (h - min(h, limit)) // 2
        return img.crop((left, top, left + min(w, limit), top + min(h, limit)))

    def __repr__(self) -> str:
        return f"CapAspect(max_ratio={self.max_ratio})"


def build_train_transform(
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    aug: AugConfig,
    interpolation: str = "bicubic",
    channels: int = 3,
) -> Callable[[Image.Image], torch.Tensor]:
    """The ``AUG.PIPELINE`` training pipeline driven by ``AugConfig``; PIL image -> [channels,H,W].

    ``AUG.INTERPOLATION`` (when set) replaces ``interpolation`` for the training resize.
    """
    interpolation = aug.interpolation or interpolation
    if aug.pipeline != "timm":
        return transforms.Compose([_to_mode(channels), *_torchvision_steps(img_size, aug, interpolation),
                                   transforms.ToTensor(), transforms.Normalize(mean, std)])
    timm_tf = create_transform(
        input_size=img_size,
        is_training=True,
        scale=tuple(aug.scale),
        ratio=tuple(aug.ratio),
        hflip=aug.hflip,
        vflip=aug.vflip,
        color_jitter=aug.color_jitter if aug.color_jitter > 0 else None,
        auto_augment=aug.rand_augment or None,
        interpolation=interpolation,
        mean=tuple(mean),
        std=tuple(std),
        re_prob=0.0 if aug.resplit else aug.reprob,
        re_mode=aug.remode,
        re_count=aug.recount,
    )
    return transforms.Compose([_to_mode(channels), timm_tf])


class GaussianBlur:
    """PIL Gaussian blur with a radius drawn uniformly from ``sigma`` (SimCLR's, as official CvT)."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)) -> None:
        self.sigma = sigma

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))

    def __repr__(self) -> str:
        return f"GaussianBlur(sigma={self.sigma})"


def _torchvision_steps(img_size: int, aug: AugConfig, interpolation: str) -> list[Any]:
    """The geometric and colour steps of the ``torchvision`` and ``resize-crop`` pipelines."""
    mode = transforms.InterpolationMode(interpolation)
    if aug.pipeline == "resize-crop":
        return [transforms.Resize((img_size + 32, img_size + 32), interpolation=mode),
                transforms.RandomCrop(img_size), transforms.RandomHorizontalFlip()]
    steps: list[Any] = [
        transforms.RandomResizedCrop(img_size, scale=tuple(aug.scale), ratio=tuple(aug.ratio),
                                     interpolation=mode),
        transforms.RandomHorizontalFlip(),
    ]
    if aug.jitter and aug.jitter[-1] > 0:
        steps.append(transforms.RandomApply([transforms.ColorJitter(*aug.jitter[:4])], p=aug.jitter[4]))
    if aug.grayscale > 0:
        steps.append(transforms.RandomGrayscale(aug.grayscale))
    if aug.gaussian_blur > 0:
        steps.append(transforms.RandomApply([GaussianBlur()], p=aug.gaussian_blur))
    return steps


class SplitErasingCollate:
    """Collate, then random-erase the second half of the batch only (timm's ``re_split``).

    ``AUG.RESPLIT``: the first half of each batch stays clean, as timm's loader does with
    ``re_split`` and no augmentation splits (the official CvT ``RE_SPLIT`` with ``USE_LOADER``).
    """

    def __init__(self, collate: Callable[[list[Any]], Any], aug: AugConfig) -> None:
        self.collate = collate
        self.erase = RandomErasing(aug.reprob, mode=aug.remode, max_count=aug.recount, num_splits=2,
                                   device="cpu")

    def __call__(self, items: list[Any]) -> Any:
        images, *rest = self.collate(items)
        if images.ndim == 4 and len(images) > 1:
            images = self.erase(images)
        return (images, *rest)


def build_eval_transform(
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bicubic",
    crop_pct: float = 0.875,
    channels: int = 3,
    crop_mode: str = "center",
) -> Callable[[Image.Image], torch.Tensor]:
    """Resize the short side to ``floor(img_size / crop_pct)``, center crop, normalise;
    ``crop_mode="squash"``: resize the whole image to ``img_size x img_size`` instead (the
    official CvT ``TEST.CENTER_CROP false``; with ``crop_pct`` < 1, then a center crop).

    Works on any PIL image mode and any aspect ratio (see :class:`CapAspect`); the result
    has ``channels`` (3: RGB, 1: grey) channels.
    """
    timm_tf = create_transform(
        input_size=img_size,
        is_training=False,
        interpolation=interpolation,
        crop_pct=crop_pct,
        crop_mode=crop_mode,
        mean=tuple(mean),
        std=tuple(std),
    )
    if crop_mode == "squash":  # the whole image is resized: no long side to trim
        return transforms.Compose([_to_mode(channels), timm_tf])
    return transforms.Compose([_to_mode(channels), CapAspect(), timm_tf])


class TensorTransform:
    """Resample, augment and normalise a small in-memory image tensor ``[C,h,w]`` in [0, 1].

    One ``grid_sample`` does the upscaling to ``img_size`` and the random affine map
    (rotation up to ``max_rotate`` degrees, zoom in ``scale``, translation up to
    ``max_translate`` of the image side, horizontal flip with probability ``hflip``), so a
    tiny source such as an 8x8 digit is never blurred twice. Out-of-image samples are 0
    (the background of both in-memory datasets). One channel is replicated to three.
    Random erasing (``reprob``) is timm's, applied after normalisation as in the image path.
    Randomness comes from torch's global generator, which DataLoader seeds per worker.
    """

    def __init__(
        self,
        img_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str = "bilinear",
        max_rotate: float = 0.0,
        max_translate: float = 0.0,
        scale: tuple[float, float] = (1.0, 1.0),
        hflip: float = 0.0,
        reprob: float = 0.0,
    ) -> None:
        self.img_size = img_size
        self.mode = interpolation
        self.max_rotate = max_rotate
        self.max_translate = max_translate
        self.scale = scale
        self.hflip = hflip
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.random_geometry = max_rotate > 0 or max_translate > 0 or scale != (1.0, 1.0)
        # Output pixel centres in grid_sample's [-1, 1] coordinates (align_corners=False).
        # Built by hand: F.affine_grid's batched matmul is slow for one small image.
        centres = (torch.arange(img_size, dtype=torch.float32) * 2 + 1) / img_size - 1
        self.ys, self.xs = torch.meshgrid(centres, centres, indexing="ij")
        self.erase = (
            RandomErasing(reprob, mode=RANDOM_ERASING_MODE, device="cpu") if reprob > 0 else None
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flip = self.hflip > 0 and torch.rand(()).item() < self.hflip
        if self.random_geometry or x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
            x = self._resample(x)
        if flip:
            x = x.flip(-1)
        if x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        x = (x - self.mean) / self.std
        if self.erase is not None:
            x = self.erase(x)
        return x

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        angle, zoom, tx, ty = 0.0, 1.0, 0.0, 0.0
        if self.random_geometry:
            r = torch.rand(4).tolist()
            angle = math.radians((2 * r[0] - 1) * self.max_rotate)
            zoom = self.scale[0] + r[1] * (self.scale[1] - self.scale[0])
            # affine_grid coordinates span [-1, 1], i.e. 2 units per image side
            tx = (2 * r[2] - 1) * self.max_translate * 2
            ty = (2 * r[3] - 1) * self.max_translate * 2
        cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
        grid = torch.stack(
            [cos * self.xs - sin * self.ys + tx, sin * self.xs + cos * self.ys + ty], dim=-1
        ).unsqueeze(0)
        out = F.grid_sample(
            x[None].float(), grid, mode=self.mode, padding_mode="zeros", align_corners=False
        )
        return out[0].clamp_(0.0, 1.0)

    def __repr__(self) -> str:
        return (
            f"TensorTransform(img_size={self.img_size}, mode={self.mode!r}, "
            f"max_rotate={self.max_rotate}, max_translate={self.max_translate}, "
            f"scale={self.scale}, hflip={self.hflip}, reprob={self.erase is not None})"
        )
