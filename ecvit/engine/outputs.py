"""Everything a run leaves for people to read: metrics.json, summary.csv, curves.png,
TensorBoard events, the per-epoch summary line, and validate's confusion.png.

Only rank 0 creates these. The full per-epoch history also lives in the checkpoint, so a
resumed run rewrites the files from it and never duplicates or loses an epoch.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ecvit.config import Config, logger_names, save_config
from ecvit.engine.trackers import build_trackers
from ecvit.errors import StorageError, UsageError, printable
from ecvit.io.checkpoint import storage_message

# Columns every epoch record has, in the order summary.csv shows them.
COLUMNS = ("epoch", "train_loss", "val_loss", "val_top1", "val_top5", "best_top1", "lr",
           "epoch_time", "num_bad_images")


# Below this much free space an output folder counts as full: a run could not even write
# its config and first checkpoint.
MIN_FREE_BYTES = 1 << 20


def check_output_dir(folder: str | Path, what: str) -> None:
    """Refuse, in one line, an output folder no run could write to; nothing is created.

    ``what`` names the setting (``OUTPUT_DIR``, ``--out``). The folder itself or its nearest
    existing parent must be a writable directory on a file system that is not full.
    """
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists() or p.is_symlink()), Path("."))
    if not existing.is_dir():
        shown = "is" if existing == folder else f"is inside {existing}, which is"
        raise UsageError(f"{what} {folder}: {shown} an existing file, not a directory; "
                         "pick another folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {folder}: {existing} is not writable (read-only file system "
                         "or no permission); pick another folder")
    try:
        fs = os.statvfs(existing)
    except OSError:
        return
    free = fs.f_bavail * fs.f_frsize
    if free < MIN_FREE_BYTES:
        raise UsageError(f"{what} {folder}: disk full ({free} bytes free on the file system of "
                         f"{existing}); free some space or pick another folder")


# ---------------------------------------------------------------- run folders

RUNS_ROOT = Path("output")  # where runs without --output-dir go: RUNS_ROOT/train/<run>
LATEST = RUNS_ROOT / "latest"  # points at the newest of those runs
# Files that show a run got past its first epoch: a fresh start never writes over them.
EPOCH_FILES = ("checkpoint.pth", "model_best.pth", "metrics.json", "summary.csv")
# What a run writes into its folder (``model_<epoch>.pth`` too): removed by --overwrite-output-dir.
RUN_FILES = EPOCH_FILES + ("curves.png", "train.log", "config.yaml", "tb",
                           "model_best.validate.json", "model_best.confusion.png")


def new_run_dir(model: str, img_size: int) -> Path:
    """``output/train/<YYYYmmdd-HHMMSS>-<model>-<img_size>`` (timm's layout), with ``-1``,
    ``-2`` ... appended when a run started in the same second has the name."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in model)
    base = RUNS_ROOT / "train" / f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}-{img_size}"
    path, n = base, 0
    while path.exists() or path.is_symlink():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def earlier_run_files(folder: str | Path) -> list[str]:
    """The files in ``folder`` that an earlier run left after finishing an epoch."""
    folder = Path(folder)
    found = [name for name in EPOCH_FILES if (folder / name).exists()]
    return found + sorted(p.name for p in folder.glob("model_[0-9]*.pth"))


def remove_run_files(folder: Path) -> None:
    """Remove what an earlier run wrote into ``folder`` (``--overwrite-output-dir``); other
    files stay."""
    for path in [folder / name for name in RUN_FILES] + list(folder.glob("model_[0-9]*.pth")):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"--overwrite-output-dir: could not remove {path}: "
                               f"{exc.strerror or exc}") from None


