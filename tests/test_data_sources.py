"""Data sources through timm's create_dataset (webdataset shards, Hugging Face datasets,
torchvision datasets on disk) and CSV lists: each built offline in tmp_path in its real
on-disk format, read through build_datasets, the loaders and the CLI, and split over ranks.

Every image is a flat grey square whose grey level encodes its index (:func:`_grey`), so a
batch tells which samples it holds, whatever the augmentation did to the geometry.

Run under torchrun (``python -m torch.distributed.run ... tests/test_data_sources.py DATA OUT``)
this file is also the per-rank program of the two-process test.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ecvit.config import Config, load_config
from ecvit.data import build_datasets
from ecvit.engine.distributed import DistInfo
from ecvit.engine.loaders import TrainLoader, eval_loader
from ecvit.errors import DataError, UsageError

TRAIN_N, VAL_N = 16, 6  # sample indices 0..15 train, 16..21 validation
CLASSES = ["cat", "dog"]
SMALL = ["TRAIN.EPOCHS", "1", "TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE", "4", "TRAIN.WARMUP_EPOCHS", "0",
         "MODEL.NAME", "ecvit_tiny", "DATA.IMG_SIZE", "16", "DEVICE", "cpu"]


def _grey(index: int) -> int:
    return 8 + 5 * index


def _png(index: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), _grey(index), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _indices(images: torch.Tensor, mean: tuple, std: tuple) -> list[int]:
    """The sample indices of a batch of normalised flat images."""
    grey = (images[:, 0, 8, 8] * std[0] + mean[0]) * 255
    return [int(round((g - 8) / 5)) for g in grey.tolist()]


def _label(index: int) -> int:
    return index % 2


def _cfg(dataset: str, root: Path | str = "", *overrides: str, out: Path | str = "out") -> Config:
    return load_config(None, ["DATA.DATASET", dataset, "DATA.ROOT", str(root), "OUTPUT_DIR", str(out),
                              *SMALL, *overrides])


# ------------------------------------------------------------------- on-disk formats


def write_shards(root: Path, info: bool = True, classes: bool = True) -> Path:
    """4 training shards of 4 samples and 2 validation shards of 3, as timm's wds layout."""
    import webdataset as wds

    root.mkdir(parents=True, exist_ok=True)
    splits, index = {}, 0
    for split, shards, per in (("train", 4, 4), ("validation", 2, 3)):
        names = [f"{split}-{s:04d}.tar" for s in range(shards)]
        for name in names:
            with wds.TarWriter(str(root / name)) as sink:
                for _ in range(per):
                    sink.write({"__key__": f"{index:06d}", "png": _png(index), "cls": str(_label(index))})
                    index += 1
        splits[split] = {"name": split, "num_samples": shards * per, "filenames": names,
                         "shard_lengths": [per] * shards}
    if info:
        content = {"classes": CLASSES} if classes else {}
        (root / "_info.json").write_text(json.dumps({**content, "splits": splits}))
    return root


def write_csv(root: Path, header: bool = True, names: bool = True) -> Path:
    """train.csv / val.csv with paths relative to the lists, images in a subfolder."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for split, indices in (("train", range(TRAIN_N)), ("val", range(TRAIN_N, TRAIN_N + VAL_N))):
        lines = ["path,label"] if header else []
        for i in indices:
            (root / "images" / f"{i}.png").write_bytes(_png(i))
            lines.append(f"images/{i}.png,{CLASSES[_label(i)] if names else _label(i)}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def _hf_dataset_dict():
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})

    def split(indices: range):
        images = [Image.open(io.BytesIO(_png(i))) for i in indices]
        return datasets.Dataset.from_dict({"image": images, "label": [_label(i) for i in indices]}, features=features)

    return datasets.DatasetDict(train=split(range(TRAIN_N)), validation=split(range(TRAIN_N, TRAIN_N + VAL_N)))


@pytest.fixture
def hf_offline(monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def write_hf_cache(cache: Path, repo: str, tmp: Path) -> None:
    """The Hugging Face cache of hub dataset ``repo`` as a download leaves it: prepared arrow
    files under ``CACHE/<org>___<name>/default/0.0.0/<hash>/``."""
    import datasets

    org, name = repo.split("/")
    local = tmp / name  # a parquet folder named like the hub dataset: its cache files are named so too
    for split, ds in _hf_dataset_dict().items():
        (local / "data").mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(local / "data" / f"{split}-00000-of-00001.parquet"))
    datasets.load_dataset(str(local), cache_dir=str(cache))
    (cache / name).rename(cache / f"{org}___{name}")


def write_mnist_raw(root: Path) -> Path:
    """torchvision's MNIST files (uncompressed IDX) in ROOT/MNIST/raw."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, indices in (("train", range(TRAIN_N)), ("t10k", range(TRAIN_N, TRAIN_N + VAL_N))):
        pixels = np.stack([np.full((28, 28), _grey(i), np.uint8) for i in indices])
        labels = np.array([i % 10 for i in indices], np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, len(indices), 28, 28)
                                                          + pixels.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, len(indices)) + labels.tobytes())
    return root


