"""SVHN (cropped digits) from the official ``train_32x32.mat`` / ``test_32x32.mat`` files.

The files are MATLAB v5 matrices: ``X`` is ``[32, 32, 3, N]`` uint8 and ``y`` is ``[N, 1]``
with the digit 0 stored as label 10 (the dataset's convention; it becomes class 0 here, as
in torchvision). torchvision's ``SVHN`` class checks each file's MD5 sum, which only the
full official files pass, so the reading is done here with ``scipy.io.loadmat`` (what
torchvision uses too) and torchvision is used for ``--download`` only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ecvit.errors import DataError

CLASSES = tuple(str(d) for d in range(10))
MEAN = (0.4377, 0.4438, 0.4728)
STD = (0.1980, 0.2010, 0.1970)
FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def read_svhn_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 32, 32, 3]`` uint8 and labels ``[N]`` int64 (0-9) of ``split``."""
    from scipy.io import loadmat

    path = root / FILES[split]
    if not path.is_file():
        raise DataError(f"svhn: expected {path} (the official {FILES['train']} and "
                        f"{FILES['test']}); pass --download to fetch them")
    try:
        mat = loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError, TypeError, ... for damaged files
        raise DataError(f"cannot read {path}: not a MATLAB v5 file ({type(exc).__name__}: {exc})") from None
    x, y = mat.get("X"), mat.get("y")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != 3:
        raise DataError(f"svhn: {path} must hold 'X', a uint8 array [H, W, 3, N]")
    if not isinstance(y, np.ndarray) or y.size != x.shape[3]:
        raise DataError(f"svhn: {path} must hold 'y' with one label per image")
    labels = y.reshape(-1).astype(np.int64)
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise DataError(f"svhn: {path} has labels outside 1..10")
    labels[labels == 10] = 0
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), labels


def download(root: Path) -> None:
    """Fetch both official files with torchvision's checked downloader into ``root``."""
    import torchvision.datasets as tvd

    try:
        for split in FILES:
            tvd.SVHN(str(root), split=split, download=True)
    except Exception as exc:
        raise DataError(f"svhn: download into {root} failed ({exc})") from None
