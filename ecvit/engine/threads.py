"""CPU_THREADS: a thread count that stays fast when other processes share the cores.

PyTorch runs each CPU kernel on all its OpenMP threads and waits for the slowest at the
end. When another busy process holds one of the cores, the thread that shares it gets the
core only in scheduler time slices, and every kernel waits for it: a small model's step,
thousands of short kernels, becomes 3-10x slower (``benchmarks/NOTES.md``). One thread fewer
than the busy cores avoids that wait; on a quiet machine all threads are fastest.

``CPU_THREADS auto`` (the default for training on the CPU) finds out which case holds by
measuring: it times a few training steps at each candidate count (all threads, one fewer,
half, one), keeps the fastest, and measures again every :data:`RECHECK_SECONDS` or as soon as
steps become :data:`SLOWDOWN` times slower than when the count was chosen (another process
started). An integer fixes the count; ``torch`` leaves PyTorch's own setting.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from ecvit.errors import UsageError

RECHECK_SECONDS = 30.0  # measure the candidates again after this much training time
PROBE_STEPS = 3  # steps timed per candidate; the median is compared
SKIP_STEPS = 2  # first steps of a run not timed (allocation, first-call setup)
SLOWDOWN = 1.6  # steps this much slower than when the count was chosen: measure again
KEEP_MARGIN = 0.05  # a smaller count must be 5% faster to replace a larger one (noise)


def parse_cpu_threads(value: str) -> str | int:
    """``"auto"``, ``"torch"`` or a positive thread count, from CPU_THREADS / ``--cpu-threads``."""
    text = str(value).strip().lower()
    if text in ("auto", "torch"):
        return text
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise UsageError(f"CPU_THREADS must be auto, torch or a thread count >= 1; got {value!r}")
    return count


def candidate_counts(threads: int) -> list[int]:
    """Thread counts ``auto`` tries, largest first: all, one fewer, half, one."""
    return sorted({threads, max(1, threads - 1), max(1, threads // 2), 1}, reverse=True)


class ThreadTuner:
    """Picks the fastest thread count from measured step times; call :meth:`step_done` after
    every training step and :meth:`pause` before work that is not a training step (evaluation,
    checkpoints), so that its time is not counted.

    ``set_threads`` and ``clock`` are PyTorch's and ``time.perf_counter`` unless given (tests).
    """

    def __init__(self, threads: int, log: Callable[[str], None] | None = None,
                 set_threads: Callable[[int], None] = torch.set_num_threads,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.candidates = candidate_counts(threads)
        self.chosen = threads
        self._log, self._set, self._clock = log, set_threads, clock
        self._last: float | None = None
        self._skip = SKIP_STEPS
        self._probe: list[int] = []  # candidates still to time
        self._times: dict[int, list[float]] = {}
        self._chosen_step = float("inf")  # median step time of the chosen count when chosen
        self._recent: list[float] = []
        self._next_check = float("inf")
        if len(self.candidates) > 1:
            self._start_probe()

    @property
    def active(self) -> bool:
        return len(self.candidates) > 1

    def pause(self) -> None:
        """The next step's time starts at its own start (not at the last step's end)."""
        self._last = None

    def step_done(self) -> None:
        now = self._clock()
        last, self._last = self._last, now
        if not self.active or last is None:
            return
        if self._skip:
            self._skip -= 1
            return
        seconds = now - last
        if self._probe:
            self._record(seconds, now)
        else:
            self._watch(seconds, now)

    # ---------------------------------------------------------------------------- internals

    def _start_probe(self) -> None:
        self._probe = list(self.candidates)
        self._times = {c: [] for c in self.candidates}
        self._set(self._probe[0])
        self._skip = max(self._skip, 1)  # the first step at a new count pays its setup

    def _record(self, seconds: float, now: float) -> None:
        count = self._probe[0]
        self._times[count].append(seconds)
        if len(self._times[count]) < PROBE_STEPS:
            return
        self._probe.pop(0)
        if self._probe:
            self._set(self._probe[0])
            self._skip = 1
            return
        medians = {c: statistics.median(t) for c, t in self._times.items()}
        best = min(medians, key=medians.get)
        for count in sorted(medians, reverse=True):  # prefer more threads unless clearly slower
            if medians[count] <= medians[best] * (1 + KEEP_MARGIN):
                best = count
                break
        if best != self.chosen and self._log is not None:
            times = ", ".join(f"{c} thread{'s' if c > 1 else ''} {1000 * m:.0f} ms"
                              for c, m in sorted(medians.items(), reverse=True))
            self._log(f"CPU_THREADS auto: {best} thread{'s' if best > 1 else ''} (median step: {times})")
        self.chosen, self._chosen_step = best, medians[best]
        self._set(best)
        self._recent = []
        self._next_check = now + RECHECK_SECONDS

    def _watch(self, seconds: float, now: float) -> None:
        self._recent = (self._recent + [seconds])[-PROBE_STEPS:]
        slower = (len(self._recent) == PROBE_STEPS
                  and statistics.median(self._recent) > SLOWDOWN * self._chosen_step)
        if slower or now >= self._next_check:
            self._start_probe()


def apply_cpu_threads(setting: str, device: torch.device, log: Callable[[str], None] | None = None
                      ) -> ThreadTuner | None:
    """Apply CPU_THREADS for a training run: a count is set now; ``auto`` on a CPU device with
    more than one thread returns the tuner to feed with step times; otherwise None."""
    value = parse_cpu_threads(setting)
    if isinstance(value, int):
        torch.set_num_threads(value)
        return None
    if value == "torch" or device.type != "cpu" or torch.get_num_threads() < 2:
        return None
    return ThreadTuner(torch.get_num_threads(), log)


__all__ = ["ThreadTuner", "apply_cpu_threads", "candidate_counts", "parse_cpu_threads"]
