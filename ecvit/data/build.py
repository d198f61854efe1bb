"""``build_datasets(cfg)``: the one place a config becomes train/val datasets.

Normalisation defaults (used unless ``DATA.MEAN`` / ``DATA.STD`` are set):

==================================  ==========================  ==========================
dataset                             mean                        std
==================================  ==========================  ==========================
cifar10                             (0.4914, 0.4822, 0.4465)    (0.2470, 0.2435, 0.2616)
cifar100                            (0.5070, 0.4865, 0.4409)    (0.2673, 0.2564, 0.2762)
folder, tiny-imagenet, oxford-pets  ImageNet (0.485, 0.456,     (0.229, 0.224, 0.225)
                                    0.406)
svhn                                (0.4377, 0.4438, 0.4728)    (0.1980, 0.2010, 0.1970)
mnist                               0.1307 per channel          0.3081
fashion-mnist                       0.2860 per channel          0.3530
digits                              the train split's pixel     its pixel std (~0.37)
                                    mean (~0.31), per channel
simulated                           (0.5, 0.5, 0.5)             (0.5, 0.5, 0.5)
==================================  ==========================  ==========================

The grey datasets (mnist, fashion-mnist) are repeated to three channels, so RGB weights
transfer; ``DATA.IN_CHANS 1`` feeds them as one channel to a model built with ``in_chans=1``.
``DATA.TRAIN_FRACTION f`` keeps a class-stratified fraction ``f`` of any training split,
the same images for every run seed (:data:`SUBSET_SEED`), for small-data studies.

Besides these names, ``wds/NAME``, ``hfds/NAME``, ``torch/NAME`` and ``csv`` open the data
sources of :mod:`ecvit.data.sources` (webdataset shards, Hugging Face datasets, torchvision
datasets on disk, CSV lists), with ImageNet statistics unless the model or DATA.MEAN/STD say otherwise.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import Dataset, IterableDataset

from ecvit.config import DATASETS, Config
from ecvit.data import cifar, idx, layouts, sources, svhn
from ecvit.data.samples import ArrayImageDataset, ImageFileDataset, LabelledSubset
from ecvit.data.synthetic import DigitsDataset, SimulatedDataset, load_digits_split
from ecvit.data.transforms import TensorTransform, build_eval_transform, build_train_transform
from ecvit.errors import DataError

Stats = tuple[float, float, float]

DOWNLOADABLE = ("cifar10", "cifar100", "svhn", "mnist", "fashion-mnist")
GREY_DATASETS = ("mnist", "fashion-mnist")  # the only ones DATA.IN_CHANS 1 applies to
SUBSET_SEED = 0  # DATA.TRAIN_FRACTION's subset does not change with the run's seed
SIMULATED_STATS: tuple[Stats, Stats] = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
# Datasets whose normalisation is their own (above); the others take the model's
# pretrained_cfg mean/std unless DATA.MEAN / DATA.STD say otherwise.
OWN_STATS = ("digits", "simulated", "cifar10", "cifar100", "svhn", "mnist", "fashion-mnist")
# Input size used when DATA.IMG_SIZE is unset, for datasets where the model's own size makes
# no sense: the 8x8 digits are upscaled to 32 px (the measured default run), not to 224.
NATIVE_IMG_SIZE = {"digits": 32, "svhn": 32, "mnist": 28, "fashion-mnist": 28}

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
    """``"CIFAR10"``, ``"tiny_imagenet"`` -> an entry of :data:`DATASETS` (``wds/...``, ``hfds/...``,
    ``torch/...``, ``csv``: a source of :mod:`ecvit.data.sources`), else a DataError."""
    if sources.is_source(name):
        return sources.canonical_source_name(name)
    key = name.strip().lower().replace("_", "-")
    if key in DATASETS:
        return key
    close = difflib.get_close_matches(key, DATASETS, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise DataError(f"unknown dataset {name!r}{hint}; choose from {', '.join(DATASETS)}, or a source "
                    "wds/NAME, hfds/NAME, torch/NAME, csv")


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
    if cfg.data.split != "official" and name != "oxford-pets":
        raise DataError(f"DATA.SPLIT {cfg.data.split}: a random split is for oxford-pets (list.txt); "
                        f"{name} keeps its official train/test split")
    if cfg.data.in_chans != 3 and name not in GREY_DATASETS:
        raise DataError(f"DATA.IN_CHANS {cfg.data.in_chans}: one-channel input is for the grey "
                        f"datasets ({', '.join(GREY_DATASETS)}); {name} feeds 3 channels")
    bundle = _build_source(cfg, name) if sources.is_source(name) else _BUILDERS[name](cfg)
    if cfg.data.train_fraction < 1.0:
        if isinstance(bundle.train, IterableDataset):
            raise DataError(f"DATA.TRAIN_FRACTION {cfg.data.train_fraction}: {name} streams its shards, so "
                            "a subset is made by writing shards of it (map-style sources take a fraction)")
        bundle.train = train_subset(bundle.train, cfg.data.train_fraction)
    return bundle


def train_subset(dataset: Dataset, fraction: float) -> LabelledSubset:
    """A class-stratified ``fraction`` of ``dataset`` (at least one image per class), in order.

    Drawn with :data:`SUBSET_SEED`, so every run seed and every model sees the same images.
    """
    from sklearn.model_selection import train_test_split

    labels = list(dataset.targets)
    count = max(len(set(labels)), round(fraction * len(labels)))
    if count >= len(labels):
        return LabelledSubset(dataset, range(len(labels)))
    try:
        keep, _ = train_test_split(range(len(labels)), train_size=count, stratify=labels,
                                   random_state=SUBSET_SEED)
    except ValueError:  # a class with a single image cannot be stratified: plain random
        keep, _ = train_test_split(range(len(labels)), train_size=count, random_state=SUBSET_SEED)
    return LabelledSubset(dataset, sorted(keep))


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

    mean, std = pick(cfg.data.mean, mean), pick(cfg.data.std, std)
    if cfg.data.in_chans == 1:  # grey input: the grey datasets' statistics are equal per channel
        return mean[:1], std[:1]
    return mean, std


def _root(cfg: Config, name: str, must_exist: bool = True) -> Path:
    if not cfg.data.root:
        raise DataError(f"{name} reads its files from disk: pass --data-path DIR (DATA.ROOT)")
    root = Path(cfg.data.root).expanduser()
    if must_exist and not root.is_dir():
        raise DataError(f"{name}: dataset root {root} (--data-path) is not a directory")
    return root


def _image_transforms(cfg: Config, mean: Stats, std: Stats) -> tuple[Callable, Callable]:
    d = cfg.data
    train_tf = build_train_transform(d.img_size, mean, std, cfg.aug, interpolation=d.interpolation,
                                     channels=d.in_chans)
    eval_tf = build_eval_transform(cfg.test.img_size or d.img_size, mean, std, d.interpolation, d.crop_pct,
                                   d.in_chans, d.crop_mode)
    return train_tf, eval_tf


def _image_bundle(cfg: Config, train_set: Callable[[Callable], Dataset], val_set: Callable[[Callable], Dataset],
                  classes: list[str], mean: Stats, std: Stats) -> DataBundle:
    """Bundle of the datasets ``train_set(transform)`` / ``val_set(transform)`` with the image transforms."""
    mean, std = _stats(cfg, mean, std)
    train_tf, eval_tf = _image_transforms(cfg, mean, std)
    return DataBundle(
        train=train_set(train_tf),
        val=val_set(eval_tf),
        num_classes=len(classes),
        class_names=list(classes),
        mean=mean,
        std=std,
        crop_pct=cfg.data.crop_pct,
    )


def _file_bundle(cfg: Config, train: layouts.Samples, val: layouts.Samples, classes: list[str],
                 mean: Stats, std: Stats) -> DataBundle:
    """Bundle for lists of image files."""
    skip, exif = cfg.data.skip_bad_images, cfg.data.exif_transpose
    return _image_bundle(cfg, lambda tf: ImageFileDataset(train, classes, tf, skip, exif),
                         lambda tf: ImageFileDataset(val, classes, tf, skip, exif), classes, mean, std)


# ---------------------------------------------------------------------------- builders


def _build_source(cfg: Config, name: str) -> DataBundle:
    source = sources.open_source(cfg, name)
    return _image_bundle(cfg, source.train, source.val, source.classes, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)


def _build_simulated(cfg: Config) -> DataBundle:
    d = cfg.data
    mean, std = _stats(cfg, *SIMULATED_STATS)
    train_tf = TensorTransform(
        d.img_size, mean, std, d.interpolation, hflip=cfg.aug.hflip, reprob=cfg.aug.reprob
    )
    eval_tf = TensorTransform(cfg.test.img_size or d.img_size, mean, std, d.interpolation)
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
    eval_tf = TensorTransform(cfg.test.img_size or d.img_size, mean, std, d.interpolation)
    train = DigitsDataset(x_train, y_train, train_tf)
    val = DigitsDataset(x_val, y_val, eval_tf)
    return DataBundle(train, val, 10, list(train.classes), mean, std)


def _build_folder(cfg: Config) -> DataBundle:
    train, val, classes = layouts.scan_folder(_root(cfg, "folder"), cfg.data.train_split, cfg.data.val_split)
    return _file_bundle(cfg, train, val, classes, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)


def _build_tiny_imagenet(cfg: Config) -> DataBundle:
    train, val, classes = layouts.scan_tiny_imagenet(_root(cfg, "tiny-imagenet"))
    return _file_bundle(cfg, train, val, classes, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)


def _build_oxford_pets(cfg: Config) -> DataBundle:
    train, val, classes = layouts.scan_oxford_pets(_root(cfg, "oxford-pets"), cfg.data.split, cfg.data.split_seed)
    return _file_bundle(cfg, train, val, classes, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)


def _array_bundle(cfg: Config, train: tuple, val: tuple, classes: list[str],
                  mean: Stats, std: Stats) -> DataBundle:
    """Bundle for decoded ``(images, labels)`` arrays."""
    return _image_bundle(cfg, lambda tf: ArrayImageDataset(*train, classes, tf),
                         lambda tf: ArrayImageDataset(*val, classes, tf), classes, mean, std)


def _build_svhn(cfg: Config) -> DataBundle:
    root = _root(cfg, "svhn", must_exist=not cfg.data.download)
    if cfg.data.download and not (root / svhn.FILES["train"]).is_file():
        svhn.download(root)
    train, val = svhn.read_svhn_split(root, "train"), svhn.read_svhn_split(root, "test")
    return _array_bundle(cfg, train, val, list(svhn.CLASSES), svhn.MEAN, svhn.STD)


def _idx_builder(spec: idx.IdxSpec) -> Callable[[Config], DataBundle]:
    def build(cfg: Config) -> DataBundle:
        root = _root(cfg, spec.name, must_exist=not cfg.data.download)
        if cfg.data.download:
            try:
                idx.find_idx_file(spec, root, idx.TRAIN_IMAGES)
            except DataError:
                idx.download(spec, root)
        train = idx.read_idx_split(spec, root, idx.TRAIN_IMAGES, idx.TRAIN_LABELS)
        val = idx.read_idx_split(spec, root, idx.TEST_IMAGES, idx.TEST_LABELS)
        return _array_bundle(cfg, train, val, list(spec.classes), (spec.mean,) * 3, (spec.std,) * 3)

    return build


def _cifar_builder(spec: cifar.CifarSpec) -> Callable[[Config], DataBundle]:
    def build(cfg: Config) -> DataBundle:
        root = _root(cfg, spec.name, must_exist=not cfg.data.download)
        folder = cifar.find_cifar_dir(spec, root, cfg.data.download)
        classes = cifar.read_cifar_classes(spec, folder)
        x_train, y_train = cifar.read_cifar_split(spec, folder, spec.train_files)
        x_val, y_val = cifar.read_cifar_split(spec, folder, (spec.test_file,))
        return _array_bundle(cfg, (x_train, y_train), (x_val, y_val), classes, spec.mean, spec.std)

    return build


_BUILDERS: dict[str, Callable[[Config], DataBundle]] = {
    "digits": _build_digits,
    "simulated": _build_simulated,
    "folder": _build_folder,
    "cifar10": _cifar_builder(cifar.CIFAR10),
    "cifar100": _cifar_builder(cifar.CIFAR100),
    "tiny-imagenet": _build_tiny_imagenet,
    "oxford-pets": _build_oxford_pets,
    "svhn": _build_svhn,
    "mnist": _idx_builder(idx.MNIST),
    "fashion-mnist": _idx_builder(idx.FASHION_MNIST),
}
