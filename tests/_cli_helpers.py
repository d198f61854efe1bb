"""Running a command-line entry point in-process, the way a shell would see it."""

from __future__ import annotations

from typing import Callable, Sequence


def run_entry(entry: Callable[[Sequence[str]], int], argv: Sequence[str], capsys) -> tuple[int, str, str]:
    """``entry(argv)`` in-process: (exit code, stdout, stderr); argparse exits count too."""
    try:
        code = entry(list(argv))
    except SystemExit as exc:  # argparse: --help, usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err
