"""Throughput, latency, memory and achieved FLOP/s of one model on this machine.

What is measured, and how:

- **throughput** (img/s): ``batch_size / median step time`` over ``iters`` timed steps
  after ``warmup`` untimed ones. A step is one forward pass (inference, ``inference_mode``)
  or one full training step (forward, cross-entropy, backward, AdamW step).
- **latency** (ms): the same step on a single image, ``latency_iters`` times after warm-up;
  median and 90th percentile.
- **peak memory** (MiB) of one more step after the timed ones. CUDA:
  ``torch.cuda.max_memory_allocated`` (everything on the device at the peak). CPU: the bytes of the tensors kept between steps
  (weights, buffers, gradients, AdamW state, inputs) plus the growth of the process's
  resident-set high-water mark (``VmHWM`` in ``/proc/self/status``, reset through
  ``/proc/self/clear_refs`` after freed heap pages were returned with ``malloc_trim``) over
  the resident set before the steps: the transient activations and workspaces. It is an
  approximation (allocator slack is included); where the reset is refused the lifetime
  ``ru_maxrss`` is used and the result says so. ``tracemalloc`` cannot be used: it only
  sees Python's allocations, not torch's.
- **MACs** per image from :func:`ecvit.flops.count_macs` (one forward pass). Achieved
  GFLOP/s is ``2 * MACs * img/s`` for inference and ``3 * 2 * MACs * img/s`` for a
  training step (the usual approximation: backward costs about twice the forward).
- **matmul peak** (:func:`measure_matmul_peak`): the best GFLOP/s of large square
  matmuls in the benchmark's compute dtype, so the achieved rate can be read as a
  fraction of what this machine's matrix units deliver.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import platform
import resource
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ecvit.config import MAX_BATCH, MAX_IMG_SIZE
from ecvit.engine.outputs import check_output_dir
from ecvit.engine.precision import AMP_DTYPES, Precision, resolve_device
from ecvit.errors import UsageError
from ecvit.flops import count_macs, count_params
from ecvit.io.checkpoint import write_atomic
from ecvit.models import create_model, fuse, set_cpu_autocast_training



def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--amp`` (None when off), by the engine's precision rules."""
    precision = Precision(amp, device.type, flag="--amp")
    return precision.dtype if precision.enabled else None