def _all_items(dataset, mean, std) -> list[tuple[int, int]]:
    return [(_indices(x[None], mean, std)[0], int(y)) for x, y in dataset]


# -------------------------------------------------------------------------- webdataset


def test_wds_shards_give_classes_sizes_and_every_validation_sample_once(tmp_path):
    bundle = build_datasets(_cfg("WDS/toy", write_shards(tmp_path / "shards")))
    assert bundle.class_names == CLASSES and bundle.num_classes == 2
    assert (len(bundle.train), len(bundle.val)) == (TRAIN_N, VAL_N)
    items = _all_items(bundle.val, bundle.mean, bundle.std)
    assert sorted(items) == [(i, _label(i)) for i in range(TRAIN_N, TRAIN_N + VAL_N)]


def test_wds_shard_pattern_without_info_is_counted_and_its_labels_read(tmp_path):
    root = write_shards(tmp_path / "shards", info=False)
    cfg = _cfg("wds/toy", root, "DATA.TRAIN_SPLIT", "train-{0000..0003}.tar",
               "DATA.VAL_SPLIT", "validation-{0000..0001}.tar")
    bundle = build_datasets(cfg)
    assert bundle.class_names == ["0", "1"]
    assert (len(bundle.train), len(bundle.val)) == (TRAIN_N, VAL_N)
    assert sorted(i for i, _ in _all_items(bundle.val, bundle.mean, bundle.std)) == list(range(16, 22))


def test_wds_ranks_read_disjoint_shards_that_cover_the_split(tmp_path):
    cfg = _cfg("wds/toy", write_shards(tmp_path / "shards"))
    bundle = build_datasets(cfg)
    for epoch in (0, 1):
        train, val = [], []
        for rank in (0, 1):
            info = DistInfo(rank, 2, rank, torch.device("cpu"))
            loader = TrainLoader(bundle.train, cfg, info, drop_last=False)
            assert len(loader) == 2  # 16 samples / 2 ranks / batch 4: the same count on both ranks
            assert len(list(loader.epoch(epoch, skip_batches=1))) == 1  # a mid-epoch resume reads on
            train.append([i for x, _, _ in loader.epoch(epoch) for i in _indices(x, bundle.mean, bundle.std)])
            val.append([i for x, _, _ in eval_loader(bundle.val, cfg, info)
                        for i in _indices(x, bundle.mean, bundle.std)])
        assert not set(train[0]) & set(train[1])
        assert sorted(train[0] + train[1]) == list(range(TRAIN_N))
        assert not set(val[0]) & set(val[1])
        assert sorted(val[0] + val[1]) == list(range(TRAIN_N, TRAIN_N + VAL_N))
    # more ranks than validation shards: the third rank reads nothing, nothing is read twice
    val = [[i for x, _, _ in eval_loader(bundle.val, cfg, DistInfo(r, 3, r, torch.device("cpu")))
            for i in _indices(x, bundle.mean, bundle.std)] for r in range(3)]
    assert sorted(val[0] + val[1]) == list(range(TRAIN_N, TRAIN_N + VAL_N)) and val[2] == []


def test_wds_problems_name_the_path_or_key(tmp_path):
    root = write_shards(tmp_path / "shards")
    (root / "train-0002.tar").unlink()
    with pytest.raises(DataError, match=r"shard .*train-0002\.tar \(_info\.json splits\.train\) does not exist"):
        build_datasets(_cfg("wds/toy", root))
    (root / "_info.json").unlink()
    with pytest.raises(DataError, match=r"_info\.json lists no splits \(needed for DATA.TRAIN_SPLIT 'train'\)"):
        build_datasets(_cfg("wds/toy", root))
    root = write_shards(tmp_path / "more")
    with pytest.raises(DataError, match=r"no split 'holdout' \(DATA.VAL_SPLIT\); its splits are: train, validation"):
        build_datasets(_cfg("wds/toy", root, "DATA.VAL_SPLIT", "holdout"))
    with pytest.raises(DataError, match="TRAIN_FRACTION"):
        build_datasets(_cfg("wds/toy", root, "DATA.TRAIN_FRACTION", "0.5"))


