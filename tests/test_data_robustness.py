"""Bad data: odd image modes, corrupt and truncated files, decompression bombs, random bytes."""

from __future__ import annotations

import io
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ecvit.config import AugConfig, Config
from ecvit.data import (
    BadSample,
    ImageFileDataset,
    build_datasets,
    build_eval_transform,
    build_train_transform,
    collate_batch,
    load_image,
)
from ecvit.errors import DataError

MEAN = STD = (0.5, 0.5, 0.5)


def _noise(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _palette_with_transparency() -> Image.Image:
    img = _noise(12, 9).convert("P")
    img.info["transparency"] = 0
    return img


ODD_IMAGES = {
    "grey.png": lambda: _noise(12, 9).convert("L"),
    "bilevel.png": lambda: _noise(12, 9).convert("1"),
    "rgba.png": lambda: _noise(12, 9).convert("RGBA"),
    "la.png": lambda: _noise(12, 9).convert("LA"),
    "palette.gif": lambda: _noise(12, 9).convert("P"),
    "palette_alpha.png": _palette_with_transparency,
    "cmyk.jpg": lambda: _noise(12, 9).convert("CMYK"),
    "cmyk.tiff": lambda: _noise(12, 9).convert("CMYK"),
    "sixteen.png": lambda: Image.fromarray(np.arange(108, dtype=np.uint16).reshape(12, 9) * 600),
    "int32.tiff": lambda: Image.fromarray((np.arange(108).reshape(12, 9) * 600).astype(np.int32)),
    "float.tiff": lambda: Image.fromarray(np.linspace(0, 1, 108, dtype=np.float32).reshape(12, 9)),
    "wide.png": lambda: _noise(3, 1000),
    "tall.jpg": lambda: _noise(1000, 3),
    "one_pixel.bmp": lambda: _noise(1, 1),
    "photo.webp": lambda: _noise(12, 9),
}


def _save(img: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if "transparency" in img.info:
        img.save(path, transparency=img.info["transparency"])
    else:
        img.save(path)
    return path


@pytest.mark.parametrize("name", sorted(ODD_IMAGES))
def test_odd_modes_become_rgb_and_transform(tmp_path, name):
    path = _save(ODD_IMAGES[name](), tmp_path / name)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == Image.open(path).size
    eval_tf = build_eval_transform(16, MEAN, STD)
    train_tf = build_train_transform(
        16, MEAN, STD, AugConfig(rand_augment="rand-m9-mstd0.5-inc1", reprob=0.25, color_jitter=0.4)
    )
    for tf in (eval_tf, train_tf):
        x = tf(img)
        assert x.shape == (3, 16, 16) and torch.isfinite(x).all()
    # the eval transform also takes the raw (non-RGB) image, as `predict` may hand it one
    assert eval_tf(Image.open(path)).shape == (3, 16, 16)


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque
    rgba[0, 1] = (200, 0, 0, 0)  # fully transparent red: its colour must not leak
    rgba[1, :] = (0, 0, 0, 128)  # half-transparent black
    img = load_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"))
    out = np.asarray(img)
    assert tuple(out[0, 0]) == (10, 20, 30)
    assert tuple(out[0, 1]) == (255, 255, 255)
    assert all(abs(int(v) - 127) <= 1 for v in out[1, 0])


def test_sixteen_bit_is_rescaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    img = load_image(_save(Image.fromarray(values), tmp_path / "s.png"))
    assert np.asarray(img)[0, :, 0].tolist() == [0, 100, 255]


def _truncated_jpeg(path: Path) -> Path:
    buf = io.BytesIO()
    _noise(64, 64).save(buf, "JPEG", quality=95)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def test_truncated_and_corrupt_files_name_the_file(tmp_path):
    bad = _truncated_jpeg(tmp_path / "train" / "cat" / "x.jpg")
    with pytest.raises(DataError, match=rf"cannot read image {bad}: truncated file"):
        load_image(bad)
    text = tmp_path / "notes.png"
    text.write_text("hello, I am not a PNG")
    with pytest.raises(DataError, match=rf"cannot read image {text}: not a JPEG/PNG/"):
        load_image(text)
    with pytest.raises(DataError, match="no such file"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(DataError, match="is a directory"):
        load_image(tmp_path / "train")


def test_postscript_is_never_handed_to_ghostscript(tmp_path):
    eps = tmp_path / "x.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(DataError, match="not a JPEG/PNG/BMP/GIF/TIFF/WEBP/PPM image"):
        load_image(eps)


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(100_000, 100_000), (1, 100_000_000)])
def test_decompression_bombs_are_refused(tmp_path, size):
    # the first is over PIL's hard limit (an error in PIL), the second over its warning limit
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(*size))
    with pytest.raises(DataError, match=rf"{bomb}: refused as a decompression bomb"):
        load_image(bomb)


