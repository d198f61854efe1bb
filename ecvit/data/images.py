"""Reading one image file into an RGB PIL image, or a :class:`DataError` naming the file.

Real datasets hold grayscale, palette, CMYK, alpha and 16-bit files next to ordinary RGB
JPEGs, and sometimes a truncated download or a file that is not an image at all. Every
decoding failure (including PIL's decompression-bomb guard) becomes one ``DataError`` so a
run can stop with a clear message or skip the file, never crash with a raw traceback.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ecvit.errors import DataError

# Raster formats we decode (the JPEG opener also reads multi-picture MPO files). Restricting
# ``Image.open`` to these keeps untrusted files away from plugins that run external
# programs (EPS calls Ghostscript) or parse exotic formats.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
)
# Transparent pixels are composited onto this colour: what a viewer on a white page shows,
# instead of whatever colour happens to be stored under alpha 0.
ALPHA_BACKGROUND = (255, 255, 255)

_ALPHA_MODES = {"RGBA", "LA", "PA", "La", "RGBa"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


def is_image_file(path: str | os.PathLike) -> bool:
    """True for a visible file whose extension is one of :data:`IMAGE_EXTENSIONS`."""
    name = os.path.basename(os.fspath(path))
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def load_image(path: str | os.PathLike, exif_transpose: bool = True) -> Image.Image:
    """Decode ``path`` fully and return it as an 8-bit RGB image, upright.

    ``exif_transpose`` applies the EXIF orientation tag (how a camera says it was held),
    as image viewers do; DATA.EXIF_TRANSPOSE false keeps the stored pixel order.

    Raises :class:`DataError` ("cannot read image PATH: REASON") for a missing, truncated,
    corrupt or unsupported file, and for a decompression bomb: any image larger than PIL's
    ``Image.MAX_IMAGE_PIXELS`` (89.5 Mpx by default), where PIL itself would only warn up
    to twice that size, because a few hundred bytes could otherwise claim ~1 GB of memory.
    """
    path = Path(path)
    _check_regular(path)
    try:
        with open(path, "rb") as handle, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(handle, formats=IMAGE_FORMATS)
            img.load()  # decode now, while the file is open; truncation surfaces here
            if exif_transpose:
                img = ImageOps.exif_transpose(img)
    except FileNotFoundError:
        raise DataError(f"cannot read image {path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"cannot read image {path}: is a directory") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        reason = f"refused as a decompression bomb ({exc})"
        raise DataError(f"cannot read image {path}: {reason}") from None
    except Image.UnidentifiedImageError:
        shown = "/".join(IMAGE_FORMATS)
        raise DataError(f"cannot read image {path}: not a {shown} image file") from None
    except Exception as exc:  # any decoder failure: truncated data, bad headers, bad chunks
        raise DataError(f"cannot read image {path}: {_reason(exc)}") from None
    try:
        return to_rgb(img)
    except Exception as exc:  # a mode we cannot map to RGB
        reason = f"cannot convert mode {img.mode} ({_reason(exc)})"
        raise DataError(f"cannot read image {path}: {reason}") from None


def _check_regular(path: Path) -> None:
    """Refuse a FIFO, socket or device before ``open``: opening a FIFO blocks forever."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return  # open() reports it
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise DataError(f"cannot read image {path}: not a regular file ({kind})")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    Alpha (RGBA, LA, palette with transparency) is composited onto :data:`ALPHA_BACKGROUND`;
    16-bit and 32-bit integer images are rescaled to 8 bits instead of clipped; float
    images in [0, 1] are scaled by 255.
    """
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT_MODES or img.mode in ("I", "F"):
        return _high_depth_to_rgb(img)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    elif img.mode in ("PA", "La", "RGBa"):
        img = img.convert("RGBA")
    if img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _high_depth_to_rgb(img: Image.Image) -> Image.Image:
    """Map 16-bit ('I;16*'), 32-bit int ('I') and float ('F') pixels to 0..255 grey."""
    arr = np.asarray(img)
    if img.mode == "F":
        arr = arr.astype(np.float64)
        arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
        if arr.size and arr.min() >= 0.0 and arr.max() <= 1.0:
            arr = arr * 255.0
        grey = np.clip(arr, 0.0, 255.0).round().astype(np.uint8)
    else:
        arr = arr.astype(np.int64)
        # 'I' is how PIL often holds 16-bit PNG/TIFF data; values above 255 mean a 16-bit range.
        if img.mode in _SIXTEEN_BIT_MODES or (arr.size and arr.max() > 255):
            arr = np.clip(arr, 0, 65535) / 257.0
        grey = np.clip(arr, 0, 255).round().astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ")
    if "truncated" in text.lower():
        return f"truncated file ({text})"
    return text or type(exc).__name__
