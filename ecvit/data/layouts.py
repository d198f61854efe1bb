"""Scanning on-disk dataset layouts into ``(path, label)`` lists, checking them as we go.

Each function either returns complete, consistent splits or raises a :class:`DataError`
that says which layout was expected and which path did not match it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ecvit.data.images import IMAGE_EXTENSIONS, is_image_file
from ecvit.errors import DataError

Samples = list[tuple[str, int]]

FOLDER_LAYOUT = "root/train/<class>/<images>, root/val/<class>/<images>"
TINY_LAYOUT = (
    "wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, val/val_annotations.txt"
)
PETS_LAYOUT = ("images/<name>.jpg, annotations/trainval.txt, annotations/test.txt "
               "(DATA.SPLIT random: annotations/list.txt)")


def _images_under(folder: Path) -> list[str]:
    """All image files below ``folder`` (recursive, hidden entries skipped), sorted.

    Symlinks are followed, but each real folder is entered once and never one above
    ``folder`` (a link back up the tree is a loop, not more data), and each real file is listed once, however many links lead
    to it. Non-regular files named like images (a FIFO, a socket) are kept: reading one is
    refused by :func:`~ecvit.data.images.load_image` (or skipped and counted with
    DATA.SKIP_BAD_IMAGES), so it can never block the scan or a worker.
    """
    found = []
    real = Path(os.path.realpath(folder))
    seen_dirs = {i for i in map(_identity, map(str, real.parents)) if i is not None}
    seen_files: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        here = _identity(dirpath)
        if here is None or here in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(here)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and _identity(os.path.join(dirpath, d)) not in seen_dirs)
        for name in sorted(f for f in filenames if is_image_file(f)):
            path = os.path.join(dirpath, name)
            ident = _identity(path)
            if ident is None or ident not in seen_files:
                found.append(path)  # a dangling link stays: reading it names the file
                if ident is not None:
                    seen_files.add(ident)
    return found


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of what ``path`` points to; None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


# ----------------------------------------------------------------------------- folder


def scan_folder(root: Path, train_split: str = "train", val_split: str = "val"
                ) -> tuple[Samples, Samples, list[str]]:
    """ImageNet layout: class names are the sorted folder names of ``train``; ``val`` must match.

    ``train_split`` / ``val_split`` name the two subfolders (DATA.TRAIN_SPLIT / VAL_SPLIT,
    the official CvT DATASET.TRAIN_SET / TEST_SET).
    """
    splits = {}
    for split in (train_split, val_split):
        split_dir = root / split
        if not split_dir.is_dir():
            raise DataError(
                f"folder: missing split {split_dir} (expected the layout {FOLDER_LAYOUT})"
            )
        classes = _class_dirs(split_dir)
        if not classes:
            raise DataError(
                f"folder: no class folders in {split_dir} (expected the layout {FOLDER_LAYOUT})"
            )
        splits[split] = classes
    classes = splits[train_split]
    if splits[val_split] != classes:
        missing = sorted(set(classes) - set(splits[val_split]))
        extra = sorted(set(splits[val_split]) - set(classes))
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}")
        if extra:
            parts.append(f"not in {train_split}: {', '.join(extra[:5])}")
        raise DataError(
            f"folder: the class folders of {root / val_split} must match {root / train_split} "
            f"({'; '.join(parts)})"
        )
    out = []
    for split in (train_split, val_split):
        samples: Samples = []
        for label, name in enumerate(classes):
            files = _images_under(root / split / name)
            if not files:
                raise DataError(
                    f"folder: class folder {root / split / name} has no images "
                    f"(expected files ending {'/'.join(IMAGE_EXTENSIONS)})"
                )
            samples.extend((f, label) for f in files)
        out.append(samples)
    return out[0], out[1], classes


# ----------------------------------------------------------------------- tiny-imagenet


def find_tiny_root(root: Path) -> Path:
    """The folder holding ``wnids.txt``: ``root`` or ``root/tiny-imagenet-200``."""
    for candidate in (root, root / "tiny-imagenet-200"):
        if (candidate / "wnids.txt").is_file():
            return candidate
    raise DataError(
        f"tiny-imagenet: expected {root / 'wnids.txt'} (the official tiny-imagenet-200 layout: "
        f"{TINY_LAYOUT})"
    )


def scan_tiny_imagenet(root: Path) -> tuple[Samples, Samples, list[str]]:
    """The official Tiny-ImageNet-200 tree; labels follow the sorted wnids.

    Class names come from ``words.txt`` (first synonym) when it is present, else the wnid.
    """
    root = find_tiny_root(root)
    wnids = sorted({line.strip() for line in _read_lines(root / "wnids.txt") if line.strip()})
    if not wnids:
        raise DataError(f"tiny-imagenet: {root / 'wnids.txt'} lists no classes")
    index = {w: i for i, w in enumerate(wnids)}

    train: Samples = []
    for wnid in wnids:
        folder = root / "train" / wnid / "images"
        if not folder.is_dir():
            raise DataError(f"tiny-imagenet: expected folder {folder} (layout: {TINY_LAYOUT})")
        files = _images_under(folder)
        if not files:
            raise DataError(f"tiny-imagenet: class folder {folder} has no images")
        train.extend((f, index[wnid]) for f in files)

    ann = root / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise DataError(f"tiny-imagenet: missing split annotations {ann} (layout: {TINY_LAYOUT})")
    val: Samples = []
    for lineno, line in enumerate(_read_lines(ann), 1):
        if not line.strip():
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 2:
            raise DataError(
                f"tiny-imagenet: {ann}:{lineno}: expected 'FILE<TAB>WNID ...', got {line!r}"
            )
        name, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in index:
            raise DataError(f"tiny-imagenet: {ann}:{lineno}: wnid {wnid} is not in wnids.txt")
        path = root / "val" / "images" / name
        if not path.is_file():
            raise DataError(f"tiny-imagenet: {ann}:{lineno} names {path}, which does not exist")
        val.append((str(path), index[wnid]))
    if not val:
        raise DataError(f"tiny-imagenet: {ann} lists no images")

    words = {}
    if (root / "words.txt").is_file():
        for line in _read_lines(root / "words.txt"):
            wnid, _, text = line.partition("\t")
            if wnid.strip() in index and text.strip():
                words[wnid.strip()] = text.split(",")[0].strip()
    names = [words.get(w, w) for w in wnids]
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    names = [n if seen[n] == 1 else f"{n} ({w})" for n, w in zip(names, wnids)]
    return train, val, names


# ------------------------------------------------------------------------ oxford-pets


def scan_oxford_pets(root: Path, split: str = "official", seed: int = 0
                     ) -> tuple[Samples, Samples, list[str]]:
    """The official Oxford-IIIT Pet layout; ``trainval.txt`` trains, ``test.txt`` validates.

    Each list line is ``NAME CLASS_ID SPECIES BREED_ID`` (class ids from 1); the class name
    is NAME without its trailing ``_<number>`` (``Abyssinian_100`` -> ``Abyssinian``).
    ``split="random"``: ``list.txt`` (all 7,349 images) shuffled with ``seed`` and cut 80/20,
    the split the public CvT-PyTorch reimplementation trains and tests on.
    """
    if not (root / "annotations").is_dir() and (root / "oxford-iiit-pet").is_dir():
        root = root / "oxford-iiit-pet"
    names: dict[int, str] = {}
    if split == "random":
        import numpy as np

        entries = _read_pets_list(root, "list", names)
        order = np.random.RandomState(seed).permutation(len(entries))
        cut = int(PETS_RANDOM_TRAIN * len(entries))
        splits = [[entries[i] for i in sorted(order[:cut])], [entries[i] for i in sorted(order[cut:])]]
    else:
        splits = [_read_pets_list(root, name, names) for name in ("trainval", "test")]
    missing = [i for i in range(1, max(names) + 1) if i not in names]
    if missing:
        where = root / "annotations"
        raise DataError(f"oxford-pets: class ids {missing[:5]} never appear in {where}")
    return splits[0], splits[1], [names[i] for i in range(1, max(names) + 1)]


PETS_RANDOM_TRAIN = 0.8  # DATA.SPLIT random: the training share of list.txt


def _read_pets_list(root: Path, split: str, names: dict[int, str]) -> Samples:
    """``annotations/<split>.txt`` as samples; ``names`` collects class id -> breed."""
    ann = root / "annotations" / f"{split}.txt"
    if not ann.is_file():
        raise DataError(f"oxford-pets: expected {ann} (the official layout: {PETS_LAYOUT})")
    entries = []
    for lineno, line in enumerate(_read_lines(ann), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2 or not fields[1].isdigit() or int(fields[1]) < 1:
            raise DataError(
                f"oxford-pets: {ann}:{lineno}: expected 'NAME CLASS_ID ...', got {line!r}"
            )
        stem, class_id = fields[0], int(fields[1])
        breed = stem.rsplit("_", 1)[0]
        if names.setdefault(class_id, breed) != breed:
            raise DataError(
                f"oxford-pets: {ann}:{lineno}: class id {class_id} is {names[class_id]!r} "
                f"elsewhere but {breed!r} here"
            )
        path = root / "images" / f"{stem}.jpg"
        if not path.is_file():
            raise DataError(f"oxford-pets: {ann}:{lineno} names {path}, which does not exist")
        entries.append((str(path), class_id - 1))
    if not entries:
        raise DataError(f"oxford-pets: {ann} lists no images")
    return entries


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