def autocast_context(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    return Precision(amp, device.type, flag="--amp").autocast()


PROBE_SIZE = 256


def _probe_seconds_per_flop(dtype: torch.dtype, dev: torch.device, gen: torch.Generator) -> float:
    """Seconds per FLOP of one small product, to keep the peak measurement within seconds."""
    a = torch.randn(PROBE_SIZE, PROBE_SIZE, generator=gen).to(device=dev, dtype=dtype)
    torch.mm(a, a)
    _sync(dev)
    t0 = time.perf_counter()
    torch.mm(a, a)
    _sync(dev)
    return (time.perf_counter() - t0) / (2 * PROBE_SIZE**3)


def measure_matmul_peak(
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    sizes: tuple[int, ...] = (1024, 2048),
    repeats: int = 3,
) -> float:
    """Best GFLOP/s of ``n x n @ n x n`` matmuls in ``dtype`` over ``sizes`` (2 n^3 FLOPs each).

    The inputs are created in ``dtype`` directly (what autocast hands to the kernels), and
    the best of ``repeats`` timed runs per size is kept after one warm-up run.
    """
    dev = torch.device(device)
    best = 0.0
    gen = torch.Generator(device="cpu").manual_seed(0)
    seconds_per_flop = _probe_seconds_per_flop(dtype, dev, gen)
    # A CPU without native bf16 (no AVX-512 BF16/AMX) emulates it ~1000x slower than fp32:
    # sizes whose one product would take over half a second are skipped, the probe size kept.
    sizes = tuple(n for n in sizes if 2 * n**3 * seconds_per_flop < 0.5) or (PROBE_SIZE,)
    for n in sizes:
        a = torch.randn(n, n, generator=gen).to(device=dev, dtype=dtype)
        b = torch.randn(n, n, generator=gen).to(device=dev, dtype=dtype)
        torch.mm(a, b)
        _sync(dev)
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            _sync(dev)
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def _status_kib(key: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (Linux), or None elsewhere."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_heap() -> None:
    """Return freed heap pages to the OS so the resident set reflects live memory."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def _peak_memory(device: torch.device, live_bytes: Callable[[], int]) -> Iterator[dict[str, Any]]:
    """Peak memory of the steps run inside the context, in bytes (see the module docstring).

    CUDA: ``max_memory_allocated`` (everything on the device at its peak). CPU: the bytes
    of the tensors that live across steps (``live_bytes()``: weights, buffers, gradients,
    optimizer state, inputs) plus the growth of the resident set's high-water mark over
    its trimmed level before the steps, i.e. the transient activations and workspaces.
    """
    out: dict[str, Any] = {}
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        _sync(device)
        out["bytes"] = torch.cuda.max_memory_allocated(device)
        out["method"] = "torch.cuda.max_memory_allocated"
        return
    live = live_bytes()
    _release_free_heap()
    start_kib = _status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current resident set
        reset = True
    except OSError:
        reset = False
    yield out
    if start_kib is None:
        out["bytes"], out["method"] = None, "unavailable (no /proc/self/status)"
    elif reset:
        peak_kib = _status_kib("VmHWM") or start_kib
        out["bytes"] = live + max(0, peak_kib - start_kib) * 1024
        out["method"] = "live tensors + VmHWM growth (approximate)"
    else:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        out["bytes"] = live + max(0, peak_kib - start_kib) * 1024
        out["method"] = "live tensors + ru_maxrss growth (lifetime peak: upper bound)"


@dataclass
class Workload:
    """One model prepared for repeated inference or training steps on fixed random inputs.

    ``step(x)`` runs one inference forward or one training step (forward, cross-entropy on
    fixed random labels, backward, AdamW). ``time_steps`` returns per-step seconds. The
    comparison script interleaves ``time_steps`` calls of several workloads.
    """

    model: nn.Module
    batch_size: int = 32
    img_size: int = 224
    amp: str = "off"
    compile: bool = False
    train: bool = False
    channels_last: bool = False
    device: str | torch.device = "cpu"
    in_chans: int = 3
    lr: float = 1e-4
    logits_fn: Callable[[Any], torch.Tensor] | None = None
    _inputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)
        check_amp(self.amp, self.device)
        if self.batch_size < 1 or self.img_size < 1:
            raise UsageError("--batch-size and --img-size must be positive")
        model = self.model.to(self.device)
        if self.train:  # train as `ecvit train` does: its CPU precision policy for CPU bf16

            precision = Precision(self.amp, self.device.type, flag="--amp")
            set_cpu_autocast_training(model, precision.cpu_autocast_training)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.train(self.train)
        self.model = model
        self.runner = model
        if self.compile:
            # Inference graphs are frozen: weights become constants that inductor folds and
            # pre-packs for the matmul library (the deployment form; +20-40% on CPU).
            options = None if self.train else {"freezing": True}
            self.runner = torch.compile(model, dynamic=False, options=options)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=self.lr) if self.train else None
        self.scaler = torch.amp.GradScaler("cuda") if self.train and self.amp == "fp16" else None

    def inputs(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed seeded images and labels for ``batch_size`` (the same for every model)."""
        if batch_size not in self._inputs:
            gen = torch.Generator().manual_seed(batch_size)
            x = torch.randn(batch_size, self.in_chans, self.img_size, self.img_size, generator=gen)
            y = torch.randint(0, 10, (batch_size,), generator=gen)
            x = x.to(self.device)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            self._inputs[batch_size] = (x, y.to(self.device))
        return self._inputs[batch_size]

    def _logits(self, out: Any) -> torch.Tensor:
        if self.logits_fn is not None:
            return self.logits_fn(out)
        return out

    def step(self, batch_size: int | None = None) -> None:
        x, y = self.inputs(batch_size or self.batch_size)
        if not self.train:
            with torch.inference_mode(), autocast_context(self.amp, self.device):
                self._logits(self.runner(x))
            return
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        with autocast_context(self.amp, self.device):
            loss = F.cross_entropy(self._logits(self.runner(x)).float(), y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()

    def live_bytes(self) -> int:
        """Bytes of the tensors kept between steps: weights, buffers, grads, AdamW state, inputs."""
        seen: set[int] = set()
        tensors = [*self.model.parameters(), *self.model.buffers()]
        tensors += [p.grad for p in self.model.parameters() if p.grad is not None]
        if self.optimizer is not None:
            tensors += [v for st in self.optimizer.state.values() for v in st.values()
                        if isinstance(v, torch.Tensor)]
        tensors += [t for pair in self._inputs.values() for t in pair]
        total = 0
        for t in tensors:
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
        return total

    def time_steps(self, n: int, batch_size: int | None = None) -> list[float]:
        """Seconds of each of ``n`` steps (device synchronised around each)."""
        times = []
        for _ in range(n):
            _sync(self.device)
            t0 = time.perf_counter()
            self.step(batch_size)
            _sync(self.device)
            times.append(time.perf_counter() - t0)
        return times


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated ``q``-th percentile (0-100) of ``values``."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def peak_dtype(amp: str) -> torch.dtype:
    """The matmul dtype whose peak an ``--amp`` setting should be compared to."""
    return AMP_DTYPES.get(amp, torch.float32)


def flops_per_mac(train: bool) -> int:
    """FLOPs counted per forward MAC: 2 for inference; 6 for a training step (backward = 2x forward)."""
    return 6 if train else 2


def benchmark_model(
    model: nn.Module,
    batch_size: int = 32,
    img_size: int = 224,
    amp: str = "off",
    compile: bool = False,
    train: bool = False,
    channels_last: bool = False,
    device: str | torch.device = "cpu",
    warmup: int = 3,
    iters: int = 10,
    latency_iters: int | None = None,
    macs: int | None = None,
    matmul_peak_gflops: float | None = None,
    in_chans: int = 3,
) -> dict[str, Any]:
    """Measure one model; returns a flat dict (see the module docstring for the method).

    Keys: ``batch_size, img_size, amp, compile, train, channels_last, device, params,
    macs_per_img, throughput_img_s, step_ms_median, step_ms_p90, latency_ms_median,
    latency_ms_p90, peak_memory_mib, memory_method, gflops_per_img, achieved_gflop_s,
    matmul_peak_gflop_s, fraction_of_peak``. ``macs`` is counted with
    :func:`ecvit.flops.count_macs` unless given; ``matmul_peak_gflop_s`` and
    ``fraction_of_peak`` are None unless ``matmul_peak_gflops`` is given.
    """
    if warmup < 0 or iters < 1:
        raise UsageError("warm-up must be >= 0 and iterations >= 1")
    dev = resolve_device(device)
    check_amp(amp, dev)
    if macs is None:
        macs = count_macs(model.to(dev), img_size, in_chans=in_chans)
    params = count_params(model)
    work = Workload(model, batch_size=batch_size, img_size=img_size, amp=amp, compile=compile,
                    train=train, channels_last=channels_last, device=dev, in_chans=in_chans)

    work.time_steps(max(warmup, 1 if compile else 0))
    step_times = work.time_steps(iters)
    with _peak_memory(dev, work.live_bytes) as mem:  # a separate step: trimming costs time
        work.step()
    step_s = statistics.median(step_times)
    throughput = batch_size / step_s

    n_lat = latency_iters if latency_iters is not None else max(iters, 10)
    work.time_steps(max(warmup, 1 if compile else 0), batch_size=1)
    lat = work.time_steps(n_lat, batch_size=1)

    gflops_per_img = flops_per_mac(train) * macs / 1e9
    achieved = gflops_per_img * throughput
    return {
        "batch_size": batch_size,
        "img_size": img_size,
        "amp": amp,
        "compile": compile,
        "train": train,
        "channels_last": channels_last,
        "device": str(dev),
        "params": params,
        "macs_per_img": macs,
        "throughput_img_s": throughput,
        "step_ms_median": step_s * 1e3,
        "step_ms_p90": percentile(step_times, 90) * 1e3,
        "latency_ms_median": statistics.median(lat) * 1e3,
        "latency_ms_p90": percentile(lat, 90) * 1e3,
        "peak_memory_mib": None if mem.get("bytes") is None else mem["bytes"] / 2**20,
        "memory_method": mem.get("method"),
        "gflops_per_img": gflops_per_img,
        "achieved_gflop_s": achieved,
        "matmul_peak_gflop_s": matmul_peak_gflops,
        "fraction_of_peak": achieved / matmul_peak_gflops if matmul_peak_gflops else None,
    }


def machine_info(device: str | torch.device = "cpu") -> dict[str, Any]:
    """CPU model, core count, torch version and GPU name: what a result table must state."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            fields = dict(ln.split(":", 1) for ln in fh.read().split("\n\n")[0].splitlines() if ":" in ln)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        cpu = fields.get("model name", cpu)
        if "cpu family" in fields:
            cpu += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
        with open("/proc/cpuinfo") as fh:
            flags = next((ln.split(":", 1)[1].split() for ln in fh if ln.startswith("flags")), [])
    except OSError:
        flags = []
    import os

    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_bf16": any(f in flags for f in ("avx512_bf16", "amx_bf16")),
        "cpu_matrix_flags": [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16")
                             if f in flags],
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": None,
    }
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(dev)
    try:
        with open("/proc/loadavg") as fh:
            info["loadavg_1min_at_start"] = float(fh.read().split()[0])
    except OSError:
        pass
    return info


def format_result_table(name: str, r: dict[str, Any]) -> str:
    """A two-column, human-readable table of one ``benchmark_model`` result."""

    def f(v: Any, spec: str) -> str:
        return "n/a" if v is None else format(v, spec)

    mode = "training step (fwd+bwd+AdamW)" if r["train"] else "inference"
    rows = [
        ("model", name),
        ("mode", mode),
        ("device", r["device"]),
        ("amp / compile / channels_last", f"{r['amp']} / {r['compile']} / {r['channels_last']}"),
        ("batch size x image", f"{r['batch_size']} x {r['img_size']}px"),
        ("params", f"{r['params'] / 1e6:.2f} M"),
        ("MACs per image", f"{r['macs_per_img'] / 1e9:.3f} G"),
        ("throughput", f"{r['throughput_img_s']:.1f} img/s"),
        ("step time median / p90", f"{r['step_ms_median']:.1f} / {r['step_ms_p90']:.1f} ms"),
        ("batch-1 latency median / p90", f"{r['latency_ms_median']:.2f} / {r['latency_ms_p90']:.2f} ms"),
        ("peak memory", f"{f(r['peak_memory_mib'], '.1f')} MiB ({r['memory_method']})"),
        ("achieved", f"{r['achieved_gflop_s']:.1f} GFLOP/s"),
        ("matmul peak", f"{f(r['matmul_peak_gflop_s'], '.1f')} GFLOP/s"),
        ("fraction of peak", f"{f(r['fraction_of_peak'] and 100 * r['fraction_of_peak'], '.1f')} %"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def benchmark_command(args: argparse.Namespace) -> int:
    """``ecvit benchmark``: build ``args.model``, measure it, print a table, write ``--json``.

    Inference runs the inference form (``ecvit.fuse``: BatchNorm folded); a training
    benchmark keeps the plain model. Returns the exit code.
    """
    dev = resolve_device(getattr(args, "device", None), flag="--device")
    amp = getattr(args, "amp", None) or "off"
    check_amp(amp, dev)
    batch_size = int(getattr(args, "batch_size", None) or 32)
    img_size = getattr(args, "img_size", None)
    train = bool(getattr(args, "train", False))
    warmup = getattr(args, "warmup", None)
    iters = getattr(args, "iters", None)
    if batch_size < 1 or (img_size is not None and img_size < 1):
        raise UsageError("--batch-size and --img-size must be positive")
    if batch_size > MAX_BATCH or (img_size is not None and img_size > MAX_IMG_SIZE):
        raise UsageError(f"--batch-size must be at most {MAX_BATCH} and --img-size at most "
                         f"{MAX_IMG_SIZE}")
    json_path = getattr(args, "json", None)
    if json_path:
        parent = Path(json_path).parent
        if Path(json_path).is_dir():
            raise UsageError(f"--json {json_path} is a directory; name the file to write")
        if not parent.is_dir():
            raise UsageError(f"--json {json_path}: directory {parent} does not exist")
        check_output_dir(parent, "--json")

    model = create_model(args.model, img_size=img_size)
    if img_size is None:  # the model's own resolution
        cfg = getattr(model, "pretrained_cfg", None) or {}
        img_size = int(cfg.get("input_size", (3, 224, 224))[-1])
    fused = not train  # inference runs the inference form (ecvit.fuse); training the plain model
    if fused:
        model = fuse(model)
    peak = measure_matmul_peak(peak_dtype(amp), dev)
    result = benchmark_model(
        model, batch_size=batch_size, img_size=img_size, amp=amp,
        compile=bool(getattr(args, "compile", False)), train=train,
        channels_last=bool(getattr(args, "channels_last", False)), device=dev,
        warmup=3 if warmup is None else int(warmup), iters=10 if iters is None else int(iters),
        matmul_peak_gflops=peak,
    )
    result = {"model": args.model, "fused": fused, **result, "machine": machine_info(dev)}
    print(format_result_table(args.model + (" (fused)" if fused else ""), result))
    if json_path:
        text = (json.dumps(result, indent=2) + "\n").encode()
        write_atomic(json_path, lambda fh: fh.write(text), what="file")
        print(f"wrote {json_path}")
    return 0


__all__ = [
    "Workload", "benchmark_model", "benchmark_command", "measure_matmul_peak", "machine_info",
    "format_result_table", "percentile", "resolve_device", "check_amp", "autocast_context",
    "peak_dtype",
    "flops_per_mac",
]
