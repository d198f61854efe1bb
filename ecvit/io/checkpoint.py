"""Checkpoint files: written atomically, read without ever executing code.

``torch.load`` runs with ``weights_only=True``, so a pickle that would construct arbitrary
Python objects is refused instead of executed; ``.safetensors`` files hold tensors only.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

from ecvit.errors import CheckpointError, StorageError

STATE_DICT_KEYS = ("model", "state_dict", "model_state_dict", "module")


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``.

    A crash (or ``kill -9``) at any moment leaves either the old or the new complete file;
    a full disk leaves the old file and raises a :class:`StorageError` that says so.
    """
    write_atomic(path, lambda fh: torch.save(obj, fh), what="checkpoint")


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None], what: str = "file") -> None:
    """Run ``write(fh)`` into a temp file beside ``path``, fsync, rename: all of it or nothing.

    The file gets the mode a plain ``open`` would give (``0o666`` less the umask), not the
    temp file's 0600. An OSError (also one that ``torch.save`` wraps in a RuntimeError)
    removes the temp file and becomes a one-line :class:`StorageError` naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_files_atomic({path: write}, what)


def write_files_atomic(files: dict[Path, bytes | Callable[[BinaryIO], None]], what: str = "file") -> None:
    """Write several files as one step: each (bytes, or a ``write(fh)`` callback) is staged
    as a temp file beside its target and synced, then all are renamed. A refused or failed
    write removes the staged files and leaves every target as it was (one
    :class:`StorageError` line naming the file)."""
    staged: list[tuple[str, Path]] = []
    current = next(iter(files), Path("."))
    try:
        for path, content in files.items():
            current = path
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((tmp, path))
            os.fchmod(fd, 0o666 & ~current_umask())
            with os.fdopen(fd, "wb") as fh:
                if callable(content):
                    content(fh)
                else:
                    fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
        for tmp, path in staged:
            current = path
            os.replace(tmp, path)
    except BaseException as exc:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        cause = os_error_of(exc)
        if cause is not None:
            raise StorageError(storage_message(current, cause, what)) from None
        raise
    for folder in {path.parent for path in files}:
        _fsync_dir(folder)


def current_umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def os_error_of(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``: itself, or the one a C++ writer wrapped (torch.save)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def storage_message(path: Path, exc: OSError, what: str = "checkpoint") -> str:
    """``could not write PATH: disk full, previous checkpoint kept`` and its kin."""
    reason = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
              errno.EFBIG: "file too large for this file system (or ulimit -f)",
              errno.EROFS: "read-only file system",
              errno.EACCES: "permission denied"}.get(exc.errno, exc.strerror or str(exc))
    if path.exists():
        kept = f"previous {what} kept"
    else:
        kept = "nothing was written"
    return f"could not write {path}: {reason}, {kept}"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a ``.pth``/``.bin``/``.safetensors`` file safely into a dict.

    For safetensors the tensors come back under ``"model"`` and any JSON metadata
    (model name, class names ...) is merged into the top level. A file that cannot be read
    is classified honestly in the error: empty, truncated, another kind of file (ONNX,
    TorchScript, text ...), or a pickle that would run code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    head = _head(path)
    if path.suffix == ".safetensors" or looks_like_safetensors(head):
        return _read_safetensors(path)
    if not head:
        raise CheckpointError(f"{path} is not a readable checkpoint: the file is empty (0 bytes)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc) or "global" in str(exc).split("\n")[0].lower():
            first = next((line for line in str(exc).splitlines() if "GLOBAL" in line), "")
            raise CheckpointError(
                f"refusing to load {path}: it holds Python objects that would execute code "
                f"when unpickled, and only tensors and plain containers are accepted ({first.strip()})"
            ) from None
        raise CheckpointError(f"{path} is not a readable checkpoint: {describe_unreadable(head)}") from None
    except Exception as exc:  # truncated zip, not a torch file, ...
        raise CheckpointError(f"{path} is not a readable checkpoint: "
                              f"{describe_unreadable(head, exc)}") from None
    if isinstance(obj, dict):
        return obj
    raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")


def _head(path: Path, size: int = 4096) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None


def looks_like_safetensors(head: bytes) -> bool:
    """8-byte little-endian header length, then a JSON object."""
    if len(head) < 10:
        return False
    size = int.from_bytes(head[:8], "little")
    return 2 <= size < 100_000_000 and head[8:9] == b"{"


def describe_unreadable(head: bytes, exc: BaseException | None = None) -> str:
    """What a file that ``torch.load`` refused looks like, said plainly."""
    text = str(exc or "")
    if head.startswith(b"PK\x03\x04"):
        if "TorchScript" in text:
            return "it is a TorchScript archive (load it with torch.jit.load), not a checkpoint"
        if "central directory" in text or "zip archive" in text or isinstance(exc, EOFError):
            return "the file is truncated (a torch zip archive without its end: an interrupted copy?)"
        return f"a damaged torch zip archive ({text.splitlines()[0] if text else 'unreadable'})"
    if head.startswith(b"\x80") and len(head) > 1 and 2 <= head[1] <= 5:
        if isinstance(exc, (EOFError, pickle.UnpicklingError)) and len(head) < 4096:
            return "the file is truncated (a pickle that ends early)"
        return "a damaged legacy (pickle) checkpoint"
    if looks_like_onnx(head):
        return "it is an ONNX model (run it with onnxruntime), not a checkpoint"
    image = image_format(head)
    if image:
        return f"it is a {image} image, not a checkpoint"
    if _is_text(head):
        shown = head[:40].decode("utf-8", "replace").splitlines()[0] if head.strip() else ""
        return f"it is a text file, not a checkpoint (it starts {shown!r})"
    return f"not a checkpoint (unrecognised content starting with bytes {head[:8].hex(' ')})"


def looks_like_onnx(head: bytes) -> bool:
    """An ONNX ``ModelProto``: field 1 (ir_version) first, a producer or graph soon after."""
    return head[:1] == b"\x08" and (b"pytorch" in head or b"onnx" in head)


_IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"),
                (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def image_format(head: bytes) -> str | None:
    """``"PNG"``, ``"JPEG"`` ... when the first bytes are an image file's signature."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _IMAGE_MAGIC if head.startswith(magic)), None)


