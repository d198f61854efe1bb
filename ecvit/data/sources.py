"""Data sources besides the built-in datasets, opened through ``timm.data.create_dataset``.

``--dataset`` takes, next to the names of :data:`ecvit.config.DATASETS`:

- ``wds/NAME``: webdataset tar shards in ``DATA.ROOT`` (how ImageNet-scale training is fed).
  Each sample is ``KEY.jpg`` (or ``.png``/``.webp``) with ``KEY.cls`` (the class index as
  text). ``DATA.ROOT/_info.json`` lists each split's shards and sizes::

      {"classes": ["cat", "dog"],
       "splits": {"train": {"name": "train", "num_samples": 8,
                            "filenames": ["train-0000.tar", "train-0001.tar"],
                            "shard_lengths": [4, 4]},
                  "validation": {...}}}

  ``DATA.TRAIN_SPLIT`` / ``VAL_SPLIT`` name a split of that file (``val`` finds
  ``validation``), or give the shards as a brace pattern, timm's syntax:
  ``train-{0000..0009}.tar|SAMPLES`` (without ``|SAMPLES`` the shards are counted).
  ``"classes"`` (names) or ``"num_classes"`` fixes the head; without either the ``.cls``
  entries of the shards are read once to find it. Training splits the shards over
  ranks and loader workers as timm does; validation gives each rank whole shards, every
  sample exactly once.
- ``hfds/NAME``: a Hugging Face dataset (``datasets.load_dataset``) by hub name, from the
  cache ``DATA.ROOT`` (default: the Hugging Face cache; ``HF_DATASETS_OFFLINE=1`` keeps it
  offline), or a local folder of parquet/arrow files, or a folder written by
  ``save_to_disk``. Columns ``image`` and ``label`` (``DATA.INPUT_KEY`` / ``TARGET_KEY``);
  class names from the label's ``ClassLabel`` feature.
- ``torch/NAME``: a torchvision dataset already in ``DATA.ROOT`` in its official layout
  (``torch/cifar10``, ``torch/mnist``, ...; never downloaded).
- ``csv``: ``DATA.ROOT/train.csv`` and ``DATA.ROOT/val.csv`` (``DATA.TRAIN_SPLIT`` /
  ``VAL_SPLIT``, ``.csv`` added) with one ``path,label`` line per image; see
  :func:`read_csv_list`.

The map-style sources (all but ``wds``) shuffle with the engine's ``DistributedSampler``.
Every problem found while opening a source is one :class:`DataError` naming the path or key.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import os
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from timm.data.readers.reader import Reader
from torch.utils.data import Dataset, IterableDataset

from ecvit.config import Config
from ecvit.data.samples import ImageFileDataset
from ecvit.errors import DataError, UsageError

PREFIXES = ("wds", "hfds", "torch")
CSV = "csv"
# torchvision datasets timm's create_dataset opens (train/val from the split name)
TORCH_NAMES = ("cifar10", "cifar100", "mnist", "kmnist", "fashion_mnist", "qmnist", "imagenet",
               "places365", "inaturalist", "image_folder", "folder")
WDS_INFO = "_info.json"  # what timm's webdataset reader reads from the shard folder
TRAIN_SYNONYMS = ("train", "training")
EVAL_SYNONYMS = ("val", "validation", "valid", "eval", "evaluation", "test")
CSV_HEADER = ["path", "label"]

Transform = Callable[[Any], Any]


@dataclass
class Source:
    """What :func:`ecvit.data.build.build_datasets` needs: dataset factories (transform ->
    dataset) for both splits and the class names, index order."""

    train: Callable[[Transform], Dataset]
    val: Callable[[Transform], Dataset]
    classes: list[str]


def is_source(name: str) -> bool:
    """True for ``wds/...``, ``hfds/...``, ``torch/...`` and ``csv``."""
    prefix, sep, _ = name.strip().partition("/")
    return (bool(sep) and prefix.lower() in PREFIXES) or name.strip().lower() == CSV


def canonical_source_name(name: str) -> str:
    """The prefix lower-cased; torchvision names lower-cased with ``_`` (``fashion_mnist``)."""
    name = name.strip()
    if name.lower() == CSV:
        return CSV
    prefix, _, rest = name.partition("/")
    prefix = prefix.lower()
    if not rest:
        raise DataError(f"--dataset {name}: name the {prefix} dataset after the slash, e.g. {prefix}/NAME")
    if prefix == "torch":
        rest = rest.lower().replace("-", "_")
        if rest not in TORCH_NAMES:
            close = difflib.get_close_matches(rest, TORCH_NAMES, n=1, cutoff=0.5)
            hint = f" (did you mean 'torch/{close[0]}'?)" if close else ""
            raise DataError(f"unknown torchvision dataset {name!r}{hint}; choose from "
                            + ", ".join(f"torch/{n}" for n in TORCH_NAMES))
    return f"{prefix}/{rest}"


def open_source(cfg: Config, name: str) -> Source:
    """Open the source ``name`` (canonical) for ``cfg``; a DataError says what is missing."""
    if name == CSV:
        return _open_csv(cfg)
    prefix = name.partition("/")[0]
    return {"wds": _open_wds, "hfds": _open_hfds, "torch": _open_torch}[prefix](cfg, name)


def _root(cfg: Config, name: str) -> Path:
    if not cfg.data.root:
        raise DataError(f"{name} reads its files from disk: pass --data-path DIR (DATA.ROOT)")
    root = Path(cfg.data.root).expanduser()
    if not root.is_dir():
        raise DataError(f"{name}: dataset root {root} (--data-path) is not a directory")
    return root


def _pick_split(wanted: str, available: list[str], name: str, key: str) -> str:
    """``wanted`` if available, else its synonym that is (``val`` -> ``validation``)."""
    if wanted in available:
        return wanted
    for group in (TRAIN_SYNONYMS, EVAL_SYNONYMS):
        if wanted in group:
            for other in group:
                if other in available:
                    return other
    raise DataError(f"{name}: no split {wanted!r} ({key}); its splits are: {', '.join(available) or 'none'}")


def _class_names(count: int) -> list[str]:
    return [str(i) for i in range(count)]


class LabelledSource(Dataset):
    """A map-style timm/torchvision dataset (opened without a transform) with ``transform``
    applied to its images, ``classes`` and, read on first use, ``targets`` (for
    DATA.TRAIN_FRACTION's stratified subset)."""

    def __init__(self, dataset: Dataset, classes: list[str], targets: Callable[[], Any],
                 transform: Transform) -> None:
        self.dataset = dataset
        self.classes = list(classes)
        self.transform = transform
        self._targets_fn = targets
        self._targets: list[int] | None = None

    @property
    def targets(self) -> list[int]:
        if self._targets is None:
            self._targets = [int(t) for t in self._targets_fn()]
        return self._targets

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.dataset[index][:2]
        return self.transform(image), int(label)


def _labelled(datasets: dict[str, Dataset], classes: list[str],
              targets: Callable[[Dataset], Callable[[], Any]]) -> Source:
    """A Source of the two opened splits (train first), each wrapped with its transform."""
    train, val = datasets.values()
    return Source(lambda tf: LabelledSource(train, classes, targets(train), tf),
                  lambda tf: LabelledSource(val, classes, targets(val), tf), classes)


# ------------------------------------------------------------------------------ csv


def read_csv_list(path: Path) -> list[tuple[str, str, int]]:
    """``(image path, label text, line number)`` for each line ``path,label`` of ``path``.

    A first line ``path,label`` is a header and skipped; every other line is data. Paths
    are relative to the CSV file's folder (absolute ones are kept); quote a path holding a
    comma (standard CSV). Each image must exist.
    """
    if not path.is_file():
        raise DataError(f"csv: missing list {path} (expected lines 'path,label', one per image)")
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            for lineno, fields in enumerate(csv.reader(handle), 1):
                if not fields or not "".join(fields).strip():
                    continue
                fields = [f.strip() for f in fields]
                if lineno == 1 and [f.lower() for f in fields] == CSV_HEADER:
                    continue
                if len(fields) != 2 or not fields[0] or not fields[1]:
                    raise DataError(f"csv: {path}:{lineno}: expected 'path,label', got {','.join(fields)!r}")
                image = path.parent / fields[0]
                if not image.is_file():
                    raise DataError(f"csv: {path}:{lineno} names {image}, which does not exist")
                rows.append((str(image), fields[1], lineno))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"csv: cannot read {path}: {exc}") from None
    if not rows:
        raise DataError(f"csv: {path} lists no images")
    return rows