def test_wds_preflight_needs_a_shard_per_reader(tmp_path):
    from ecvit.engine import resolve

    root = write_shards(tmp_path / "shards")
    with pytest.raises(UsageError, match=r"has 4 shard\(s\), fewer than the 1 process\(es\) x 5 loader"):
        resolve(_cfg("wds/toy", root, "DATA.WORKERS", "5", out=tmp_path / "run"))
    with pytest.raises(UsageError, match="DATA.SAMPLER repeated_aug: wds/toy streams"):
        resolve(_cfg("wds/toy", root, "DATA.SAMPLER", "repeated_aug", out=tmp_path / "run"))
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------- csv


@pytest.mark.parametrize("header,names", [(True, True), (False, False)])
def test_csv_lists_with_or_without_header_by_name_or_index(tmp_path, header, names):
    bundle = build_datasets(_cfg("csv", write_csv(tmp_path / "lists", header, names)))
    assert bundle.class_names == (CLASSES if names else ["0", "1"])
    assert (len(bundle.train), len(bundle.val)) == (TRAIN_N, VAL_N)
    assert sorted(_all_items(bundle.val, bundle.mean, bundle.std)) == [
        (i, _label(i)) for i in range(TRAIN_N, TRAIN_N + VAL_N)]
    # map-style: the DistributedSampler gives the two ranks disjoint halves
    cfg = _cfg("csv", tmp_path / "lists")
    seen = [[i for x, _, _ in TrainLoader(bundle.train, cfg, DistInfo(r, 2, r, torch.device("cpu")), False).epoch(0)
             for i in _indices(x, bundle.mean, bundle.std)] for r in (0, 1)]
    assert sorted(seen[0] + seen[1]) == list(range(TRAIN_N)) and not set(seen[0]) & set(seen[1])


def test_csv_problems_name_the_file_and_line(tmp_path):
    root = write_csv(tmp_path / "lists")
    (root / "images" / "3.png").unlink()
    with pytest.raises(DataError, match=r"train\.csv:5 names .*images/3\.png, which does not exist"):
        build_datasets(_cfg("csv", root))
    root = write_csv(tmp_path / "other")
    (root / "val.csv").write_text("images/16.png,cow\n")
    with pytest.raises(DataError, match=r"val\.csv:1: class 'cow' does not appear in .*train\.csv"):
        build_datasets(_cfg("csv", root))
    (root / "val.csv").write_text("images/16.png\n")
    with pytest.raises(DataError, match=r"val\.csv:1: expected 'path,label'"):
        build_datasets(_cfg("csv", root))
    with pytest.raises(DataError, match=r"csv: missing list .*holdout\.csv"):
        build_datasets(_cfg("csv", root, "DATA.VAL_SPLIT", "holdout"))


# -------------------------------------------------------------------------------- hfds


def test_hfds_save_to_disk_folder(tmp_path, hf_offline):
    import datasets

    folder = tmp_path / "saved"
    _hf_dataset_dict().save_to_disk(str(folder))
    bundle = build_datasets(_cfg(f"hfds/{folder}"))  # DATA.VAL_SPLIT val finds "validation"
    assert bundle.class_names == CLASSES
    assert sorted(_all_items(bundle.val, bundle.mean, bundle.std)) == [
        (i, _label(i)) for i in range(TRAIN_N, TRAIN_N + VAL_N)]
    with pytest.raises(DataError, match=r"no column 'img' \(DATA.INPUT_KEY\); its columns are: image, label"):
        build_datasets(_cfg(f"hfds/{folder}", "", "DATA.INPUT_KEY", "img"))
    # plain integer labels (no ClassLabel) in other columns: classes 0..max, a stratified fraction
    plain = _hf_dataset_dict().rename_columns({"image": "picture", "label": "y"})
    plain = plain.cast_column("y", datasets.Value("int64"))
    plain.save_to_disk(str(tmp_path / "plain"))
    bundle = build_datasets(_cfg(f"hfds/{tmp_path / 'plain'}", "", "DATA.INPUT_KEY", "picture",
                                 "DATA.TARGET_KEY", "y", "DATA.TRAIN_FRACTION", "0.5"))
    assert bundle.class_names == ["0", "1"] and len(bundle.train) == TRAIN_N // 2
    assert all(_label(i) == y for i, y in _all_items(bundle.train, bundle.mean, bundle.std))


def test_hfds_hub_name_from_an_offline_cache(tmp_path, hf_offline):
    cache = tmp_path / "hf-cache"
    write_hf_cache(cache, "tiny/shapes", tmp_path)
    bundle = build_datasets(_cfg("hfds/tiny/shapes", cache))
    assert bundle.class_names == CLASSES and (len(bundle.train), len(bundle.val)) == (TRAIN_N, VAL_N)
    assert sorted(i for i, _ in _all_items(bundle.train, bundle.mean, bundle.std)) == list(range(TRAIN_N))
    with pytest.raises(DataError, match=r"hfds/tiny/absent: not a local dataset folder and not in the cache"):
        build_datasets(_cfg("hfds/tiny/absent", cache))


