"""Small-data study: do the convolutional ViTs learn more from little data than a plain ViT?

Trains a list of models with one recipe, one data order per seed (the engine's order is a
function of the seed and the epoch) and ``--seeds`` seeds each, then writes

    <out>/<name>.json   settings, machine, every run's per-epoch history
    <out>/<name>.md     the table: params, MACs, final/best top-1 (mean +- std over seeds),
                        the paired difference of the final top-1 to the plain ViT on the
                        same patch grid (``--baseline``; same seed = same data order and
                        the difference is taken per seed), train time per run
    <out>/<name>.png    validation top-1 per epoch (mean, min-max band over seeds) and
                        final top-1 against MACs

``<name>`` is the dataset, plus ``-<N>pct`` for ``--train-fraction`` below 1 and ``-<tag>`` for
``--tag``. Each run is one
``ecvit train`` process in ``<work-dir>/<name>/<model>/seed<k>``; a finished run is not run
again and an interrupted one resumes (the engine's auto-resume), so the command can be
re-run until the study is complete. ``--jobs 2`` runs two single-thread runs side by side,
which on two cores finishes sooner than one two-thread run at a time for models this small.

    python benchmarks/small_data.py                                  # digits, 32 px, CPU default set
    python benchmarks/small_data.py --train-fraction 0.1 --epochs 60 # 10% of the digits training split
    python benchmarks/small_data.py --dataset cifar10 --data-path data/cifar10 --device cuda \\
        --models vit_tiny,vit_tiny_dw,ecvit_small --epochs 50 --jobs 1 --threads 0

Models (``--models``, comma-separated; ``--list-models`` prints them): each is a registered
model plus constructor arguments. Below 128 px every ViT uses patch 4 (a 16 px patch leaves
a 2x2 grid at 32 px): an 8x8 grid, where ECViT's default 8x tokenizer gives a 4x4 grid
(so part of ECViT's MAC advantage at 32 px is 4x fewer tokens); CvT-13 is
scaled to small images by first-stage stride 2 and 3x3 patches (grids 16, 8, 4 at 32 px).
``vit_mini`` is ViT-Tiny at half the width and depth (96 wide, 6 blocks, 3 heads), the size
of ECViT-Tiny, so the CPU default set finishes in about half an hour on two cores.
Extra ``KEY VALUE`` pairs after the flags go to every run (the recipe), e.g. ``TRAIN.LR 5e-4``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecvit.config import AMP_CHOICES

ROOT = Path(__file__).resolve().parents[1]
SMALL_IMAGE = 128  # below this size ViTs use patch 4 and CvT-13 a stride-2 first stage
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class StudyModel:
    """A study entry: a registered model and its arguments."""

    model: str
    args: dict[str, Any] = field(default_factory=dict)
    vit: bool = False  # a ViT: patch size follows the image size
    plain: bool = False  # a plain ViT, a baseline the others are paired with

    def arguments(self, img_size: int) -> dict[str, Any]:
        args = dict(self.args)
        if self.vit:
            args.setdefault("patch_size", 16 if img_size >= SMALL_IMAGE else 4)
        if self.model.startswith("cvt") and img_size < SMALL_IMAGE:
            args.update(patch_sizes=[3, 3, 3], patch_strides=[2, 2, 2], patch_paddings=[1, 1, 1])
        return args


_MINI = {"embed_dim": 96, "depth": 6, "num_heads": 3}
MODELS: dict[str, StudyModel] = {
    "vit_mini": StudyModel("dws_vit_tiny", _MINI, vit=True, plain=True),
    "vit_mini_dw": StudyModel("dws_vit_tiny_dw", _MINI, vit=True),
    "vit_mini_dw_span2": StudyModel("dws_vit_tiny_dw", {**_MINI, "dw_span": 2}, vit=True),
    "vit_mini_dw_k357": StudyModel("dws_vit_tiny_dw", {**_MINI, "dw_kernels": [3, 5, 7]}, vit=True),
    "vit_tiny": StudyModel("dws_vit_tiny", vit=True, plain=True),
    "vit_tiny_dw": StudyModel("dws_vit_tiny_dw", {}, vit=True),
    "vit_tiny_dw_span2": StudyModel("dws_vit_tiny_dw", {"dw_span": 2}, vit=True),
    "vit_tiny_dw_k357": StudyModel("dws_vit_tiny_dw", {"dw_kernels": [3, 5, 7]}, vit=True),
    "ecvit_tiny": StudyModel("ecvit_tiny"),
    "ecvit_small": StudyModel("ecvit_small"),
    "cvt_13": StudyModel("cvt_13"),
}
CPU_DEFAULT = ("vit_mini", "vit_mini_dw", "vit_mini_dw_span2", "vit_mini_dw_k357", "ecvit_tiny",
               "ecvit_small", "cvt_13")


# ------------------------------------------------------------------------------ runs


@dataclass
class Run:
    name: str  # study model name
    seed: int
    index: int  # 1-based position in the study, for progress lines
    dir: Path
    command: list[str]
    epochs: int

    def history(self) -> list[dict[str, Any]]:
        try:
            return json.loads((self.dir / "metrics.json").read_text())
        except (OSError, ValueError):
            return []

    def finished(self) -> bool:
        return len(self.history()) >= self.epochs and (self.dir / "checkpoint.pth").is_file()


def plan_runs(args: argparse.Namespace, name: str) -> list[Run]:
    runs = []
    for model_name in args.models:
        entry = MODELS[model_name]
        for seed in range(args.seeds):
            out = args.work_dir / name / model_name / f"seed{seed}"
            cmd = [sys.executable, "-m", "ecvit", "train", "--model", entry.model,
                   "--dataset", args.dataset, "--img-size", str(args.img_size),
                   "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                   "--seed", str(seed), "--output-dir", str(out), "--amp", args.amp]
            if args.data_path:
                cmd += ["--data-path", args.data_path]
            if args.device:
                cmd += ["--device", args.device]
            cmd += ["DATA.TRAIN_FRACTION", str(args.train_fraction)]
            for key, value in entry.arguments(args.img_size).items():
                cmd += [f"MODEL.ARGS.{key.upper()}", json.dumps(value)]
            cmd += args.overrides
            runs.append(Run(model_name, seed, len(runs) + 1, out, cmd, args.epochs))
    return runs


def run_all(runs: list[Run], jobs: int, threads: int) -> int:
    """Run the unfinished runs, ``jobs`` at a time, printing a line per finished epoch."""
    todo = [r for r in runs if not r.finished()]
    print(f"{len(runs)} runs: {len(runs) - len(todo)} already finished, {len(todo)} to run ({jobs} at a time)", flush=True)
    env = dict(os.environ)
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)
    active: list[tuple[Run, subprocess.Popen, int]] = []
    failed = 0
    while todo or active:
        while todo and len(active) < jobs:
            run = todo.pop(0)
            run.dir.mkdir(parents=True, exist_ok=True)
            with open(run.dir / "study.log", "a") as log:  # the child keeps its own copy
                proc = subprocess.Popen(run.command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            active.append((run, proc, len(run.history())))
        time.sleep(POLL_SECONDS)
        still = []
        for run, proc, seen in active:
            history = run.history()
            for row in history[seen:]:
                print(f"[{run.index}/{len(runs)}] {run.name} seed {run.seed}: epoch {row['epoch']}/"
                      f"{run.epochs} val top-1 {row['val_top1']:.2f} ({row['epoch_time']:.1f} s)", flush=True)
            if proc.poll() is None:
                still.append((run, proc, len(history)))
                continue
            if proc.returncode != 0:
                failed += 1
                tail = (run.dir / "study.log").read_text(errors="replace").strip().splitlines()[-1:]
                print(f"{run.name} seed {run.seed} failed (exit {proc.returncode}): "
                      f"{tail[0] if tail else ''}; log {run.dir / 'study.log'}", flush=True)
        active = still
    return failed


# --------------------------------------------------------------------------- results


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def model_facts(entry: StudyModel, img_size: int, num_classes: int) -> tuple[int, int]:
    """Parameters and MACs at ``img_size`` (counted on the meta device)."""
    import torch

    from ecvit.flops import count_macs, count_params
    from ecvit.models import create_model

    with torch.device("meta"):
        model = create_model(entry.model, num_classes=num_classes, img_size=img_size,
                             **entry.arguments(img_size))
    return count_params(model), count_macs(model, img_size)


def summarize(runs: list[Run], args: argparse.Namespace) -> dict[str, Any]:
    """The results document: every finished run's history, and per-model statistics."""
    from ecvit.bench import machine_info

    by_model: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for run in runs:
        if run.finished():
            by_model.setdefault(run.name, {})[run.seed] = run.history()[: run.epochs]
    num_classes = _num_classes(runs)
    models = {}
    for name, seeds in by_model.items():
        params, macs = model_facts(MODELS[name], args.img_size, num_classes)
        final = [h[-1]["val_top1"] for h in seeds.values()]
        best = [max(r["val_top1"] for r in h) for h in seeds.values()]
        times = [sum(r["epoch_time"] for r in h) for h in seeds.values()]
        models[name] = {
            "model": MODELS[name].model, "args": MODELS[name].arguments(args.img_size),
            "params": params, "macs": macs, "seeds": sorted(seeds),
            "final_top1": mean_std(final), "best_top1": mean_std(best),
            "train_time_s": statistics.fmean(times),
            "history": {str(s): h for s, h in sorted(seeds.items())},
        }
    base = args.baseline
    for name, result in models.items():
        if base in models and name != base:
            common = [s for s in result["seeds"] if s in models[base]["seeds"]]
            diffs = [result["history"][str(s)][-1]["val_top1"] - models[base]["history"][str(s)][-1]["val_top1"]
                     for s in common]
            result["paired_vs"] = {"baseline": base, "seeds": common, "final_top1_diff": mean_std(diffs)}
    return {
        "settings": {"dataset": args.dataset, "baseline": base, "train_fraction": args.train_fraction,
                     "img_size": args.img_size, "epochs": args.epochs, "seeds": args.seeds,
                     "batch_size": args.batch_size, "amp": args.amp, "jobs": args.jobs,
                     "threads_per_run": args.threads, "overrides": args.overrides,
                     "recipe": "ecvit train defaults: AdamW lr 1e-3 wd 0.05, cosine, 2 warm-up epochs"},
        "machine": machine_info(args.device or "cpu"),
        "models": models,
    }


