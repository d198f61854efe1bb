"""Checkpoints and resuming: an interrupted run continues bit for bit (issue 3), and a
training process killed with SIGKILL at random moments never loses its last checkpoint
(issue 5)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from _engine_helpers import assert_same_weights, tiny_cfg, weights
from ecvit.engine import resolve, train, trainer
from ecvit.errors import CheckpointError, UsageError
from ecvit.io.checkpoint import read_checkpoint

ENTRY = str(Path(__file__).with_name("_engine_entry.py"))
# Every RNG consumer on: shuffling, flips, drop path, Mixup/CutMix (NumPy), EMA, clipping.
RECIPE = ("TRAIN.EPOCHS", "3", "MODEL.DROP_PATH_RATE", "0.1", "AUG.MIXUP", "0.8",
          "AUG.CUTMIX", "1.0", "AUG.LABEL_SMOOTHING", "0.1", "TRAIN.EMA", "true",
          "TRAIN.EMA_DECAY", "0.9", "TRAIN.CLIP_GRAD", "1.0", "TRAIN.ACCUM_STEPS", "2",
          "DATA.TRAIN_SIZE", "64")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _history(out: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "epoch_time"}
            for row in json.loads((out / "metrics.json").read_text())]


def _assert_same_run(a: Path, b: Path) -> None:
    assert_same_weights(weights(a / "checkpoint.pth"), weights(b / "checkpoint.pth"))
    assert_same_weights(weights(a / "checkpoint.pth", "model_ema"),
                        weights(b / "checkpoint.pth", "model_ema"))
    opt_a = read_checkpoint(a / "checkpoint.pth")["optimizer"]["state"]
    opt_b = read_checkpoint(b / "checkpoint.pth")["optimizer"]["state"]
    for i in opt_a:
        for key in opt_a[i]:
            assert torch.equal(opt_a[i][key], opt_b[i][key])
    assert _history(a) == _history(b)


def test_interrupted_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    train(tiny_cfg(tmp_path / "whole", *RECIPE))

    calls = {"n": 0}
    original = trainer._Run._optimizer_step

    def interrupt_mid_epoch_two(self):
        calls["n"] += 1
        if calls["n"] == 3:  # 2 updates per epoch: the 3rd is in epoch 2
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(trainer._Run, "_optimizer_step", interrupt_mid_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(tmp_path / "split", *RECIPE))
    monkeypatch.undo()
    assert read_checkpoint(tmp_path / "split" / "checkpoint.pth")["epoch"] == 1
    train(tiny_cfg(tmp_path / "split", *RECIPE))
    _assert_same_run(tmp_path / "whole", tmp_path / "split")


def test_checkpoint_is_weights_only_and_plain(tmp_path):
    train(tiny_cfg(tmp_path, "TRAIN.EPOCHS", "1", "AUG.MIXUP", "0.8"))
    ckpt = torch.load(tmp_path / "checkpoint.pth", map_location="cpu", weights_only=True)

    def plain(obj) -> bool:
        if isinstance(obj, dict):
            return all(isinstance(k, (str, int)) and plain(v) for k, v in obj.items())
        if isinstance(obj, (list, tuple)):
            return all(plain(v) for v in obj)
        return obj is None or isinstance(obj, (torch.Tensor, str, int, float, bool))

    assert plain(ckpt) and not isinstance(ckpt["rng"]["numpy"][1], np.ndarray)
    assert set(ckpt["rng"]) >= {"torch", "python", "numpy"}


def test_explicit_resume_and_auto_resume_off(tmp_path, capsys):
    train(tiny_cfg(tmp_path / "a", "TRAIN.EPOCHS", "1"))
    # TRAIN.RESUME from another folder continues counting epochs there
    result = train(tiny_cfg(tmp_path / "b", "TRAIN.EPOCHS", "2",
                            "TRAIN.RESUME", str(tmp_path / "a" / "checkpoint.pth")))
    assert result["epoch"] == 2
    assert [r["epoch"] for r in json.loads((tmp_path / "b" / "metrics.json").read_text())] == [1, 2]
    assert "resume from" in capsys.readouterr().out
    # a finished run resumed again has nothing left to do
    assert train(tiny_cfg(tmp_path / "b", "TRAIN.EPOCHS", "2")) == result | {"epoch_time": result["epoch_time"]}
    # AUTO_RESUME false does not start over another run's files unless told to replace them
    with pytest.raises(UsageError, match="holds another run .checkpoint.pth, model_best.pth.*--overwrite-output-dir"):
        train(tiny_cfg(tmp_path / "a", "TRAIN.EPOCHS", "1", "TRAIN.AUTO_RESUME", "false"))
    again = train(resolve(tiny_cfg(tmp_path / "a", "TRAIN.EPOCHS", "1", "TRAIN.AUTO_RESUME", "false"),
                          overwrite_output_dir=True))
    assert again["epoch"] == 1


def test_resume_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="TRAIN.RESUME: checkpoint not found"):
        train(tiny_cfg(tmp_path / "x", "TRAIN.RESUME", str(tmp_path / "nope.pth")))
    train(tiny_cfg(tmp_path / "probe", "TRAIN.EPOCHS", "1", model="engine_probe_net"))
    with pytest.raises(CheckpointError, match="auto-resume: .* is another run .model engine_probe_net -> ecvit_tiny.*--overwrite-output-dir"):
        train(tiny_cfg(tmp_path / "probe", "TRAIN.EPOCHS", "2"))
    torch.save({"model": {}}, tmp_path / "weights_only.pth")
    with pytest.raises(CheckpointError, match="cannot be resumed from"):
        train(tiny_cfg(tmp_path / "y", "TRAIN.RESUME", str(tmp_path / "weights_only.pth")))


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run(tmp_path):
    """Kill -9 three times at seeded random moments; every time checkpoint.pth is whole, and
    the resumed run ends with exactly the weights of a run that was never killed.

    Each life is killed at a random fraction of an epoch after its second finished epoch
    (the epoch length measured in that life), so the kills land inside the run whatever
    the machine's speed: three lives finish at most 9 of the 10 epochs.
    """
    recipe = (*RECIPE, "TRAIN.EPOCHS", "10", "DATA.TRAIN_SIZE", "48")
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    rng = random.Random(5)
    seen_epochs = []
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, ENTRY, "train", str(out), *recipe], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout.readline().strip() == "READY"
        stamps = []
        for line in proc.stdout:
            if line.startswith("epoch "):
                stamps.append(time.monotonic())
                if len(stamps) == 2:
                    break
        time.sleep(rng.uniform(0.0, 0.9) * (stamps[1] - stamps[0]))
        proc.kill()
        proc.wait()
        proc.stdout.close()
        if (out / "checkpoint.pth").exists():
            ckpt = read_checkpoint(out / "checkpoint.pth")  # never a partial file
            assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
            seen_epochs.append(ckpt["epoch"])
    assert len(seen_epochs) == 3 and max(seen_epochs) < 10, f"the kills missed the run: {seen_epochs}"
    assert seen_epochs == sorted(seen_epochs)
    done = subprocess.run([sys.executable, ENTRY, "train", str(out), *recipe], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not list(out.glob(".*.tmp"))

    train(tiny_cfg(tmp_path / "whole", *recipe))
    _assert_same_run(tmp_path / "whole", out)
