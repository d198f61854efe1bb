"""Errors that mean "the user asked for something we cannot do".

Front ends catch :class:`UsageError` and print a one-line message (exit code 2) instead of
a traceback; anything else is a bug and keeps its traceback.
"""


def printable(text: str) -> str:
    """``text`` with undecodable file-name bytes (surrogate escapes) shown as U+FFFD.

    Folder names that are not valid UTF-8 come back from the OS as lone surrogates: stored
    as they are (so names still match the files), shown with replacement characters (so a
    strict-encoding terminal or matplotlib can print them).
    """
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace") \
        if any("\udc80" <= c <= "\udcff" for c in text) else text


class UsageError(Exception):
    """Bad flag, config key, file or data: a user mistake, reported in one line."""


class CheckpointError(UsageError):
    """A checkpoint cannot be used: unsafe, corrupt, or not matching the model."""


class DataError(UsageError):
    """A dataset root, split or image cannot be read as the chosen format."""


class TrainingError(Exception):
    """A run that cannot go on (non-finite loss, a failed rank): reported in one line, exit 1."""


class StorageError(TrainingError):
    """The disk refused a write during a run (full, quota, read-only): one line, exit 1.

    The message names the file and what was kept, e.g. ``could not write out/checkpoint.pth:
    disk full, previous checkpoint kept``.
    """


class Preempted(TrainingError):
    """A preemption signal (SIGTERM, SIGUSR1) stopped the run after a resumable checkpoint.

    ``exit_code`` is 128 + the signal number (143 for SIGTERM), what a shell reports for a
    process ended by that signal, so schedulers see the job as preempted, not failed.
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