def _dataset_with_bad_files(root: Path, skip: bool) -> ImageFileDataset:
    samples = []
    for i in range(10):
        path = root / f"img_{i}.png"
        _noise(8, 8, seed=i).save(path)
        samples.append((str(path), i % 2))
    samples[3] = (str(_truncated_jpeg(root / "bad_3.jpg")), 1)
    samples[7] = (str(_truncated_jpeg(root / "bad_7.jpg")), 1)
    return ImageFileDataset(samples, ["a", "b"], build_eval_transform(8, MEAN, STD), skip)


def test_bad_image_stops_by_default(tmp_path):
    ds = _dataset_with_bad_files(tmp_path, skip=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_batch)
    with pytest.raises(DataError, match=r"cannot read image .*bad_3.jpg: truncated file"):
        list(loader)


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_images_are_skipped_and_counted(tmp_path, workers):
    ds = _dataset_with_bad_files(tmp_path, skip=True)
    assert isinstance(ds[3], BadSample) and ds[3].path.endswith("bad_3.jpg")
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=workers, collate_fn=collate_batch)
    seen, bad, labels = 0, 0, []
    for images, target, num_bad in loader:
        assert images.shape == (len(target), 3, 8, 8)
        seen += len(target)
        bad += num_bad
        labels += target.tolist()
    assert (seen, bad) == (8, 2)
    assert labels == [0, 1, 0, 0, 1, 0, 0, 1]  # items 3 and 7 dropped, order kept


def test_all_bad_batch_is_empty(tmp_path):
    bad = [BadSample("a.jpg", "truncated"), BadSample("b.jpg", "truncated")]
    images, labels, num_bad = collate_batch(bad)
    assert images.numel() == 0 and labels.numel() == 0 and labels.dtype == torch.int64 and num_bad == 2
    images, labels, num_bad = collate_batch([(torch.zeros(3, 2, 2), 4), bad[0]])
    assert images.shape == (1, 3, 2, 2) and labels.tolist() == [4] and num_bad == 1


def test_skip_bad_images_flag_reaches_folder_datasets(tmp_path):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            _save(_noise(8, 8), tmp_path / split / cls / "ok.png")
    _truncated_jpeg(tmp_path / "train" / "b" / "broken.jpg")
    cfg = Config()
    cfg.data.dataset, cfg.data.root, cfg.data.img_size = "folder", str(tmp_path), 8
    with pytest.raises(DataError, match="broken.jpg"):
        [build_datasets(cfg).train[i] for i in range(3)]
    cfg.data.skip_bad_images = True
    items = [build_datasets(cfg).train[i] for i in range(3)]
    assert sum(isinstance(it, BadSample) for it in items) == 1


# ------------------------------------------------------------------ property-based


def _encoded(fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img = _noise(6, 5)
    if fmt == "GIF":
        img = img.convert("P")
    img.save(buf, fmt, **kw)
    return buf.getvalue()


SEEDS = [_encoded(f) for f in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")]
SEEDS.append(_png_header(7, 3))


@st.composite
def image_like_bytes(draw) -> bytes:
    """Pure noise, or a valid small file with random byte edits and/or truncation."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=2048))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    cut = draw(st.integers(1, len(data)))
    return bytes(data[:cut])


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about the garbage it reads
@settings(max_examples=200, deadline=3000, suppress_health_check=[HealthCheck.too_slow])
@given(payload=image_like_bytes(), ext=st.sampled_from([".jpg", ".png", ".gif", ".tiff", ".bin"]))
def test_random_bytes_give_rgb_or_data_error(payload, ext):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{ext}"
        path.write_bytes(payload)
        try:
            img = load_image(path)
        except DataError as exc:
            assert str(path) in str(exc)
        else:
            assert img.mode == "RGB" and img.width > 0 and img.height > 0
            assert build_eval_transform(8, MEAN, STD)(img).shape == (3, 8, 8)
