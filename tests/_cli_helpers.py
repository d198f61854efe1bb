"""Running a command-line entry point in-process, the way a shell would see it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]


def run_entry(entry: Callable[[Sequence[str]], int], argv: Sequence[str], capsys) -> tuple[int, str, str]:
    """``entry(argv)`` in-process: (exit code, stdout, stderr); argparse exits count too."""
    try:
        code = entry(list(argv))
    except SystemExit as exc:  # argparse: --help, usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def run_main(argv: Sequence[str], capsys) -> tuple[int, str, str]:
    """``ecvit ARGV`` in-process: (exit code, stdout, stderr)."""
    from ecvit.cli import main

    return run_entry(main, [str(a) for a in argv], capsys)


def load_script(relative_path: str, name: str) -> ModuleType:
    """A script of the repository (e.g. ``benchmarks/compare.py``) imported as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relative_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
