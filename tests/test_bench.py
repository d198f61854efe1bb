"""The benchmark tool (``ecvit.bench``, ``ecvit benchmark``) and ``benchmarks/compare.py`` run.

Speed itself is never asserted: only that the tool measures, reports the documented keys
with consistent values, and writes its files.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from pathlib import Path

import pytest
import torch
from _cli_helpers import load_script
from torch import nn

from ecvit.bench import (
    Workload,
    benchmark_command,
    benchmark_model,
    format_result_table,
    machine_info,
    measure_matmul_peak,
    percentile,
)
from ecvit.errors import UsageError
from ecvit.flops import count_macs

ROOT = Path(__file__).resolve().parents[1]

KEYS = {
    "batch_size", "img_size", "amp", "compile", "train", "channels_last", "device", "params",
    "macs_per_img", "throughput_img_s", "step_ms_median", "step_ms_p90", "latency_ms_median",
    "latency_ms_p90", "peak_memory_mib", "memory_method", "gflops_per_img", "achieved_gflop_s",
    "matmul_peak_gflop_s", "fraction_of_peak",
}


def tiny_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.GELU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )


def test_benchmark_model_inference_reports_consistent_numbers():
    model = tiny_net()
    r = benchmark_model(model, batch_size=4, img_size=16, warmup=1, iters=2, latency_iters=3,
                        matmul_peak_gflops=100.0)
    assert set(r) == KEYS
    assert r["macs_per_img"] == count_macs(tiny_net(), 16)
    assert r["params"] == sum(p.numel() for p in model.parameters())
    assert r["throughput_img_s"] > 0 and math.isfinite(r["throughput_img_s"])
    assert r["throughput_img_s"] == pytest.approx(4 / (r["step_ms_median"] / 1e3))
    assert 0 < r["latency_ms_median"] <= r["latency_ms_p90"]
    assert r["gflops_per_img"] == pytest.approx(2 * r["macs_per_img"] / 1e9)
    assert r["achieved_gflop_s"] == pytest.approx(r["gflops_per_img"] * r["throughput_img_s"])
    assert r["fraction_of_peak"] == pytest.approx(r["achieved_gflop_s"] / 100.0)
    # At least the weights are resident during a step.
    weight_mib = sum(p.numel() * 4 for p in model.parameters()) / 2**20
    assert r["peak_memory_mib"] >= weight_mib
    assert r["memory_method"]
    assert not model.training  # inference mode leaves the model in eval
    assert "throughput" in format_result_table("tiny", r)


def test_benchmark_model_training_step_updates_weights_and_counts_three_passes():
    model = tiny_net()
    before = [p.detach().clone() for p in model.parameters()]
    r = benchmark_model(model, batch_size=4, img_size=16, amp="bf16", train=True, warmup=1,
                        iters=1, latency_iters=1)
    assert r["train"] and r["amp"] == "bf16"
    assert r["gflops_per_img"] == pytest.approx(6 * r["macs_per_img"] / 1e9)
    assert r["fraction_of_peak"] is None and r["matmul_peak_gflop_s"] is None
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # AdamW keeps two moments per parameter: at least 3x the weights stay resident.
    weight_mib = sum(p.numel() * 4 for p in model.parameters()) / 2**20
    assert r["peak_memory_mib"] >= 3 * weight_mib


def test_workload_channels_last_and_logits_fn():
    model = tiny_net()
    seen = []

    def logits(out):
        seen.append(out.shape)
        return out

    w = Workload(model, batch_size=2, img_size=8, channels_last=True, logits_fn=logits)
    x, _ = w.inputs(2)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert w.time_steps(2)[0] > 0
    assert seen == [torch.Size([2, 10])] * 2
    assert w.inputs(2)[0] is x  # the same inputs every step


@pytest.mark.slow
def test_workload_compile_freezes_inference_and_still_trains():
    """--compile: the inference graph is frozen (weights as constants) and equals eager."""
    model = tiny_net().eval()
    seen = []
    w = Workload(model, batch_size=2, img_size=8, compile=True,
                 logits_fn=lambda out: seen.append(out.clone()) or out)
    w.step()
    with torch.no_grad():
        torch.testing.assert_close(seen[0], model(w.inputs(2)[0]), atol=1e-5, rtol=1e-5)
    trained = tiny_net()
    before = [p.detach().clone() for p in trained.parameters()]
    Workload(trained, batch_size=2, img_size=8, compile=True, train=True).step()
    assert any(not torch.equal(a, b) for a, b in zip(before, trained.parameters()))


def test_fp16_on_cpu_and_bad_values_are_usage_errors():
    with pytest.raises(UsageError, match="fp16"):
        benchmark_model(tiny_net(), batch_size=2, img_size=8, amp="fp16", device="cpu")
    with pytest.raises(UsageError, match="amp"):
        benchmark_model(tiny_net(), batch_size=2, img_size=8, amp="int8")
    with pytest.raises(UsageError, match="iterations"):
        benchmark_model(tiny_net(), batch_size=2, img_size=8, iters=0)


def test_matmul_peak_and_percentile():
    for dtype in (torch.float32, torch.bfloat16):
        peak = measure_matmul_peak(dtype, "cpu", sizes=(64, 128), repeats=2)
        assert peak > 0 and math.isfinite(peak)
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 90) == pytest.approx(4.6)
    assert percentile([7.0], 90) == 7.0
    info = machine_info("cpu")
    assert info["cpu"] and info["cpu_cores"] >= 1 and info["torch"] == torch.__version__


@functools.lru_cache(maxsize=1)
def _smallest_model() -> str:
    from ecvit.flops import count_params
    from ecvit.models import create_model, list_models

    names = list_models()
    assert names, "no model is registered"
    with torch.device("meta"):
        return min(names, key=lambda n: count_params(create_model(n)))


def test_benchmark_command_writes_json(tmp_path, capsys):
    name = _smallest_model()
    out = tmp_path / "r.json"
    args = argparse.Namespace(model=name, batch_size=2, img_size=64, amp="bf16", compile=False,
                              train=True, channels_last=False, json=str(out), device="cpu",
                              warmup=1, iters=1)
    assert benchmark_command(args) == 0
    data = json.loads(out.read_text())
    assert KEYS <= set(data)
    assert data["model"] == name and data["batch_size"] == 2 and data["img_size"] == 64
    assert data["train"] and not data["fused"]  # training runs the unfused model
    assert data["machine"]["cpu"]
    assert 0 < data["fraction_of_peak"]
    assert name in capsys.readouterr().out


def test_benchmark_command_rejects_fp16_on_cpu_and_missing_json_dir(tmp_path):
    base = dict(model=_smallest_model(), batch_size=2, img_size=None, compile=False,
                train=False, channels_last=False, device="cpu")
    with pytest.raises(UsageError, match="fp16"):
        benchmark_command(argparse.Namespace(**base, amp="fp16", json=None))
    with pytest.raises(UsageError, match="--json"):
        benchmark_command(argparse.Namespace(**base, amp="off", json=str(tmp_path / "no" / "r.json")))


def test_ecvit_benchmark_cli(tmp_path, capsys):
    from ecvit import cli

    name = _smallest_model()
    out = tmp_path / "cli.json"
    code = cli.main(["benchmark", "--model", name, "--batch-size", "2", "--img-size", "64",
                     "--amp", "bf16", "--channels-last", "--device", "cpu", "--warmup", "1",
                     "--iters", "2", "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert not data["train"] and data["amp"] == "bf16" and data["channels_last"]
    assert data["img_size"] == 64 and data["batch_size"] == 2
    assert data["fused"] is True  # inference benchmarks run ecvit.fuse's form
    assert cli.main(["benchmark", "--model", name, "--amp", "fp16", "--device", "cpu"]) == 2
    assert "fp16" in capsys.readouterr().err


def _load_compare():
    return load_script("benchmarks/compare.py", "ecvit_compare")


@pytest.mark.slow
def test_compare_smoke_runs_all_peers(tmp_path):
    pytest.importorskip("transformers")
    compare = _load_compare()
    # bf16 only (fp32 is the same code path without autocast) keeps this test short.
    threads = torch.get_num_threads()
    try:
        assert compare.main(["--smoke", "--amp", "bf16", "--threads", "1", "--out-dir", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads((tmp_path / "cpu.json").read_text())
    md = (tmp_path / "cpu.md").read_text()
    names = {"ecvit cvt_13", "transformers CvT-13", "ecvit vit_tiny", "timm deit_tiny_patch16_224",
             "ecvit ecvit_small"}
    as_built = {"ecvit cvt_13 (as built)", "ecvit vit_tiny (as built)", "ecvit ecvit_small (as built)"}  # inference only
    assert set(report["results"]) == {"bf16 infer", "bf16 train"}
    assert set(report["results"]["bf16 infer"]["models"]) == names | as_built
    assert set(report["results"]["bf16 train"]["models"]) == names
    for setting in report["results"].values():
        for r in setting["models"].values():
            assert r["throughput_img_s"] > 0 and len(r["throughput_rounds"]) == 2
    # Same weights: our CvT-13 with transformers' weights computes the same function.
    assert report["notes"]["cvt13_max_abs_logit_diff"] < 1e-3
    assert set(report["matmul_peak_gflop_s"]) == {"float32", "bfloat16"}
    assert "ecvit cvt_13 vs transformers CvT-13" in md and report["machine"]["cpu"] in md
    assert "| ecvit ecvit_small (as built) vs ecvit ecvit_small | " in md
    assert report["machine"]["torch_threads"] == 1
    # The targets table: twice transformers' bf16 inference throughput is what cvt_13 needs.
    peer = report["results"]["bf16 infer"]["models"]["transformers CvT-13"]["throughput_img_s"]
    row = next(line for line in md.splitlines() if line.startswith("| ecvit cvt_13 vs transformers CvT-13, bf16 infer"))
    assert row.split("|")[2].strip() == f"{2 * peer:.1f}"
    # --render rebuilds the same tables from the JSON report alone.
    (tmp_path / "cpu.md").unlink()
    assert compare.main(["--render", str(tmp_path / "cpu.json")]) == 0
    assert (tmp_path / "cpu.md").read_text() == md


def test_compare_rejects_bad_flags(capsys):
    compare = _load_compare()
    assert compare.main(["--smoke", "--amp", "fp16"]) == 2
    assert compare.main(["--smoke", "--modes", "eval"]) == 2
    assert compare.main(["--smoke", "--threads", "0"]) == 2
    assert compare.main(["--render", "no/such/report.json"]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("amp, train, expected", [("bf16", True, True), ("off", True, False),
                                                  ("bf16", False, False)])
def test_training_workloads_use_the_engines_cpu_precision_policy(amp, train, expected):
    import ecvit

    model = ecvit.create_model("ecvit_tiny", num_classes=4, img_size=32)
    Workload(model, batch_size=2, img_size=32, amp=amp, train=train)
    from ecvit.models.speed import cpu_autocast_training_on

    assert cpu_autocast_training_on(model) == expected
