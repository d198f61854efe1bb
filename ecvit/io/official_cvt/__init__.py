"""microsoft/CvT experiment files, read as they are: their keys translated into our Config.

A user of the official repository brings ``experiments/imagenet/cvt/*.yaml`` and runs
``ecvit train --cfg FILE`` (or ``bash run.sh -g N -t train --cfg FILE``). The file is
recognised by keys only the official schema has (``MODEL.SPEC``, ``DATASET``, ``WORKERS``,
``TRAIN.BATCH_SIZE_PER_GPU`` ...), merged over the official defaults
(:mod:`ecvit.io.official_cvt.defaults`, as the official loader does, ``BASE`` files first),
checked key by key (an unknown key is one line with a suggestion), and mapped onto our keys
with the official meaning: :func:`translate`. Trailing ``KEY VALUE`` overrides that name
official keys are applied in the official namespace (``TEST.MODEL_FILE``, ``DATASET.ROOT``);
others are ours (``DEVICE cpu``, ``SEED 1``). What maps to what is in the README
("Coming from microsoft/CvT").
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Sequence

from ecvit.config import Config, _yaml_scalar, merge_dict, nested_from_key, read_yaml
from ecvit.errors import UsageError
from ecvit.io.official_cvt.defaults import DEFAULTS, NO_EFFECT, OPEN_SECTIONS
from ecvit.io.official_cvt.translate import to_ours

MAX_BASE_DEPTH = 8  # BASE files including BASE files: a cycle is refused


def official_paths() -> set[str]:
    """Every dotted key of the official schema (sections and leaves, open sections' keys)."""
    paths = _paths(DEFAULTS)
    for section, keys in OPEN_SECTIONS.items():
        paths |= {f"{section}.{k}" for k in keys}
    return paths


def _paths(data: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        out.add(dotted)
        if isinstance(value, dict):
            out |= _paths(value, f"{dotted}.")
    return out


def _our_paths() -> set[str]:
    return _paths(Config().to_dict())


def official_key_of(data: dict[str, Any]) -> str | None:
    """The first key of a YAML mapping that only the microsoft/CvT schema has, if any."""
    ours, official = _our_paths(), official_paths()
    return next((p for p in sorted(_paths(data)) if p in official and p not in ours
                 and not p.startswith("MODEL.ARGS")), None)


def is_official(data: dict[str, Any]) -> bool:
    """Whether a YAML mapping is a microsoft/CvT experiment (a key only that schema has)."""
    return official_key_of(data) is not None


def translate_if_official(data: dict[str, Any], path: str | Path, overrides: Sequence[str] = ()
                          ) -> tuple[dict[str, Any], dict[str, Any], list[str]] | None:
    """:func:`translate` for a microsoft/CvT experiment file, None for any other mapping: the
    :data:`ecvit.config.Dialect` the command line hands to :func:`ecvit.config.load_config`."""
    return translate(data, path, overrides) if is_official(data) else None


def translate(data: dict[str, Any], path: str | Path, overrides: Sequence[str] = ()
              ) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """An official file (+ the overrides naming official keys) as our nested config mapping.

    Returns ``(from the file, changed by the official overrides, the other overrides)``:
    the caller merges the first, then its flags, then the second, then the rest, which keeps
    the precedence defaults < file < flags < overrides.
    """
    source = str(path)
    merged = copy.deepcopy(DEFAULTS)
    given: set[str] = set()
    try:
        _merge_file(merged, data, Path(path), given, depth=0)
    except UsageError as exc:
        why = official_key_of(data)
        if "unknown key" not in str(exc) or not why:
            raise
        raise UsageError(f"{exc}; the file is read as one because of its key {why}") from None
    ours = to_ours(merged, source, sorted(given & NO_EFFECT), Path(path).stem)
    official_items: list[tuple[str, Any]] = []
    rest: list[str] = []
    items = list(overrides)
    if len(items) % 2:
        raise UsageError(f"overrides come in KEY VALUE pairs; {items[-1]!r} has no value")
    known = official_paths()
    for key, text in zip(items[::2], items[1::2]):
        if _official_key(str(key), known):
            official_items.append((str(key), _parse(text)))
        else:
            _check_ours(str(key), text, known)
            rest += [key, text]
    if not official_items:
        return ours, {}, rest

    for key, value in official_items:
        _merge_checked(merged, nested_from_key(key, value), "override", given)
    changed = to_ours(merged, source, sorted(given & NO_EFFECT), Path(path).stem)
    return ours, _diff(changed, ours), rest


def _merge_file(merged: dict[str, Any], data: dict[str, Any], path: Path, given: set[str], depth: int) -> None:
    """BASE files (relative to ``path``) first, then the file itself, as the official loader."""
    if depth > MAX_BASE_DEPTH:
        raise UsageError(f"{path}: BASE files nest more than {MAX_BASE_DEPTH} deep (a cycle?)")
    bases = data.get("BASE", [""])
    if not isinstance(bases, list):
        raise UsageError(f"{path}: BASE must be a list of files, got {bases!r}")
    for base in bases:
        if base:
            base_path = path.parent / str(base)
            _merge_file(merged, read_yaml(base_path), base_path, given, depth + 1)
    _merge_checked(merged, data, str(path), given)


def _merge_checked(target: dict[str, Any], data: dict[str, Any], source: str, given: set[str],
                   prefix: str = "") -> None:
    """Merge ``data`` into the official ``target``, refusing keys the schema does not have."""
    section = prefix.rstrip(".")
    open_keys = OPEN_SECTIONS.get(section)
    for key, value in data.items():
        key = str(key)
        dotted = f"{prefix}{key}"
        names = list(open_keys) if open_keys is not None else list(target)
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(prefix + c for c in close)}?)" if close else ""
            raise UsageError(f"{source}: unknown key {dotted} in a microsoft/CvT experiment file{hint}")
        given.add(dotted)
        is_section = (f"{dotted}" in OPEN_SECTIONS) or isinstance(target.get(key), dict)
        if is_section:
            if not isinstance(value, dict):
                raise UsageError(f"{source}: {dotted} must be a section (mapping), got {value!r}")
            target.setdefault(key, {})
            _merge_checked(target[key], value, source, given, f"{dotted}.")
        else:
            target[key] = _typed(value, DEFAULTS_AT.get(dotted), dotted, source)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


