"""A run directory owns its run: ``run.lock`` (PID and host) refuses a second live run.

The lock file is created with ``O_EXCL``, so two runs racing for one directory cannot both
win. A lock left by a process that no longer exists on this host is stale and taken over;
a lock held by another host cannot be checked from here, so it is refused with the path
to delete once that run is known to be gone.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ecvit.errors import UsageError

LOCK_NAME = "run.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_holder(output_dir: str | Path) -> dict[str, Any] | None:
    """The lock's content (pid, host, started), or None when the directory is not locked."""
    path = Path(output_dir) / LOCK_NAME
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pid": -1, "host": "?", "started": "?"}  # unreadable: treat as held by unknown
    return holder if isinstance(holder, dict) else {"pid": -1, "host": "?", "started": "?"}


def is_stale(holder: dict[str, Any]) -> bool:
    """A lock from this host whose process is gone."""
    pid = holder.get("pid")
    return holder.get("host") == socket.gethostname() and isinstance(pid, int) and pid > 0 \
        and pid != os.getpid() and not _pid_alive(pid)


def check_unlocked(output_dir: str | Path) -> None:
    """Raise a UsageError naming the holder when a live run owns ``output_dir``."""
    holder = read_holder(output_dir)
    if holder is None or is_stale(holder) or holder.get("pid") == os.getpid():
        return
    path = Path(output_dir) / LOCK_NAME
    raise UsageError(
        f"{output_dir} belongs to a live run (pid {holder.get('pid')} on {holder.get('host')}, "
        f"started {holder.get('started')}); wait for it, pick another --output-dir, or delete "
        f"{path} if that run is gone"
    )


class RunLock:
    """``with RunLock(dir):`` holds ``dir/run.lock`` for the body; stale locks are taken over."""

    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / LOCK_NAME
        self.took_over: dict[str, Any] | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        content = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                              "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = read_holder(self.path.parent) or {}
                if not is_stale(holder):
                    check_unlocked(self.path.parent)
                    continue  # vanished between the two reads: try again
                self.took_over = holder
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(content)
            return self
        check_unlocked(self.path.parent)
        raise UsageError(f"could not take {self.path}; another run is starting in the same directory")

    def __exit__(self, *exc: object) -> None:
        holder = read_holder(self.path.parent)
        if holder and holder.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)


__all__ = ["RunLock", "check_unlocked", "read_holder", "LOCK_NAME"]
