"""Data loaders for training (shuffled, per-rank) and evaluation (exact shards).

Training shuffles with ``DistributedSampler`` (also in one process) seeded by
``seed + epoch``, so the order of any epoch is a pure function of the seed and the epoch:
a resumed run sees exactly the batches an uninterrupted run would. Evaluation gives rank
r the samples r, r+W, ... with no padding, so every sample counts exactly once.

Streamed webdataset shards (:class:`~ecvit.data.sources.ShardedWebDataset`) need no sampler:
each rank reads its own shards (see there), the same number of batches on every rank, and
the epoch number reseeds their shuffle. A mid-epoch resume of such a source reads past the
batches already trained on (the shuffle buffer makes them the same count, not the same images).
"""

from __future__ import annotations

import itertools
import random
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from ecvit.config import Config
from ecvit.data import collate_batch
from ecvit.data.transforms import SplitErasingCollate
from ecvit.engine.distributed import DistInfo, shard_indices
from ecvit.engine.samplers import train_sampler
from ecvit.errors import UsageError


def _seed_worker(worker_id: int) -> None:
    """torch seeds each worker's torch and ``random``; NumPy is seeded from the same value."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class TrainLoader:
    """A DataLoader whose shuffle order and worker seeds depend only on (seed, epoch, rank)."""

    def __init__(self, dataset: Dataset, cfg: Config, info: DistInfo, drop_last: bool) -> None:
        self.seed = cfg.seed
        self.rank = info.rank
        workers = cfg.data.workers
        streamed = isinstance(dataset, IterableDataset)
        if streamed:
            dataset = dataset.for_rank(info.rank, info.world_size, workers)
        self.sampler = None if streamed else train_sampler(dataset, cfg, info)
        self.generator = torch.Generator()
        self.batch_size = cfg.train.batch_size
        self.options = dict(
            batch_size=cfg.train.batch_size, num_workers=workers, collate_fn=train_collate(cfg, collate_batch),
            drop_last=drop_last, generator=self.generator,
            worker_init_fn=_seed_worker if workers else None,
            pin_memory=info.device.type == "cuda" and cfg.data.pin_memory, persistent_workers=False,
        )
        self.dataset = dataset
        self.loader = DataLoader(dataset, sampler=self.sampler, **self.options)
        if len(self.loader) == 0:
            raise UsageError(f"the training set has {len(dataset)} images per process, fewer than one "
                             f"batch of TRAIN.BATCH_SIZE {cfg.train.batch_size}")

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int, skip_batches: int = 0) -> Iterator:
        """Batches of ``epoch`` (0-based), from batch ``skip_batches`` on.

        Skipped batches of a map-style dataset are never loaded (no image read, no RNG drawn), so a run resumed from
        a mid-epoch checkpoint sees exactly the batches the uninterrupted run saw next.
        """
        (self.dataset if self.sampler is None else self.sampler).set_epoch(epoch)
        self.generator.manual_seed(self.seed + 1_000_003 * self.rank + epoch)
        if not skip_batches:
            return iterate(self.loader)
        if self.sampler is None:  # a stream cannot seek: read past the batches already done
            return itertools.islice(iterate(self.loader), skip_batches, None)
        rest = list(self.sampler)[skip_batches * self.batch_size:]
        return iterate(DataLoader(self.dataset, sampler=rest, **self.options))


def train_collate(cfg: Config, collate: Callable[[list[Any]], Any]) -> Callable[[list[Any]], Any]:
    """``collate``, with random erasing on the second half of each batch under AUG.RESPLIT."""
    if cfg.aug.resplit and cfg.aug.reprob > 0:
        return SplitErasingCollate(collate, cfg.aug)
    return collate


def eval_loader(dataset: Dataset, cfg: Config, info: DistInfo) -> DataLoader:
    """Sequential batches over this rank's exact shard of ``dataset``."""
    if isinstance(dataset, IterableDataset):
        shard = dataset.for_rank(info.rank, info.world_size, cfg.data.workers)
    else:
        shard = Subset(dataset, shard_indices(len(dataset), info))
    return DataLoader(shard, batch_size=cfg.test.batch_size, shuffle=False,
                      num_workers=cfg.data.workers, collate_fn=collate_batch,
                      pin_memory=info.device.type == "cuda" and cfg.data.pin_memory)


def iterate(loader: DataLoader) -> Iterator:
    """Iterate ``loader``; a UsageError raised in a worker comes back as its one-line self.

    DataLoader re-raises worker errors with the worker's traceback in the message; for a
    user-facing error (e.g. a corrupt image without DATA.SKIP_BAD_IMAGES) only the
    original message is kept.
    """
    try:
        yield from loader
    except UsageError as exc:
        text = str(exc)
        if "Original Traceback" in text:
            last = [line for line in text.strip().splitlines() if line.strip()][-1]
            message = last.split(": ", 1)[1] if ": " in last else last
            raise type(exc)(message) from None
        raise


__all__ = ["TrainLoader", "eval_loader", "iterate"]
