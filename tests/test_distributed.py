"""Multi-process runs on CPU (gloo) through torchrun: training, exact sharded validation,
and a failing rank that ends the job without a partial checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _engine_helpers import tiny_cfg
from ecvit.io.checkpoint import read_checkpoint
from ecvit.engine import distributed as D
from ecvit.engine import train, validate
from ecvit.errors import UsageError

ENTRY = str(Path(__file__).with_name("_engine_entry.py"))
# SKIP_BAD_IMAGES: the ranks agree on skipping emptied batches every step (none here)
SMALL = ("TRAIN.EPOCHS", "2", "DATA.TRAIN_SIZE", "64", "DATA.VAL_SIZE", "101",
         "TRAIN.BATCH_SIZE", "8", "MODEL.DROP_PATH_RATE", "0.1", "DATA.SKIP_BAD_IMAGES", "true")


def torchrun(mode: str, out: Path, *overrides: str, env: dict | None = None,
             timeout: int = 240) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           ENTRY, mode, str(out), *overrides]
    return subprocess.run(cmd, env={**clean, "OMP_NUM_THREADS": "1", **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_two_process_train_and_exact_validation(tmp_path):
    out = tmp_path / "run"
    proc = torchrun("train_validate", out, *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # only rank 0 logs and writes: one summary line per epoch
    lines = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    assert len(json.loads((out / "metrics.json").read_text())) == 2
    ckpt = read_checkpoint(out / "checkpoint.pth")
    assert ckpt["epoch"] == 2 and len(ckpt["rng_ranks"]) == 2
    assert not torch.equal(ckpt["rng_ranks"][0]["torch"], ckpt["rng_ranks"][1]["torch"])

    two = json.loads((out / "val_w2" / "checkpoint.validate.json").read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = tiny_cfg(out / "val_w1", *SMALL)
        one = validate(cfg, str(out / "checkpoint.pth"))
    finally:
        torch.set_num_threads(threads)
    assert one["num_samples"] == two["num_samples"] == 101  # odd: no sample dropped or doubled
    assert one["top1"] == two["top1"] and one["top5"] == two["top5"]
    assert one["per_class"] == two["per_class"]
    assert one["loss"] == pytest.approx(two["loss"], rel=1e-6)
    # the numbers training reported for its last epoch are the same exact numbers
    last = json.loads((out / "metrics.json").read_text())[-1]
    assert last["val_top1"] == one["top1"]
    assert one["top5"] is None  # 4 classes: validate reports no top-5 (always 100 there)


@pytest.mark.slow
def test_a_failing_rank_ends_the_job_and_leaves_whole_checkpoints(tmp_path):
    out = tmp_path / "run"
    proc = torchrun("train", out, *SMALL, "TRAIN.EPOCHS", "3",
                    env={"FAIL_RANK": "1", "FAIL_EPOCH": "2"}, timeout=200)
    assert proc.returncode != 0
    assert "injected failure on rank 1 in epoch 2" in proc.stdout + proc.stderr
    ckpt = read_checkpoint(out / "checkpoint.pth")
    assert ckpt["epoch"] == 1
    assert read_checkpoint(out / "model_best.pth")["epoch"] == 1
    assert not list(out.glob(".*.tmp"))


def test_sync_bn_on_cpu_processes_is_refused(tmp_path, monkeypatch):
    two_ranks = D.DistInfo(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    monkeypatch.setattr(D, "setup", lambda cfg: two_ranks)
    with pytest.raises(UsageError, match="TRAIN.SYNC_BN needs CUDA"):
        train(tiny_cfg(tmp_path, "TRAIN.SYNC_BN", "true"))


def test_torchrun_is_detected_from_its_environment(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert not D.launched_by_torchrun()
    info = D.setup(torch.device("cpu"))
    assert (info.rank, info.world_size, info.distributed, info.is_main) == (0, 1, False, True)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert D.launched_by_torchrun()


def test_shards_cover_every_sample_once():
    for n in (0, 1, 7, 101):
        for world in (1, 2, 3, 8):
            shards = [D.shard_indices(n, D.DistInfo(r, world, r, torch.device("cpu")))
                      for r in range(world)]
            flat = sorted(i for shard in shards for i in shard)
            assert flat == list(range(n))


@pytest.mark.slow
def test_a_killed_rank_leaves_the_survivor_one_line_naming_it(tmp_path):
    out = tmp_path / "run"
    proc = torchrun("train", out, *SMALL, "TRAIN.EPOCHS", "3",
                    env={"FAIL_RANK": "1", "FAIL_EPOCH": "2", "FAIL_MODE": "kill"}, timeout=200)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: rank 0: rank 1 of this 2-process job failed or was killed, so "
                      f"training stopped; the checkpoints in {out} are whole (the last completed "
                      "one resumes the run)"], proc.stderr[-3000:]
    assert "gloo" not in proc.stderr and "Connection closed" not in proc.stderr
    assert read_checkpoint(out / "checkpoint.pth")["epoch"] == 1
    assert not list(out.glob(".*.tmp"))
