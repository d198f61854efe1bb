"""The reference ``main.py``: ``--mode train | validate | train_and_validate``, same flag table."""

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _cli_helpers import run_entry

ROOT = Path(__file__).resolve().parents[1]
MAIN = runpy.run_path(str(ROOT / "main.py"), run_name="main_py")
TINY = ["--model", "ecvit_tiny", "--dataset", "simulated", "--train-size", "48", "--val-size", "20",
        "--img-size", "32", "--num-classes", "3", "--batch-size", "16", "--epochs", "1",
        "--device", "cpu"]


def run_main_py(argv, capsys):
    """``python main.py ARGV`` in-process."""
    return run_entry(MAIN["main"], argv, capsys)


def test_reference_defaults_and_flags(capsys):
    code, out, err = run_main_py(["--mode", "train", "--dry-run"], capsys)
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert cfg["MODEL"]["NAME"] == "ecvit_small"
    assert (cfg["DATA"]["DATASET"], cfg["DATA"]["IMG_SIZE"]) == ("simulated", 224)
    assert cfg["OUTPUT_DIR"].startswith("output/train/") and cfg["DEVICE"] == ""
    assert cfg["OUTPUT_DIR"].endswith("-ecvit_small-224")  # a folder of its own, timm's layout
    code, out, err = run_main_py(["--mode", "train", "--dry-run", "--embed-dims", "64,128,192",
                                  "--depths", "1,1,1", "--num-heads", "2,4,6", "--mlp-ratios",
                                  "2,2,2", "--block-size", "4", "--optimizer", "sgd", "--lr", "0.05",
                                  "--weight-decay", "0.0001", "--seed", "5", "--no-resume"],
                                 capsys)
    assert code == 0, err
    cfg = yaml.safe_load(out)
    args = cfg["MODEL"]["ARGS"]  # the reference shape flags are ECViT's constructor arguments
    assert args["embed_dims"] == [64, 128, 192] and args["block_size"] == 4
    assert args["mlp_ratios"] == [2.0, 2.0, 2.0] and cfg["TRAIN"]["OPTIMIZER"] == "sgd"
    assert (cfg["TRAIN"]["LR"], cfg["TRAIN"]["AUTO_RESUME"], cfg["SEED"]) == (0.05, False, 5)
    # the preflight refuses what the run would fail on: a --resume file that is not there
    code, _, err = run_main_py(["--mode", "train", "--dry-run", "--resume", "x.pth"], capsys)
    assert code == 2 and "TRAIN.RESUME: checkpoint not found: x.pth" in err


def test_help_shows_the_reference_defaults(capsys):
    code, out, _ = run_main_py(["--help"], capsys)
    flat = " ".join(out.split())
    assert code == 0 and "--mode {train,validate,train_and_validate}" in flat
    assert "(default: ecvit_small)" in flat and "(default: simulated)" in flat
    assert "(default: digits: 32, else the model's)" in flat and "cuda when available" in flat


@pytest.mark.parametrize("argv, fragment", [
    (["--mode", "train", "--checkpoint", "x.pth"], "--checkpoint is for --mode validate"),
    (["--mode", "validate", "--checkpoint", "missing.pth"], "checkpoint not found"),
    (["--mode", "train", "--depths", "1,2"], "ecvit_small"),
    (["--mode", "train", "--num-classes", "0"], "--num-classes: DATA.NUM_CLASSES must be positive"),
])
def test_usage_errors_exit_2(argv, fragment, capsys):
    code, _, err = run_main_py(argv, capsys)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_all_three_modes(tmp_path, capsys):
    first = tmp_path / "first"
    code, out, err = run_main_py(["--mode", "train", *TINY, "--output-dir", str(first)], capsys)
    assert code == 0, err
    assert (first / "model_best.pth").is_file() and not list(first.glob("*validate.json"))
    top1 = json.loads((first / "metrics.json").read_text())[-1]["val_top1"]

    code, out, err = run_main_py(["--mode", "validate", *TINY, "--output-dir", str(tmp_path / "val"),
                                  "--checkpoint", str(first / "model_best.pth")], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "val" / "model_best.validate.json").read_text())
    assert result["num_samples"] == 20 and result["top1"] == pytest.approx(top1)
    assert (tmp_path / "val" / "model_best.confusion.png").is_file()

    both = tmp_path / "both"
    code, out, err = run_main_py(["--mode", "train_and_validate", *TINY, "--output-dir", str(both)],
                                 capsys)
    assert code == 0, err
    result = json.loads((both / "model_best.validate.json").read_text())
    assert result["checkpoint"] == str(both / "model_best.pth")


@pytest.mark.slow
def test_script_entry_point_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "--mode", "validate",
                           "--checkpoint", str(tmp_path / "none.pth")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"error: checkpoint not found: {tmp_path / 'none.pth'}"
