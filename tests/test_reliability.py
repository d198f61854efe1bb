"""Reliability round 2 (issue 17): each case an adversarial user tried, reproduced first.

Storage and signals (disk full, read-only or odd output paths, umask, SIGTERM/SIGUSR1
preemption, mid-epoch checkpoints), hostile or broken files (checkpoints, crafted
metadata and training state, YAML bombs and duplicate keys), odd data (symlink loops,
FIFOs, undecodable names, EXIF orientation, one class, out-of-range numbers) and
numerics (a diverged epoch never becomes a checkpoint).
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _cli_helpers import run_entry
from _engine_helpers import tiny_cfg
from ecvit.io.checkpoint import read_checkpoint, save_atomic
from ecvit.cli import main
from ecvit.errors import CheckpointError, StorageError

PROBE = "engine_probe_net"


@pytest.fixture(scope="module")
def trained(probe_run) -> Path:
    """A finished 1-epoch run of the probe model: out/checkpoint.pth and model_best.pth
    (the session's shared ``conftest.probe_run``)."""
    return probe_run


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- storage


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth"
    save_atomic({"epoch": 1}, path)

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

    import ecvit.io.checkpoint as C

    original = C.torch.save
    monkeypatch.setattr(C.torch, "save", lambda obj, fh: original(obj, Full(fh)))
    with pytest.raises(StorageError, match=rf"could not write {path}: disk full, previous "
                                           r"checkpoint kept$"):
        save_atomic({"epoch": 2, "w": torch.zeros(1000)}, path)
    assert read_checkpoint(path)["epoch"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow
def test_disk_full_during_training_is_one_line_exit_1(tmp_path):
    """A real write failure (ulimit -f) in a subprocess: one line, exit 1, checkpoint kept."""
    out = tmp_path / "run"
    code = (
        f"import resource, signal, sys; sys.path.insert(0, {str(Path(__file__).parent)!r});"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN);"
        "import _engine_helpers;"
        "from ecvit.io.checkpoint import save_atomic;"
        "import ecvit.engine.trainer as T;"
        "calls = [0]\n"
        "def limited(obj, path):\n"
        "    calls[0] += 1\n"
        "    if calls[0] > 2: resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "    save_atomic(obj, path)\n"
        "T.save_atomic = limited\n"
        "from ecvit.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "train", "--model", PROBE, "--dataset", "simulated",
         "--train-size", "32", "--val-size", "16", "--img-size", "32", "--batch-size", "16",
         "--epochs", "3", "--device", "cpu", "--output-dir", str(out)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    line = _one_line_error(proc.stderr)
    assert f"could not write {out}" in line and "previous checkpoint kept" in line
    assert read_checkpoint(out / "checkpoint.pth")["epoch"] == 1
    assert not list(out.glob(".*.tmp"))


def test_checkpoints_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        save_atomic({"a": 1}, tmp_path / "a.pth")
        os.umask(0o027)
        save_atomic({"a": 1}, tmp_path / "b.pth")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.pth").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.pth").stat().st_mode) == 0o640


# ------------------------------------------------------------------- hostile files


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("content, expected", [
    (b"", "the file is empty"),
    (b"hello, this is not a checkpoint\n", "it is a text file"),
    (bytes(range(7, 256)) * 4, "not a checkpoint (unrecognised content"),
])
def test_unreadable_checkpoints_are_classified_honestly(tmp_path, content, expected):
    path = _write(tmp_path / "x.pth", content)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert expected in str(info.value)
    assert "execute code" not in str(info.value)
    assert not str(info.value).rstrip().endswith(":")


def test_truncated_onnx_and_safetensors_checkpoints_are_named(tmp_path, trained):
    data = (trained / "checkpoint.pth").read_bytes()
    half = _write(tmp_path / "half.pth", data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(half)
    onnx_like = _write(tmp_path / "m.pth", b"\x08\x08\x12\x07pytorch\x1a\x052.1.0" + b"\x00" * 64)
    with pytest.raises(CheckpointError, match="ONNX model"):
        read_checkpoint(onnx_like)
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(tmp_path / "weights.pth"))  # safetensors named .pth
    assert torch.equal(read_checkpoint(tmp_path / "weights.pth")["model"]["w"], torch.ones(2))


def test_code_running_pickle_is_still_named_as_such(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="would execute code"):
        read_checkpoint(tmp_path / "evil.pth")


