"""Side-by-side speed of our models and the implementations users would otherwise pick.

One run, one machine, the same random inputs for every model; repeats are interleaved
(A, B, C, ... then again, with the order reversed every other round) and the median of
each model's rounds is reported, so load that drifts during the run hits all models alike.

Compared (issue 4):
- our ``cvt_13`` vs transformers' ``CvtForImageClassification`` (CvT-13 config, built
  offline, its random weights converted into ours through ``checkpoint_filter_fn``);
- our ``vit_tiny`` vs timm's ``deit_tiny_patch16_224``;
- our ``ecvit_small`` vs both peers.
Each in fp32 and autocast (bf16 on CPU; bf16/fp16 on CUDA), inference and a training step
(forward, cross-entropy, backward, AdamW). Our models are fused (``ecvit.fuse``) for inference;
each of ours is also timed for inference as a user builds it (``.eval()``, not fused), which
shows what the fused form gains.

    python benchmarks/compare.py                      # CPU, batch 32, 224 px
    python benchmarks/compare.py --device cuda --compile
    python benchmarks/compare.py --smoke --out-dir /tmp/x   # seconds: checks it runs

Writes ``<out-dir>/<device>.md`` and ``<out-dir>/<device>.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ecvit.bench import (
    Workload,
    check_amp,
    flops_per_mac,
    machine_info,
    measure_matmul_peak,
    peak_dtype,
    resolve_device,
)
from ecvit.errors import UsageError
from ecvit.flops import count_macs, count_params

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# (ours, peer, amp, train, minimum ratio ours/peer) from issue 4, for CPU batch 32 @ 224.
CPU_TARGETS = [
    ("ecvit cvt_13", "transformers CvT-13", "bf16", False, 2.0),
    ("ecvit cvt_13", "transformers CvT-13", "off", False, 1.2),
    ("ecvit cvt_13", "transformers CvT-13", "bf16", True, 1.5),
    ("ecvit ecvit_small", "timm deit_tiny_patch16_224", "bf16", False, 1.2),
]

PAIRS = [
    ("ecvit cvt_13", "transformers CvT-13"),
    ("ecvit vit_tiny", "timm deit_tiny_patch16_224"),
    ("ecvit ecvit_small", "transformers CvT-13"),
    ("ecvit ecvit_small", "timm deit_tiny_patch16_224"),
    # the plain eval-mode model as a user builds it (no fuse()) against the fused form
    ("ecvit cvt_13 (as built)", "ecvit cvt_13"),
    ("ecvit vit_tiny (as built)", "ecvit vit_tiny"),
    ("ecvit ecvit_small (as built)", "ecvit ecvit_small"),
]


@dataclass
class Impl:
    """One implementation: a fresh model per setting (same weights), how to read logits."""

    name: str
    build: Callable[[], nn.Module]
    fuse: bool = False
    logits_fn: Callable[[Any], torch.Tensor] | None = None
    infer_only: bool = False  # a second inference form of a model timed in training already


def _hf_logits(out: Any) -> torch.Tensor:
    return out.logits


def _same_function_check(ours: nn.Module, hf: nn.Module, img_size: int) -> float:
    """Max |logit difference| of our CvT-13 and transformers' on one batch, same weights.

    transformers uses exact GELU where the official CvT uses QuickGELU; for this check a
    copy of the transformers model gets QuickGELU, so what remains is rounding (and its
    final LayerNorm's eps of 1e-12 instead of 1e-5).
    """
    from timm.layers import QuickGELU

    twin = copy.deepcopy(hf)
    for mod in twin.modules():
        if isinstance(getattr(mod, "activation", None), nn.GELU):
            mod.activation = QuickGELU()
    x = torch.randn(2, 3, img_size, img_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return (ours(x) - twin(x).logits).abs().max().item()


def build_impls(img_size: int, num_classes: int = 1000) -> tuple[list[Impl], dict[str, Any]]:
    """Ours (fused, and as built) and the peers; notes such as the CvT logit difference after the copy."""
    import timm
    from transformers import CvtConfig, CvtForImageClassification

    from ecvit.models import create_model, model_entry

    torch.manual_seed(0)
    hf = CvtForImageClassification(CvtConfig(num_labels=num_classes)).eval()
    ours_cvt = create_model("cvt_13", num_classes=num_classes, img_size=img_size).eval()
    cvt_module = sys.modules[model_entry("cvt_13").fn.__module__]
    state = cvt_module.checkpoint_filter_fn(hf.state_dict(), ours_cvt)
    ours_cvt.load_state_dict(state)
    notes = {"cvt13_weights": "transformers' random init copied into ours via checkpoint_filter_fn",
             "cvt13_max_abs_logit_diff": _same_function_check(ours_cvt, hf, img_size)}

    torch.manual_seed(0)
    deit = timm.create_model("deit_tiny_patch16_224", num_classes=num_classes, img_size=img_size)
    torch.manual_seed(0)
    vit = create_model("dws_vit_tiny", num_classes=num_classes, img_size=img_size)
    torch.manual_seed(0)
    ecv = create_model("ecvit_small", num_classes=num_classes, img_size=img_size)

    impls = [
        Impl("ecvit cvt_13", lambda: copy.deepcopy(ours_cvt), fuse=True),
        Impl("transformers CvT-13", lambda: copy.deepcopy(hf), logits_fn=_hf_logits),
        Impl("ecvit vit_tiny", lambda: copy.deepcopy(vit), fuse=True),
        Impl("timm deit_tiny_patch16_224", lambda: copy.deepcopy(deit)),
        Impl("ecvit ecvit_small", lambda: copy.deepcopy(ecv), fuse=True),
        Impl("ecvit cvt_13 (as built)", lambda: copy.deepcopy(ours_cvt), infer_only=True),
        Impl("ecvit vit_tiny (as built)", lambda: copy.deepcopy(vit), infer_only=True),
        Impl("ecvit ecvit_small (as built)", lambda: copy.deepcopy(ecv), infer_only=True),
    ]
    return impls, notes


def _prepare(impl: Impl, train: bool) -> nn.Module:
    model = impl.build()
    model.train(train)
    if impl.fuse and not train:
        from ecvit.models import fuse

        model = fuse(model)
    return model


def run_setting(
    impls: list[Impl],
    *,
    amp: str,
    train: bool,
    args: argparse.Namespace,
    device: torch.device,
    macs: dict[str, int],
    log: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """Interleaved repeats of every implementation for one (amp, mode) setting."""
    impls = [i for i in impls if not (train and i.infer_only)]
    works = {
        i.name: Workload(_prepare(i, train), batch_size=args.batch_size, img_size=args.img_size,
                         amp=amp, compile=args.compile, train=train,
                         channels_last=args.channels_last, device=device, logits_fn=i.logits_fn)
        for i in impls
    }
    for name, w in works.items():  # warm-up (and compilation) outside the timed rounds
        t0 = time.perf_counter()
        w.time_steps(args.warmup)
        if not train:
            w.time_steps(args.warmup, batch_size=1)
        log(f"  warmed up {name} ({time.perf_counter() - t0:.1f}s)")
    rounds: dict[str, list[float]] = {n: [] for n in works}
    lat: dict[str, list[float]] = {n: [] for n in works}
    order = list(works)
    for r in range(args.repeats):
        for name in order if r % 2 == 0 else order[::-1]:
            step_s = statistics.median(works[name].time_steps(args.iters))
            rounds[name].append(args.batch_size / step_s)
            if not train:
                lat[name].append(statistics.median(works[name].time_steps(args.latency_iters, batch_size=1)))
    out = {}
    for name in works:
        tput = statistics.median(rounds[name])
        out[name] = {
            "throughput_img_s": tput,
            "throughput_rounds": rounds[name],
            "latency_ms_median": statistics.median(lat[name]) * 1e3 if lat[name] else None,
            "achieved_gflop_s": flops_per_mac(train) * macs[name] * tput / 1e9,
        }
        log(f"  {name:28s} {tput:9.1f} img/s")
    return out


def _peak_key(amp: str) -> str:
    """The report's key for the matmul peak an ``--amp`` setting is compared to ('bfloat16', ...)."""
    return str(peak_dtype(amp)).replace("torch.", "")


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def render_markdown(report: dict[str, Any]) -> str:
    """The result tables: absolute numbers per setting, then ratios ours/peer."""
    m = report["machine"]
    cfg = report["config"]
    peaks = report["matmul_peak_gflop_s"]
    lines = [
        f"## Speed comparison ({report['device']})",
        "",
        f"- Machine: {m['cpu']}, {m['cpu_cores']} cores (torch threads {m['torch_threads']}; "
        f"{' '.join(m.get('cpu_matrix_flags', []))})"
        + (f", GPU {m['gpu']}" if m.get("gpu") else "")
        + f"; torch {m['torch']}, Python {m['python']}; 1-min load average at start "
        f"{m.get('loadavg_1min_at_start', '-')}, at end {report.get('loadavg_1min_at_end', '-')}",
        "- Measured matmul peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()),
        f"- Batch {cfg['batch_size']}, {cfg['img_size']} px, compile={cfg['compile']}, "
        f"channels_last={cfg['channels_last']}; {cfg['repeats']} interleaved rounds of "
        f"{cfg['iters']} step(s) each (median of rounds), {cfg['warmup']} warm-up step(s); our models fused for inference "
        "(`ecvit.fuse`), and also timed as built (eval mode, not fused)",
        f"- CvT-13 weights: {report['notes']['cvt13_weights']} (max |logit diff| "
        f"{report['notes']['cvt13_max_abs_logit_diff']:.1e} with QuickGELU swapped into a copy of "
        "transformers' model; it is timed as shipped, with exact GELU)",
        "",
        "| model | MACs (G) | params (M) | setting | img/s | batch-1 latency (ms) | GFLOP/s | % of matmul peak |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for setting, res in report["results"].items():
        amp = res["amp"]
        for name, r in res["models"].items():
            pk = peaks[_peak_key(amp)]
            lines.append(
                f"| {name} | {report['macs'][name] / 1e9:.2f} | {report['params'][name] / 1e6:.2f} | {setting} "
                f"| {r['throughput_img_s']:.1f} | {_fmt(r['latency_ms_median'], '.1f')} "
                f"| {r['achieved_gflop_s']:.0f} | {100 * r['achieved_gflop_s'] / pk:.1f} |"
            )
    settings = list(report["results"])
    lines += ["", "Throughput ratio ours / peer (higher is better; target in brackets):", "",
              "| ours vs peer | " + " | ".join(settings) + " |",
              "|---|" + "---:|" * len(settings)]
    for ours, peer in PAIRS:
        if not any(ours in r["models"] and peer in r["models"] for r in report["results"].values()):
            continue
        cells = []
        for s in settings:
            res = report["results"][s]["models"]
            if ours not in res or peer not in res:
                cells.append("-")
                continue
            ratio = res[ours]["throughput_img_s"] / res[peer]["throughput_img_s"]
            target = report["targets"].get(f"{ours} | {peer} | {s}")
            cells.append(f"{ratio:.2f}x" + (f" [>= {target['min']}x {'met' if ratio >= target['min'] else 'MISSED'}]"
                                            if target else ""))
        lines.append(f"| {ours} vs {peer} | " + " | ".join(cells) + " |")
    lines += _target_requirements(report)
    return "\n".join(lines) + "\n"


def _target_requirements(report: dict[str, Any]) -> list[str]:
    """What each target asks of the hardware: the throughput it needs, as a share of the matmul peak.

    The needed GFLOP/s count every MAC of the model at the peak measured for plain
    matrix multiplication in the same run, so 100% would mean the whole network (norms,
    activations, attention, depth-wise convs included) running at matmul speed.
    """
    rows = []
    for key, target in report["targets"].items():
        ours, peer, setting = key.split(" | ")
        res = report["results"].get(setting, {}).get("models", {})
        if ours not in res or peer not in res:
            continue
        peak = report["matmul_peak_gflop_s"][_peak_key(report["results"][setting]["amp"])]
        per_img = flops_per_mac(report["results"][setting]["train"]) * report["macs"][ours] / 1e9
        need = target["min"] * res[peer]["throughput_img_s"]
        have = res[ours]["throughput_img_s"]
        rows.append(f"| {ours} vs {peer}, {setting}, >= {target['min']}x | {need:.1f} | {100 * need * per_img / peak:.0f}% "
                    f"| {have:.1f} | {100 * have * per_img / peak:.0f}% |")
    if not rows:
        return []
    return ["", "What each target needs: img/s of ours, and the share of the measured matmul peak that "
            "throughput means for all of the model's MACs:", "",
            "| target | needed img/s | needed % of peak | measured img/s | measured % of peak |",
            "|---|---:|---:|---:|---:|", *rows]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default=None,
                   help="comma list of off|bf16|fp16 (default: off,bf16 on CPU; off,bf16,fp16 on CUDA)")
    p.add_argument("--modes", default="infer,train", help="comma list of infer|train")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds per setting")
    p.add_argument("--iters", type=int, default=2, help="timed steps per model per round")
    p.add_argument("--latency-iters", type=int, default=5, help="batch-1 steps per model per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice); 1 gives stable ratios "
                        "on a machine shared with other work")
    p.add_argument("--compile", action="store_true", help="torch.compile every model")
    p.add_argument("--channels-last", action="store_true", help="channels_last weights and inputs")
    p.add_argument("--only", default=None,
                   help="comma list of implementation names to run (substrings), e.g. 'cvt,CvT'")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes and one round: checks the script runs, numbers mean nothing")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--render", type=Path, default=None, metavar="JSON",
                   help="print the tables of an earlier run's JSON report (and rewrite its .md) instead of measuring")
    args = p.parse_args(argv)
    if args.smoke:
        args.batch_size, args.img_size = 2, 64
        args.repeats, args.iters, args.latency_iters, args.warmup = 2, 1, 1, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def rerender(path: Path) -> int:
    """Rewrite ``<report>.md`` from ``<report>.json`` with the current tables."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"--render {path}: cannot read a JSON report ({exc})") from None
    md = render_markdown(report)
    print(md)
    path.with_suffix(".md").write_text(md)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.render is not None:
        return rerender(args.render)
    device = resolve_device(args.device)
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads {args.threads}: must be >= 1")
        torch.set_num_threads(args.threads)
    amps = (args.amp or ("off,bf16,fp16" if device.type == "cuda" else "off,bf16")).split(",")
    for a in amps:
        check_amp(a, device)
    modes = args.modes.split(",")
    if any(m not in ("infer", "train") for m in modes):
        raise UsageError(f"--modes {args.modes!r}: use infer and/or train")
    if min(args.batch_size, args.img_size, args.repeats, args.iters, args.latency_iters) < 1 or args.warmup < 0:
        raise UsageError("--batch-size, --img-size, --repeats, --iters, --latency-iters must be >= 1")

    def log(msg: str) -> None:
        print(msg, flush=True)

    machine = machine_info(device)
    peak_sizes = (256, 512) if args.smoke else (2048, 4096)
    peaks = {}
    for a in ["off", *[x for x in amps if x != "off"]]:
        peaks[_peak_key(a)] = measure_matmul_peak(peak_dtype(a), device, sizes=peak_sizes)
    log("matmul peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))

    impls, notes = build_impls(args.img_size)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",")]
        impls = [i for i in impls if any(w in i.name for w in wanted)]
        if not impls:
            raise UsageError(f"--only {args.only!r} matches none of the implementations")
    macs, params = {}, {}
    for i in impls:
        m = _prepare(i, train=False)
        macs[i.name] = count_macs(m, args.img_size)
        params[i.name] = count_params(i.build())

    results: dict[str, Any] = {}
    for mode in modes:
        for amp in amps:
            setting = f"{'fp32' if amp == 'off' else amp} {mode}"
            log(f"{setting}:")
            results[setting] = {
                "amp": amp, "train": mode == "train",
                "models": run_setting(impls, amp=amp, train=mode == "train", args=args,
                                      device=device, macs=macs, log=log),
            }
    targets = {}
    if device.type == "cpu":
        for ours, peer, amp, train, ratio in CPU_TARGETS:
            setting = f"{'fp32' if amp == 'off' else amp} {'train' if train else 'infer'}"
            targets[f"{ours} | {peer} | {setting}"] = {"min": ratio}
    report = {
        "device": str(device),
        "machine": machine,
        "matmul_peak_gflop_s": peaks,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "notes": notes,
        "macs": macs,
        "params": params,
        "targets": targets,
        "results": results,
    }
    try:
        with open("/proc/loadavg") as fh:
            report["loadavg_1min_at_end"] = float(fh.read().split()[0])
    except OSError:
        pass
    md = render_markdown(report)
    print()
    print(md)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / device.type
    (stem.with_suffix(".md")).write_text(md)
    (stem.with_suffix(".json")).write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {stem}.md and {stem}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
