"""One process or many: torchrun detection, process-group setup and exact reductions.

``torchrun`` (``python -m torch.distributed.run``) sets RANK / WORLD_SIZE / LOCAL_RANK;
when they are present the engine starts the process group itself (gloo on CPU, NCCL on
CUDA) with a finite timeout, so a rank that dies never leaves the others waiting forever.
The group is started once per process and kept until exit, so ``train`` followed by
``validate`` (``main.py --mode train_and_validate``) reuses it instead of rendezvousing twice.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ecvit.errors import UsageError

# How long a collective may wait for a missing rank before the survivors give up.
PROCESS_GROUP_TIMEOUT_S = 120


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: its rank, the number of processes, and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def setup(device: torch.device) -> DistInfo:
    """Under torchrun, join the process group (on this rank's GPU when ``device`` is CUDA)."""
    device_type = device.type
    if not launched_by_torchrun() and not dist.is_initialized():
        return DistInfo(0, 1, 0, torch.device(device_type))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device_type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UsageError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=PROCESS_GROUP_TIMEOUT_S))
        atexit.register(_destroy)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over ranks (in place) and return it; a no-op in one process."""
    if info.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_min(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics).

    DDP syncs buffers at the start of each forward, so after the last step every rank holds
    its own running statistics; evaluation must use the ones the checkpoint will hold.
    """
    if info.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def broadcast_text(text: str, info: DistInfo) -> str:
    """Rank 0's ``text`` on every rank (e.g. the run folder named from rank 0's clock)."""
    if not info.distributed:
        return text
    box = [text]
    dist.broadcast_object_list(box, src=0)
    return str(box[0])


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


# How gloo and NCCL report a peer that went away in the middle of a collective.
PEER_FAILURE_MARKERS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
                        "Timed out waiting", "NCCL communicator was aborted", "remote process exited")


def is_peer_failure(exc: BaseException) -> bool:
    """A collective that failed because another rank died (not a bug in this one)."""
    text = str(exc)
    return isinstance(exc, getattr(dist, "DistError", ())) or any(m in text for m in PEER_FAILURE_MARKERS)


def peer_failure_message(info: DistInfo, output_dir: object) -> str:
    """The survivor's one line: which rank failed (in a 2-process job, the other one), and
    that the checkpoints are whole (rank 0 writes them atomically, between collectives)."""
    others = [r for r in range(info.world_size) if r != info.rank]
    who = f"rank {others[0]}" if len(others) == 1 else f"another rank (one of {others})"
    return (f"rank {info.rank}: {who} of this {info.world_size}-process job failed or was killed, "
            f"so training stopped; the checkpoints in {output_dir} are whole (the last completed "
            "one resumes the run)")


def shard_indices(n: int, info: DistInfo) -> list[int]:
    """Rank r evaluates samples r, r+W, r+2W, ...: every sample exactly once, no padding."""
    return list(range(info.rank, n, info.world_size))


__all__ = ["DistInfo", "setup", "is_peer_failure", "peer_failure_message", "all_reduce_sum", "all_reduce_min", "barrier",
           "broadcast_buffers",
           "shard_indices", "launched_by_torchrun", "PROCESS_GROUP_TIMEOUT_S"]