def _csv_path(root: Path, split: str) -> Path:
    return root / (split if split.endswith(".csv") else f"{split}.csv")


def _open_csv(cfg: Config) -> Source:
    """Labels that are all integers are class indices (classes ``0..max``); else they are
    class names, sorted, and the validation list may only use names of the training list."""
    root = _root(cfg, CSV)
    train_csv, val_csv = _csv_path(root, cfg.data.train_split), _csv_path(root, cfg.data.val_split)
    train_rows, val_rows = read_csv_list(train_csv), read_csv_list(val_csv)
    labels = [label for _, label, _ in train_rows + val_rows]
    if all(label.isdigit() for label in labels):
        classes = _class_names(max(int(label) for label in labels) + 1)
        index = {label: int(label) for label in labels}
    else:
        classes = sorted({label for _, label, _ in train_rows})
        index = {name: i for i, name in enumerate(classes)}
        for _, label, lineno in val_rows:
            if label not in index:
                raise DataError(f"csv: {val_csv}:{lineno}: class {label!r} does not appear in {train_csv}")
    train = [(p, index[label]) for p, label, _ in train_rows]
    val = [(p, index[label]) for p, label, _ in val_rows]
    skip, exif = cfg.data.skip_bad_images, cfg.data.exif_transpose
    return Source(lambda tf: ImageFileDataset(train, classes, tf, skip, exif),
                  lambda tf: ImageFileDataset(val, classes, tf, skip, exif), classes)


