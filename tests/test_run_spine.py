"""The run spine through the public CLI: variant defaults, the preflight, the checkpoint spec,
validate after train, safe resume and the run lock."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from _cli_helpers import run_entry, run_main
from _runs import CLASSES, RUN, make_folder, train_argv
from PIL import Image

from ecvit.io.checkpoint import read_checkpoint


def dry_run(argv, capsys):
    code, out, err = run_main(["train", "--dry-run", *argv], capsys)
    assert code == 0, err
    return yaml.safe_load(out), out


@pytest.fixture(scope="module")
def folder(pets_folder):
    """The shared run's data (``conftest.pets_folder``)."""
    return pets_folder


@pytest.fixture(scope="module")
def run_dir(pets_run):
    """The session's shared run (``conftest.pets_run``)."""
    return pets_run


# ------------------------------------------------------------------ variant defaults


def test_variant_defaults_win_over_generic_ones(folder, capsys):
    cfg, text = dry_run(["--model", "cvt_w24", "--dataset", "folder", "--data-path", str(folder)], capsys)
    assert cfg["DATA"]["IMG_SIZE"] == 384 and cfg["MODEL"]["DROP_PATH_RATE"] == pytest.approx(0.3)
    assert "384x384 px" in text and "drop path 0.3" in text
    assert cfg["DATA"]["CROP_PCT"] == 1.0  # the 384 px recipe tests on the whole image
    cfg, _ = dry_run(["--model", "cvt_13", "--dataset", "folder", "--data-path", str(folder)], capsys)
    assert cfg["DATA"]["IMG_SIZE"] == 224 and cfg["MODEL"]["DROP_PATH_RATE"] == pytest.approx(0.1)
    assert cfg["DATA"]["CROP_PCT"] == 0.875 and cfg["DATA"]["MEAN"] == pytest.approx([0.485, 0.456, 0.406])
    cfg, _ = dry_run(["--model", "cvt_13", "--dataset", "folder", "--data-path", str(folder),
                      "--img-size", "64", "--drop-path", "0.05"], capsys)
    assert cfg["DATA"]["IMG_SIZE"] == 64 and cfg["MODEL"]["DROP_PATH_RATE"] == 0.05


def test_bundled_digits_job_keeps_its_measured_settings(capsys):
    cfg, _ = dry_run([], capsys)
    assert (cfg["MODEL"]["NAME"], cfg["DATA"]["DATASET"], cfg["DATA"]["IMG_SIZE"]) == \
        ("ecvit_tiny", "digits", 32)
    with open(os.path.join(os.path.dirname(__file__), "..", "experiments", "digits", "ecvit",
                           "ecvit-tiny.yaml")) as fh:
        written_out = yaml.safe_load(fh)
    assert cfg["MODEL"]["DROP_PATH_RATE"] == written_out["MODEL"]["DROP_PATH_RATE"]


