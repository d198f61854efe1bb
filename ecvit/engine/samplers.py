"""Training samplers: which sample indices a rank sees in an epoch.

``DATA.SAMPLER default``: ``DistributedSampler`` (shuffled, seeded by ``seed + epoch``), also
in one process. ``repeated_aug``: repeated augmentation (Hoffer et al. 2020; DeiT and the
official CvT-21 recipe): each image appears three times per epoch, its copies spread over
different ranks (so each is augmented differently), and each rank keeps
``floor(N // 256 * 256 / world)`` samples, i.e. an epoch still covers about N images.
As in the official code, it applies to multi-process runs only; one process shuffles plainly.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from ecvit.config import Config
from ecvit.engine.distributed import DistInfo

REPEATS = 3


class RepeatedAugSampler(Sampler[int]):
    """Each index ``REPEATS`` times per epoch, consecutive copies on consecutive ranks."""

    def __init__(self, size: int, num_replicas: int, rank: int, seed: int = 0) -> None:
        self.size, self.num_replicas, self.rank, self.seed = size, num_replicas, rank, seed
        self.epoch = 0
        self.num_samples = math.ceil(size * REPEATS / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.num_selected = size // 256 * 256 // num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=g).repeat_interleave(REPEATS).tolist()
        order += order[: self.total_size - len(order)]
        return iter(order[self.rank : self.total_size : self.num_replicas][: self.num_selected])

    def __len__(self) -> int:
        return self.num_selected


def train_sampler(dataset: Dataset, cfg: Config, info: DistInfo) -> Sampler[int]:
    """The DATA.SAMPLER of this run (see the module docstring)."""
    if cfg.data.sampler == "repeated_aug" and info.world_size > 1:
        return RepeatedAugSampler(len(dataset), info.world_size, info.rank, cfg.seed)
    return DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                              seed=cfg.seed, drop_last=False)


__all__ = ["RepeatedAugSampler", "train_sampler"]
