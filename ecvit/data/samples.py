"""Datasets of image files and of decoded image arrays, the bad-sample marker, and the collate function that drops it.

With ``skip_bad_images`` an unreadable file does not stop the run: ``__getitem__`` returns a
:class:`BadSample` and :func:`collate_batch` removes it and reports how many it removed.
The count travels inside the batch because DataLoader workers are separate processes: a
counter incremented there would never reach the training loop.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset, default_collate

from ecvit.errors import DataError
from ecvit.data.images import load_image

log = logging.getLogger(__name__)


class BadSample(NamedTuple):
    """Stands in for an item whose image could not be read (``skip_bad_images``)."""

    path: str
    reason: str


class ImageFileDataset(Dataset):
    """``(path, label)`` pairs decoded with :func:`load_image` and passed through ``transform``."""

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        transform: Callable[[Any], torch.Tensor],
        skip_bad_images: bool = False,
        exif_transpose: bool = True,
    ) -> None:
        self.samples = list(samples)
        self.targets = [label for _, label in self.samples]
        self.classes = list(classes)
        self.transform = transform
        self.skip_bad_images = skip_bad_images
        self.exif_transpose = exif_transpose

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | BadSample:
        path, label = self.samples[index]
        try:
            img = load_image(path, self.exif_transpose)
        except DataError as exc:
            if not self.skip_bad_images:
                raise
            log.warning("skipping %s", exc)
            return BadSample(str(path), str(exc))
        return self.transform(img), label


class ArrayImageDataset(Dataset):
    """Decoded images held in memory (CIFAR, SVHN, MNIST ...): ``(transform(PIL image), label)``.

    ``images`` is ``[N, H, W, 3]`` (RGB) or ``[N, H, W]`` (grey) uint8.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        classes: Sequence[str],
        transform: Callable[[Image.Image], torch.Tensor],
    ) -> None:
        self.images = images
        self.labels = labels
        self.targets = labels.tolist()
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


class LabelledSubset(Subset):
    """A :class:`~torch.utils.data.Subset` that keeps its dataset's ``targets`` and ``classes``."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        super().__init__(dataset, list(indices))
        self.targets = [dataset.targets[i] for i in self.indices]
        self.classes = list(dataset.classes)


def collate_batch(batch: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Stack ``(image, label)`` items into ``(images, labels, num_bad)``.

    :class:`BadSample` items are dropped and counted in ``num_bad``. If every item is bad,
    the result is ``(empty float tensor of shape [0], empty int64 tensor, len(batch))``;
    callers skip batches with ``images.numel() == 0``.
    """
    good = [item for item in batch if not isinstance(item, BadSample)]
    num_bad = len(batch) - len(good)
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), num_bad
    images, labels = default_collate(good)
    return images, labels.long(), num_bad