SIM = ["--model", PROBE, "--dataset", "simulated", "--train-size", "32", "--val-size", "16",
       "--img-size", "32", "--batch-size", "16", "--epochs", "1", "--device", "cpu"]


def test_output_dir_that_is_a_file_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    for out in (tmp_path / "taken", tmp_path / "taken" / "sub"):
        code, _, err = run_entry(main, ["train", *SIM, "--output-dir", str(out)], capsys)
        assert code == 2
        assert "an existing file, not a directory" in _one_line_error(err)


def test_read_only_output_dir_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == ro
                        else real_access(p, mode, **k))
    code, _, err = run_entry(main, ["train", *SIM, "--output-dir", str(ro / "run")], capsys)
    assert code == 2 and "is not writable" in _one_line_error(err)
    assert list(ro.iterdir()) == []


@pytest.mark.parametrize("command", ["train", "validate"])
def test_disk_full_at_start_is_one_line_before_anything_runs(tmp_path, capsys, monkeypatch,
                                                             trained, command):
    real = os.statvfs

    class Full:
        def __init__(self, fs):
            self.f_frsize, self.f_bavail = fs.f_frsize, 0

    monkeypatch.setattr(os, "statvfs", lambda p: Full(real(p)))
    out = tmp_path / "run"
    argv = (["train", *SIM, "--output-dir", str(out)] if command == "train" else
            ["validate", "--checkpoint", str(trained / "checkpoint.pth"), "--output-dir", str(out)])
    code, _, err = run_entry(main, argv, capsys)
    assert code == 2 and "disk full" in _one_line_error(err)
    assert not out.exists()


def test_a_refused_output_write_is_one_storage_error(tmp_path, monkeypatch):
    from ecvit.engine import outputs

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(StorageError, match="config.yaml: disk full, nothing was written"):
        outputs.write_config(tiny_cfg(tmp_path), tmp_path / "config.yaml")
    assert list(tmp_path.iterdir()) == []


class _FullDisk:
    """A file handle that takes ``room`` bytes, then fails like a full disk."""

    def __init__(self, fh, room: int) -> None:
        self.fh, self.room = fh, room

    def write(self, data) -> int:
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


@pytest.mark.slow
@pytest.mark.parametrize("fmt, suffix", [("torchscript", ".torchscript.pt"), ("onnx", ".onnx"),
                                         ("safetensors", ".safetensors")])
def test_export_to_a_full_disk_leaves_nothing_partial(tmp_path, capsys, monkeypatch, trained,
                                                      fmt, suffix):
    import ecvit.io.checkpoint as C

    real_fdopen = os.fdopen
    monkeypatch.setattr(C.os, "fdopen", lambda fd, mode: _FullDisk(real_fdopen(fd, mode), 100))
    out = tmp_path / f"model{suffix}"
    code, _, err = run_entry(main, ["export", "--checkpoint", str(trained / "checkpoint.pth"),
                                    "--format", fmt, "--out", str(out)], capsys)
    assert code == 1
    assert f"could not write {out}: disk full, nothing was written" in _one_line_error(err)
    assert list(tmp_path.iterdir()) == []


def test_export_to_a_directory_or_read_only_place_is_one_line(tmp_path, capsys, monkeypatch,
                                                             trained):
    ckpt = str(trained / "checkpoint.pth")
    code, _, err = run_entry(main, ["export", "--checkpoint", ckpt, "--format", "safetensors",
                                    "--out", str(tmp_path)], capsys)
    assert code == 2 and "is a directory" in _one_line_error(err)
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False)
    code, _, err = run_entry(main, ["export", "--checkpoint", ckpt, "--format", "safetensors",
                                    "--out", str(tmp_path / "m.safetensors")], capsys)
    assert code == 2 and "is not writable" in _one_line_error(err)
    assert list(tmp_path.iterdir()) == []
    code, _, err = run_entry(main, ["export", "--checkpoint", "/", "--format", "onnx"], capsys)
    assert code == 2 and "checkpoint not found: /" in _one_line_error(err)  # found by the fuzzer


def _crafted(tmp_path: Path, trained: Path, name: str = "crafted.pth", **fields) -> Path:
    ckpt = torch.load(trained / "checkpoint.pth", weights_only=True)
    for key, value in fields.items():
        if value is _DROP:
            ckpt.pop(key)
        else:
            ckpt[key] = value
    path = tmp_path / name
    torch.save(ckpt, path)
    return path


_DROP = object()


