"""One small ``ecvit train`` run (3 learnable classes in an image folder, 2 epochs at 32 px):
built once per session by ``conftest.pets_run`` for the tests that only read its outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("cat", "dog", "emu")
RUN = ["--img-size", "32", "--batch-size", "8", "--epochs", "2", "--device", "cpu", "--seed", "1"]


def train_argv(*argv: str) -> list[str]:
    """``ecvit train`` with the small run's flags; KEY VALUE overrides stay last."""
    return ["train", *RUN, *argv, "TRAIN.WARMUP_EPOCHS", "0"]


def make_folder(root: Path, classes=CLASSES, per_class: int = 6, seed: int = 0) -> Path:
    """An ImageNet-style folder dataset whose classes differ in mean colour (learnable)."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                base = np.zeros((20, 20, 3)) + 60 * c
                img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / name / f"{i}.png")
    return root