# ------------------------------------------------------------------------------- torch


def test_torchvision_mnist_on_disk(tmp_path):
    root = write_mnist_raw(tmp_path / "data")
    bundle = build_datasets(_cfg("torch/MNIST", root))
    assert bundle.num_classes == 10 and bundle.class_names[0] == "0 - zero"
    assert sorted(_all_items(bundle.val, bundle.mean, bundle.std)) == [
        (i, i % 10) for i in range(TRAIN_N, TRAIN_N + VAL_N)]
    assert len(build_datasets(_cfg("torch/mnist", root, "DATA.TRAIN_FRACTION", "0.5")).train) == 10
    with pytest.raises(DataError, match=r"torch/cifar10: torchvision cannot open its train split under .*data"):
        build_datasets(_cfg("torch/cifar10", root))
    with pytest.raises(DataError, match="did you mean 'torch/cifar10'"):
        build_datasets(_cfg("torch/cifar1O", root))


# --------------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_trains_and_validates_from_shards(tmp_path, capsys):
    from _cli_helpers import run_entry
    from ecvit.io.checkpoint import read_checkpoint
    from ecvit.cli import main

    root = write_shards(tmp_path / "shards")
    out = tmp_path / "run"
    code, stdout, err = run_entry(main, ["train", "--dataset", "wds/toy", "--data-path", str(root),
                                         "--output-dir", str(out), *SMALL], capsys)
    assert code == 0, err
    assert "16 train / 6 val images" in stdout
    assert read_checkpoint(out / "model_best.pth")["class_names"] == CLASSES
    code, stdout, err = run_entry(main, ["validate", "--checkpoint", str(out / "model_best.pth")], capsys)
    assert code == 0, err
    assert json.loads((out / "model_best.validate.json").read_text())["num_samples"] == VAL_N
    (root / "validation-0001.tar").unlink()
    code, stdout, err = run_entry(main, ["train", "--dataset", "wds/toy", "--data-path", str(root),
                                         "--output-dir", str(tmp_path / "again"), *SMALL], capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"error: wds/toy: shard {root / 'validation-0001.tar'} (_info.json splits.validation) does not exist"]


# ------------------------------------------------------------------------ two processes


def _rank_main(data: Path, out: Path) -> int:
    """Per rank: the samples each source's loaders give it, then one epoch from the shards."""
    import torch.distributed as dist

    from ecvit.engine import distributed as D
    from ecvit.engine import train, validate

    info = D.setup(torch.device("cpu"))
    seen = {}
    for name, root in (("wds/toy", data / "shards"), ("csv", data / "lists")):
        cfg = _cfg(name, root)
        bundle = build_datasets(cfg)
        batches = TrainLoader(bundle.train, cfg, info, drop_last=False).epoch(0)
        seen[name] = {"train": [i for x, _, _ in batches for i in _indices(x, bundle.mean, bundle.std)],
                      "val": [i for x, _, _ in eval_loader(bundle.val, cfg, info)
                              for i in _indices(x, bundle.mean, bundle.std)]}
    ranks = [None] * info.world_size
    dist.all_gather_object(ranks, seen)
    cfg = _cfg("wds/toy", data / "shards", out=out / "run")
    train(cfg)
    validate(cfg, str(out / "run" / "checkpoint.pth"))
    if info.is_main:
        (out / "ranks.json").write_text(json.dumps(ranks))
    return 0


@pytest.mark.slow
def test_two_processes_read_disjoint_parts_and_train_an_epoch(tmp_path):
    write_shards(tmp_path / "shards")
    write_csv(tmp_path / "lists")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           __file__, str(tmp_path), str(tmp_path)],
                          env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = json.loads((tmp_path / "ranks.json").read_text())
    for name in ("wds/toy", "csv"):
        for split, everything in (("train", range(TRAIN_N)), ("val", range(TRAIN_N, TRAIN_N + VAL_N))):
            first, second = ranks[0][name][split], ranks[1][name][split]
            assert not set(first) & set(second), (name, split)
            assert sorted(first + second) == list(everything), (name, split)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics) == 1
    report = json.loads((tmp_path / "run" / "checkpoint.validate.json").read_text())
    assert report["num_samples"] == VAL_N and report["top1"] == metrics[0]["val_top1"]


if __name__ == "__main__":
    sys.exit(_rank_main(Path(sys.argv[1]), Path(sys.argv[2])))
