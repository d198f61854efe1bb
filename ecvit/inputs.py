"""What ``ecvit predict`` is pointed at, turned into one list of image paths.

Each argument is a file, a folder (searched recursively), a glob (expanded here with
``glob.glob(recursive=True)``, so a quoted ``'photos/**/*.jpg'`` works without a shell) or
``@LIST`` (a text file with one entry per line; relative entries are relative to the list
file's folder, as in the ``csv`` data source, so a list travels with its images). Folders and
globs keep the files whose extension is an image extension of the data code
(:data:`~ecvit.data.images.IMAGE_EXTENSIONS`); a file named explicitly is kept whatever its
name, and reading it says what is wrong with it. A file reached twice (named, in a folder,
in a list) is listed once, where it first appears.

The result is a list of strings: 100,000 paths are a few MB, the images are read later, one
batch at a time.
"""

from __future__ import annotations

import glob
import os
from typing import Iterable, Sequence

from ecvit.data.images import IMAGE_EXTENSIONS, is_image_file
from ecvit.data.layouts import _images_under
from ecvit.errors import UsageError

GLOB_CHARS = frozenset("*?[")


def expand_inputs(items: Sequence[str | os.PathLike]) -> list[str]:
    """Files, folders, globs and ``@LIST`` files, in any mix, to image paths in order.

    Raises :class:`UsageError` naming the first argument (or list line) that matches no
    image, so a typo is one line, exit 2, before the model is loaded.
    """
    paths: list[str] = []
    seen: set[str] = set()
    for item in items:
        item = os.fspath(item)
        if item.startswith("@") and not os.path.exists(item):
            found = _from_list(item[1:])
        else:
            found = _expand_one(item, item)
        for path in found:
            key = os.path.abspath(path)
            if key not in seen:
                seen.add(key)
                paths.append(path)
    if not paths:
        raise UsageError("no images to classify")
    return paths


def _expand_one(entry: str, shown: str) -> list[str]:
    """One file, folder or glob; ``shown`` is how errors name it (with its list line)."""
    if os.path.isdir(entry):
        found = _images_under(entry)
        if not found:
            raise UsageError(f"{shown}: folder holds no image files (looked for "
                             f"{'/'.join(IMAGE_EXTENSIONS)}, recursively)")
        return found
    if os.path.lexists(entry):
        return [entry]
    if GLOB_CHARS & set(entry):
        found = _images_of(sorted(glob.glob(entry, recursive=True)))
        if not found:
            raise UsageError(f"{shown}: the pattern matches no image file")
        return found
    raise UsageError(f"{shown}: no such file or folder")


def _images_of(matches: Iterable[str]) -> list[str]:
    """A glob's matches: image files as they are, folders searched recursively."""
    out: list[str] = []
    for match in matches:
        if os.path.isdir(match):
            out.extend(_images_under(match))
        elif is_image_file(match):
            out.append(match)
    return out


def _from_list(list_file: str) -> list[str]:
    """The entries of ``@LIST``: blank lines and lines starting with ``#`` are skipped."""
    try:
        with open(list_file, encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise UsageError(f"@{list_file}: cannot read the list: {exc.strerror or exc}") from None
    base = os.path.dirname(list_file)
    out: list[str] = []
    for number, line in enumerate(lines, 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = entry if os.path.isabs(entry) else os.path.join(base, entry)
        out.extend(_expand_one(path, f"@{list_file} line {number} ({entry})"))
    if not out:
        raise UsageError(f"@{list_file}: the list names no image")
    return out


__all__ = ["expand_inputs"]