@pytest.mark.parametrize("fields, expected", [
    ({"num_classes": "four"}, "num_classes must be an integer"),
    ({"num_classes": 3e9}, "num_classes must be an integer in [1, 100000]"),
    ({"img_size": 2e5}, "img_size must be an integer in [8, 4096]"),
    ({"class_names": ["a", "b"]}, "class_names must be a list of 4 strings"),
    ({"mean": [0.5, "x", 0.5]}, "mean must be 1 or 3 finite numbers"),
    ({"std": [0.0, 1.0, 1.0]}, "std must be 1 or 3 finite positive numbers"),
    ({"model_name": "no_such_net"}, "model_name must be a registered model name"),
    ({"model_args": {"num_classes": 7}}, "num_classes is set by DATA.NUM_CLASSES"),
    ({"model_args": {"checkpoint_path": "/etc/passwd"}}, "takes no argument 'checkpoint_path'"),
    ({"model_args": {"width": 4096}}, "does not fit engine_probe_net as its metadata describes"),
])
@pytest.mark.parametrize("command", ["validate", "export"])
def test_crafted_checkpoint_metadata_is_one_line_exit_2(tmp_path, capsys, trained, monkeypatch,
                                                        fields, expected, command):
    path = _crafted(tmp_path, trained, **fields)
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    argv = (["validate", "--checkpoint", str(path), "--dry-run"] if command == "validate" else
            ["export", "--checkpoint", str(path), "--format", "safetensors"])
    if command == "validate" and "does not fit" in expected:
        argv.remove("--dry-run")  # only building the model compares the shapes
    code, _, err = run_entry(main, argv, capsys)
    assert code == 2, err
    assert expected in _one_line_error(err)
    assert "/etc/passwd" not in opened
    assert not (tmp_path / "crafted.safetensors").exists()


@pytest.mark.parametrize("fields, expected", [
    ({"epoch": "1"}, "epoch must be a whole number"),
    ({"optimizer": [1, 2]}, "optimizer must be an optimizer state_dict"),
    ({"optimizer": {"state": {}, "param_groups": [{"params": [0]}]}}, "optimizer does not fit"),
    ({"history": [{"loss": 1}]}, "history must be a list of per-epoch records"),
    ({"rng": {"torch": 3}, "rng_ranks": _DROP}, "rng must be the RNG states"),
    ({"rng_ranks": [{"torch": torch.zeros(5, dtype=torch.uint8), "python": [3, [0] * 625, None],
                     "numpy": ["MT19937", [0] * 624, 0, 0, 0.0]}]}, "rng: its RNG state is damaged"),
    ({"best_top1": "high"}, "best_top1 must be a number"),
])
def test_crafted_training_state_is_one_line_naming_the_field(tmp_path, trained, fields, expected):
    from ecvit.engine import train

    out = tmp_path / "run"
    out.mkdir()
    _crafted(out, trained, name="checkpoint.pth", **fields)
    with pytest.raises(CheckpointError, match="cannot be resumed from") as info:
        train(tiny_cfg(out, "TRAIN.EPOCHS", "2", model=PROBE))
    assert expected in str(info.value)


# ----------------------------------------------------------------------- YAML, bounds


def test_yaml_alias_bomb_is_refused_at_once(tmp_path, capsys):
    import time

    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(8):
        prev, cur = chr(97 + i), chr(98 + i)
        lines.append(f"{cur}: &{cur} [{', '.join(['*' + prev] * 9)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nTRAIN:\n  LR: *i\n")
    start = time.perf_counter()
    code, _, err = run_entry(main, ["train", "--cfg", str(path), "--dry-run"], capsys)
    assert time.perf_counter() - start < 5
    assert code == 2 and "alias bomb" in _one_line_error(err)
    many = tmp_path / "many.yaml"
    many.write_text("x: &x 1\ny: [" + ", ".join(["*x"] * 200) + "]\n")
    code, _, err = run_entry(main, ["train", "--cfg", str(many), "--dry-run"], capsys)
    assert code == 2 and "aliases" in _one_line_error(err)


