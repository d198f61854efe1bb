"""How long PyTorch's OpenMP threads busy-wait: short by default, so a shared CPU stays fast.

PyTorch runs each CPU kernel on all its threads; a thread that finishes first waits for the
others, spinning on its core (GNU OpenMP's default: 300,000 rounds, milliseconds). When
another busy process shares the cores, the thread it displaced cannot run on the spinning
one's core, and each of a training step's thousands of short kernels waits for a scheduler
time slice: ``ecvit train``'s default job took 283 s instead of 13 s beside one other
PyTorch process (``benchmarks/NOTES.md``, round 3). With a short spin (1,000 rounds,
tens of microseconds) the waiting thread sleeps soon and frees its core; on a quiet machine
that is as fast as the long spin (``benchmarks/results/shared_cpu-*.md``), and the numbers computed are unchanged.

OpenMP reads its settings once, when PyTorch is loaded, so the command-line entry points
(the ``ecvit`` command, ``python -m ecvit``, ``main.py``) call :func:`apply_default` first,
before anything imports torch; ``import ecvit`` itself leaves the environment alone. It sets
``GOMP_SPINCOUNT`` only if torch is not loaded yet and neither ``GOMP_SPINCOUNT`` nor
``OMP_WAIT_POLICY`` is set; set ``ECVIT_OPENMP=torch`` (or ``ecvit train --openmp torch``) to
keep OpenMP's own default. This module imports nothing heavy.
"""

from __future__ import annotations

import os
import sys

SPINCOUNT = 1000  # rounds a waiting thread spins before it sleeps (GNU OpenMP: GOMP_SPINCOUNT)
OPT_OUT = "ECVIT_OPENMP"  # environment: "torch" leaves OpenMP's settings alone
CHOICES = ("shared", "torch")  # --openmp: ecvit's short spin, or OpenMP's own default
_USER_KEYS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")

_applied = False  # this process set GOMP_SPINCOUNT itself


def apply_default() -> bool:
    """Set the short spin for this process (and the processes it starts) where it can still
    take effect and the user has not chosen; True when it was set."""
    global _applied
    if "torch" in sys.modules or os.environ.get(OPT_OUT, "").strip().lower() == "torch":
        return False
    if any(key in os.environ for key in _USER_KEYS):
        return False
    os.environ["GOMP_SPINCOUNT"] = str(SPINCOUNT)
    _applied = True
    return True


def applied() -> bool:
    """Whether this process set the short spin (its command line started before torch loaded)."""
    return _applied


def describe() -> str:
    """One line for the run plan: which wait policy the OpenMP threads of this process use."""
    if _applied:
        return f"OpenMP threads spin {SPINCOUNT} rounds, then sleep (--openmp torch: OpenMP's default)"
    chosen = ", ".join(f"{key}={os.environ[key]}" for key in _USER_KEYS if key in os.environ)
    return f"OpenMP wait policy: {chosen or 'OpenMP default'}"


def restart_with_openmp_default() -> None:
    """For ``--openmp torch``: if this process set the short spin, start the same command
    again with OpenMP's default (the setting is read once, when torch loads). Does not
    return in that case; otherwise it does nothing."""
    if not _applied:
        return
    env = {key: value for key, value in os.environ.items() if key != "GOMP_SPINCOUNT"}
    env[OPT_OUT] = "torch"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


__all__ = ["SPINCOUNT", "OPT_OUT", "CHOICES", "applied", "apply_default", "describe", "restart_with_openmp_default"]
