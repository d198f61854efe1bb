"""SVHN, MNIST and Fashion-MNIST from tiny files in the official formats; grey input as one
channel; stratified training subsets (DATA.TRAIN_FRACTION)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from _cli_helpers import run_entry
from PIL import Image

from ecvit.cli import main
from ecvit.config import Config
from ecvit.data import build_datasets
from ecvit.errors import DataError, UsageError
from ecvit.config import load_config
from ecvit.io.weights import load_for_inference


def _cfg(dataset: str, root: Path | str = "", **data) -> Config:
    cfg = Config()
    cfg.data.dataset = dataset
    cfg.data.root = str(root)
    cfg.data.img_size = 16
    cfg.data.crop_pct = 1.0
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return cfg


def _write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """An IDX file as distributed: magic (0, 0, 0x08 = ubyte, ndim), big-endian dims, bytes."""
    payload = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    payload += array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def make_idx(folder: Path, train: int = 20, test: int = 10, gz: bool = True, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", train), ("t10k", test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = labels  # a fingerprint: the pixel tells the label
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz)


def make_svhn(root: Path, train: int = 12, test: int = 6) -> None:
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train_32x32.mat", train), ("test_32x32.mat", test)):
        digits = np.arange(n) % 10
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        x[0, 0, 0, :] = digits
        y = np.where(digits == 0, 10, digits).reshape(n, 1).astype(np.uint8)  # 0 is stored as 10
        savemat(str(root / name), {"X": x, "y": y})


@pytest.mark.parametrize("name,layout,gz", [("mnist", "", True), ("mnist", "MNIST/raw", False),
                                            ("fashion-mnist", "raw", True),
                                            ("fashion-mnist", "FashionMNIST/raw", False)])
def test_idx_datasets_read_the_official_files(tmp_path, name, layout, gz):
    make_idx(tmp_path / layout, gz=gz)
    bundle = build_datasets(_cfg(name, tmp_path))
    assert (len(bundle.train), len(bundle.val), bundle.num_classes) == (20, 10, 10)
    assert bundle.class_names[0] == ("0" if name == "mnist" else "T-shirt/top")
    assert bundle.mean == ((0.1307,) * 3 if name == "mnist" else (0.2860,) * 3)
    x, y = bundle.val[3]
    assert x.shape == (3, 16, 16) and y == 3
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # grey repeated to RGB


def test_idx_native_size_and_one_channel(tmp_path):
    make_idx(tmp_path)
    cfg = _cfg("mnist", tmp_path, in_chans=1)
    cfg.data.img_size = 28
    bundle = build_datasets(cfg)
    assert bundle.train[5][0].shape == (1, 28, 28)
    x, y = bundle.val[5]
    assert x.shape == (1, 28, 28) and y == 5
    assert bundle.mean == (0.1307,) and bundle.std == (0.3081,)
    raw = np.frombuffer(gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz").read()[16:], np.uint8)
    expected = (raw.reshape(10, 28, 28)[5] / 255.0 - 0.1307) / 0.3081  # pixels exactly as stored
    assert torch.allclose(x[0], torch.from_numpy(expected).float(), atol=1e-5)


def test_idx_damaged_files_are_named(tmp_path):
    make_idx(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match="train-images-idx3-ubyte holds .* truncated"):
        build_datasets(_cfg("mnist", tmp_path))
    path.write_bytes(b"\x00\x00\x0d\x03" + bytes(12))
    with pytest.raises(DataError, match="not an IDX file of unsigned bytes"):
        build_datasets(_cfg("mnist", tmp_path))
    path.unlink()
    with pytest.raises(DataError, match=r"mnist: expected .*train-images-idx3-ubyte\[\.gz\]"):
        build_datasets(_cfg("mnist", tmp_path))


def test_svhn_reads_the_official_mat_files(tmp_path):
    make_svhn(tmp_path)
    bundle = build_datasets(_cfg("svhn", tmp_path))
    assert (len(bundle.train), len(bundle.val), bundle.num_classes) == (12, 6, 10)
    labels = [bundle.train[i][1] for i in range(12)]
    assert labels == [i % 10 for i in range(12)]  # label 10 became digit 0
    assert bundle.train.images[0, 0, 0, 0] == 0 and bundle.train.images[3, 0, 0, 0] == 3
    assert bundle.train[0][0].shape == (3, 16, 16)
    (tmp_path / "test_32x32.mat").write_bytes(b"not a matlab file")
    with pytest.raises(DataError, match="test_32x32.mat: not a MATLAB v5 file"):
        build_datasets(_cfg("svhn", tmp_path))


def test_one_channel_is_only_for_grey_datasets(tmp_path):
    make_svhn(tmp_path)
    with pytest.raises(DataError, match="DATA.IN_CHANS 1: one-channel input is for the grey"):
        build_datasets(_cfg("svhn", tmp_path, in_chans=1))
    with pytest.raises(UsageError, match="DATA.IN_CHANS must be 1 or 3, got 2"):
        load_config(None, ["DATA.IN_CHANS", "2"])


def test_downloads_go_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    def fake_mnist(root, train=True, download=False):
        calls.append(("MNIST", root, download))
        make_idx(Path(root) / "MNIST" / "raw", gz=False)

    monkeypatch.setattr(tvd, "MNIST", fake_mnist)
    assert len(build_datasets(_cfg("mnist", tmp_path / "new", download=True)).train) == 20
    build_datasets(_cfg("mnist", tmp_path / "new", download=True))  # present: no second fetch
    assert calls == [("MNIST", str(tmp_path / "new"), True)]


def test_train_fraction_is_stratified_and_the_same_for_every_seed():
    cfg = _cfg("digits", train_fraction=0.1)
    subsets = []
    for seed in (0, 1):
        cfg.seed = seed
        bundle = build_datasets(cfg)
        subsets.append(list(bundle.train.indices))
        counts = np.bincount(bundle.train.targets, minlength=10)
        assert len(bundle.train) == 144 and counts.min() >= 13 and counts.max() <= 16
        assert len(bundle.val) == 360  # validation is never reduced
    assert subsets[0] == subsets[1]
    with pytest.raises(UsageError, match=r"DATA.TRAIN_FRACTION must be in \(0, 1\], got 0"):
        load_config(None, ["DATA.TRAIN_FRACTION", "0"])


@pytest.mark.slow
def test_one_channel_model_trains_validates_and_predicts(tmp_path, capsys):
    make_idx(tmp_path / "data", train=40, test=20)
    out = tmp_path / "run"
    code, _, err = run_entry(main, ["train", "--dataset", "mnist", "--data-path", str(tmp_path / "data"),
                                    "--model", "ecvit_tiny", "--epochs", "1", "--batch-size", "16",
                                    "--output-dir", str(out), "DATA.IN_CHANS", "1"], capsys)
    assert code == 0, err
    model, spec = load_for_inference(str(out / "checkpoint.pth"))
    assert spec.model_args["in_chans"] == 1 and spec.mean == (0.1307,)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    code, _, err = run_entry(main, ["validate", "--checkpoint", str(out / "checkpoint.pth")], capsys)
    assert code == 0, err
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(image)  # an RGB file: made grey
    code, text, err = run_entry(main, ["predict", "--checkpoint", str(out / "checkpoint.pth"), str(image)],
                                capsys)
    assert code == 0, err
    assert "digit.png" in text