def test_yaml_duplicate_key_is_an_error_naming_it(tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text("TRAIN:\n  LR: 0.1\n  EPOCHS: 3\n  LR: 0.5\n")
    code, _, err = run_entry(main, ["train", "--cfg", str(path), "--dry-run"], capsys)
    assert code == 2 and "duplicate key 'LR' (line 4)" in _one_line_error(err)


@pytest.mark.parametrize("argv, expected", [
    (["--seed", "-1"], "SEED must be in [0, 4294967295]"),
    (["--seed", str(2**32)], "SEED must be at most 4294967295"),
    (["--batch-size", str(2**63)], "TRAIN.BATCH_SIZE must be at most"),
    (["DATA.TRAIN_SIZE", str(10**20)], "DATA.TRAIN_SIZE must be at most"),
    (["DATA.WORKERS", "2147483647"], "DATA.WORKERS must be at most 256"),
    (["--num-classes", "1"], "needs at least 2 classes"),
])
def test_out_of_range_numbers_are_refused_in_the_preflight(tmp_path, capsys, argv, expected):
    base = ["train", "--dataset", "simulated", "--model", PROBE, "--img-size", "32",
            "--output-dir", str(tmp_path / "run"), "--dry-run"]
    code, _, err = run_entry(main, base + argv, capsys)
    assert code == 2 and expected in _one_line_error(err)


def test_one_class_folder_dataset_is_refused(tmp_path, capsys):
    from PIL import Image

    for split in ("train", "val"):
        (tmp_path / split / "only").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / split / "only" / "a.png")
    code, _, err = run_entry(main, ["train", "--dataset", "folder", "--data-path", str(tmp_path),
                                    "--model", PROBE, "--img-size", "32", "--dry-run",
                                    "--output-dir", str(tmp_path / "run")], capsys)
    assert code == 2 and "needs at least 2 classes" in _one_line_error(err)


def test_benchmark_json_into_a_directory_is_one_line(tmp_path, capsys):
    code, _, err = run_entry(main, ["benchmark", "--model", PROBE, "--json", str(tmp_path)], capsys)
    assert code == 2 and "is a directory" in _one_line_error(err)
    for flag in ("--batch-size", "--iters", "--warmup", "--img-size"):  # 2**63 steps: a hang
        code, _, err = run_entry(main, ["benchmark", "--model", PROBE, flag, str(2**63)], capsys)
        assert code == 2 and "expected at most" in err


# ------------------------------------------------------------------------- odd data


@pytest.fixture
def deadline():
    """Fail (instead of hanging) when the test body runs past 60 s."""
    import signal

    def expired(*_):
        raise TimeoutError("the test ran past its 60 s deadline: a hang")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _folder_dataset(root: Path, classes=("a", "b"), per_class: int = 3) -> Path:
    from PIL import Image

    for split in ("train", "val"):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (12, 12), (40 * c + 10 * i, 80, 120)).save(folder / f"{i}.png")
    return root


def test_symlink_loops_list_each_real_file_once(tmp_path, deadline):
    from ecvit.data.layouts import scan_folder

    root = _folder_dataset(tmp_path / "data")
    cat = root / "train" / "a"
    (cat / "loop").symlink_to(cat, target_is_directory=True)  # a loop onto itself
    (cat / "up").symlink_to(root / "train", target_is_directory=True)  # a second loop, upwards
    (cat / "again.png").symlink_to(cat / "0.png")  # a second name for one file
    train, val, classes = scan_folder(root)
    assert classes == ["a", "b"]
    assert sorted(os.path.basename(p) for p, label in train if label == 0) == ["0.png", "1.png", "2.png"]
    assert len(train) == 6 and len(val) == 6


@pytest.mark.parametrize("skip", [False, True])
def test_a_fifo_in_a_class_folder_never_hangs(tmp_path, capsys, deadline, skip):
    root = _folder_dataset(tmp_path / "data")
    fifo = root / "train" / "a" / "pipe.png"
    os.mkfifo(fifo)
    argv = ["train", "--dataset", "folder", "--data-path", str(root), "--model", PROBE,
            "--img-size", "32", "--batch-size", "4", "--epochs", "1", "--device", "cpu",
            "--output-dir", str(tmp_path / "run")] + (["--skip-bad-images"] if skip else [])
    code, out, err = run_entry(main, argv, capsys)
    if skip:
        assert code == 0, err
        assert "bad_images 1" in out
    else:
        assert code == 2
        assert f"cannot read image {fifo}: not a regular file (a FIFO)" in _one_line_error(err)


