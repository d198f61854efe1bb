"""MNIST and Fashion-MNIST from their official IDX files, gzipped or not.

The files are read exactly as distributed (``train-images-idx3-ubyte[.gz]`` ...): an IDX
file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian int32 per dimension, then the raw values. torchvision's ``MNIST`` class reads
only the unpacked files in its own ``MNIST/raw`` folder, so the reading is done here and
torchvision is used for ``--download`` only.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecvit.errors import DataError

IDX_UBYTE = 0x08  # the only value type the MNIST-family files use
TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


@dataclass(frozen=True)
class IdxSpec:
    name: str
    torchvision_class: str  # also the folder torchvision downloads into: root/<class>/raw
    classes: tuple[str, ...]
    mean: float
    std: float


MNIST = IdxSpec("mnist", "MNIST", tuple(str(d) for d in range(10)), 0.1307, 0.3081)
FASHION_MNIST = IdxSpec(
    "fashion-mnist",
    "FashionMNIST",
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
     "Ankle boot"),
    0.2860,
    0.3530,
)


def read_idx(path: Path) -> np.ndarray:
    """The uint8 array an IDX file holds (``.gz`` files are decompressed on the fly)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != IDX_UBYTE:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated: its header names {ndim} dimensions")
    shape = tuple(int(v) for v in np.frombuffer(data, ">i4", ndim, offset=4))
    if len(data) - header != int(np.prod(shape)):
        raise DataError(f"{path} holds {len(data) - header} bytes for a {shape} array: truncated or damaged")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def find_idx_file(spec: IdxSpec, root: Path, stem: str) -> Path:
    """``stem`` or ``stem.gz`` in ``root``, ``root/raw`` or torchvision's ``root/<Class>/raw``."""
    for folder in (root, root / "raw", root / spec.torchvision_class / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    raise DataError(
        f"{spec.name}: expected {root / stem}[.gz] (the official IDX files {TRAIN_IMAGES}, "
        f"{TRAIN_LABELS}, {TEST_IMAGES}, {TEST_LABELS}); pass --download to fetch them"
    )


def read_idx_split(spec: IdxSpec, root: Path, images: str, labels: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 28, 28]`` uint8 and labels ``[N]`` int64, checked against each other."""
    x_path, y_path = find_idx_file(spec, root, images), find_idx_file(spec, root, labels)
    x, y = read_idx(x_path), read_idx(y_path)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{spec.name}: {x_path} {x.shape} and {y_path} {y.shape} are not "
                        "N images with N labels")
    if y.size and y.max() >= len(spec.classes):
        raise DataError(f"{spec.name}: {y_path} has labels outside 0..{len(spec.classes) - 1}")
    return x, y.astype(np.int64)


def download(spec: IdxSpec, root: Path) -> None:
    """Fetch the official files with torchvision's checked downloader into ``root/<Class>/raw``."""
    import torchvision.datasets as tvd

    try:
        getattr(tvd, spec.torchvision_class)(str(root), train=True, download=True)
    except Exception as exc:
        raise DataError(f"{spec.name}: download into {root} failed ({exc})") from None
