"""TRAIN.LOGGERS: TensorBoard, CSV, W&B (offline) and MLflow (file store) get per-step and
per-epoch scalars from rank 0; a missing optional package is one usage line."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from _engine_helpers import tiny_cfg
from ecvit.config import load_config
from ecvit.engine import train
from ecvit.engine import trackers
from ecvit.errors import UsageError

PROBE = "engine_probe_net"
STEP_KEYS = {"loss", "lr", "img_per_s"}


def _wandb_records(run_dir: Path) -> list[dict]:
    """The ``history`` rows of an offline W&B run, read back from its ``.wandb`` file.

    The file is a 7-byte ``:W&B`` header, then LevelDB-log records (4-byte checksum, 2-byte
    little-endian length, 1-byte type: 1 full, 2 first, 3 middle, 4 last) in 32 KiB blocks,
    each record a serialised ``wandb_internal_pb2.Record``.
    """
    import json

    from wandb.proto import wandb_internal_pb2

    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    block, pos, parts, payloads = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:  # zero padding to the end of the block
            pos += (block - pos % block) % block
            continue
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            payloads.append(parts)
    rows = []
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


@pytest.mark.slow
def test_every_logger_gets_step_and_epoch_scalars(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the tracker sets it too; restored here
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    out = tmp_path / "run"
    torch.set_num_threads(1)
    cfg = tiny_cfg(out, "TRAIN.LOGGERS", "tensorboard,csv,wandb,mlflow", "TRAIN.LOG_EVERY_STEPS", "1",
                   model=PROBE)
    train(cfg)
    steps = 2 * 3  # 2 epochs of 48 images in batches of 16
    assert (out / "summary.csv").is_file() and (out / "metrics.json").is_file()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(str(out / "tb" / "steps")).Reload()
    assert {f"train_step/{k}" for k in STEP_KEYS} <= set(tb.Tags()["scalars"])
    assert [e.step for e in tb.Scalars("train_step/loss")] == list(range(1, steps + 1))
    tb = EventAccumulator(str(out / "tb")).Reload()
    assert [e.step for e in tb.Scalars("val/val_top1")] == [1, 2]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("ecvit").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["TRAIN.LR"] == "0.002"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_step/loss")] == list(range(1, steps + 1))
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_top1")] == [1, 2]
    assert set(run.data.metrics) >= {"train_step/lr", "train_step/img_per_s", "train_loss", "val_loss"}

    (run_dir,) = (out / "wandb").glob("offline-run-*")
    rows = _wandb_records(run_dir)
    step_rows = [r for r in rows if "train_step/loss" in r]
    assert [r["global_step"] for r in step_rows] == list(range(1, steps + 1))
    assert all({f"train_step/{k}" for k in STEP_KEYS} <= set(r) for r in step_rows)
    assert [r["epoch"] for r in rows if "val/val_top1" in r] == [1, 2]


@pytest.mark.slow
def test_csv_only_writes_no_event_files(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    train(tiny_cfg(out, "TRAIN.LOGGERS", "csv", "TRAIN.EPOCHS", "1", model=PROBE))
    assert (out / "summary.csv").is_file() and not (out / "tb").exists()


@pytest.mark.parametrize("name,extra", [("wandb", "ecvit[wandb]"), ("mlflow", "ecvit[mlflow]")])
def test_missing_package_is_one_line_with_the_extra(name, extra, monkeypatch, capsys, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda module, *a: None if module == name else real(module, *a))
    with pytest.raises(UsageError, match=rf"pip install '{re_escape(extra)}'"):
        load_config(None, ["TRAIN.LOGGERS", f"tensorboard,{name}"])
    from ecvit.cli import main

    assert main(["train", "--output-dir", str(tmp_path / "x"), "TRAIN.LOGGERS", name]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TRAIN.LOGGERS" in err[0] and extra in err[0]
    assert not (tmp_path / "x").exists()


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


@pytest.mark.parametrize("overrides,message", [
    (["TRAIN.LOGGERS", "tensorboard,comet"], "unknown logger 'comet'"),
    (["TRAIN.LOG_EVERY_STEPS", "-1"], "TRAIN.LOG_EVERY_STEPS"),
])
def test_bad_logger_settings_are_usage_errors(overrides, message):
    with pytest.raises(UsageError, match=message):
        load_config(None, overrides)