@pytest.mark.slow
def test_undecodable_class_names_are_shown_replaced_and_stored_exactly(tmp_path, capsys, monkeypatch):
    import io
    import json

    raw = os.fsdecode(b"caf\xe9")  # latin-1 bytes: not valid UTF-8
    root = _folder_dataset(tmp_path / "data", classes=(raw, "tea"))
    out = tmp_path / "run"
    base = ["--model", PROBE, "--img-size", "32", "--batch-size", "4", "--device", "cpu"]
    code, _, err = run_entry(main, ["train", "--dataset", "folder", "--data-path", str(root),
                                    *base, "--epochs", "1", "--output-dir", str(out)], capsys)
    assert code == 0, err
    assert read_checkpoint(out / "model_best.pth")["class_names"] == [raw, "tea"]
    code, _, err = run_entry(main, ["validate", "--checkpoint", str(out / "model_best.pth")], capsys)
    assert code == 0, err
    report = json.loads((out / "model_best.validate.json").read_text())
    assert list(report["per_class"]) == [raw, "tea"]
    assert (out / "model_best.confusion.png").stat().st_size > 0
    strict = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    monkeypatch.setattr(sys, "stdout", strict)
    image = next((root / "val" / raw).iterdir())
    assert main(["predict", "--checkpoint", str(out / "model_best.pth"), str(image)]) == 0
    strict.flush()
    assert "caf\ufffd" in strict.buffer.getvalue().decode("utf-8")


def test_exif_orientation_is_applied_unless_turned_off(tmp_path, capsys):
    from PIL import Image

    from ecvit.data.images import load_image

    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": stored 40x20, shown 20x40
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif)
    assert load_image(path).size == (20, 40)
    assert load_image(path, exif_transpose=False).size == (40, 20)
    from ecvit.cli import build_parser, config_from_args

    args = build_parser().parse_args(["train", "--no-exif-transpose"])
    assert config_from_args(args, "train").data.exif_transpose is False
    assert config_from_args(build_parser().parse_args(["train"]), "train").data.exif_transpose


def test_exif_setting_reaches_the_folder_dataset(tmp_path):
    from ecvit.data import build_datasets

    root = _folder_dataset(tmp_path / "data")
    for flag, expected in (("true", True), ("false", False)):
        cfg = tiny_cfg(tmp_path / "o", "DATA.DATASET", "folder", "DATA.ROOT", str(root),
                       "DATA.EXIF_TRANSPOSE", flag)
        assert build_datasets(cfg).train.exif_transpose is expected


# ------------------------------------------------------------------------- numerics


def test_a_diverged_epoch_never_becomes_a_checkpoint_or_the_best(tmp_path):
    import json

    from ecvit.engine import train
    from ecvit.errors import TrainingError

    out = tmp_path / "run"
    cfg = tiny_cfg(out, "TRAIN.EPOCHS", "3", "TRAIN.LR", "1e8", "TRAIN.WARMUP_EPOCHS", "0",
                   "DATA.TRAIN_SIZE", "16", "TRAIN.OPTIMIZER", "sgd", "TRAIN.WEIGHT_DECAY", "0",
                   model=PROBE)
    with pytest.raises(TrainingError) as info:
        train(cfg)
    message = str(info.value)
    assert "epoch 2/3 diverged (validation loss nan" in message
    assert f"the last good checkpoint is {out / 'checkpoint.pth'} (epoch 1)" in message
    for name in ("checkpoint.pth", "model_best.pth"):
        ckpt = read_checkpoint(out / name)
        assert ckpt["epoch"] == 1
        assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())
    assert [r["epoch"] for r in json.loads((out / "metrics.json").read_text())] == [1]


def test_nan_logits_are_never_counted_correct():
    from ecvit.engine.distributed import DistInfo
    from ecvit.engine.evaluate import evaluate

    class NaNNet(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 4), float("nan"))

    loader = [(torch.zeros(8, 3, 4, 4), torch.arange(8) % 4, 0)]
    import contextlib

    result = evaluate(NaNNet(), loader, 4, DistInfo(0, 1, 0, torch.device("cpu")),
                      contextlib.nullcontext)
    assert result.top1 == 0.0 and result.top5 == 0.0
    assert result.confusion.diag().sum() == 0 and result.confusion.sum() == 8


# ------------------------------------------------------------ preemption, mid-epoch


# Every RNG consumer of the resume tests on; 8 batches per epoch, 4 updates (ACCUM_STEPS 2).
MID = ("TRAIN.EPOCHS", "2", "MODEL.DROP_PATH_RATE", "0.1", "AUG.MIXUP", "0.8", "AUG.CUTMIX", "1.0",
       "TRAIN.EMA", "true", "TRAIN.EMA_DECAY", "0.9", "TRAIN.CLIP_GRAD", "1.0",
       "TRAIN.ACCUM_STEPS", "2", "DATA.TRAIN_SIZE", "64", "TRAIN.BATCH_SIZE", "8")


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    from ecvit.engine import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("whole")
        train(tiny_cfg(out, *MID, model=PROBE))
    finally:
        torch.set_num_threads(threads)
    return out


