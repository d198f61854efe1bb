"""In-memory datasets that need no files: ``simulated`` and scikit-learn's ``digits``."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

# The digits train/val split never changes with the run's seed, so validation numbers from
# different seeds are measured on the same 360 images.
DIGITS_SPLIT_SEED = 0
DIGITS_VAL_FRACTION = 0.2

# ``simulated`` image model (documented in SimulatedDataset): per-class colour plus a
# class-frequency pattern, per-sample colour jitter, random phase and pixel noise.
SIM_PATTERN_AMPLITUDE = 0.2
SIM_COLOUR_JITTER = 0.05
SIM_NOISE_STD = 0.1
SIM_MAX_FREQUENCY = 4


class SimulatedDataset(Dataset):
    """Deterministic class-conditional synthetic images, generated lazily per index.

    Class ``c`` has a base colour ``mu_c`` (three values in [0.2, 0.8]), a tint ``t_c`` in
    [-1, 1]^3 and spatial frequencies ``(fx_c, fy_c)`` in 1..4, all drawn from ``seed``.
    Item ``i`` has label ``i % num_classes`` and pixels

        x = mu_c + jitter + A * t_c * cos(2 pi fx_c u + phi_x) * cos(2 pi fy_c v + phi_y) + noise

    (u, v in [0, 1) across the image, A = 0.2, jitter ~ U(+-0.05) per channel, phases
    uniform, noise N(0, 0.1^2)), clipped to [0, 1]. The item's randomness is seeded by
    ``(seed, split, i)``, so an index always yields the same image and a large dataset
    costs nothing until it is read. The cosine product with random phases keeps the class
    distribution invariant under horizontal flips.
    """

    def __init__(
        self,
        size: int,
        num_classes: int,
        img_size: int,
        seed: int,
        split: int,
        transform: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        self.size = size
        self.num_classes = num_classes
        self.img_size = img_size
        self.seed = seed
        self.split = split
        self.transform = transform
        rng = np.random.default_rng([seed, num_classes])
        self.colours = torch.from_numpy(rng.uniform(0.2, 0.8, (num_classes, 3))).float()
        self.tints = torch.from_numpy(rng.uniform(-1.0, 1.0, (num_classes, 3))).float()
        freqs = rng.integers(1, SIM_MAX_FREQUENCY + 1, (num_classes, 2))
        self.freqs = torch.from_numpy(freqs).float()
        self.classes = [str(c) for c in range(num_classes)]

    @property
    def targets(self) -> list[int]:
        return [i % self.num_classes for i in range(self.size)]

    def __len__(self) -> int:
        return self.size

    def generate(self, index: int) -> tuple[torch.Tensor, int]:
        """The raw image ``[3, img_size, img_size]`` in [0, 1] and label of ``index``."""
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")
        label = index % self.num_classes
        state = np.random.SeedSequence([self.seed, self.split, index]).generate_state(1, np.uint64)
        gen = torch.Generator().manual_seed(int(state[0]))
        s = self.img_size
        coords = torch.arange(s, dtype=torch.float32) / s
        phase = torch.rand(2, generator=gen) * 2 * math.pi
        fx, fy = self.freqs[label]
        wave = torch.cos(2 * math.pi * fy * coords + phase[1])[:, None] * torch.cos(
            2 * math.pi * fx * coords + phase[0]
        )[None, :]
        jitter = (torch.rand(3, generator=gen) * 2 - 1) * SIM_COLOUR_JITTER
        img = (self.colours[label] + jitter).view(3, 1, 1) + SIM_PATTERN_AMPLITUDE * self.tints[
            label
        ].view(3, 1, 1) * wave
        img = img + SIM_NOISE_STD * torch.randn(3, s, s, generator=gen)
        return img.clamp_(0.0, 1.0), label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img, label = self.generate(index)
        return self.transform(img), label


class DigitsDataset(Dataset):
    """8x8 grey digits held as one tensor ``[N, 1, 8, 8]`` in [0, 1]; the transform upscales."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        self.images = images
        self.labels = labels
        self.targets = labels.tolist()
        self.classes = [str(d) for d in range(10)]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), int(self.labels[index])


def load_digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled digits (1,797 images), split 80/20 stratified by class.

    Returns ``(train_images, train_labels, val_images, val_labels)``, images ``[N,1,8,8]``
    scaled from 0..16 to [0, 1].
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    train_idx, val_idx = train_test_split(
        np.arange(len(labels)),
        test_size=DIGITS_VAL_FRACTION,
        stratify=digits.target,
        random_state=DIGITS_SPLIT_SEED,
    )
    train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
    return images[train_idx], labels[train_idx], images[val_idx], labels[val_idx]