# ---------------------------------------------------------------------------- torch


def _open_torch(cfg: Config, name: str) -> Source:
    """A torchvision dataset on disk; the split names pick train (``train``) or test files."""
    from timm.data import create_dataset

    root = _root(cfg, name)

    def make(split: str) -> Dataset:
        try:
            return create_dataset(name, root=str(root), split=split, download=False)
        except (RuntimeError, OSError, AssertionError, ValueError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"{name}: torchvision cannot open its {split} split under {root} "
                            f"({detail}); the files must be there in torchvision's layout "
                            "(nothing is downloaded)") from None

    opened = {"train": make(cfg.data.train_split), "val": make(cfg.data.val_split)}
    classes = [str(c) for c in getattr(opened["train"], "classes", [])]
    if not classes:
        targets = getattr(opened["train"], "targets", None)
        if targets is None:
            raise DataError(f"{name}: the dataset under {root} names no classes")
        classes = _class_names(int(max(int(t) for t in targets)) + 1)
    return _labelled(opened, classes, lambda ds: lambda: list(getattr(ds, "targets")))


# ----------------------------------------------------------------------------- hfds


def _hf_error(name: str, exc: BaseException) -> DataError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DataError(f"{name}: cannot open the Hugging Face dataset ({detail})")


def _open_hfds(cfg: Config, name: str) -> Source:
    """A hub dataset from the cache ``DATA.ROOT``, a folder of data files, or a
    ``save_to_disk`` folder (read with ``datasets.load_from_disk``)."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"{name}: Hugging Face datasets need the datasets package "
                        "(pip install 'ecvit[data]')") from None
    path = name.partition("/")[2]
    cache = str(Path(cfg.data.root).expanduser()) if cfg.data.root else None
    image_key, label_key = cfg.data.input_key or "image", cfg.data.target_key or "label"
    saved = _load_saved(name, Path(path).expanduser())
    if saved is not None:
        features, split_names = next(iter(saved.values())).features, list(saved)
    else:
        try:
            builder = datasets.load_dataset_builder(path, cache_dir=cache)
        except Exception as exc:  # not cached while offline, no such folder, unreadable files
            where = f"the cache {cache}" if cache else "the Hugging Face cache"
            raise DataError(f"{name}: not a local dataset folder and not in {where} "
                            f"({_first_line(exc)})") from None
        features, split_names = builder.info.features, list(builder.info.splits or {})
    train_split, val_split = cfg.data.train_split, cfg.data.val_split
    if split_names:
        train_split = _pick_split(train_split, split_names, name, "DATA.TRAIN_SPLIT")
        val_split = _pick_split(val_split, split_names, name, "DATA.VAL_SPLIT")
    for key, what in ((image_key, "DATA.INPUT_KEY"), (label_key, "DATA.TARGET_KEY")):
        if features is not None and key not in features:
            raise DataError(f"{name}: no column {key!r} ({what}); its columns are: {', '.join(features)}")

    def make(split: str) -> Dataset:
        from timm.data import ImageDataset, create_dataset

        try:
            if saved is not None:
                return ImageDataset(None, reader=HfDatasetReader(saved[split], image_key, label_key))
            return create_dataset(name, root=cache, split=split, input_key=image_key, target_key=label_key)
        except Exception as exc:  # datasets' errors (unknown split, bad files): one line
            raise DataError(f"{name}: cannot open split {split!r} ({_first_line(exc)})") from None

    opened = {"train": make(train_split), "val": make(val_split)}
    classes = [str(c) for c in opened["train"].reader.class_to_idx]
    if not classes:  # an integer label column: classes 0..max over both splits
        classes = _class_names(1 + max(max(ds.reader.iter_targets()) for ds in opened.values()))
    return _labelled(opened, classes, lambda ds: ds.reader.iter_targets)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load_saved(name: str, folder: Path) -> dict[str, Any] | None:
    """The splits of a ``save_to_disk`` folder (a DatasetDict, or one Dataset as ``train``);
    None when ``folder`` is not one."""
    if not ((folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()):
        return None
    import datasets

    try:
        loaded = datasets.load_from_disk(str(folder))
    except Exception as exc:  # a damaged folder: one line
        raise DataError(f"{name}: cannot read the save_to_disk folder {folder} ({_first_line(exc)})") from None
    return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}


class HfDatasetReader(Reader):
    """A timm reader over a loaded ``datasets.Dataset`` (what ``load_from_disk`` returns), with
    the interface of timm's ``ReaderHfds``: undecoded image files, labels, ``class_to_idx``."""

    def __init__(self, dataset: Any, image_key: str = "image", label_key: str = "label") -> None:
        import datasets

        super().__init__()
        self.dataset = dataset.cast_column(image_key, datasets.Image(decode=False))
        self.image_key, self.label_key = image_key, label_key
        names = getattr(dataset.features[label_key], "names", None)
        self.class_to_idx = {n: i for i, n in enumerate(names)} if names else {}

    def __getitem__(self, index: int) -> tuple[Any, int]:
        item = self.dataset[index]
        image = item[self.image_key]
        data = io.BytesIO(image["bytes"]) if image.get("bytes") else open(image["path"], "rb")
        return data, item[self.label_key]

    def iter_targets(self) -> Iterator[int]:
        return iter(self.dataset[self.label_key])

    def __len__(self) -> int:
        return len(self.dataset)

    def _filename(self, index: int, basename: bool = False, absolute: bool = False) -> str:
        return self.dataset[index][self.image_key]["path"]