def file_kind(path: str | Path) -> str:
    """What a file handed over as a model is, from its first bytes (a zip: its member names).

    ``"directory"``, ``"missing"``, ``"empty"``, ``"safetensors"``, ``"onnx"``,
    ``"torchscript"``, ``"torch"`` (a zip or legacy pickle checkpoint), ``"image"``,
    ``"text"`` or ``"unknown"``: front ends that accept more than checkpoints (``predict``
    runs ONNX files) pick their reader by it, and name what a wrong file is.
    """
    path = Path(path)
    if path.is_dir():
        return "directory"
    if not path.exists():
        return "missing"
    head = _head(path)
    if not head:
        return "empty"
    if path.suffix == ".safetensors" or looks_like_safetensors(head):
        return "safetensors"
    if looks_like_onnx(head):
        return "onnx"
    if head.startswith(b"PK\x03\x04"):
        return "torchscript" if _is_torchscript(path) else "torch"
    if head[:1] == b"\x80":
        return "torch"
    if image_format(head):
        return "image"
    return "text" if _is_text(head) else "unknown"


def describe_file(path: str | Path) -> str:
    """What :func:`file_kind` found, said plainly, for files that are not checkpoints
    (for errors: "PATH: it is a ...")."""
    path = Path(path)
    kind = file_kind(path)
    if kind == "directory":
        return "it is a directory, not a file"
    if kind == "missing":
        return "no such file"
    if kind == "empty":
        return "the file is empty (0 bytes)"
    if kind == "torchscript":
        return "it is a TorchScript archive (load it with torch.jit.load), not a checkpoint"
    return describe_unreadable(_head(path))


def _is_torchscript(path: Path) -> bool:
    """A torch zip whose members hold code (``code/``, ``constants.pkl``): torch.jit.save's."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for n in names)


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\n\r\t" for c in text)


def safetensors_bytes(model: torch.nn.Module, metadata: dict[str, str] | None = None) -> bytes:
    """``model``'s state dict as safetensors bytes (``{"format": "pt"}`` plus ``metadata``);
    the tensors are cloned, since safetensors refuses ones that share storage (tied or
    viewed weights). :func:`read_checkpoint` reads such a file back."""
    from safetensors.torch import save

    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    return save(state, metadata={"format": "pt", **(metadata or {})})


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
            metadata = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        what = "the file is empty (0 bytes)" if not _head(path, 1) else str(exc).splitlines()[0]
        raise CheckpointError(f"{path} is not a readable safetensors file: {what}") from None
    out: dict[str, Any] = {}
    for key, text in metadata.items():
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    out["model"] = tensors
    return out


def extract_state_dict(ckpt: dict[str, Any], prefer_ema: bool = False) -> dict[str, torch.Tensor]:
    """The model weights inside a checkpoint dict, whatever wrapper key they sit under."""
    if prefer_ema and isinstance(ckpt.get("model_ema"), dict):
        state = ckpt["model_ema"]
    else:
        state = next((ckpt[k] for k in STATE_DICT_KEYS if isinstance(ckpt.get(k), dict)), ckpt)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError("the checkpoint holds no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors
