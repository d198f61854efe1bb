"""Datasets and transforms: simulated, digits, folder, CIFAR-10/100, Tiny-ImageNet, Oxford pets,
SVHN, MNIST, Fashion-MNIST.

``build_datasets(cfg)`` returns a :class:`DataBundle`; loaders use :func:`collate_batch`,
which drops unreadable images (``DATA.SKIP_BAD_IMAGES``) and reports how many it dropped.
"""

from ecvit.data.build import DATASETS, DataBundle, build_datasets, canonical_dataset_name
from ecvit.data.images import load_image, to_rgb
from ecvit.data.samples import BadSample, ImageFileDataset, collate_batch
from ecvit.data.transforms import TensorTransform, build_eval_transform, build_train_transform

__all__ = [
    "DATASETS",
    "DataBundle",
    "build_datasets",
    "canonical_dataset_name",
    "collate_batch",
    "BadSample",
    "ImageFileDataset",
    "load_image",
    "to_rgb",
    "build_train_transform",
    "build_eval_transform",
    "TensorTransform",
]
