"""Weights from anywhere: code-running pickles are refused everywhere a checkpoint is
accepted, and weights that do not fit the model name the tensors at fault."""

import os
import subprocess
import sys

import pytest
import torch

import ecvit
from ecvit.io.checkpoint import save_atomic
from ecvit.cli import main
from ecvit.errors import CheckpointError

SMALL = dict(img_size=32)


class _Exploit:
    """Unpickling this would create a marker file: it must never run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def evil_checkpoint(tmp_path):
    marker = tmp_path / "PWNED"
    model = ecvit.create_model("ecvit_tiny", num_classes=3, **SMALL)
    path = tmp_path / "evil.pth"
    torch.save({"model": model.state_dict(), "model_name": "ecvit_tiny", "num_classes": 3,
                "img_size": 32, "payload": _Exploit(marker)}, path)
    return path, marker


def test_create_model_refuses_code_running_pickle(evil_checkpoint):
    path, marker = evil_checkpoint
    with pytest.raises(CheckpointError, match="refusing to load"):
        ecvit.create_model("ecvit_tiny", num_classes=3, checkpoint_path=path, **SMALL)
    assert not marker.exists()


@pytest.mark.parametrize("command", ["predict", "validate", "export"])
def test_cli_refuses_code_running_pickle(evil_checkpoint, tmp_path, capsys, command):
    path, marker = evil_checkpoint
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    argv = {
        "predict": ["predict", "--checkpoint", str(path), str(image)],
        "validate": ["validate", "--checkpoint", str(path), "--dataset", "simulated",
                     "--val-size", "4", "--num-classes", "3", "--img-size", "32",
                     "--output-dir", str(tmp_path / "out")],
        "export": ["export", "--checkpoint", str(path), "--format", "safetensors",
                   "--out", str(tmp_path / "w.safetensors")],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "refusing to load" in err and "Traceback" not in err
    assert not marker.exists()


@pytest.mark.slow
def test_cli_subprocess_exit_code_and_no_traceback(evil_checkpoint, tmp_path):
    path, marker = evil_checkpoint
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    proc = subprocess.run([sys.executable, "-m", "ecvit", "predict", "--checkpoint", str(path),
                           str(image)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2
    assert "refusing to load" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()


def test_class_count_mismatch_names_tensors_and_finetune_starts_a_new_head(tmp_path):
    source = ecvit.create_model("ecvit_tiny", num_classes=10, **SMALL)
    path = tmp_path / "ten.pth"
    save_atomic({"model": source.state_dict()}, path)
    with pytest.raises(CheckpointError) as info:
        ecvit.create_model("ecvit_tiny", num_classes=4, checkpoint_path=path, **SMALL)
    message = str(info.value)
    assert "head" in message and "(10," in message and "(4," in message
    assert "--finetune" in message
    model = ecvit.create_model("ecvit_tiny", num_classes=4, checkpoint_path=path, finetune=True,
                               **SMALL)
    body = {k: v for k, v in source.state_dict().items() if not k.startswith("head")}
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in body.items())
    assert loaded[next(k for k in loaded if k.startswith("head") and k.endswith("weight"))].shape[0] != 10


def test_architecture_mismatch_names_tensors(tmp_path):
    path = tmp_path / "vit.pth"
    save_atomic({"model": ecvit.create_model("dws_vit_tiny", num_classes=10).state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"does not fit .*missing .*unexpected"):
        ecvit.create_model("ecvit_tiny", num_classes=10, checkpoint_path=path, **SMALL)


def test_train_finetune_flag_through_cli(tmp_path, capsys):
    source = ecvit.create_model("ecvit_tiny", num_classes=10, **SMALL)
    path = tmp_path / "ten.pth"
    save_atomic({"model": source.state_dict()}, path)
    common = ["train", "--dataset", "simulated", "--num-classes", "3", "--train-size", "8",
              "--val-size", "4", "--img-size", "32", "--epochs", "1", "--batch-size", "4",
              "--pretrained", str(path)]
    assert main([*common, "--output-dir", str(tmp_path / "a")]) == 2
    assert "--finetune" in capsys.readouterr().err
    assert main([*common, "--finetune", "--output-dir", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "model_best.pth").exists()