# ------------------------------------------------------------------------------ wds


@dataclass(frozen=True)
class ShardSplit:
    """One split of a shard folder: the split argument timm's reader gets, the shard files
    (relative to the root) and the samples in each (empty when ``_info.json`` gives only the
    total)."""

    arg: str
    shards: tuple[str, ...]
    lengths: tuple[int, ...]
    num_samples: int


class ShardedWebDataset(IterableDataset):
    """A webdataset split read by timm's ``ReaderWds`` through ``create_dataset``.

    Its length is the split's sample count. The loaders read :meth:`for_rank`: for training,
    timm's split of the (epoch-shuffled) shards over ranks and workers, each rank yielding
    the same number of samples (``ceil(N / ranks)`` rounded up to whole batches, repeating
    its own shards if short); for validation, rank r reads shards r, r+W, ..., each sample
    exactly once. Iterating it directly reads the whole split in this process.
    """

    def __init__(self, name: str, root: Path, split: ShardSplit, training: bool, transform: Transform,
                 classes: list[str], batch_size: int, seed: int, input_key: str = "", target_key: str = "") -> None:
        self.name, self.root, self.split, self.training = name, root, split, training
        self.transform, self.classes = transform, list(classes)
        self.batch_size, self.seed = batch_size, seed
        self.input_key, self.target_key = input_key or None, target_key or None

    def __len__(self) -> int:
        return self.split.num_samples

    def __iter__(self) -> Iterator[tuple[Any, int]]:
        return iter(self.for_rank(0, 1, 0))

    def check_world(self, world_size: int, workers: int) -> None:
        """Training needs a shard for every reader (ranks x loader workers): else a reader
        would have nothing to read and the ranks would run different step counts."""
        readers = world_size * max(1, workers)
        if self.training and len(self.split.shards) < readers:
            raise UsageError(f"{self.name}: the training split {self.split.arg!r} has {len(self.split.shards)} "
                             f"shard(s), fewer than the {world_size} process(es) x {max(1, workers)} loader "
                             "worker(s) that each read their own: write more shards or lower DATA.WORKERS")

    def for_rank(self, rank: int, world_size: int, workers: int) -> IterableDataset:
        """timm's iterable dataset for the part of the split that ``rank`` reads."""
        from timm.data import create_dataset

        self.check_world(world_size, workers)
        if not self.training and rank >= len(self.split.shards):
            return _NoShards()  # more ranks than validation shards: this one has none to read
        ds = create_dataset(self.name, root=str(self.root), split=self.split.arg, is_training=self.training,
                            batch_size=self.batch_size, seed=self.seed, transform=self.transform,
                            input_key=self.input_key, target_key=self.target_key)
        reader = ds.reader
        # timm's reader reads the process group when it is built; the plan builds it before
        # the group exists, so the rank is set here.
        if self.training:
            reader.dist_rank, reader.dist_num_replicas = rank, world_size
        else:
            mine = range(rank, len(self.split.shards), world_size)
            lengths = tuple(self.split.lengths[i] for i in mine) if self.split.lengths else ()
            count = sum(lengths) if lengths else len(mine) * self.split.num_samples // max(1, len(self.split.shards))
            reader.split_info = replace(reader.split_info, filenames=tuple(self.split.shards[i] for i in mine),
                                        shard_lengths=lengths, num_samples=count)
            reader.num_samples = count
            reader.dist_rank, reader.dist_num_replicas = 0, 1
        ds.set_loader_cfg(num_workers=workers)
        return ds