def _num_classes(runs: list[Run]) -> int:
    for run in runs:
        try:
            import yaml

            return int(yaml.safe_load((run.dir / "config.yaml").read_text())["DATA"]["NUM_CLASSES"])
        except (OSError, KeyError, TypeError, ValueError):
            continue
    return 10


def _pm(stat: tuple[float, float]) -> str:
    return f"{stat[0]:.1f} +- {stat[1]:.1f}"


def _count(n: int) -> str:
    return f"{n / 1e9:.3f}G" if n >= 1e9 else f"{n / 1e6:.2f}M"


def render_markdown(doc: dict[str, Any], name: str) -> str:
    s, m = doc["settings"], doc["machine"]
    fraction = "" if s["train_fraction"] >= 1 else f", {s['train_fraction'] * 100:g}% of the training split"
    lines = [
        f"# Small-data study: {s['dataset']}{fraction}",
        "",
        f"{s['img_size']} px, {s['epochs']} epochs, batch {s['batch_size']}, precision {s['amp']}, "
        f"{s['seeds']} seeds (same data order per seed for every model); recipe: {s['recipe']}"
        f"{'; overrides ' + ' '.join(s['overrides']) if s['overrides'] else ''}.",
        f"Machine: {m['cpu']}, {m['cpu_cores']} cores, torch {m['torch']}"
        f"{', GPU ' + m['gpu'] if m.get('gpu') else ''}; {s['jobs']} run(s) at a time, "
        f"{s['threads_per_run'] or 'default'} thread(s) each. Train time: wall time of one run's "
        "epochs (training + validation), mean over seeds.",
        "",
        f"| model | params | MACs | final top-1 | best top-1 | final - {s['baseline'] or 'baseline'} (paired) "
        "| train time |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model, r in doc["models"].items():
        paired = r.get("paired_vs")
        diff = f"{paired['final_top1_diff'][0]:+.1f} +- {paired['final_top1_diff'][1]:.1f}" if paired else ""
        lines.append(f"| {model} | {_count(r['params'])} | {_count(r['macs'])} | {_pm(r['final_top1'])} | "
                     f"{_pm(r['best_top1'])} | {diff} | {r['train_time_s']:.0f} s |")
    lines += ["", f"Top-1 in % on the validation split, mean +- std over seeds ({name}.json has every run)."]
    return "\n".join(lines) + "\n"


def plot(doc: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax_curve, ax_macs = fig.subplots(1, 2)
    for model, r in doc["models"].items():
        curves = [[row["val_top1"] for row in h] for h in r["history"].values()]
        epochs = list(range(1, len(curves[0]) + 1))
        by_epoch = list(zip(*curves))
        mean = [statistics.fmean(v) for v in by_epoch]
        line, = ax_curve.plot(epochs, mean, label=model, marker="o" if len(epochs) == 1 else None)
        ax_curve.fill_between(epochs, [min(v) for v in by_epoch], [max(v) for v in by_epoch],
                              color=line.get_color(), alpha=0.15)
        final, spread = r["final_top1"]
        ax_macs.errorbar([r["macs"]], [final], yerr=[spread], fmt="o", color=line.get_color(), capsize=3)
        ax_macs.annotate(model, (r["macs"], final), textcoords="offset points", xytext=(4, 4), fontsize=8)
    s = doc["settings"]
    part = "" if s["train_fraction"] >= 1 else f" ({s['train_fraction'] * 100:g}% of train)"
    ax_curve.set(xlabel="epoch", ylabel="val top-1 (%)",
                 title=f"{s['dataset']}{part} {s['img_size']} px: mean and min-max over {s['seeds']} seeds")
    ax_curve.legend(fontsize=8)
    ax_macs.set(xscale="log", xlabel="MACs per image", ylabel="final val top-1 (%)", title="accuracy vs compute")
    for ax in (ax_curve, ax_macs):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")


def write_results(doc: dict[str, Any], out: Path, name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / f"{name}.md").write_text(render_markdown(doc, name))
    if doc["models"]:
        plot(doc, out / f"{name}.png")


# ------------------------------------------------------------------------------ main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits", help="any ecvit dataset")
    p.add_argument("--data-path", default="", help="root of an on-disk dataset")
    p.add_argument("--train-fraction", type=float, default=1.0,
                   help="keep this class-stratified fraction of the training split")
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per model")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--models", default=",".join(CPU_DEFAULT), help="comma-separated study models")
    p.add_argument("--list-models", action="store_true", help="print the study models and exit")
    p.add_argument("--device", default="", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--amp", default="off", choices=AMP_CHOICES)
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--threads", type=int, default=1, help="threads per run (0: torch's default)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "small_data")
    p.add_argument("--work-dir", type=Path, default=ROOT / "output" / "small_data",
                   help="where each run's checkpoints and logs go")
    p.add_argument("overrides", nargs="*", metavar="KEY VALUE", help="config overrides for every run")
    p.add_argument("--tag", default="", help="appended to the study name, e.g. for another recipe: "
                   "--tag lr3e-4 TRAIN.LR 3e-4 writes <dataset>-lr3e-4.*")
    p.add_argument("--baseline", default="",
                   help="the plain ViT every model is paired with (default: the first in --models)")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"--models: unknown {', '.join(unknown)}; known: {', '.join(MODELS)}")
    if not args.baseline:
        args.baseline = next((m for m in args.models if MODELS[m].plain), "")
    elif args.baseline not in args.models:
        p.error(f"--baseline {args.baseline} is not one of --models")
    if len(args.overrides) % 2:
        p.error("overrides come in KEY VALUE pairs")
    for flag in ("epochs", "seeds", "batch_size", "jobs", "img_size"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    if not 0 < args.train_fraction <= 1:
        p.error("--train-fraction must be in (0, 1]")
    return args


def study_name(args: argparse.Namespace) -> str:
    name = args.dataset if args.train_fraction >= 1 else f"{args.dataset}-{args.train_fraction * 100:g}pct"
    return f"{name}-{args.tag}" if args.tag else name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list_models:
        for name, entry in MODELS.items():
            kind = " (plain ViT: a baseline)" if entry.plain else ""
            print(f"{name}: {entry.model} {entry.arguments(args.img_size)}{kind}")
        return 0
    name = study_name(args)
    runs = plan_runs(args, name)
    failed = run_all(runs, args.jobs, args.threads)
    doc = summarize(runs, args)
    write_results(doc, args.out, name)
    print(render_markdown(doc, name))
    print(f"wrote {args.out / (name + '.json')}, .md, .png")
    if failed:
        print(f"{failed} run(s) failed; re-run the same command to retry them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