def _same_run(a: Path, b: Path) -> None:
    import json

    ca, cb = read_checkpoint(a / "checkpoint.pth"), read_checkpoint(b / "checkpoint.pth")
    for key in ("model", "model_ema"):
        assert ca[key].keys() == cb[key].keys()
        assert all(torch.equal(ca[key][k], cb[key][k]) for k in ca[key]), key
    for i, state in ca["optimizer"]["state"].items():
        assert all(torch.equal(v, cb["optimizer"]["state"][i][k]) for k, v in state.items())
    rows = [[{k: v for k, v in r.items() if k != "epoch_time"} for r in
             json.loads((d / "metrics.json").read_text())] for d in (a, b)]
    assert rows[0] == rows[1]


@pytest.mark.parametrize("how", ["sigterm", "crash_after_save_every_steps"])
def test_mid_epoch_checkpoints_resume_bit_for_bit(tmp_path, monkeypatch, uninterrupted,
                                                  one_thread, how):
    import signal

    from ecvit.engine import train, trainer
    from ecvit.errors import Preempted

    out = tmp_path / "run"
    extra = ("TRAIN.SAVE_EVERY_STEPS", "3") if how != "sigterm" else ()
    real_update = trainer._Run._update

    def interrupted(self, updates):
        updates = real_update(self, updates)
        if how == "sigterm" and updates == 6:  # epoch 2, its 2nd of 4 updates (step 4 of 8)
            os.kill(os.getpid(), signal.SIGTERM)
        if how != "sigterm" and updates == 7:  # one update past the save at update 6
            raise RuntimeError("killed")
        return updates

    monkeypatch.setattr(trainer._Run, "_update", interrupted)
    with pytest.raises(Preempted if how == "sigterm" else RuntimeError) as info:
        train(tiny_cfg(out, *MID, *extra, model=PROBE))
    ckpt = read_checkpoint(out / "checkpoint.pth")
    assert ckpt["epoch"] == 1 and ckpt["progress"]["step"] == 4 and ckpt["progress"]["updates"] == 6
    if how == "sigterm":
        assert info.value.exit_code == 143
        assert "received SIGTERM: stopped at epoch 2, after step 4/8" in str(info.value)
        assert "run the same command again to resume" in str(info.value)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler given back
    monkeypatch.undo()
    train(tiny_cfg(out, *MID, *extra, model=PROBE))
    _same_run(uninterrupted, out)


def test_a_mid_epoch_checkpoint_refuses_another_batch_size(tmp_path, monkeypatch, one_thread):
    from ecvit.engine import train, trainer

    out = tmp_path / "run"
    real_update = trainer._Run._update

    def crash(self, updates):
        updates = real_update(self, updates)
        if updates == 2:
            raise RuntimeError("killed")
        return updates

    monkeypatch.setattr(trainer._Run, "_update", crash)
    with pytest.raises(RuntimeError):
        train(tiny_cfg(out, *MID, "TRAIN.SAVE_EVERY_STEPS", "1", model=PROBE))
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="written in the middle of epoch 1 .step 2/8.; this "
                                              "run has 4 steps per epoch"):
        train(tiny_cfg(out, *MID, "TRAIN.BATCH_SIZE", "16", model=PROBE))


@pytest.mark.slow
@pytest.mark.parametrize("signame, code", [("SIGTERM", 143), ("SIGUSR1", 138)])
def test_preemption_signal_to_the_cli_writes_a_checkpoint_and_says_how_to_resume(tmp_path, signame,
                                                                                 code):
    import signal
    import time

    out = tmp_path / "run"
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import _engine_helpers;"
              "from ecvit.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "train", *SIM[:-4], "--epochs", "500", "--device", "cpu",
         "--output-dir", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # wait for the first epoch line
            line = proc.stdout.readline()
            if line.split()[:2] == ["epoch", "1/500"]:
                break
        proc.send_signal(getattr(signal, signame))
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err[-2000:]
    line = _one_line_error(err)
    assert f"received {signame}: stopped at" in line and "run the same command again" in line
    assert read_checkpoint(out / "checkpoint.pth")["epoch"] >= 1
    assert not list(out.glob(".*.tmp"))
