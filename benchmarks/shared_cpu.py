"""The default job (``ecvit train``) on a quiet CPU and beside a competing busy process.

Each policy is a way of running ``python -m ecvit train``: environment variables for the
OpenMP runtime and/or ecvit flags. Each runs with the machine otherwise quiet and with
``--competitors`` CPU-bound processes (a Python busy loop each) started just before it and
stopped right after. Runs are interleaved (policy A quiet, A busy, B quiet, B busy, ...,
the order reversed every other round), after one untimed warm-up run, and the median wall
time of each cell is reported with its ratio to the fastest quiet median.

    python benchmarks/shared_cpu.py                     # the default job, 2 rounds
    python benchmarks/shared_cpu.py --epochs 6 --rounds 3
    python benchmarks/shared_cpu.py --competitor torch --epochs 3 --rounds 1
    python benchmarks/shared_cpu.py --policies ecvit,torch --epochs 1 --out-dir /tmp/x

Writes ``<out-dir>/shared_cpu-<competitor>.md`` and ``.json``; not a test (it takes minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# name -> (environment overrides, extra ecvit flags, what it is)
POLICIES: dict[str, tuple[dict[str, str], list[str], str]] = {
    "ecvit": ({}, [], "ecvit's default (`--openmp shared`: spin 1,000 rounds, then sleep)"),
    # the opt-out through the environment: `--openmp torch` would add a restart (~2 s) to the time
    "torch": ({"ECVIT_OPENMP": "torch"}, [], "opted out (`ECVIT_OPENMP=torch`): OpenMP's default spin"),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, [], "`OMP_WAIT_POLICY=PASSIVE`: sleep at once"),
    "one-thread": ({"OMP_NUM_THREADS": "1"}, [], "`OMP_NUM_THREADS=1`"),
}

# The competing process: a Python busy loop (one core), or a PyTorch process with its
# default threads and wait policy doing small matrix products (another training job).
COMPETITORS = {
    "loop": "while True:\n    pass\n",
    "torch": ("import torch\nx = torch.randn(256, 256)\nwhile True:\n"
              "    for _ in range(100):\n        x = (x @ x).tanh()\n"),
}


def run_job(policy: str, epochs: int | None, busy: int, competitor: str, workdir: Path) -> float:
    """Wall time of one ``ecvit train`` under ``policy`` with ``busy`` competing processes."""
    env_over, flags, _ = POLICIES[policy]
    env = dict(os.environ)
    out = Path(tempfile.mkdtemp(dir=workdir))
    cmd = [sys.executable, "-m", "ecvit", "train", "--output-dir", str(out), "--device", "cpu", *flags]
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    for key in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS", "ECVIT_OPENMP"):  # only the policy sets them
        env.pop(key, None)
    env.update(env_over)
    competitors = [subprocess.Popen([sys.executable, "-c", COMPETITORS[competitor]]) for _ in range(busy)]
    try:
        time.sleep(2.0 if busy else 0.0)  # the competitors are running before the job starts
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - start
    finally:
        for proc in competitors:
            proc.kill()
            proc.wait()
    if done.returncode != 0:
        raise SystemExit(f"{policy}: ecvit train failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def render(report: dict) -> str:
    cells = report["cells"]
    best_quiet = min(statistics.median(cells[p]["quiet"]) for p in report["policies"])
    busy_head = (f"{report['competitors']} busy {report['competitor']} process"
                 f"{'es' if report['competitors'] > 1 else ''}")
    lines = [
        f"# The default job on a shared CPU ({report['machine']})",
        "",
        f"`ecvit train` (digits, ecvit_tiny{', ' + str(report['epochs']) + ' epochs' if report['epochs'] else ''}), "
        f"wall time of the whole command, median of {report['rounds']} interleaved rounds after an untimed warm-up run; "
        f"load average before the run {report['load_before']}. Ratio: to the fastest quiet median.",
        "",
        f"| policy | quiet | ratio | with {busy_head} | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for p in report["policies"]:
        q, b = statistics.median(cells[p]["quiet"]), statistics.median(cells[p]["busy"])
        lines.append(f"| {p}: {POLICIES[p][2]} | {q:.1f} s | {q / best_quiet:.2f}x | {b:.1f} s | "
                     f"{b / best_quiet:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policies", default=",".join(POLICIES), help=f"comma list of {', '.join(POLICIES)}")
    p.add_argument("--epochs", type=int, default=None, help="epochs of the job (default: the default job's)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--competitors", type=int, default=1, help="busy processes beside the job")
    p.add_argument("--competitor", choices=tuple(COMPETITORS), default="loop",
                   help="loop: a Python busy loop; torch: PyTorch matrix products on its default threads")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    policies = [name.strip() for name in args.policies.split(",") if name.strip()]
    unknown = [name for name in policies if name not in POLICIES]
    if unknown or not policies:
        p.error(f"--policies: unknown {unknown}; choose from {', '.join(POLICIES)}")
    if args.rounds < 1 or args.competitors < 1 or (args.epochs is not None and args.epochs < 1):
        p.error("--rounds, --competitors and --epochs must be >= 1")
    cells = {name: {"quiet": [], "busy": []} for name in policies}
    order = [(name, busy) for name in policies for busy in (0, args.competitors)]
    load_before = f"{os.getloadavg()[0]:.2f}"
    with tempfile.TemporaryDirectory() as workdir:
        # untimed: the first command of a session pays for cold file caches (imports, data)
        run_job(policies[0], 1, 0, args.competitor, Path(workdir))
        for r in range(args.rounds):
            for name, busy in (order if r % 2 == 0 else order[::-1]):
                seconds = run_job(name, args.epochs, busy, args.competitor, Path(workdir))
                cells[name]["busy" if busy else "quiet"].append(seconds)
                print(f"round {r + 1}: {name} {'busy' if busy else 'quiet'} {seconds:.1f} s", flush=True)
    import torch  # after the runs: the child processes are what is measured

    report = {"machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}", "epochs": args.epochs,
              "rounds": args.rounds, "competitors": args.competitors, "competitor": args.competitor, "load_before": load_before,
              "policies": policies, "cells": cells}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"shared_cpu-{args.competitor}"
    (args.out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    table = render(report)
    (args.out_dir / f"{stem}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