class _NoShards(IterableDataset):
    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _read_wds_info(root: Path, name: str) -> dict[str, Any]:
    path = root / WDS_INFO
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{name}: cannot read {path} ({exc})") from None
    if not isinstance(info, dict):
        raise DataError(f"{name}: {path} must hold a JSON object with \"splits\"")
    return info


def _wds_split(root: Path, info: dict[str, Any], split: str, name: str, key: str,
               target_key: str) -> ShardSplit:
    """The shards of ``split``: a brace pattern (``train-{0000..0009}.tar|SAMPLES``) or a split of
    ``_info.json``; every shard must exist. A pattern without a sample count is counted."""
    from webdataset.shardlists import expand_urls

    if ".tar" in split or ".." in split:
        pattern, _, count = split.partition("|")
        shards = tuple(expand_urls(pattern))
        _check_shards(root, shards, name, key)
        if count.strip().isdigit():
            return ShardSplit(f"{pattern}|{int(count)}", shards, (), int(count))
        if count.strip():
            raise DataError(f"{name}: {key} {split!r}: the count after '|' must be a whole number of samples")
        lengths = tuple(_scan_shard(root / s, name, target_key)[0] for s in shards)
        return ShardSplit(f"{pattern}|{sum(lengths)}", shards, lengths, sum(lengths))
    splits = info.get("splits")
    if not isinstance(splits, dict) or not splits:
        raise DataError(f"{name}: {root / WDS_INFO} lists no splits (needed for {key} {split!r}); write it "
                        f"(see the README) or give {key} as a shard pattern such as 'train-{{0000..0009}}.tar'")
    chosen = _pick_split(split, list(splits), name, key)
    entry = splits[chosen]
    missing = [k for k in ("name", "filenames", "shard_lengths", "num_samples") if k not in (entry or {})]
    if missing:
        raise DataError(f"{name}: {root / WDS_INFO}: splits.{chosen} has no {', '.join(missing)} "
                        "(each split needs name, filenames, shard_lengths and num_samples)")
    shards = tuple(str(f) for f in entry["filenames"])
    if not shards or int(entry["num_samples"]) <= 0:
        raise DataError(f"{name}: {root / WDS_INFO}: splits.{chosen} lists no shards or no samples")
    _check_shards(root, shards, name, f"{WDS_INFO} splits.{chosen}")
    return ShardSplit(chosen, shards, tuple(int(n) for n in entry["shard_lengths"]), int(entry["num_samples"]))


