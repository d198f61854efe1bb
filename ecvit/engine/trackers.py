"""Experiment trackers a run logs scalars to (``TRAIN.LOGGERS``): TensorBoard, W&B, MLflow.

Each backend takes the same two calls: :meth:`Tracker.log_step` for per-step scalars (train
loss, lr, images/s every ``TRAIN.LOG_EVERY_STEPS`` steps, x axis the global step) and
:meth:`Tracker.log_epoch` for the per-epoch row (x axis the epoch). ``csv`` is not a tracker
here: it is ``summary.csv``, written by :class:`ecvit.engine.outputs.RunOutputs`. Only rank 0
builds trackers. W&B and MLflow are optional extras, imported only when asked for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ecvit.config import Config, check_loggers, logger_names

def _numbers(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}


def _group(key: str) -> str:
    return "train" if key.startswith("train") or key in ("lr", "epoch_time") else "val"


class Tracker:
    """One backend; the default methods do nothing."""

    def log_step(self, scalars: dict[str, float], step: int) -> None:
        pass

    def log_epoch(self, row: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker(Tracker):
    """``tb/`` (per-epoch, step = epoch) and ``tb/steps`` (per-step, step = global step).

    Two writers keep the two x axes apart, so a resumed run purges each past its checkpoint.
    """

    def __init__(self, folder: Path, purge_epoch: int, purge_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.epochs = SummaryWriter(str(folder), purge_step=purge_epoch + 1 if purge_epoch else None)
        self.steps = SummaryWriter(str(folder / "steps"), purge_step=purge_step + 1 if purge_step else None)

    def log_step(self, scalars: dict[str, float], step: int) -> None:
        for key, value in scalars.items():
            self.steps.add_scalar(f"train_step/{key}", value, step)

    def log_epoch(self, row: dict[str, Any]) -> None:
        for key, value in _numbers(row).items():
            if key != "epoch":
                self.epochs.add_scalar(f"{_group(key)}/{key}", value, row["epoch"])
        self.epochs.flush()
        self.steps.flush()

    def close(self) -> None:
        self.epochs.close()
        self.steps.close()


class WandbTracker(Tracker):
    """A W&B run (``TRAIN.WANDB_PROJECT``; ``WANDB_MODE=offline`` keeps it on disk).

    Per-step scalars are plotted against ``global_step``, per-epoch ones against ``epoch``.
    """

    def __init__(self, cfg: Config, folder: Path) -> None:
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=cfg.train.wandb_project, name=folder.name, dir=str(folder),
                              config=cfg.to_dict(), reinit=True)
        self.run.define_metric("global_step")
        self.run.define_metric("train_step/*", step_metric="global_step")
        self.run.define_metric("epoch")
        for group in ("train", "val"):
            self.run.define_metric(f"{group}/*", step_metric="epoch")

    def log_step(self, scalars: dict[str, float], step: int) -> None:
        self.run.log({**{f"train_step/{k}": v for k, v in scalars.items()}, "global_step": step})

    def log_epoch(self, row: dict[str, Any]) -> None:
        values = _numbers(row)
        self.run.log({**{f"{_group(k)}/{k}": v for k, v in values.items() if k != "epoch"},
                      "epoch": values["epoch"]})

    def close(self) -> None:
        self.run.finish()


class MlflowTracker(Tracker):
    """An MLflow run in ``TRAIN.MLFLOW_URI`` (default: the file store ``<output-dir>/mlruns``),
    experiment ``TRAIN.MLFLOW_EXPERIMENT``; the config goes in as flattened params.

    A file store (``file:`` URI or a plain path) sets ``MLFLOW_ALLOW_FILE_STORE=true`` unless the
    environment says otherwise: MLflow 3 refuses file stores without it, and mlflow-skinny has
    no SQL backend.
    """

    def __init__(self, cfg: Config, folder: Path) -> None:
        from mlflow.tracking import MlflowClient

        uri = cfg.train.mlflow_uri or (folder / "mlruns").resolve().as_uri()
        if uri.startswith("file:") or "://" not in uri:
            # mlflow-skinny brings no database backend; its file store needs this opt-in
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        name = cfg.train.mlflow_experiment
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment_id, run_name=folder.name).info.run_id
        params = _flatten(cfg.to_dict())
        for key, value in params.items():
            self.client.log_param(self.run_id, key, str(value)[:500])

    def _log(self, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric
        import time

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in scalars.items()])

    def log_step(self, scalars: dict[str, float], step: int) -> None:
        self._log({f"train_step/{k}": v for k, v in scalars.items()}, step)

    def log_epoch(self, row: dict[str, Any]) -> None:
        values = _numbers(row)
        self._log({k: v for k, v in values.items() if k != "epoch"}, int(values["epoch"]))

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def build_trackers(cfg: Config, folder: Path, purge_epoch: int = 0, purge_step: int = 0) -> list[Tracker]:
    """The trackers ``TRAIN.LOGGERS`` asks for (call on rank 0 only)."""
    check_loggers(cfg)
    names = logger_names(cfg)
    trackers: list[Tracker] = []
    if "tensorboard" in names:
        trackers.append(TensorBoardTracker(folder / "tb", purge_epoch, purge_step))
    if "wandb" in names:
        trackers.append(WandbTracker(cfg, folder))
    if "mlflow" in names:
        trackers.append(MlflowTracker(cfg, folder))
    return trackers


__all__ = ["Tracker", "TensorBoardTracker", "WandbTracker", "MlflowTracker", "build_trackers"]
