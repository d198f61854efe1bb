"""``train(cfg)``: the one training loop every front end calls.

Plain and linear in the manner of torchvision's reference scripts: build data, model,
optimizer, scheduler; resume if a checkpoint is there; then per epoch train, evaluate,
save (atomically: ``model_best.pth`` first, then ``checkpoint.pth``), and write outputs.
Resuming continues bit for bit on CPU: the checkpoint keeps every RNG state, the
optimizer, scheduler, scaler, EMA and history, and each epoch's data order is a pure
function of ``(seed, epoch)``.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch
from timm.utils import ModelEmaV3, dispatch_clip_grad
from torch import nn
from tqdm import tqdm

from ecvit.config import Config, logger_names
from ecvit.engine import distributed as D
from ecvit.engine.builder import build_model, training_spec
from ecvit.engine.evaluate import evaluate
from ecvit.engine.loaders import TrainLoader, eval_loader
from ecvit.engine.optim import (build_mixup, build_optimizer, build_scheduler, build_train_loss,
                                scaled_lr, updates_per_epoch)
from ecvit.engine.outputs import (RunLog, RunOutputs, point_latest, remove_run_files, summary_line,
                                  write_config)
from ecvit.engine.plan import RunPlan, resolve
from ecvit.engine.precision import apply_cudnn
from ecvit.engine.runlock import RunLock
from ecvit.engine.state import (clean_stale_temporaries, load_module_state, rng_state,
                                seed_everything, set_rng_state)
from ecvit.errors import CheckpointError, DataError, Preempted, TrainingError, UsageError
from ecvit.io.checkpoint import save_atomic
from ecvit.models import set_cpu_autocast_training
from ecvit.version import __version__


# What clusters send before preempting a job (SLURM: SIGUSR1 with --signal, then SIGTERM).
PREEMPTION_SIGNALS = ("SIGTERM", "SIGUSR1")


def train(plan: RunPlan | Config) -> dict[str, Any]:
    """Run a plan (a Config is resolved into one first); outputs go to its output dir.

    Returns the last epoch's metrics (``epoch``, ``train_loss``, ``val_loss``, ``val_top1``,
    ``val_top5``, ``best_top1``, ...). Under torchrun every rank calls this; rank 0 writes
    and holds the run directory's lock for the whole run.
    """
    if not isinstance(plan, RunPlan):
        plan = resolve(plan)
    apply_cudnn(plan.cfg.cudnn, plan.device)
    info = D.setup(plan.device)
    if plan.new_folder:  # named from each rank's clock: rank 0's name is the run's
        plan.cfg.output_dir = D.broadcast_text(plan.cfg.output_dir, info)
    if plan.resume.mode == "finished":
        return _finished(plan, info)
    lock = RunLock(plan.cfg.output_dir) if info.is_main else contextlib.nullcontext()
    with lock:
        try:
            return _Run(plan, info).fit()
        except RuntimeError as exc:
            if info.distributed and D.is_peer_failure(exc):
                raise TrainingError(D.peer_failure_message(info, plan.cfg.output_dir)) from None
            raise


def _finished(plan: RunPlan, info: D.DistInfo) -> dict[str, Any]:
    """A run already at its last epoch: say so (exit 0) instead of pretending to resume."""
    r, epochs = plan.resume, plan.cfg.train.epochs
    if info.is_main:
        print(f"{plan.cfg.output_dir}: this run is already finished ({r.path} is at epoch "
              f"{r.epoch}/{epochs}); nothing to train. Raise --epochs to continue it, or start "
              "over in another --output-dir (or over it with --overwrite-output-dir).", flush=True)
    history = (r.state or {}).get("history") or []
    return dict(history[-1]) if history else {}


def _load_state(target: Any, state: dict[str, Any], path: Path, field: str) -> None:
    """``target.load_state_dict(state)``; a state that does not fit is one line naming the field."""
    try:
        target.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path} cannot be resumed from: {field} does not fit this run "
                              f"({detail})") from None


class _Run:
    """The state of one training run; ``fit`` is the epoch loop."""

    def __init__(self, plan: RunPlan, info: D.DistInfo) -> None:
        cfg = plan.cfg
        self.plan, self.cfg, self.info, self.device = plan, cfg, info, info.device
        t = cfg.train
        self.precision = plan.precision
        self.autocast = self.precision.autocast
        if t.sync_bn and info.distributed and self.device.type != "cuda":
            raise UsageError("TRAIN.SYNC_BN needs CUDA devices (PyTorch's SyncBatchNorm is GPU-only); "
                             "set TRAIN.SYNC_BN false for CPU runs")
        self.out = Path(cfg.output_dir)
        self.log = RunLog(self.out / "train.log", enabled=info.is_main)
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            if plan.resume.replace:
                remove_run_files(self.out)
            if plan.new_folder:
                point_latest(self.out)
            clean_stale_temporaries(self.out)
            write_config(cfg, self.out / "config.yaml")
        seed_everything(cfg.seed + info.rank)

        self.data = plan.datasets
        self.num_classes = int(plan.num_classes)
        self.model = build_model(cfg, self.num_classes).to(self.device)
        if t.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        # the models' CPU precision policy: opt-in, for training under CPU bf16 autocast only
        set_cpu_autocast_training(self.model, self.precision.cpu_autocast_training)
        if t.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.mixup = build_mixup(cfg, self.num_classes)
        self.criterion = build_train_loss(cfg, self.mixup)
        self.train_loader = TrainLoader(self.data.train, cfg, info, drop_last=self.mixup is not None)
        self.val_loader = eval_loader(self.data.val, cfg, info)
        self.optimizer = build_optimizer(self.model, cfg, scaled_lr(cfg, info.world_size))
        self.updates_per_epoch = updates_per_epoch(len(self.train_loader), t.accum_steps)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.updates_per_epoch)
        self.scaler = self.precision.grad_scaler()
        self.ema = ModelEmaV3(self.model, decay=t.ema_decay) if t.ema else None
        self.net, self.ddp = self._wrap(self.model)

        self.start_epoch, self.best_top1 = 0, 0.0
        self.history: list[dict[str, Any]] = []
        self.resumes: list[dict[str, Any]] = []
        self.last_checkpoint: tuple[Path, int] | None = None
        self.progress: dict[str, Any] | None = None  # where a mid-epoch checkpoint stopped
        for line in plan.describe():
            self.log(line)
        self._resume()
        self.outputs = RunOutputs(self.out, enabled=info.is_main, purge_epoch=self.start_epoch,
                                  cfg=cfg, purge_step=self.start_epoch * len(self.train_loader))

    # ------------------------------------------------------------------ setup helpers

    def _wrap(self, model: nn.Module) -> tuple[nn.Module, nn.Module | None]:
        """DDP (with SyncBN when asked) and torch.compile around the bare model."""
        net, ddp = model, None
        if self.info.distributed:
            if self.cfg.train.sync_bn:
                net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = ddp = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        elif self.cfg.train.sync_bn and self.info.is_main:
            print("note: TRAIN.SYNC_BN has no effect in a single process", flush=True)
        if self.cfg.train.compile:
            self.log("torch.compile: the first steps of training and of evaluation compile the "
                     "model (this can take minutes), later steps run the compiled code")
            net = torch.compile(net)
        return net, ddp

    def _resume(self) -> None:
        r = self.plan.resume
        if r.mode != "resume":
            return
        ckpt, path = r.state, Path(r.path)
        load_module_state(self.model, ckpt["model"], str(path))
        planned_wd = [group["weight_decay"] for group in self.optimizer.param_groups]
        _load_state(self.optimizer, ckpt["optimizer"], path, "optimizer")
        # The saved state brings back the old weight decay; the plan's (new) one wins, the
        # learning rate comes from the schedule of the current config.
        for group, wd in zip(self.optimizer.param_groups, planned_wd):
            group["weight_decay"] = wd
        if self.scaler is not None and ckpt.get("scaler"):
            _load_state(self.scaler, ckpt["scaler"], path, "scaler")
        if self.ema is not None:
            if "model_ema" in ckpt:
                load_module_state(self.ema.module, ckpt["model_ema"], f"{path} (model_ema)")
            else:
                self.ema.set(self.model)
        self.start_epoch = int(ckpt["epoch"])
        self.best_top1 = float(ckpt.get("best_top1", 0.0))
        self.history = [dict(r) for r in ckpt.get("history", []) if r["epoch"] <= self.start_epoch]
        self.resumes = [dict(x) for x in ckpt.get("resumes", [])]
        if r.changes:
            self.resumes.append({"epoch": self.start_epoch,
                                 "changes": {k: [old, new] for k, old, new in r.changes}})
        self.last_checkpoint = (path, self.start_epoch)
        self.progress = ckpt.get("progress")
        if self.progress and self.progress["steps"] != len(self.train_loader):
            raise CheckpointError(
                f"{path} was written in the middle of epoch {self.start_epoch + 1} (step "
                f"{self.progress['step']}/{self.progress['steps']}); this run has "
                f"{len(self.train_loader)} steps per epoch (another TRAIN.BATCH_SIZE or process "
                "count): resume it with the settings it was written with")
        # The schedule is a function of the update count and the *current* config (so a run
        # resumed with more TRAIN.EPOCHS follows the longer cosine); the saved scheduler
        # state is kept in the checkpoint for reference only.
        self.scheduler.step_update(int((self.progress or {}).get("updates",
                                                                 self.start_epoch * self.updates_per_epoch)))
        ranks = ckpt.get("rng_ranks") or [ckpt["rng"]]
        if self.info.rank < len(ranks):
            set_rng_state(ranks[self.info.rank], str(path))
        else:
            seed_everything(self.cfg.seed + self.info.rank + self.start_epoch)

    # ------------------------------------------------------------------------ the loop

    def fit(self) -> dict[str, Any]:
        epochs = self.cfg.train.epochs
        try:
            with self._preemption_signals(), torch.autograd.set_detect_anomaly(self.cfg.train.detect_anomaly):
                for epoch in range(self.start_epoch, epochs):
                    self._epoch(epoch)
                    if self._stop_requested():
                        raise self._preempted(epoch + 1, 0)
        finally:
            self.outputs.close()
        self._summary()
        return dict(self.history[-1]) if self.history else {}

    def _epoch(self, epoch: int) -> None:
        start = time.perf_counter()
        self.scheduler.step(epoch)  # per-epoch schedules (TRAIN.SCHED_ON_EPOCHS); per-update ones ignore it
        train_loss, train_bad = self._train_one_epoch(epoch)
        D.broadcast_buffers(self.model, self.info)  # evaluate exactly what gets saved
        if self.ema is not None:
            D.broadcast_buffers(self.ema.module, self.info)
        val = evaluate(self.model, self.val_loader, self.num_classes, self.info, self.autocast,
                       self.cfg.train.channels_last)
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_loss": val.loss,
            "val_top1": val.top1,
            "val_top5": val.top5,
            "best_top1": 0.0,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "epoch_time": 0.0,
            "num_bad_images": train_bad + val.num_bad,
        }
        score = val.top1
        if self.ema is not None:  # with EMA on, the EMA weights are the ones validate/predict use
            ema_val = evaluate(self.ema.module, self.val_loader, self.num_classes, self.info,
                               self.autocast, self.cfg.train.channels_last)
            row.update(ema_val_loss=ema_val.loss, ema_val_top1=ema_val.top1, ema_val_top5=ema_val.top5)
            score = ema_val.top1
        self._check_finite(epoch, row)
        is_best = score > self.best_top1 or not self.history
        self.best_top1 = max(self.best_top1, score)
        row["best_top1"] = self.best_top1
        row["epoch_time"] = time.perf_counter() - start
        self.history.append(row)
        self._save(epoch + 1, is_best)
        D.barrier(self.info)  # no rank runs ahead of (or returns before) a written checkpoint
        if self.info.is_main:
            self.outputs.epoch_done(self.history)
            self.log(summary_line(row, self.cfg.train.epochs))

    def _summary(self) -> None:
        if not self.history:
            return
        metric = "ema_val_top1" if self.ema is not None else "val_top1"
        best = max(self.history, key=lambda r: r.get(metric, 0.0))
        last = self.history[-1]
        self.log(f"done: best epoch {best['epoch']} top-1 {best[metric]:.2f}"
                 f"{' (EMA weights)' if self.ema is not None else ''}, last epoch {last['epoch']} "
                 f"top-1 {last[metric]:.2f}; wrote {self.out / 'model_best.pth'}, "
                 f"{self.out / 'checkpoint.pth'}, metrics.json, curves.png, train.log"
                 f"{self._logger_outputs()}")

    def _logger_outputs(self) -> str:
        """``, summary.csv, tb/, ...``: what TRAIN.LOGGERS added to the output folder."""
        where = {"csv": "summary.csv", "tensorboard": "tb/", "wandb": "wandb/", "mlflow": "mlflow run"}
        return "".join(f", {where[name]}" for name in logger_names(self.cfg))

    def _train_one_epoch(self, epoch: int) -> tuple[float, int]:
        """One pass over the training shard; returns (mean loss over all ranks, bad images).

        A mid-epoch checkpoint (TRAIN.SAVE_EVERY_STEPS, or a preemption signal) is written
        between optimizer updates; resuming from one continues at the next batch with the
        epoch's running sums, so the epoch ends exactly as if never stopped.
        """
        cfg, info = self.cfg, self.info
        accum = cfg.train.accum_steps
        n = len(self.train_loader)
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        progress, self.progress = (self.progress or {}), None
        first = int(progress.get("step", 0)) if progress.get("epoch") == epoch else 0
        loss_sum = torch.tensor(float(progress.get("loss_sum", 0.0)) if first else 0.0, dtype=torch.float64)
        seen, bad = (int(progress.get("seen", 0)), int(progress.get("bad", 0))) if first else (0, 0)
        pending = False  # gradients accumulated since the last optimizer step
        updates = int(progress["updates"]) if first else epoch * self.updates_per_epoch
        tick = time.perf_counter()
        bar = tqdm(total=n, initial=first, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False,
                   dynamic_ncols=True, disable=None if info.is_main else True)
        batches = self.train_loader.epoch(epoch, skip_batches=first)
        for step, (images, labels, num_bad) in enumerate(batches, start=first):
            bad += int(num_bad)
            if self.mixup is not None and labels.numel() % 2:
                images, labels = images[:-1], labels[:-1]  # Mixup pairs samples: keep it even
            is_update = (step + 1) % accum == 0 or step + 1 == n
            if self._skip_empty(labels.numel()):
                if is_update and pending:  # the update still gets what its group gathered
                    updates = self._update(updates)
                    pending = False
                bar.update()
                if is_update and step + 1 < n:
                    self._between_updates(epoch, step + 1, n, updates, loss_sum, seen, bad)
                continue
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            if cfg.train.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = labels
            if self.mixup is not None:
                images, targets = self.mixup(images, labels)
            group = min(accum, n - (step // accum) * accum)  # micro-batches in this update
            sync = (self.ddp.no_sync() if self.ddp is not None and not is_update
                    else contextlib.nullcontext())
            with sync:
                with self.autocast():
                    loss = self.criterion(self.net(images), targets)
                value = self._checked_loss(loss, labels.numel(), epoch, step, n)
                loss = loss / group
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            loss_sum += value * labels.numel()
            seen += labels.numel()
            pending = True
            if is_update:
                updates = self._update(updates)
                pending = False
            elapsed = time.perf_counter() - tick
            bar.set_postfix(loss=f"{loss_sum.item() / max(seen, 1):.4f}",
                            lr=f"{self.optimizer.param_groups[0]['lr']:.2e}",
                            img_s=f"{seen * info.world_size / max(elapsed, 1e-9):.0f}", refresh=False)
            bar.update()
            every = cfg.train.log_every_steps
            if every and (step + 1) % every == 0 and info.is_main:
                self.outputs.step_done({"loss": value, "lr": float(self.optimizer.param_groups[0]["lr"]),
                                        "img_per_s": seen * info.world_size / max(elapsed, 1e-9)},
                                       epoch * n + step + 1)
            if cfg.train.print_freq and (step + 1) % cfg.train.print_freq == 0:
                self.log(f"epoch {epoch + 1} step {step + 1}/{n}: loss {loss_sum.item() / max(seen, 1):.4f}, "
                         f"lr {self.optimizer.param_groups[0]['lr']:.3g}")
            if is_update and step + 1 < n:
                self._between_updates(epoch, step + 1, n, updates, loss_sum, seen, bad)
        bar.close()
        totals = D.all_reduce_sum(torch.tensor([loss_sum.item(), float(seen), float(bad)],
                                               dtype=torch.float64, device=self.device), info).cpu()
        if totals[1] == 0:
            raise DataError(f"epoch {epoch + 1}: no readable training image in the whole epoch "
                            f"({int(totals[2])} skipped)")
        return float(totals[0] / totals[1]), int(totals[2])

    # -------------------------------------------------------------- preemption, mid-epoch

    @contextlib.contextmanager
    def _preemption_signals(self):
        """SIGTERM and SIGUSR1 (what clusters and SLURM send before preempting) only set a
        flag: the current step finishes, a resumable checkpoint is written, the run stops."""
        self.signal_received = 0
        names = [n for n in PREEMPTION_SIGNALS if hasattr(signal, n)]
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def note(signum: int, frame: Any) -> None:
            self.signal_received = signum

        previous = {n: signal.signal(getattr(signal, n), note) for n in names}
        try:
            yield
        finally:
            for n, handler in previous.items():
                signal.signal(getattr(signal, n), handler)

    def _stop_requested(self) -> bool:
        """Whether any rank received a preemption signal (all ranks agree)."""
        flag = float(bool(getattr(self, "signal_received", 0)))
        if self.info.distributed:
            total = D.all_reduce_sum(torch.tensor([flag], device=self.device), self.info)
            flag = float(total.item())
        return flag > 0

    def _between_updates(self, epoch: int, steps: int, n: int, updates: int,
                         loss_sum: torch.Tensor, seen: int, bad: int) -> None:
        """After an optimizer update inside the epoch: save every SAVE_EVERY_STEPS updates,
        and on a preemption signal save, then stop."""
        stop = self._stop_requested()
        every = self.cfg.train.save_every_steps
        if stop or (every and updates % every == 0):
            progress = {"epoch": epoch, "step": steps, "steps": n, "updates": updates,
                        "loss_sum": float(loss_sum.item()), "seen": seen, "bad": bad}
            self._save(epoch, is_best=False, progress=progress)
        if stop:
            raise self._preempted(epoch, steps)

    def _preempted(self, epoch: int, steps: int) -> Preempted:
        signum = getattr(self, "signal_received", 0) or signal.SIGTERM
        name = signal.Signals(signum).name
        where = f"epoch {epoch + 1}, after step {steps}/{len(self.train_loader)}" if steps else \
            f"the end of epoch {epoch}"
        return Preempted(f"received {name}: stopped at {where} and wrote the resumable checkpoint "
                         f"{self.out / 'checkpoint.pth'}; {self._how_to_resume()}",
                         exit_code=128 + int(signum))

    def _how_to_resume(self) -> str:
        if self.plan.new_folder:  # the same command again would start a new run folder
            return f"resume with the same command plus --output-dir {self.out}"
        return "run the same command again to resume from there"

    def _skip_empty(self, batch: int) -> bool:
        """A batch emptied by skipped images is skipped, by every rank together."""
        if self.info.distributed and self.cfg.data.skip_bad_images:
            smallest = D.all_reduce_min(torch.tensor([batch], device=self.device), self.info)
            return int(smallest.item()) == 0
        return batch == 0

    def _checked_loss(self, loss: torch.Tensor, batch: int, epoch: int, step: int, n: int) -> float:
        """The loss value, or a TrainingError when any rank's forward pass gave inf/NaN.

        Only the forward loss counts: with fp16 the scaler may still skip a step whose
        gradients overflowed, which is normal and handled by the scaler.
        """
        value = loss.detach().float()
        if self.info.distributed:
            flag = (~torch.isfinite(value)).to(torch.float32)
            flag = D.all_reduce_sum(flag.reshape(1), self.info)
            bad_ranks = int(flag.item())
        else:
            bad_ranks = int(not torch.isfinite(value).item())
        if bad_ranks:
            raise TrainingError(self._non_finite_message(value.item(), epoch, step, n))
        return value.item()

    def _check_finite(self, epoch: int, row: dict[str, Any]) -> None:
        """A diverged epoch (non-finite validation loss or weights) never becomes a checkpoint
        or the best: training stops naming the real last good checkpoint.

        Every rank holds the same (all-reduced) loss and the same weights, so all decide alike.
        """
        losses = [row["val_loss"]] + ([row["ema_val_loss"]] if "ema_val_loss" in row else [])
        modules = [self.model] + ([self.ema.module] if self.ema is not None else [])
        bad = sum(not torch.isfinite(t).all() for m in modules for t in m.state_dict().values()
                  if t.is_floating_point())
        if all(math.isfinite(v) for v in losses) and not bad:
            return
        what = (f"validation loss {row['val_loss']}" + (f", {bad} weight tensors non-finite" if bad else ""))
        where = f"epoch {epoch + 1}/{self.cfg.train.epochs} diverged ({what}); it was not saved"
        raise TrainingError(f"{where}; training stopped, {self._kept()}. Try a lower TRAIN.LR "
                            "or TRAIN.CLIP_GRAD.")

    def _kept(self) -> str:
        if self.last_checkpoint is None:
            return "no checkpoint was written yet"
        path, done = self.last_checkpoint
        return f"the last good checkpoint is {path} (epoch {done}), left intact"

    def _non_finite_message(self, value: float, epoch: int, step: int, n: int) -> str:
        where = f"non-finite loss ({value}) at epoch {epoch + 1}/{self.cfg.train.epochs}, step {step + 1}/{n}"
        return f"{where}; training stopped, {self._kept()}. Try a lower TRAIN.LR or TRAIN.CLIP_GRAD."

    def _update(self, updates: int) -> int:
        """Optimizer step, then the per-update LR schedule and EMA; returns the update count."""
        self._optimizer_step()
        updates += 1
        self.scheduler.step_update(updates)
        if self.ema is not None:
            self.ema.update(self.model, step=updates)
        return updates

    def _optimizer_step(self) -> None:
        clip = self.cfg.train.clip_grad
        if self.scaler is not None:
            if clip > 0:
                self.scaler.unscale_(self.optimizer)
                dispatch_clip_grad(self.model.parameters(), clip, mode="norm")
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if clip > 0:
                dispatch_clip_grad(self.model.parameters(), clip, mode="norm")
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------------- saving

    def _save(self, epoch: int, is_best: bool, progress: dict[str, Any] | None = None) -> None:
        """All ranks contribute their RNG state; rank 0 writes model_best, then checkpoint.

        ``progress`` (a mid-epoch checkpoint) says how far into epoch ``epoch`` (0-based
        then, completed epochs otherwise) the run got: step, update count, running sums.
        """
        rngs = [rng_state()]
        if self.info.distributed:
            gathered: list[Any] = [None] * self.info.world_size
            torch.distributed.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if not self.info.is_main:
            return
        ckpt = self._checkpoint(epoch, rngs)
        if progress is not None:
            ckpt["progress"] = progress
        # Best first: a kill between the two writes replays this epoch, and rewrites the best.
        if is_best:
            save_atomic(ckpt, self.out / "model_best.pth")
        if self.cfg.train.save_all and progress is None:  # the official model_{epoch}.pth, 0-based
            save_atomic(ckpt, self.out / f"model_{epoch - 1}.pth")
        save_atomic(ckpt, self.out / "checkpoint.pth")
        self.last_checkpoint = (self.out / "checkpoint.pth", epoch)

    def _checkpoint(self, epoch: int, rngs: list[dict[str, Any]]) -> dict[str, Any]:
        d = self.data
        spec = training_spec(self.cfg, list(d.class_names), list(d.mean), list(d.std), d.crop_pct,
                             has_ema=self.ema is not None)
        ckpt: dict[str, Any] = {
            "model": self.model.state_dict(),
            **spec.to_meta(),
            "config": self.cfg.to_dict(),
            "epoch": epoch,
            "best_top1": self.best_top1,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rngs[0],
            "rng_ranks": rngs,
            "history": self.history,
            "resumes": self.resumes,
            "version": __version__,
        }
        if self.scaler is not None:
            ckpt["scaler"] = self.scaler.state_dict()
        if self.ema is not None:
            ckpt["model_ema"] = self.ema.module.state_dict()
        return ckpt


__all__ = ["train"]
