"""CIFAR-10 / CIFAR-100 from the official python batches, read without running code.

The batches are pickles. ``pickle.load`` on a file from the internet can execute anything,
so :class:`RestrictedUnpickler` resolves only the few globals a pickled numpy array needs;
any other global (``os.system``, ``builtins.eval`` ...) is refused with a DataError.
"""

from __future__ import annotations

import codecs
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecvit.errors import DataError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for a global outside the allow-list: it is not a plain data file."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes; only latin-1 is allowed."""
    if encoding.lower().replace("-", "") != "latin1" or not isinstance(text, str):
        raise RefusedGlobal(f"refusing _codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays, lists, dicts, strings and numbers, nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"global {module}.{name} is not allowed") from None


def safe_unpickle(path: Path) -> Any:
    """Load a CIFAR batch file with :class:`RestrictedUnpickler` (latin-1, as numpy advises)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except RefusedGlobal as exc:
        raise DataError(f"refusing {path}: not a plain CIFAR batch ({exc})") from None
    except Exception as exc:  # truncated or garbled pickle
        reason = f"{type(exc).__name__}: {exc}"
        raise DataError(f"cannot read {path}: not a valid CIFAR batch ({reason})") from None


@dataclass(frozen=True)
class CifarSpec:
    name: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    torchvision_class: str


CIFAR10 = CifarSpec(
    name="cifar10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    meta_file="batches.meta",
    label_key="labels",
    names_key="label_names",
    num_classes=10,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    torchvision_class="CIFAR10",
)
CIFAR100 = CifarSpec(
    name="cifar100",
    folder="cifar-100-python",
    train_files=("train",),
    test_file="test",
    meta_file="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    num_classes=100,
    mean=(0.5070, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    torchvision_class="CIFAR100",
)


def find_cifar_dir(spec: CifarSpec, root: Path, download: bool) -> Path:
    """``root/<folder>`` (or ``root`` itself if it is that folder), downloading if asked."""
    for candidate in (root / spec.folder, root):
        if (candidate / spec.train_files[0]).is_file():
            return candidate
    if download:
        _download(spec, root)
        if (root / spec.folder / spec.train_files[0]).is_file():
            return root / spec.folder
    raise DataError(
        f"{spec.name}: expected {root / spec.folder / spec.train_files[0]} "
        f"(the official python batches: {', '.join(spec.train_files)}, {spec.test_file}, "
        f"{spec.meta_file}); pass --download to fetch them"
    )


def _download(spec: CifarSpec, root: Path) -> None:
    """Fetch and unpack the official archive with torchvision's checked downloader."""
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import download_and_extract_archive

    tv = getattr(tvd, spec.torchvision_class)
    root.mkdir(parents=True, exist_ok=True)
    try:
        download_and_extract_archive(tv.url, str(root), filename=tv.filename, md5=tv.tgz_md5)
    except Exception as exc:
        raise DataError(f"{spec.name}: download into {root} failed ({exc})") from None


def read_cifar_split(
    spec: CifarSpec, folder: Path, files: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 32, 32, 3]`` uint8 and labels ``[N]`` int64 from the given batch files."""
    images, labels = [], []
    for name in files:
        path = folder / name
        if not path.is_file():
            raise DataError(f"{spec.name}: expected batch file {path}; the split is incomplete")
        batch = safe_unpickle(path)
        if not isinstance(batch, dict) or "data" not in batch or spec.label_key not in batch:
            raise DataError(f"{spec.name}: {path} has no 'data' and '{spec.label_key}' entries")
        data, lab = batch["data"], np.asarray(batch[spec.label_key])
        is_array = isinstance(data, np.ndarray) and data.dtype == np.uint8
        if not is_array or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{spec.name}: {path} 'data' must be a uint8 array [N, 3072]")
        if lab.shape != (len(data),) or lab.dtype.kind not in "iu":
            raise DataError(f"{spec.name}: {path} has {lab.size} labels for {len(data)} images")
        if lab.size and (lab.min() < 0 or lab.max() >= spec.num_classes):
            raise DataError(f"{spec.name}: {path} has labels outside 0..{spec.num_classes - 1}")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(lab.astype(np.int64))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def read_cifar_classes(spec: CifarSpec, folder: Path) -> list[str]:
    path = folder / spec.meta_file
    if not path.is_file():
        raise DataError(f"{spec.name}: expected {path} (class names)")
    meta = safe_unpickle(path)
    names = meta.get(spec.names_key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != spec.num_classes:
        raise DataError(f"{spec.name}: {path} must list {spec.num_classes} '{spec.names_key}'")
    return [str(n) for n in names]