def test_each_family_takes_its_own_arguments(folder, capsys):
    base = ["--model", "dws_vit_tiny_dw", "--dataset", "folder", "--data-path", str(folder)]
    cfg, text = dry_run([*base, "--num-heads", "3", "MODEL.ARGS", "{depth: 2, embed_dim: 96}"], capsys)
    assert cfg["MODEL"]["ARGS"] == {"depth": 2, "embed_dim": 96, "num_heads": 3}
    assert "num_heads=3" in text
    code, _, err = run_main(["train", "--dry-run", *base, "--embed-dims", "64,128"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "dws_vit_tiny_dw takes no argument 'embed_dims'" in err and "embed_dim, depth, num_heads" in err


# ------------------------------------------------------------------------ preflight


def _preflight_cases(tmp_path):
    data = make_folder(tmp_path / "data", per_class=1)
    return {
        "fp16 on cpu": (["--amp", "fp16", "--device", "cpu"], "fp16 needs a CUDA device"),
        "cuda missing": (["--device", "cuda"], "no CUDA device is available"),
        "missing root": (["--dataset", "folder", "--data-path", str(tmp_path / "nowhere")], "is not a directory"),
        "bad layout": (["--dataset", "folder", "--data-path", str(tmp_path)], "train"),
        "bad rand augment": (["--dataset", "folder", "--data-path", str(data), "AUG.RAND_AUGMENT",
                              "rand-mX"], "AUG.RAND_AUGMENT"),
        "bad augment name": (["--dataset", "folder", "--data-path", str(data), "AUG.RAND_AUGMENT",
                              "augmix-m3"], "AUG.RAND_AUGMENT"),
        "unknown dataset": (["--dataset", "cifar"], "unknown dataset 'cifar'"),
        "cifar without files": (["--dataset", "cifar10", "--data-path", str(data)], "cifar10: expected"),
        "model argument": (["MODEL.ARGS.WIDTH", "3"], "ecvit_tiny takes no argument 'width'"),
        "model shape": (["--depths", "1,2,3"], "ecvit_tiny"),
        "pretrained file": (["--pretrained", str(tmp_path / "none.pth")], "MODEL.PRETRAINED"),
        "grad checkpointing on a plain model": (["--model", "engine_probe_net",
                                                 "--grad-checkpointing"], "set_grad_checkpointing"),
    }


@pytest.mark.parametrize("case", [
    "fp16 on cpu", "cuda missing", "missing root", "bad layout", "bad rand augment",
    "bad augment name", "unknown dataset", "cifar without files", "model argument",
    "model shape", "pretrained file", "grad checkpointing on a plain model"])
def test_dry_run_catches_what_train_would_fail_on(case, tmp_path, capsys, monkeypatch):
    import _engine_helpers  # noqa: F401  (registers engine_probe_net)

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    argv, fragment = _preflight_cases(tmp_path)[case]
    out = tmp_path / "run"
    for dry in (True, False):
        code, _, err = run_main(["train", *(["--dry-run"] if dry else []), "--output-dir", str(out),
                                 "--epochs", "1", *argv], capsys)
        assert code == 2 and fragment in err, (dry, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert not out.exists()  # refused before any file was written


# ------------------------------------------------------------- checkpoint -> validate


@pytest.mark.slow
def test_validate_needs_only_the_checkpoint(run_dir, capsys):
    rows = json.loads((run_dir / "metrics.json").read_text())
    code, out, err = run_main(["validate", "--checkpoint", str(run_dir / "checkpoint.pth")], capsys)
    assert code == 0, err
    last = json.loads((run_dir / "checkpoint.validate.json").read_text())
    assert last["top1"] == rows[-1]["val_top1"] and last["dataset"] == "folder"
    code, out, err = run_main(["validate", "--checkpoint", str(run_dir / "model_best.pth")], capsys)
    assert code == 0, err
    best = json.loads((run_dir / "model_best.validate.json").read_text())
    assert best["top1"] == max(r["val_top1"] for r in rows)
    assert (run_dir / "model_best.confusion.png").is_file()


@pytest.mark.slow
def test_validate_refuses_a_dataset_with_other_classes(run_dir, tmp_path, capsys):
    other = make_folder(tmp_path / "other", classes=("ant", "bee", "cow"), per_class=1)
    code, _, err = run_main(["validate", "--checkpoint", str(run_dir / "model_best.pth"),
                             "--data-path", str(other)], capsys)
    assert code == 2 and "cat, dog, emu" in err and "ant, bee, cow" in err, err
    code, _, err = run_main(["validate", "--checkpoint", str(run_dir / "model_best.pth"),
                             "--dataset", "digits"], capsys)
    assert code == 2 and "has 10" in err, err


# ---------------------------------------------------------------------- resume rules


@pytest.mark.slow
def test_second_command_finishes_extends_or_refuses(run_dir, folder, capsys):
    before = (run_dir / "checkpoint.pth").read_bytes()
    common = ["--dataset", "folder", "--data-path", str(folder), "--output-dir", str(run_dir)]
    code, out, err = run_main(train_argv(*common), capsys)
    assert code == 0 and "already finished" in out and "--overwrite-output-dir" in out, err
    for argv, field in ((["--model", "dws_vit_tiny_dw"], "model ecvit_tiny -> dws_vit_tiny_dw"),
                        (["--optimizer", "sgd"], "optimizer adamw -> sgd"),
                        (["--depths", "1,1"], "model arguments")):
        code, _, err = run_main(train_argv(*common, *argv), capsys)
        assert code == 2 and "auto-resume" in err and field in err and "--overwrite-output-dir" in err, err
        assert len(err.strip().splitlines()) == 1
    other = make_folder(run_dir.parent / "four", classes=(*CLASSES, "fox"), per_class=2)
    code, _, err = run_main(train_argv("--dataset", "folder", "--data-path", str(other),
                                       "--output-dir", str(run_dir)), capsys)
    assert code == 2 and "classes 3 -> 4" in err, err
    assert (run_dir / "checkpoint.pth").read_bytes() == before  # untouched by every refusal


@pytest.mark.slow
def test_resume_applies_and_records_changed_hyper_parameters(folder, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--dataset", "folder", "--data-path", str(folder), "--output-dir", str(out)]
    assert run_main(train_argv(*common), capsys)[0] == 0
    code, text, err = run_main(train_argv(*common, "--epochs", "3", "--weight-decay", "0.01"), capsys)
    assert code == 0, err
    assert "resume changes TRAIN.WEIGHT_DECAY: 0.05 -> 0.01" in text
    ckpt = read_checkpoint(out / "checkpoint.pth")
    assert ckpt["epoch"] == 3
    assert ckpt["resumes"] == [{"epoch": 2, "changes": {"TRAIN.EPOCHS": [2, 3],
                                                         "TRAIN.WEIGHT_DECAY": [0.05, 0.01]}}]
    decays = sorted({g["weight_decay"] for g in ckpt["optimizer"]["param_groups"]})
    assert decays == [0.0, 0.01]  # no decay on norms/biases, the new value on the rest
    assert yaml.safe_load((out / "config.yaml").read_text())["TRAIN"]["WEIGHT_DECAY"] == 0.01


@pytest.mark.slow
def test_no_resume_starts_fresh(run_dir, folder, tmp_path, capsys):
    out = tmp_path / "fresh"
    common = ["--dataset", "folder", "--data-path", str(folder), "--output-dir", str(out)]
    assert run_main(train_argv(*common, "--epochs", "1"), capsys)[0] == 0
    code, text, err = run_main(train_argv(*common, "--epochs", "1", "--model", "dws_vit_tiny_dw",
                                          "--no-resume", "MODEL.ARGS", "{depth: 1}"), capsys)
    assert code == 2 and "holds another run (checkpoint.pth, model_best.pth" in err, err
    code, text, err = run_main(train_argv(*common, "--epochs", "1", "--model", "dws_vit_tiny_dw",
                                          "--overwrite-output-dir", "MODEL.ARGS", "{depth: 1}"), capsys)
    assert code == 0 and "fresh start, replacing the earlier run's files" in text, err
    assert read_checkpoint(out / "checkpoint.pth")["model_name"] == "dws_vit_tiny_dw"


# ------------------------------------------------------------------------- run lock


def test_a_live_run_owns_its_directory(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        (out / "run.lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                  "started": "now"}))
        (out / "checkpoint.pth").write_bytes(b"the first run's")
        for dry in ([], ["--dry-run"]):
            code, _, err = run_main(["train", *dry, "--output-dir", str(out), "--epochs", "1"], capsys)
            assert code == 2 and f"pid {holder.pid}" in err and "live run" in err, err
        assert (out / "checkpoint.pth").read_bytes() == b"the first run's"
        assert json.loads((out / "run.lock").read_text())["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over(tmp_path):
    import socket

    from ecvit.engine.runlock import RunLock

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "run.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                   "started": "then"}))
    with RunLock(tmp_path) as lock:
        assert lock.took_over["pid"] == dead.pid
        assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    assert not (tmp_path / "run.lock").exists()


# ----------------------------------------------------------------------- visibility


@pytest.mark.slow
def test_train_log_holds_banner_epochs_and_summary(run_dir):
    log = (run_dir / "train.log").read_text().splitlines()
    assert log[0].startswith("model ecvit_tiny:") and "parameters" in log[0] and "MACs" in log[0]
    assert any(line.startswith("data folder at ") and "18 train / 18 val" in line for line in log)
    assert any(line.startswith("device cpu, precision fp32") for line in log)
    assert any("fresh start" in line for line in log)
    assert [line.split()[1] for line in log if line.startswith("epoch ")] == ["1/2", "2/2"]
    assert log[-1].startswith("done: best epoch") and "model_best.pth" in log[-1]


# ------------------------------------------------------------------------------ EMA


@pytest.mark.slow
def test_ema_weights_are_the_ones_used_after_training(folder, tmp_path, capsys):
    out = tmp_path / "ema"
    code, _, err = run_main(["train", *RUN, "--dataset", "folder", "--data-path", str(folder),
                             "--output-dir", str(out), "--epochs", "3", "TRAIN.EMA", "true",
                             "TRAIN.EMA_DECAY", "0.5", "TRAIN.WARMUP_EPOCHS", "0"], capsys)
    assert code == 0, err
    rows = json.loads((out / "metrics.json").read_text())
    best = read_checkpoint(out / "model_best.pth")
    assert best["epoch"] == max(rows, key=lambda r: r["ema_val_top1"])["epoch"]  # chosen by EMA
    assert best["best_top1"] == max(r["ema_val_top1"] for r in rows)

    last = out / "checkpoint.pth"
    code, text, err = run_main(["validate", "--checkpoint", str(last)], capsys)
    assert code == 0 and "(EMA weights)" in text, err
    report = json.loads((out / "checkpoint.validate.json").read_text())
    assert report["weights"] == "EMA weights"
    assert (report["top1"], report["loss"]) == (rows[-1]["ema_val_top1"], pytest.approx(rows[-1]["ema_val_loss"]))
    code, text, err = run_main(["validate", "--checkpoint", str(last), "--no-use-ema"], capsys)
    assert code == 0 and "(weights)" in text, err
    raw = json.loads((out / "checkpoint.validate.json").read_text())
    assert raw["loss"] == pytest.approx(rows[-1]["val_loss"])

    image = tmp_path / "one.png"
    Image.fromarray(np.full((20, 20, 3), 60, np.uint8)).save(image)
    from ecvit.predict import predict

    ema_probs = predict(last, [image])[0]["top"]
    raw_probs = predict(last, [image], use_ema=False)[0]["top"]
    assert ema_probs != raw_probs  # decay 0.5 over 3 epochs: the two weight sets differ
    code, text, err = run_main(["export", "--checkpoint", str(last), "--format", "safetensors",
                                "--out", str(tmp_path / "ema.safetensors")], capsys)
    assert code == 0, err
    assert predict(tmp_path / "ema.safetensors", [image])[0]["top"] == ema_probs


@pytest.mark.slow
def test_use_ema_without_ema_weights_is_a_usage_error(run_dir, tmp_path, capsys):
    image = tmp_path / "one.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(image)
    for argv in (["validate", "--checkpoint", str(run_dir / "model_best.pth"), "--use-ema"],
                 ["predict", "--checkpoint", str(run_dir / "model_best.pth"), "--use-ema", str(image)]):
        code, _, err = run_main(argv, capsys)
        assert code == 2 and "holds no EMA weights" in err, err


# ------------------------------------------------------- memory and fine-tuning options


SIM = ["--dataset", "simulated", "--num-classes", "3", "--train-size", "24", "--val-size", "12"]


@pytest.mark.slow
def test_grad_checkpointing_trains_the_same_weights(tmp_path, capsys):
    for name, extra in (("plain", []), ("ckpt", ["--grad-checkpointing"])):
        code, text, err = run_main(train_argv(*SIM, "--epochs", "1", "--output-dir",
                                              str(tmp_path / name), *extra), capsys)
        assert code == 0, err
    assert "gradient checkpointing" in (tmp_path / "ckpt" / "train.log").read_text()
    plain = read_checkpoint(tmp_path / "plain" / "checkpoint.pth")["model"]
    ckpt = read_checkpoint(tmp_path / "ckpt" / "checkpoint.pth")["model"]
    for key in plain:  # drop path draws the same masks: checkpointing replays the RNG state
        assert np.allclose(plain[key].numpy(), ckpt[key].numpy(), atol=1e-6), key


@pytest.mark.slow
def test_layer_decay_scales_the_learning_rate_by_depth(tmp_path, capsys):
    code, _, err = run_main(train_argv(*SIM, "--epochs", "1", "--output-dir", str(tmp_path),
                                       "--layer-decay", "0.5"), capsys)
    assert code == 0, err
    groups = read_checkpoint(tmp_path / "checkpoint.pth")["optimizer"]["param_groups"]
    scales = sorted({round(g["lr_scale"], 6) for g in groups})
    assert scales[-1] == 1.0 and scales[0] < 0.1  # the head at full lr, the stem decayed
    assert all(g["lr"] == pytest.approx(groups[0]["lr"] / groups[0]["lr_scale"] * g["lr_scale"])
               for g in groups)


@pytest.mark.slow
def test_models_built_from_a_checkpoint_carry_its_preprocessing(run_dir, tmp_path):
    import timm
    from timm.data import resolve_data_config
    from timm.models import save_for_hf

    import ecvit
    from ecvit.io.weights import load_for_inference

    for model in (ecvit.create_model("ecvit_tiny", num_classes=3, img_size=32,
                                     checkpoint_path=run_dir / "model_best.pth"),
                  load_for_inference(str(run_dir / "model_best.pth"))[0]):
        data = resolve_data_config(model=model)
        assert data["input_size"] == (3, 32, 32) and data["crop_pct"] == 0.875
        assert data["mean"] == pytest.approx((0.485, 0.456, 0.406))
    save_for_hf(model, tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert config["pretrained_cfg"]["label_names"] == list(CLASSES) and config["num_classes"] == 3
    again = timm.create_model(f"local-dir:{tmp_path / 'hf'}", pretrained=True)
    assert again.pretrained_cfg["input_size"] == (3, 32, 32)


@pytest.mark.slow
def test_an_export_validates_on_its_training_data_without_flags(run_dir, tmp_path, capsys):
    out = tmp_path / "best.safetensors"
    assert run_main(["export", "--checkpoint", str(run_dir / "model_best.pth"), "--format",
                     "safetensors", "--out", str(out)], capsys)[0] == 0
    code, text, err = run_main(["validate", "--checkpoint", str(out)], capsys)
    assert code == 0, err
    rows = json.loads((run_dir / "metrics.json").read_text())
    report = json.loads((tmp_path / "best.validate.json").read_text())
    assert report["dataset"] == "folder" and report["top1"] == max(r["val_top1"] for r in rows)


@pytest.mark.slow
def test_attention_command_draws_the_class_token_attention(run_dir, tmp_path, capsys):
    image = tmp_path / "cat.png"
    Image.fromarray(np.full((20, 20, 3), 60, np.uint8)).save(image)
    code, text, err = run_main(["attention", "--checkpoint", str(run_dir / "model_best.pth"),
                                str(image)], capsys)
    assert code == 0, err
    out = tmp_path / "cat.attention.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(out) in text
    assert "over 2 levels" in text  # ecvit_tiny: two attention stages
    code, _, err = run_main(["attention", "--checkpoint", str(run_dir / "model_best.pth"),
                             str(tmp_path / "missing.png")], capsys)
    assert code == 2 and "missing.png" in err


@pytest.mark.slow
def test_numbered_classes_of_another_dataset_are_refused(tmp_path, capsys):
    """digits and simulated data both number their classes 0..9: the names prove nothing."""
    import runpy
    from pathlib import Path

    out = tmp_path / "digits"
    assert run_main(["train", "--epochs", "1", "--output-dir", str(out)], capsys)[0] == 0
    reference = runpy.run_path(str(Path(__file__).resolve().parents[1] / "main.py"), run_name="ref")
    code, _, err = run_entry(reference["main"], ["--mode", "validate", "--checkpoint",
                                                 str(out / "model_best.pth"), "--dataset",
                                                 "simulated"], capsys)
    assert code == 2 and "trained on digits" in err and "only numbered" in err, err
    code, text, err = run_entry(reference["main"], ["--mode", "validate", "--checkpoint",
                                                    str(out / "model_best.pth")], capsys)
    assert code == 0 and "on digits" in text, err
