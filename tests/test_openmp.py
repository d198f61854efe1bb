"""ecvit's OpenMP wait policy: a short spin set by the command line (``ecvit``, ``python -m
ecvit``, ``main.py``) before torch loads, never over the user's own settings, and ``--openmp
torch`` / ``ECVIT_OPENMP=torch`` to opt out; ``import ecvit`` alone sets nothing.

The setting only takes effect in a new process (OpenMP reads it when torch loads), so these
tests run Python in subprocesses; this process imported torch long ago.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from _cli_helpers import ROOT

from ecvit import openmp
from ecvit.cli import apply_openmp_flag, build_parser, main
from ecvit.errors import UsageError


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", openmp.OPT_OUT)}


@pytest.mark.slow
@pytest.mark.parametrize("first, env, expected", [
    ("ecvit", {}, str(openmp.SPINCOUNT)),  # the command line starts before torch: set
    ("torch, ecvit", {}, "None"),  # torch first: too late to matter, so not set
    ("ecvit", {"GOMP_SPINCOUNT": "5"}, "5"),  # the user's own settings are kept
    ("ecvit", {"OMP_WAIT_POLICY": "PASSIVE"}, "None"),
    ("ecvit", {openmp.OPT_OUT: "torch"}, "None"),  # the opt-out
])
def test_the_command_line_sets_the_short_spin_only_where_it_can_and_may(first, env, expected):
    code = (f"import os, {first}\nfrom ecvit.cli import main\nprint(os.environ.get('GOMP_SPINCOUNT'))\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "print(os.environ.get('GOMP_SPINCOUNT'))")
    done = subprocess.run([sys.executable, "-c", code], env={**_clean_env(), **env}, capture_output=True,
                          text=True, check=True)
    imported, started = done.stdout.split()[0], done.stdout.split()[-1]
    assert (imported, started) == (env.get("GOMP_SPINCOUNT", "None"), expected)  # set by main, not import


@pytest.mark.slow
def test_main_py_sets_the_short_spin_like_the_ecvit_command():
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "--mode", "train", "--dry-run", "--dataset", "digits",
                           "--model", "ecvit_tiny"], env=_clean_env(), capture_output=True, text=True,
                          check=True)
    device = next(line for line in done.stdout.splitlines() if line.startswith("# device"))
    assert f"spin {openmp.SPINCOUNT} rounds, then sleep" in device


@pytest.mark.slow
def test_openmp_torch_flag_restarts_under_openmps_default():
    def device_line(*flags: str) -> str:
        done = subprocess.run([sys.executable, "-m", "ecvit", "train", "--dry-run", *flags], env=_clean_env(),
                              capture_output=True, text=True, check=True)
        return next(line for line in done.stdout.splitlines() if line.startswith("# device"))

    assert f"spin {openmp.SPINCOUNT} rounds, then sleep" in device_line()
    assert "OpenMP wait policy: OpenMP default" in device_line("--openmp", "torch")


def test_openmp_torch_in_process_needs_the_environment(monkeypatch):
    args = build_parser().parse_args(["train", "--openmp", "torch"])
    apply_openmp_flag(args, ["train", "--openmp", "torch"])  # torch came first here: nothing to undo
    monkeypatch.setattr(openmp, "_applied", True)
    with pytest.raises(UsageError, match="ECVIT_OPENMP=torch"):
        apply_openmp_flag(args, ["train", "--openmp", "torch"])


def test_bad_openmp_choice_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--openmp", "passive"])
    assert exc.value.code == 2 and "--openmp" in capsys.readouterr().err
