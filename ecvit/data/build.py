"""``build_datasets(cfg)``: the one place a config becomes train/val datasets.

Normalisation defaults (used unless ``DATA.MEAN`` / ``DATA.STD`` are set):

==================================  ==========================  ==========================
dataset                             mean                        std
==================================  ==========================  ==========================
cifar10                             (0.4914, 0.4822, 0.4465)    (0.2470, 0.2435, 0.2616)
cifar100                            (0.5070, 0.4865, 0.4409)    (0.2673, 0.2564, 0.2762)
folder, tiny-imagenet, oxford-pets  ImageNet (0.485, 0.456,     (0.229, 0.224, 0.225)
                                    0.406)
digits                              the train split's pixel     its pixel std (~0.37)
                                    mean (~0.31), per channel
simulated                           (0.5, 0.5, 0.5)             (0.5, 0.5, 0.5)
==================================  ==========================  ==========================
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import Dataset

from ecvit.config import Config
from ecvit.data import cifar, layouts
from ecvit.data.samples import ImageFileDataset
from ecvit.data.synthetic import DigitsDataset, SimulatedDataset, load_digits_split
from ecvit.data.transforms import TensorTransform, build_eval_transform, build_train_transform
from ecvit.errors import DataError

Stats = tuple[float, float, float]

DATASETS = ("digits", "simulated", "folder", "cifar10", "cifar100", "tiny-imagenet", "oxford-pets")
DOWNLOADABLE = ("cifar10", "cifar100")
SIMULATED_STATS: tuple[Stats, Stats] = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
# Datasets whose normalisation is their own (above); the others take the model's
# pretrained_cfg mean/std unless DATA.MEAN / DATA.STD say otherwise.
OWN_STATS = ("digits", "simulated", "cifar10", "cifar100")
# Input size used when DATA.IMG_SIZE is unset, for datasets where the model's own size makes
# no sense: the 8x8 digits are upscaled to 32 px (the measured default run), not to 224.
NATIVE_IMG_SIZE = {"digits": 32}

# Light, label-preserving augmentation for the 8x8 digits: a digit survives a few degrees of
# rotation, +-10% zoom and a one-pixel shift, but not a flip or a tight random crop, so
# AUG.SCALE, AUG.HFLIP, AUG.RAND_AUGMENT and AUG.COLOR_JITTER do not apply to it.
DIGITS_MAX_ROTATE = 10.0
DIGITS_MAX_TRANSLATE = 0.1
DIGITS_SCALE = (0.9, 1.1)


@dataclass
class DataBundle:
    """Train/val datasets (items: normalised float image ``[3,H,W]``, int label) and facts."""

    train: Dataset
    val: Dataset
    num_classes: int
    class_names: list[str]
    mean: Stats
    std: Stats
    # Centre-crop fraction of the eval transform (1.0: the whole image is resized), stored in
    # checkpoints so `ecvit predict` preprocesses an image file exactly as validation did.
    crop_pct: float = 1.0


def canonical_dataset_name(name: str) -> str:
    """``"CIFAR10"``, ``"tiny_imagenet"`` -> an entry of :data:`DATASETS`, else a DataError."""
    key = name.strip().lower().replace("_", "-")
    if key in DATASETS:
        return key
    close = difflib.get_close_matches(key, DATASETS, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise DataError(f"unknown dataset {name!r}{hint}; choose from {', '.join(DATASETS)}")


def build_datasets(cfg: Config) -> DataBundle:
    """Datasets for ``cfg.data.dataset`` with transforms from ``cfg.data`` and ``cfg.aug``.

    The engine passes a resolved config (:func:`ecvit.engine.plan.resolve` fills unset data
    settings from the model); settings still unset here take the data-only defaults of
    :func:`fill_data_defaults`.
    """
    name = canonical_dataset_name(cfg.data.dataset)
    cfg = fill_data_defaults(cfg, name)
    if cfg.data.download and name not in DOWNLOADABLE:
        why = "needs no download" if name in ("digits", "simulated") else "must already be on disk"
        raise DataError(f"--download is available for {', '.join(DOWNLOADABLE)}; {name} {why}")
    return _BUILDERS[name](cfg)


def fill_data_defaults(cfg: Config, name: str) -> Config:
    """A copy with unset DATA.IMG_SIZE / INTERPOLATION / CROP_PCT at the data-only defaults.

    Size: the dataset's native size (:data:`NATIVE_IMG_SIZE`), else 224; bicubic; crop 0.875
    (timm's defaults). The config is returned unchanged when nothing is unset.
    """
    d = cfg.data
    if d.img_size is not None and d.interpolation and d.crop_pct is not None:
        return cfg
    cfg = copy.deepcopy(cfg)
    d = cfg.data
    d.img_size = d.img_size or NATIVE_IMG_SIZE.get(name, 224)
    d.interpolation = d.interpolation or "bicubic"
    d.crop_pct = 0.875 if d.crop_pct is None else d.crop_pct
    return cfg


# ----------------------------------------------------------------------------- helpers


def _stats(cfg: Config, mean: Stats, std: Stats) -> tuple[Stats, Stats]:
    """``DATA.MEAN`` / ``DATA.STD`` where given (one value: all channels), else the defaults."""

    def pick(values: list[float], default: Stats) -> Stats:
        if not values:
            return tuple(float(v) for v in default)  # type: ignore[return-value]
        if len(values) == 1:
            return (float(values[0]),) * 3
        return tuple(float(v) for v in values)  # type: ignore[return-value]

    return pick(cfg.data.mean, mean), pick(cfg.data.std, std)


def _root(cfg: Config, name: str, must_exist: bool = True) -> Path:
    if not cfg.data.root:
        raise DataError(f"{name} reads its files from disk: pass --data-path DIR (DATA.ROOT)")
    root = Path(cfg.data.root).expanduser()
    if must_exist and not root.is_dir():
        raise DataError(f"{name}: dataset root {root} (--data-path) is not a directory")
    return root


def _image_transforms(cfg: Config, mean: Stats, std: Stats) -> tuple[Callable, Callable]:
    d = cfg.data
    train_tf = build_train_transform(d.img_size, mean, std, cfg.aug, interpolation=d.interpolation)
    eval_tf = build_eval_transform(d.img_size, mean, std, d.interpolation, d.crop_pct)
    return train_tf, eval_tf


def _file_bundle(
    cfg: Config,
    train: layouts.Samples,
    val: layouts.Samples,
    classes: list[str],
    mean: Stats,
    std: Stats,
) -> DataBundle:
    mean, std = _stats(cfg, mean, std)
    train_tf, eval_tf = _image_transforms(cfg, mean, std)
    skip = cfg.data.skip_bad_images
    return DataBundle(
        train=ImageFileDataset(train, classes, train_tf, skip),
        val=ImageFileDataset(val, classes, eval_tf, skip),
        num_classes=len(classes),
        class_names=list(classes),
        mean=mean,
        std=std,
        crop_pct=cfg.data.crop_pct,
    )


# ---------------------------------------------------------------------------- builders


def _build_simulated(cfg: Config) -> DataBundle:
    d = cfg.data
    mean, std = _stats(cfg, *SIMULATED_STATS)
    train_tf = TensorTransform(
        d.img_size, mean, std, d.interpolation, hflip=cfg.aug.hflip, reprob=cfg.aug.reprob
    )
    eval_tf = TensorTransform(d.img_size, mean, std, d.interpolation)
    train = SimulatedDataset(d.train_size, d.num_classes, d.img_size, cfg.seed, 0, train_tf)
    val = SimulatedDataset(d.val_size, d.num_classes, d.img_size, cfg.seed, 1, eval_tf)
    return DataBundle(train, val, d.num_classes, list(train.classes), mean, std)


def _build_digits(cfg: Config) -> DataBundle:
    d = cfg.data
    x_train, y_train, x_val, y_val = load_digits_split()
    pixel_mean, pixel_std = float(x_train.mean()), float(x_train.std())
    mean, std = _stats(cfg, (pixel_mean,) * 3, (pixel_std,) * 3)
    train_tf = TensorTransform(
        d.img_size,
        mean,
        std,
        d.interpolation,
        max_rotate=DIGITS_MAX_ROTATE,
        max_translate=DIGITS_MAX_TRANSLATE,
        scale=DIGITS_SCALE,
        reprob=cfg.aug.reprob,
    )
    eval_tf = TensorTransform(d.img_size, mean, std, d.interpolation)
    train = DigitsDataset(x_train, y_train, train_tf)
    val = DigitsDataset(x_val, y_val, eval_tf)
    return DataBundle(train, val, 10, list(train.classes), mean, std)


def _build_folder(cfg: Config) -> DataBundle:
    train, val, classes = layouts.scan_folder(_root(cfg, "folder"))
    return _file_bundle(cfg, train, val, classes, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)


def _build_tiny_imagenet(cfg: Config) -> DataBundle:
    train, val, classes = layouts.scan_tiny_imagenet(_root(cfg, "tiny-imagenet"))
    return _file_bundle(cfg, train, val, classes, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)


def _build_oxford_pets(cfg: Config) -> DataBundle:
    train, val, classes = layouts.scan_oxford_pets(_root(cfg, "oxford-pets"))
    return _file_bundle(cfg, train, val, classes, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)


def _cifar_builder(spec: cifar.CifarSpec) -> Callable[[Config], DataBundle]:
    def build(cfg: Config) -> DataBundle:
        root = _root(cfg, spec.name, must_exist=not cfg.data.download)
        folder = cifar.find_cifar_dir(spec, root, cfg.data.download)
        classes = cifar.read_cifar_classes(spec, folder)
        x_train, y_train = cifar.read_cifar_split(spec, folder, spec.train_files)
        x_val, y_val = cifar.read_cifar_split(spec, folder, (spec.test_file,))
        mean, std = _stats(cfg, spec.mean, spec.std)
        train_tf, eval_tf = _image_transforms(cfg, mean, std)
        return DataBundle(
            train=cifar.CifarDataset(x_train, y_train, classes, train_tf),
            val=cifar.CifarDataset(x_val, y_val, classes, eval_tf),
            num_classes=spec.num_classes,
            class_names=classes,
            mean=mean,
            std=std,
            crop_pct=cfg.data.crop_pct,
        )

    return build


_BUILDERS: dict[str, Callable[[Config], DataBundle]] = {
    "digits": _build_digits,
    "simulated": _build_simulated,
    "folder": _build_folder,
    "cifar10": _cifar_builder(cifar.CIFAR10),
    "cifar100": _cifar_builder(cifar.CIFAR100),
    "tiny-imagenet": _build_tiny_imagenet,
    "oxford-pets": _build_oxford_pets,
}
