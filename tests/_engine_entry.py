"""Run the engine in a fresh process, alone or under torchrun (used by the resume and
distributed tests, independent of the CLI front end).

    python tests/_engine_entry.py MODE OUTPUT_DIR [KEY VALUE ...]
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/_engine_entry.py ...

MODE: ``train``; ``validate`` (OUTPUT_DIR/checkpoint.pth, report in OUTPUT_DIR/val_w{N});
``train_validate`` (both). With ``FAIL_RANK=r FAIL_EPOCH=e`` in the environment, rank r
raises at the start of epoch e
(``FAIL_MODE=kill``: kills itself with SIGKILL instead). Errors print like the front ends: ``error: ...``, exit 2
for a UsageError and 1 for a TrainingError.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _engine_helpers import tiny_cfg  # noqa: E402  (registers the probe model)

from ecvit.engine import train, validate  # noqa: E402
from ecvit.engine import trainer  # noqa: E402
from ecvit.errors import TrainingError, UsageError  # noqa: E402


def _inject_failure(rank: int, epoch: int) -> None:
    original = trainer._Run._train_one_epoch

    def failing(self, index: int):
        if self.info.rank == rank and index + 1 == epoch:
            if os.environ.get("FAIL_MODE") == "kill":  # as kill -9 would
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"injected failure on rank {rank} in epoch {epoch}")
        return original(self, index)

    trainer._Run._train_one_epoch = failing


def main(argv: list[str]) -> int:
    mode, out, overrides = argv[0], Path(argv[1]), argv[2:]
    if "FAIL_RANK" in os.environ:
        _inject_failure(int(os.environ["FAIL_RANK"]), int(os.environ["FAIL_EPOCH"]))
    print("READY", flush=True)
    try:
        cfg = tiny_cfg(out, *overrides)
        if mode in ("train", "train_validate"):
            train(cfg)
        if mode in ("validate", "train_validate"):
            report_dir = str(out / f"val_w{os.environ.get('WORLD_SIZE', '1')}")
            validate(cfg, str(out / "checkpoint.pth"), output_dir=report_dir)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