def point_latest(run_dir: Path) -> bool:
    """Point ``output/latest`` at ``run_dir`` (a relative symlink, replaced atomically);
    False where the file system has no symlinks or refuses (the run goes on)."""
    tmp = LATEST.with_name(f".{LATEST.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(os.path.relpath(run_dir, LATEST.parent), tmp)
        os.replace(tmp, LATEST)
        return True
    except OSError:
        tmp.unlink(missing_ok=True)
        return False


def latest_run() -> Path:
    """The folder ``output/latest`` points at, named as such (``output/latest`` itself when
    it is not a link)."""
    try:
        return LATEST.parent / os.readlink(LATEST)
    except OSError:
        return LATEST


def _replace_atomically(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` then rename over ``path``; a refused write is one StorageError line."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(storage_message(path, exc, "version")) from None


def write_config(cfg: Config, path: Path) -> None:
    """The run's ``config.yaml``, replaced atomically (a full disk is one StorageError line)."""
    _replace_atomically(path, lambda p: save_config(cfg, p))


def write_json(obj: Any, path: Path) -> None:
    _replace_atomically(path, lambda p: p.write_text(json.dumps(obj, indent=2, allow_nan=False,
                                                                default=_json_default) + "\n"))


def _json_default(value: Any) -> Any:
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLog:
    """Prints a line and appends it to ``train.log``, so the log holds what the terminal showed.

    ``enabled=False`` (ranks other than 0) prints and writes nothing.
    """

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled

    def __call__(self, line: str) -> None:
        if not self.enabled:
            return
        print(line, flush=True)
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        except OSError as exc:
            raise StorageError(storage_message(self.path, exc, "log")) from None


class RunOutputs:
    """Writes the history after every epoch and per-step scalars to the trackers of
    ``TRAIN.LOGGERS``; ``enabled=False`` on ranks other than 0 (nothing is created)."""

    def __init__(self, output_dir: Path, enabled: bool, purge_epoch: int = 0,
                 cfg: Config | None = None, purge_step: int = 0) -> None:
        self.dir = output_dir
        self.enabled = enabled
        cfg = cfg if cfg is not None else Config()
        self.csv = "csv" in logger_names(cfg)
        self.trackers = build_trackers(cfg, output_dir, purge_epoch, purge_step) if enabled else []

    def step_done(self, scalars: dict[str, float], step: int) -> None:
        """Per-step scalars (``loss``, ``lr``, ``img_per_s``) at global step ``step``."""
        for tracker in self.trackers:
            tracker.log_step(scalars, step)

    def epoch_done(self, history: list[dict[str, Any]]) -> None:
        if not self.enabled:
            return
        rows = [{k: _finite(v) for k, v in row.items()} for row in history]
        write_json(rows, self.dir / "metrics.json")
        if self.csv:
            self._write_csv(rows)
        for tracker in self.trackers:
            tracker.log_epoch(rows[-1])
        plot_curves(rows, self.dir / "curves.png")

    def _write_csv(self, rows: list[dict[str, Any]]) -> None:
        columns = list(COLUMNS) + [k for k in rows[-1] if k not in COLUMNS]

        def write(path: Path) -> None:
            with path.open("w", newline="") as fh:
                out = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
                out.writeheader()
                out.writerows(rows)

        _replace_atomically(self.dir / "summary.csv", write)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []


def summary_line(row: dict[str, Any], epochs: int) -> str:
    """One line per epoch, e.g. ``epoch 3/30 train_loss 1.2345 val_loss ... bad_images 0``."""
    width = len(str(epochs))
    parts = [f"epoch {row['epoch']:>{width}}/{epochs}",
             f"train_loss {row['train_loss']:.4f}",
             f"val_loss {row['val_loss']:.4f}",
             f"top1 {row['val_top1']:.2f}",
             f"top5 {row['val_top5']:.2f}"]
    if "ema_val_top1" in row:
        parts.append(f"ema_top1 {row['ema_val_top1']:.2f}")
    parts += [f"best {row['best_top1']:.2f}",
              f"lr {row['lr']:.3e}",
              f"time {row['epoch_time']:.1f}s",
              f"bad_images {row['num_bad_images']}"]
    return "  ".join(parts)


def _figure(width: float, height: float):
    # Figure + Agg canvas directly: never touches pyplot's global backend of the caller.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    """Train/val loss and val top-1 (and EMA top-1 when present) over epochs."""
    epochs = [r["epoch"] for r in rows]
    fig = _figure(10, 4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], marker="o", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in rows], marker="o", label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [r["val_top1"] for r in rows], marker="o", label="val top-1")
    if "ema_val_top1" in rows[-1]:
        ax_acc.plot(epochs, [r.get("ema_val_top1") for r in rows], marker=".", label="EMA top-1")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="validation top-1")
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _replace_atomically(path, lambda p: fig.savefig(p, format="png"))


def plot_confusion(confusion: torch.Tensor, class_names: list[str], path: Path) -> None:
    """Row-normalised confusion matrix (true class down, predicted class across)."""
    class_names = [printable(name) for name in class_names]
    counts = confusion.double()
    rates = counts / counts.sum(1, keepdim=True).clamp_min(1)
    n = len(class_names)
    size = min(max(5.0, 0.35 * n + 2), 30.0)
    fig = _figure(size, size)
    ax = fig.subplots()
    image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if n <= 50:
        ax.set_xticks(range(n), class_names, rotation=90)
        ax.set_yticks(range(n), class_names)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if rates[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    fig.tight_layout()
    _replace_atomically(path, lambda p: fig.savefig(p, format="png"))


__all__ = ["RunLog", "RunOutputs", "check_output_dir", "new_run_dir", "earlier_run_files",
           "remove_run_files", "point_latest", "latest_run", "RUNS_ROOT", "LATEST", "RUN_FILES", "write_config", "summary_line", "plot_curves", "plot_confusion", "write_json", "COLUMNS"]