DEFAULTS_AT = _flatten(DEFAULTS)


def _typed(value: Any, default: Any, key: str, source: str) -> Any:
    """A value of the default's kind (yacs refuses a type change; ints pass for floats)."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise UsageError(f"{source}: {key} must be true or false, got {value!r}")
    elif isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{source}: {key} must be a number, got {value!r}")
        return float(value) if isinstance(default, float) else value
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise UsageError(f"{source}: {key} must be a string, got {value!r}")
    elif isinstance(default, list):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise UsageError(f"{source}: {key} must be a list, got {value!r}")
    return value


def _official_key(key: str, known: set[str]) -> bool:
    if key in known:
        return True
    parts = key.split(".")  # a key under TRAIN.LR_SCHEDULER.ARGS etc. is checked when merged
    return any(".".join(parts[:i]) in OPEN_SECTIONS for i in range(1, len(parts)))


def _check_ours(key: str, text: str, known: set[str]) -> None:
    """An override that is neither official nor ours: the official error, with its suggestion."""
    try:
        merge_dict(Config(), nested_from_key(key.upper(), ""), source="override")
    except UsageError as exc:
        if "unknown key" not in str(exc):
            return  # a known key of ours with a value to be checked later
        parent = key.rpartition(".")[0]
        siblings = sorted(k for k in known if k.rpartition(".")[0] == parent) or sorted(known)
        close = difflib.get_close_matches(key, siblings, n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UsageError(f"override: unknown key {key} (not a microsoft/CvT key, nor one of "
                         f"ours){hint}") from None


def _parse(text: str) -> Any:
    return _yaml_scalar(text) if text != "" else ""


def _diff(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """The part of ``new`` that differs from ``old`` (nested)."""
    out: dict[str, Any] = {}
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(old.get(key), dict) and key != "ARGS":
            sub = _diff(value, old[key])
            if sub:
                out[key] = sub
        elif old.get(key) != value:
            out[key] = value
    return out


__all__ = ["is_official", "translate", "translate_if_official", "official_paths"]