def _check_shards(root: Path, shards: tuple[str, ...], name: str, where: str) -> None:
    if not shards:
        raise DataError(f"{name}: {where} names no shards")
    for shard in shards:
        if not (root / shard).is_file():
            raise DataError(f"{name}: shard {root / shard} ({where}) does not exist")


def _scan_shard(path: Path, name: str, target_key: str) -> tuple[int, set[int]]:
    """(samples, labels) of one shard: a sample is the files sharing a key (the name up to
    the first dot of the base name, webdataset's rule); its label is ``KEY.cls`` or, with
    ``target_key``, that field of ``KEY.json``."""
    keys, labels = set(), set()
    suffix = ".json" if target_key else ".cls"
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                folder, base = os.path.split(member.name)
                keys.add(os.path.join(folder, base.split(".", 1)[0]))
                if member.name.endswith(suffix):
                    data = tar.extractfile(member).read()
                    value = json.loads(data)[target_key] if target_key else data.decode().strip()
                    labels.add(int(value))
    except (OSError, tarfile.TarError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{name}: cannot read the labels of shard {path} ({_first_line(exc)})") from None
    if keys and not labels:
        raise DataError(f"{name}: shard {path} holds no {suffix} labels"
                        + (f" with the field {target_key!r}" if target_key else ""))
    return len(keys), labels


def _wds_classes(root: Path, info: dict[str, Any], splits: list[ShardSplit], name: str,
                 target_key: str) -> list[str]:
    """``_info.json``'s ``classes`` (names) or ``num_classes``; else the labels found in the shards."""
    if isinstance(info.get("classes"), list) and info["classes"]:
        return [str(c) for c in info["classes"]]
    if isinstance(info.get("num_classes"), int) and info["num_classes"] > 0:
        return _class_names(info["num_classes"])
    labels = set()
    for split in splits:
        for shard in split.shards:
            labels |= _scan_shard(root / shard, name, target_key)[1]
    if not labels or min(labels) < 0:
        raise DataError(f"{name}: no class labels found in the shards under {root}")
    return _class_names(max(labels) + 1)


def _open_wds(cfg: Config, name: str) -> Source:
    try:
        import webdataset  # noqa: F401
    except ImportError:
        raise DataError(f"{name}: webdataset shards need the webdataset package "
                        "(pip install 'ecvit[data]')") from None
    root = _root(cfg, name)
    info = _read_wds_info(root, name)
    d = cfg.data
    train = _wds_split(root, info, d.train_split, name, "DATA.TRAIN_SPLIT", d.target_key)
    val = _wds_split(root, info, d.val_split, name, "DATA.VAL_SPLIT", d.target_key)
    classes = _wds_classes(root, info, [train, val], name, d.target_key)
    batch, seed = cfg.train.batch_size, cfg.seed

    def split_set(split: ShardSplit, training: bool) -> Callable[[Transform], Dataset]:
        return lambda tf: ShardedWebDataset(name, root, split, training, tf, classes, batch, seed,
                                            d.input_key, d.target_key)

    return Source(split_set(train, True), split_set(val, False), classes)
