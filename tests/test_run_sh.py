"""``run.sh``: the CvT-style torchrun launcher, its usage errors and a tiny train + test."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_sh(*args, timeout=600):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    return subprocess.run(["bash", str(ROOT / "run.sh"), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture
def experiment(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(f"""\
OUTPUT_DIR: {tmp_path / 'out'}
DEVICE: cpu
MODEL:
  NAME: ecvit_tiny
DATA:
  DATASET: simulated
  IMG_SIZE: 32
  NUM_CLASSES: 3
  TRAIN_SIZE: 48
  VAL_SIZE: 21
TRAIN:
  EPOCHS: 1
  BATCH_SIZE: 8
  WARMUP_EPOCHS: 0
TEST:
  BATCH_SIZE: 8
""")
    return path


def test_help_documents_the_options():
    proc = run_sh("--help")
    assert proc.returncode == 0
    for option in ("-g", "-t train|test", "--cfg", "-p, --port", "--nnodes", "--node_rank",
                   "--master_addr", "TEST.MODEL_FILE", "-t, --job-type", "-i, --install-deps"):
        assert option in proc.stdout, option


@pytest.mark.parametrize("flags", [["--gpus", "2", "--job-type", "test", "--port", "29612", "--install-deps"],
                                   ["-g", "2", "-t", "test", "-p", "29612", "-i"]])
def test_official_flags(experiment, tmp_path, flags):
    """microsoft/CvT's run.sh flags: -g/--gpus, -t/--job-type, -p/--port, -i/--install-deps."""
    log = tmp_path / "calls.txt"
    fake = tmp_path / "fake-python"
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
    fake.chmod(0o755)
    proc = subprocess.run(["bash", str(ROOT / "run.sh"), *flags, "--cfg", str(experiment)], capture_output=True,
                          text=True, env=dict(os.environ, PYTHON=str(fake)), timeout=60)
    assert proc.returncode == 0, proc.stderr
    install, check, launch = log.read_text().splitlines()
    assert install == f"-m pip install -q -e {ROOT}"
    assert check.startswith("-m ecvit validate --cfg") and "--nproc_per_node 2" in launch
    assert "--master_port 29612" in launch


@pytest.mark.parametrize("args, fragment", [
    (["-g", "1", "-t", "train"], "--cfg FILE is required"),
    (["-g", "0", "--cfg", "{cfg}"], "-g must be a positive integer"),
    (["-g", "two", "--cfg", "{cfg}"], "-g must be a positive integer"),
    (["-t", "eval", "--cfg", "{cfg}"], "-t must be train or test"),
    (["--cfg", "{cfg}", "--bogus"], "unknown option --bogus"),
    (["--cfg"], "--cfg needs a value"),
    (["--cfg", "missing.yaml"], "config file not found"),
    (["--cfg", "{cfg}", "-p", "99999"], "-p must be a port number"),
    (["--cfg", "{cfg}", "--nnodes", "2", "--node_rank", "2"], "--node_rank must be an integer in 0..1"),
    (["--cfg", "{cfg}", "TRAIN.LR"], "KEY VALUE pairs"),
])
def test_usage_errors_exit_2(experiment, args, fragment):
    proc = run_sh(*[a.replace("{cfg}", str(experiment)) for a in args])
    assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("args, launcher", [
    (["-g", "4"], ["--nproc_per_node", "4", "--standalone"]),
    (["-g", "2", "-p", "29611"], ["--nproc_per_node", "2", "--nnodes", "1", "--node_rank", "0",
                                  "--master_addr", "127.0.0.1", "--master_port", "29611"]),
    (["-g", "8", "--nnodes", "2", "--node_rank", "1", "--master_addr", "10.0.0.1"],
     ["--nproc_per_node", "8", "--nnodes", "2", "--node_rank", "1", "--master_addr", "10.0.0.1",
      "--master_port", "29500"]),
])
@pytest.mark.parametrize("kind, command", [("train", "train"), ("test", "validate")])
def test_launch_command(experiment, tmp_path, args, launcher, kind, command):
    """With PYTHON pointing at a script that logs its arguments, the exact commands show."""
    log = tmp_path / "calls.txt"
    fake = tmp_path / "fake-python"
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake))
    proc = subprocess.run(["bash", str(ROOT / "run.sh"), *args, "-t", kind, "--cfg",
                           str(experiment), "TRAIN.LR", "0.5"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    check, launch = log.read_text().splitlines()
    assert check == f"-m ecvit {command} --cfg {experiment} --dry-run TRAIN.LR 0.5"
    assert launch == " ".join(["-m torch.distributed.run", *launcher, "-m ecvit", command,
                               "--cfg", str(experiment), "TRAIN.LR 0.5"])


@pytest.mark.slow
def test_config_mistake_is_one_line_before_any_process_starts(experiment):
    proc = run_sh("-g", "2", "-t", "train", "--cfg", experiment, "TRAIN.LRR", "0.1")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: override: unknown key TRAIN.LRR (did you mean TRAIN.LR?)"
    assert not (experiment.parent / "out").exists()


@pytest.mark.slow
def test_train_on_two_processes_then_test_on_one(experiment, tmp_path):
    out = tmp_path / "out"
    proc = run_sh("-g", 2, "-t", "train", "--cfg", experiment, "SEED", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("# model ecvit_tiny:")  # the preflight's plan, shown first
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics) == 1 and (out / "model_best.pth").is_file()
    assert "SEED: 1" in (out / "config.yaml").read_text()  # the override reached the run

    proc = run_sh("-g", 1, "-t", "test", "--cfg", experiment, "OUTPUT_DIR", tmp_path / "test",
                  "TEST.MODEL_FILE", out / "model_best.pth")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "test" / "model_best.validate.json").read_text())
    assert result["num_samples"] == 21  # odd size: every sample counted once
    assert result["top1"] == pytest.approx(metrics[-1]["val_top1"])


@pytest.mark.slow
def test_preflight_refuses_what_every_rank_would_fail_on(experiment):
    proc = run_sh("-g", "2", "-t", "train", "--cfg", experiment, "TRAIN.AMP", "fp16")
    assert proc.returncode == 2 and "fp16 needs a CUDA device" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (experiment.parent / "out").exists()
