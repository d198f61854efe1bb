"""Datasets: every format on small fake copies built in tmp_path, and their layout errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ecvit.config import Config
from ecvit.data import DATASETS, DataBundle, build_datasets, collate_batch
from ecvit.data.build import canonical_dataset_name
from ecvit.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)


def _cfg(dataset: str, root: Path | str = "", **data) -> Config:
    cfg = Config()
    cfg.data.dataset = dataset
    cfg.data.root = str(root)
    cfg.data.img_size = 16
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return cfg


def _png(path: Path, seed: int = 0, size=(12, 10), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)


def _check_items(ds, img_size: int, labels: set[int]) -> None:
    for i in range(len(ds)):
        x, y = ds[i]
        assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
        assert x.shape == (3, img_size, img_size)
        assert isinstance(y, int) and y in labels
        assert torch.isfinite(x).all()


# ----------------------------------------------------------------------------- names


def test_dataset_names_and_suggestions():
    assert set(DATASETS) == {
        "digits", "simulated", "folder", "cifar10", "cifar100", "tiny-imagenet", "oxford-pets",
        "svhn", "mnist", "fashion-mnist",
    }
    assert canonical_dataset_name("CIFAR10") == "cifar10"
    assert canonical_dataset_name("tiny_imagenet") == "tiny-imagenet"
    with pytest.raises(DataError, match="did you mean 'tiny-imagenet'"):
        build_datasets(_cfg("tiny-imagnet"))
    with pytest.raises(DataError, match="did you mean 'cifar100'"):
        build_datasets(_cfg("cifar-100"))
    with pytest.raises(DataError, match="choose from digits, simulated"):
        build_datasets(_cfg("mnist-fashion-xyz"))


@pytest.mark.parametrize("name", ["folder", "cifar10", "cifar100", "tiny-imagenet", "oxford-pets",
                                  "svhn", "mnist", "fashion-mnist"])
def test_on_disk_formats_need_data_path(name, tmp_path):
    with pytest.raises(DataError, match=rf"{name} reads its files from disk: pass --data-path DIR"):
        build_datasets(_cfg(name, ""))
    with pytest.raises(DataError, match=rf"{name}: dataset root .*missing \(--data-path\) is not a dir"):
        build_datasets(_cfg(name, tmp_path / "missing"))


def test_download_is_refused_where_unsupported(tmp_path):
    with pytest.raises(DataError, match="--download is available for cifar10, cifar100, svhn, mnist, fashion-mnist; folder must"):
        build_datasets(_cfg("folder", tmp_path, download=True))


# ----------------------------------------------------------------------------- digits


def test_digits_split_is_fixed_stratified_and_real():
    a = build_datasets(_cfg("digits", img_size=16))
    b = build_datasets(_cfg("digits", img_size=16))
    assert isinstance(a, DataBundle)
    assert (len(a.train), len(a.val)) == (1437, 360)
    assert a.num_classes == 10 and a.class_names == [str(d) for d in range(10)]
    assert torch.equal(a.val.labels, b.val.labels) and torch.equal(a.val.images, b.val.images)
    # a different run seed keeps the same split
    cfg = _cfg("digits", img_size=16)
    cfg.seed = 123
    assert torch.equal(build_datasets(cfg).val.labels, a.val.labels)
    # stratified: every class holds ~20% of its images in val
    train_counts = torch.bincount(a.train.labels, minlength=10)
    val_counts = torch.bincount(a.val.labels, minlength=10)
    frac = val_counts.float() / (train_counts + val_counts).float()
    assert ((frac - 0.2).abs() < 0.01).all()
    # mean/std are the train pixels' statistics, the same for all three channels
    assert a.mean[0] == a.mean[1] == a.mean[2] and 0.25 < a.mean[0] < 0.35
    assert 0.3 < a.std[0] < 0.45
    _check_items(a.val, 16, set(range(10)))
    # the eval images are real digits: nearest class centroid from train already separates them
    xs = torch.stack([a.val.transform(img) for img in a.train.images])
    centroids = torch.stack([xs[a.train.labels == c].mean(0) for c in range(10)]).flatten(1)
    xv = torch.stack([a.val[i][0] for i in range(len(a.val))]).flatten(1)
    pred = torch.cdist(xv, centroids).argmin(1)
    assert (pred == a.val.labels).float().mean() > 0.85


def test_digits_train_transform_is_light_and_never_flips():
    cfg = _cfg("digits", img_size=24)
    cfg.aug.hflip = 1.0  # would turn every 2 into a mirrored 2; digits ignore it
    cfg.aug.scale = [0.08, 1.0]
    bundle = build_datasets(cfg)
    tf = bundle.train.transform
    assert tf.hflip == 0.0 and tf.scale == (0.9, 1.1)
    x0 = bundle.train.images[5]
    eval_x = bundle.val.transform(x0)
    outs = torch.stack([tf(x0) for _ in range(8)])
    assert outs.shape == (8, 3, 24, 24)
    assert not torch.allclose(outs[0], outs[1])  # random affine
    # light: each augmented view stays close to the un-augmented one
    cos = torch.nn.functional.cosine_similarity(outs.flatten(1), eval_x.flatten()[None], dim=1)
    assert (cos > 0.5).all()


def test_digits_loader_batches():
    bundle = build_datasets(_cfg("digits", img_size=8))
    loader = torch.utils.data.DataLoader(bundle.train, batch_size=64, collate_fn=collate_batch)
    images, labels, num_bad = next(iter(loader))
    assert images.shape == (64, 3, 8, 8) and labels.dtype == torch.int64 and num_bad == 0


# -------------------------------------------------------------------------- simulated


def test_simulated_is_deterministic_lazy_and_class_dependent():
    cfg = _cfg("simulated", img_size=16, train_size=300, val_size=100, num_classes=5)
    a, b = build_datasets(cfg), build_datasets(cfg)
    assert (len(a.train), len(a.val), a.num_classes) == (300, 100, 5)
    assert a.mean == (0.5, 0.5, 0.5) and a.std == (0.5, 0.5, 0.5)
    for i in (0, 7, 99):
        assert torch.equal(a.val[i][0], b.val[i][0]) and a.val[i][1] == b.val[i][1]
    assert not torch.equal(a.train.generate(0)[0], a.val.generate(0)[0])
    other = _cfg("simulated", img_size=16, train_size=300, val_size=100, num_classes=5)
    other.seed = 1
    assert not torch.equal(build_datasets(other).val[0][0], a.val[0][0])
    _check_items(a.val, 16, set(range(5)))
    # nearest class mean on raw pixels, fitted on train, is far above chance (20%) on val
    xt = torch.stack([a.train.generate(i)[0] for i in range(300)]).flatten(1)
    yt = torch.tensor([a.train.generate(i)[1] for i in range(300)])
    xv = torch.stack([a.val.generate(i)[0] for i in range(100)]).flatten(1)
    yv = torch.tensor([a.val.generate(i)[1] for i in range(100)])
    centroids = torch.stack([xt[yt == c].mean(0) for c in range(5)])
    assert (torch.cdist(xv, centroids).argmin(1) == yv).float().mean() > 0.6
    # lazily generated: a huge size costs nothing up front
    big = build_datasets(_cfg("simulated", img_size=8, train_size=10**9, val_size=10**8))
    assert len(big.train) == 10**9 and big.train[10**9 - 1][0].shape == (3, 8, 8)


def test_stats_override():
    cfg = _cfg("simulated", img_size=8, train_size=4, val_size=4, mean=[0.25], std=[0.1, 0.2, 0.3])
    bundle = build_datasets(cfg)
    assert bundle.mean == (0.25, 0.25, 0.25) and bundle.std == (0.1, 0.2, 0.3)
    raw, _ = bundle.val.generate(0)
    expected = (raw - 0.25) / torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1)
    assert torch.allclose(bundle.val[0][0], expected, atol=1e-6)


# ----------------------------------------------------------------------------- folder


def _folder_tree(root: Path, train=3, val=2, classes=("cat", "dog", "emu")) -> None:
    for split, n in (("train", train), ("val", val)):
        for c, name in enumerate(classes):
            for i in range(n):
                ext = ".png" if i % 2 else ".JPEG"
                _png(root / split / name / f"{name}_{i}{ext}", seed=c * 100 + i)


def test_folder_dataset(tmp_path):
    _folder_tree(tmp_path)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "cat" / ".hidden.png").write_bytes(b"")
    bundle = build_datasets(_cfg("folder", tmp_path))
    assert bundle.class_names == ["cat", "dog", "emu"] and bundle.num_classes == 3
    assert (len(bundle.train), len(bundle.val)) == (9, 6)
    assert bundle.mean == IMAGENET_MEAN
    assert bundle.crop_pct == 0.875  # timm's default when DATA.CROP_PCT is unset
    assert bundle.val.targets == [0, 0, 1, 1, 2, 2]
    assert all(Path(p).parent.name == bundle.class_names[y] for p, y in bundle.train.samples)
    _check_items(bundle.train, 16, {0, 1, 2})
    _check_items(bundle.val, 16, {0, 1, 2})


def test_folder_layout_errors(tmp_path):
    with pytest.raises(DataError, match="--data-path"):
        build_datasets(_cfg("folder", ""))
    with pytest.raises(DataError, match="is not a directory"):
        build_datasets(_cfg("folder", tmp_path / "nope"))
    # images straight under train/ instead of class folders
    _png(tmp_path / "flat" / "train" / "a.png")
    _png(tmp_path / "flat" / "val" / "b.png")
    with pytest.raises(DataError, match=r"no class folders in .*flat/train \(expected the layout root/train/<class>"):
        build_datasets(_cfg("folder", tmp_path / "flat"))
    # missing split
    _png(tmp_path / "noval" / "train" / "cat" / "a.png")
    with pytest.raises(DataError, match=r"missing split .*noval/val"):
        build_datasets(_cfg("folder", tmp_path / "noval"))
    # empty class folder
    _folder_tree(tmp_path / "empty")
    (tmp_path / "empty" / "val" / "dog").mkdir(exist_ok=True)
    for f in (tmp_path / "empty" / "val" / "dog").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"class folder .*empty/val/dog has no images"):
        build_datasets(_cfg("folder", tmp_path / "empty"))
    # val classes differ from train
    _folder_tree(tmp_path / "mismatch")
    _png(tmp_path / "mismatch" / "val" / "yak" / "a.png")
    with pytest.raises(DataError, match="must match .*not in train: yak"):
        build_datasets(_cfg("folder", tmp_path / "mismatch"))


# ------------------------------------------------------------------------------ cifar


def _cifar_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def _write_pickle(path: Path, obj, protocol: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def make_cifar10(root: Path, per_batch: int = 4, test: int = 6) -> Path:
    """Official file names; protocols 2 (as distributed), 4 and 5 exercise every numpy path."""
    folder = root / "cifar-10-batches-py"
    for i in range(1, 6):
        batch = {
            "batch_label": f"b{i}",
            "labels": [(i + j) % 10 for j in range(per_batch)],
            "data": _cifar_images(per_batch, i),
            "filenames": [f"f{j}.png" for j in range(per_batch)],
        }
        _write_pickle(folder / f"data_batch_{i}", batch, 2)
    test_batch = {"labels": list(range(test)), "data": _cifar_images(test, 9)}
    _write_pickle(folder / "test_batch", test_batch, 4)
    meta = {"label_names": [f"c{k}" for k in range(10)], "num_vis": 3072}
    _write_pickle(folder / "batches.meta", meta, 5)
    return folder


def make_cifar100(root: Path) -> Path:
    folder = root / "cifar-100-python"
    train = {"fine_labels": [0, 50, 99, 7, 7], "coarse_labels": [0] * 5, "data": _cifar_images(5, 1)}
    _write_pickle(folder / "train", train, 2)
    test = {"fine_labels": [3, 4], "coarse_labels": [0, 0], "data": _cifar_images(2, 2)}
    _write_pickle(folder / "test", test, 5)
    meta = {
        "fine_label_names": [f"n{k}" for k in range(100)],
        "coarse_label_names": [f"s{k}" for k in range(20)],
    }
    _write_pickle(folder / "meta", meta, 2)
    return folder


def test_cifar10(tmp_path):
    folder = make_cifar10(tmp_path)
    bundle = build_datasets(_cfg("cifar10", tmp_path))
    assert (len(bundle.train), len(bundle.val), bundle.num_classes) == (20, 6, 10)
    assert bundle.class_names == [f"c{k}" for k in range(10)]
    assert bundle.mean == (0.4914, 0.4822, 0.4465) and bundle.std == (0.2470, 0.2435, 0.2616)
    assert bundle.train.targets[:4] == [1, 2, 3, 4] and bundle.val.targets == list(range(6))
    # pixels are decoded in the CHW-planar order of the official files
    raw = _cifar_images(4, 1)[0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(bundle.train.images[0], raw)
    _check_items(bundle.val, 16, set(range(10)))
    # --data-path may also name the batches folder itself
    assert len(build_datasets(_cfg("cifar10", folder)).train) == 20


def test_cifar100(tmp_path):
    make_cifar100(tmp_path)
    bundle = build_datasets(_cfg("cifar100", tmp_path, img_size=32, crop_pct=1.0))
    assert (len(bundle.train), len(bundle.val), bundle.num_classes) == (5, 2, 100)
    assert bundle.class_names[99] == "n99" and bundle.train.targets == [0, 50, 99, 7, 7]
    assert bundle.mean == (0.5070, 0.4865, 0.4409) and bundle.std == (0.2673, 0.2564, 0.2762)
    # crop_pct 1 at the native 32 px: the eval transform is exactly normalisation
    x, _ = bundle.val[0]
    raw = torch.from_numpy(_cifar_images(2, 2)[0].reshape(3, 32, 32)).float() / 255
    mean, std = torch.tensor(bundle.mean).view(3, 1, 1), torch.tensor(bundle.std).view(3, 1, 1)
    assert torch.allclose(x, (raw - mean) / std, atol=1e-5)


def test_cifar_missing_batches(tmp_path):
    with pytest.raises(DataError, match=r"cifar10: expected .*cifar-10-batches-py/data_batch_1 .*pass --download"):
        build_datasets(_cfg("cifar10", tmp_path))
    folder = make_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"expected batch file .*data_batch_3"):
        build_datasets(_cfg("cifar10", tmp_path))
    with pytest.raises(DataError, match=r"cifar100: expected .*cifar-100-python/train"):
        build_datasets(_cfg("cifar100", tmp_path))


def test_cifar_bad_contents(tmp_path):
    folder = make_cifar10(tmp_path)
    _write_pickle(folder / "data_batch_2", {"labels": [0, 1], "data": _cifar_images(3, 0)}, 2)
    with pytest.raises(DataError, match="has 2 labels for 3 images"):
        build_datasets(_cfg("cifar10", tmp_path))
    _write_pickle(folder / "data_batch_2", {"labels": [0, 10], "data": _cifar_images(2, 0)}, 2)
    with pytest.raises(DataError, match="labels outside 0..9"):
        build_datasets(_cfg("cifar10", tmp_path))
    (folder / "data_batch_2").write_bytes(pickle.dumps({"labels": [0]})[:-5])
    with pytest.raises(DataError, match="data_batch_2: not a valid CIFAR batch"):
        build_datasets(_cfg("cifar10", tmp_path))


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_cifar_pickle_is_refused(tmp_path):
    folder = make_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    _write_pickle(folder / "data_batch_1", {"labels": [0], "data": _Exploit(marker)}, 2)
    with pytest.raises(DataError, match=r"refusing .*data_batch_1.*(posix|os)\.system is not allowed"):
        build_datasets(_cfg("cifar10", tmp_path))
    assert not marker.exists()
    # the meta file is read with the same guard
    folder = make_cifar10(tmp_path / "b")
    _write_pickle(folder / "batches.meta", {"label_names": _Exploit(marker)}, 4)
    with pytest.raises(DataError, match="is not allowed"):
        build_datasets(_cfg("cifar10", tmp_path / "b"))
    assert not marker.exists()


def test_cifar_download_uses_torchvision_downloader(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    calls = []

    def fake_download(url, download_root, filename=None, md5=None, **kw):
        calls.append((url, filename, md5))
        make_cifar10(Path(download_root))

    monkeypatch.setattr(tvu, "download_and_extract_archive", fake_download)
    root = tmp_path / "new"
    bundle = build_datasets(_cfg("cifar10", root, download=True))
    assert len(bundle.train) == 20
    assert calls and calls[0][0].endswith("cifar-10-python.tar.gz") and calls[0][2]
    # already present: no second download
    build_datasets(_cfg("cifar10", root, download=True))
    assert len(calls) == 1


# ---------------------------------------------------------------------- tiny-imagenet


def make_tiny(root: Path, wnids=("n02", "n01", "n03"), per_class=2) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    words = ["n01\tgoldfish, Carassius auratus", "n02\tsalamander", "n03\tbullfrog, Rana", "n99\tx"]
    (root / "words.txt").write_text("\n".join(words) + "\n")
    for k, w in enumerate(wnids):
        for i in range(per_class):
            _png(root / "train" / w / "images" / f"{w}_{i}.JPEG", seed=k * 10 + i, size=(64, 64))
        (root / "train" / w / f"{w}_boxes.txt").write_text(f"{w}_0.JPEG\t0\t0\t10\t10\n")
    lines = []
    for i, w in enumerate(["n03", "n01", "n01", "n02"]):
        _png(root / "val" / "images" / f"val_{i}.JPEG", seed=100 + i, size=(64, 64))
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    _png(root / "test" / "images" / "test_0.JPEG")
    return root


def test_tiny_imagenet(tmp_path):
    make_tiny(tmp_path / "tiny-imagenet-200")
    bundle = build_datasets(_cfg("tiny-imagenet", tmp_path))  # parent of tiny-imagenet-200 works
    assert bundle.class_names == ["goldfish", "salamander", "bullfrog"]  # sorted wnids n01, n02, n03
    assert (len(bundle.train), len(bundle.val)) == (6, 4)
    assert bundle.val.targets == [2, 0, 0, 1]
    assert all(f"/n0{y + 1}/images/" in p for p, y in bundle.train.samples)
    assert bundle.mean == IMAGENET_MEAN
    _check_items(bundle.val, 16, {0, 1, 2})
    # without words.txt the wnids are the names
    (tmp_path / "tiny-imagenet-200" / "words.txt").unlink()
    bundle = build_datasets(_cfg("tiny-imagenet", tmp_path / "tiny-imagenet-200"))
    assert bundle.class_names == ["n01", "n02", "n03"]


def test_tiny_imagenet_layout_errors(tmp_path):
    with pytest.raises(DataError, match=r"tiny-imagenet: expected .*wnids.txt \(the official"):
        build_datasets(_cfg("tiny-imagenet", tmp_path))
    root = make_tiny(tmp_path / "a")
    (root / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DataError, match=r"missing split annotations .*val/val_annotations.txt"):
        build_datasets(_cfg("tiny-imagenet", root))
    root = make_tiny(tmp_path / "b")
    with open(root / "val" / "val_annotations.txt", "a") as f:
        f.write("val_0.JPEG\tn77\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match=r"val_annotations.txt:5: wnid n77 is not in wnids.txt"):
        build_datasets(_cfg("tiny-imagenet", root))
    root = make_tiny(tmp_path / "c")
    for f in (root / "train" / "n02" / "images").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"class folder .*train/n02/images has no images"):
        build_datasets(_cfg("tiny-imagenet", root))
    root = make_tiny(tmp_path / "d")
    (root / "val" / "images" / "val_2.JPEG").unlink()
    with pytest.raises(DataError, match=r"val_annotations.txt:3 names .*val_2.JPEG, which does not exist"):
        build_datasets(_cfg("tiny-imagenet", root))


# ------------------------------------------------------------------------ oxford-pets

PETS = {1: "Abyssinian", 2: "american_bulldog", 3: "Bengal"}


def make_pets(root: Path) -> Path:
    header = "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n"
    rows = {"trainval": [], "test": []}
    for cid, breed in PETS.items():
        species = 1 if breed[0].isupper() else 2
        for i in range(1, 5):
            stem = f"{breed}_{i}"
            _png(root / "images" / f"{stem}.jpg", seed=cid * 10 + i)
            rows["trainval" if i <= 3 else "test"].append(f"{stem} {cid} {species} {cid}")
    (root / "images" / "Abyssinian_1.mat").write_bytes(b"matlab")
    (root / "annotations").mkdir(exist_ok=True)
    for split, lines in rows.items():
        (root / "annotations" / f"{split}.txt").write_text(header + "\n".join(lines) + "\n")
    return root


def test_oxford_pets(tmp_path):
    make_pets(tmp_path)
    bundle = build_datasets(_cfg("oxford-pets", tmp_path))
    assert bundle.class_names == ["Abyssinian", "american_bulldog", "Bengal"] and bundle.num_classes == 3
    assert (len(bundle.train), len(bundle.val)) == (9, 3)
    assert bundle.val.targets == [0, 1, 2]
    assert all(Path(p).stem.rsplit("_", 1)[0] == bundle.class_names[y] for p, y in bundle.train.samples)
    assert bundle.mean == IMAGENET_MEAN
    _check_items(bundle.train, 16, {0, 1, 2})


def test_oxford_pets_layout_errors(tmp_path):
    with pytest.raises(DataError, match=r"oxford-pets: expected .*annotations/trainval.txt \(the official layout"):
        build_datasets(_cfg("oxford-pets", tmp_path))
    root = make_pets(tmp_path / "a")
    (root / "annotations" / "test.txt").unlink()
    with pytest.raises(DataError, match=r"expected .*annotations/test.txt"):
        build_datasets(_cfg("oxford-pets", root))
    root = make_pets(tmp_path / "b")
    (root / "images" / "Bengal_2.jpg").unlink()
    with pytest.raises(DataError, match=r"trainval.txt:\d+ names .*Bengal_2.jpg, which does not exist"):
        build_datasets(_cfg("oxford-pets", root))
    root = make_pets(tmp_path / "c")
    with open(root / "annotations" / "test.txt", "a") as f:
        f.write("Bengal_4 5 1 5\n")
    with pytest.raises(DataError, match=r"class ids \[4\] never appear"):
        build_datasets(_cfg("oxford-pets", root))
    root = make_pets(tmp_path / "d")
    with open(root / "annotations" / "test.txt", "a") as f:
        f.write("Bengal_4 1 1 1\n")
    with pytest.raises(DataError, match="class id 1 is 'Abyssinian' elsewhere but 'Bengal' here"):
        build_datasets(_cfg("oxford-pets", root))


def test_eval_crop_travels_with_the_bundle():
    """Generated data is resized whole at eval; image files use DATA.CROP_PCT (timm style)."""
    from ecvit.config import Config
    from ecvit.data import build_datasets

    cfg = Config()
    cfg.data.crop_pct = 0.8
    assert build_datasets(cfg).crop_pct == 1.0  # digits: validation resizes the whole digit
