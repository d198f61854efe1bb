"""``ecvit predict`` at scale: files, folders, globs and @lists; batches streamed through a
DataLoader into CSV/JSON/Parquet results files in bounded memory; ONNX exports run in
onnxruntime; files that are not checkpoints named as what they are."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _cli_helpers import ROOT, run_main
from PIL import Image

from ecvit.io.checkpoint import file_kind, save_atomic
from ecvit.config import Config
from ecvit.engine import build_model
from ecvit.engine.builder import training_spec
from ecvit.inputs import expand_inputs
from ecvit.predict import CONSOLE_IMAGES, predict

CLASSES = ["ant", "bee", "cow"]
TINY_VIT = {"embed_dim": 48, "depth": 2, "num_heads": 3}


def write_checkpoint(path, img_size=32, ema=False, patch_size=16):
    """A ``train``-format checkpoint of a two-block ViT; ``ema`` adds other EMA weights."""
    cfg = Config()
    cfg.model.name, cfg.model.drop_path_rate = "dws_vit_tiny_dw", 0.0
    cfg.model.args = {**TINY_VIT, "patch_size": patch_size}
    cfg.data.img_size = img_size
    torch.manual_seed(0)
    model = build_model(cfg, len(CLASSES))
    with torch.no_grad():  # a head that tells images apart, so top-k orders are not ties
        model.get_classifier().weight.mul_(50)
    state = model.state_dict()
    extra = {}
    if ema:
        extra["model_ema"] = {k: -v if k.startswith("head.") else v for k, v in state.items()}
    spec = training_spec(cfg, CLASSES, [0.5] * 3, [0.25] * 3, 0.9, has_ema=ema)
    save_atomic({"model": state, **extra, **spec.to_meta(), "epoch": 1}, path)
    return path


def write_images(folder, count, size=20, seed=0, ext=".png"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"img{i:03d}{ext}"
        Image.fromarray(rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pth")


# ------------------------------------------------------------------------------ inputs


def test_files_folders_globs_and_lists_in_any_mix(tmp_path, monkeypatch):
    top = write_images(tmp_path / "photos", 2)
    deep = write_images(tmp_path / "photos" / "trip" / "day1", 2, ext=".jpg")
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    (tmp_path / "photos" / ".hidden.png").write_bytes(b"")
    odd = tmp_path / "scan.data"  # named explicitly: kept whatever its extension
    odd.write_bytes(top[0].read_bytes())
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "some.txt").write_text("# relative to this list's folder\n\n../photos/img000.png\n"
                                    f"{deep[1]}\n../photos/trip/*/img000.jpg\n")
    monkeypatch.chdir(tmp_path)

    assert expand_inputs(["photos"]) == [str(p.relative_to(tmp_path)) for p in top + deep]
    assert expand_inputs(["photos/**/*.jpg"]) == [str(p.relative_to(tmp_path)) for p in deep]
    listed = expand_inputs(["@lists/some.txt"])
    assert [os.path.realpath(p) for p in listed] == [str(top[0]), str(deep[1]), str(deep[0])]
    # a mix: each image once, where it first appears
    mixed = expand_inputs(["scan.data", "photos/img001.png", "photos", "@lists/some.txt"])
    assert mixed[:2] == ["scan.data", "photos/img001.png"]
    assert sorted(os.path.realpath(p) for p in mixed[2:]) == sorted(map(str, [top[0], *deep]))


@pytest.mark.parametrize("arg, fragment", [
    ("missing.jpg", "missing.jpg: no such file or folder"),
    ("empty_dir", "empty_dir: folder holds no image files"),
    ("photos/*.gif", "photos/*.gif: the pattern matches no image file"),
    ("@nolist.txt", "@nolist.txt: cannot read the list"),
    ("@bad_list.txt", "@bad_list.txt line 2 (gone.png): no such file or folder"),
])
def test_an_input_that_matches_nothing_is_one_line_exit_2(ckpt, tmp_path, monkeypatch, capsys,
                                                         arg, fragment):
    write_images(tmp_path / "photos", 1)
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "bad_list.txt").write_text("photos/img000.png\ngone.png\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["predict", "--checkpoint", ckpt, "photos", arg], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("error: ") and fragment in err, err


# ------------------------------------------------------------------------ results files


@pytest.mark.slow
def test_results_files_csv_json_parquet_match_the_api(ckpt, tmp_path, capsys):
    images = write_images(tmp_path / "imgs", CONSOLE_IMAGES + 3)
    expected = predict(ckpt, images, topk=3)
    assert [r["image"] for r in expected] == [str(p) for p in images]
    for ext, workers in ((".csv", "2"), (".json", "0"), (".parquet", "0")):
        out = tmp_path / f"preds{ext}"
        code, stdout, err = run_main(["predict", "--checkpoint", ckpt, tmp_path / "imgs",
                                      "--results-file", out, "--topk", "9", "--batch-size", "4",
                                      "--workers", workers], capsys)
        assert code == 0, err
        if ext == ".csv":
            table = pd.read_csv(out)
        elif ext == ".json":
            table = pd.DataFrame(json.loads(out.read_text()))
        else:
            table = pd.read_parquet(out)
        # timm's inference.py columns (separate columns, with indices); topk capped at 3 classes
        assert list(table.columns) == ["filename", "index_0", "index_1", "index_2",
                                       "label_0", "label_1", "label_2", "prob_0", "prob_1", "prob_2"]
        assert list(table.filename) == [str(p) for p in images]
        for row, result in zip(table.itertuples(), expected):
            assert [row.label_0, row.label_1, row.label_2] == [t["class"] for t in result["top"]]
            assert [row.index_0, row.index_1, row.index_2] == [t["index"] for t in result["top"]]
            assert row.prob_0 == pytest.approx(result["top"][0]["prob"], abs=1e-5)
        assert np.allclose(table[["prob_0", "prob_1", "prob_2"]].sum(axis=1), 1, atol=1e-4)
        # console: the first CONSOLE_IMAGES images, then one summary line naming the file
        lines = stdout.strip().splitlines()
        assert len(lines) == CONSOLE_IMAGES * 4 + 1 and lines[0] == str(images[0])
        assert lines[-1].startswith(f"wrote {len(images)} predictions to {out}")
        assert f"the first {CONSOLE_IMAGES} shown above" in lines[-1]
    # without a results file every image is printed; --json streams one valid array
    code, stdout, _ = run_main(["predict", "--checkpoint", ckpt, tmp_path / "imgs", "--topk", "1"],
                               capsys)
    assert code == 0 and len(stdout.strip().splitlines()) == 2 * len(images)
    code, stdout, err = run_main(["predict", "--checkpoint", ckpt, tmp_path / "imgs", "--json",
                                  "--batch-size", "5", "--results-file", tmp_path / "p.json"], capsys)
    assert code == 0, err
    streamed = json.loads(stdout)
    assert [r["image"] for r in streamed] == [r["image"] for r in expected]
    assert [t["prob"] for r in streamed for t in r["top"]] == pytest.approx(
        [t["prob"] for r in expected for t in r["top"]], abs=1e-5)
    code, stdout, err = run_main(["predict", "--checkpoint", ckpt, tmp_path / "imgs", "--quiet",
                                  "--results-file", tmp_path / "q.csv"], capsys)
    assert code == 0 and stdout == "" and err == "" and (tmp_path / "q.csv").is_file()


def test_parquet_is_written_in_row_groups_as_rows_arrive(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from ecvit import results_file

    monkeypatch.setattr(results_file, "ROW_GROUP", 4)
    item = {"image": "a.png", "top": [{"class": "ant", "index": 0, "prob": 0.75}]}
    with open(tmp_path / "r.parquet", "wb") as fh:
        writer = results_file.ResultsWriter(fh, "parquet", 1)
        for _ in range(10):
            writer.write([results_file.result_row(item)])
        assert writer.pending == [results_file.result_row(item)] * 2  # 8 rows already on disk
        writer.close()
    stored = pq.ParquetFile(tmp_path / "r.parquet")
    assert stored.metadata.num_row_groups == 3 and stored.metadata.num_rows == 10
    assert stored.read().column("label_0").to_pylist() == ["ant"] * 10


def test_bad_images_stop_or_are_skipped_and_no_partial_file_is_left(ckpt, tmp_path, capsys):
    images = write_images(tmp_path / "imgs", 5)
    bad = tmp_path / "imgs" / "img002.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    out = tmp_path / "out" / "preds.csv"
    argv = ["predict", "--checkpoint", ckpt, tmp_path / "imgs", "--results-file", out,
            "--batch-size", "2", "--workers", "1"]
    code, _, err = run_main(argv, capsys)
    assert code == 2 and "img002.png" in err and "--skip-bad-images" in err, err
    assert not out.exists() and not any(out.parent.glob("*"))  # no temp file left either
    code, stdout, err = run_main([*argv, "--skip-bad-images"], capsys)
    assert code == 0, err
    assert "skipped: cannot read image" in err and "skipped 1 unreadable image" in err
    assert list(pd.read_csv(out).filename) == [str(p) for p in images if p != bad]
    for name in ("csv", "json", "parquet"):
        code, _, err = run_main(["predict", "--checkpoint", ckpt, bad, "--skip-bad-images",
                                 "--results-file", tmp_path / f"none.{name}"], capsys)
        assert code == 2 and "none of the 1 images could be read" in err, err
        assert not (tmp_path / f"none.{name}").exists()
    code, _, err = run_main(["predict", "--checkpoint", ckpt, images[0], "--results-file",
                             tmp_path / "preds.xlsx"], capsys)
    assert code == 2 and "must end with .csv, .json, .parquet" in err


def test_device_amp_and_ema_flags(tmp_path, capsys):
    path = write_checkpoint(tmp_path / "ema.pth", ema=True)
    images = write_images(tmp_path / "imgs", 3)

    def top1(*flags):
        code, stdout, err = run_main(["predict", "--checkpoint", path, *images, "--json",
                                      "--topk", "3", "--device", "cpu", *flags], capsys)
        assert code == 0, err
        return [[(t["class"], t["prob"]) for t in item["top"]] for item in json.loads(stdout)]

    raw, ema, default = top1("--no-use-ema"), top1("--use-ema"), top1()
    assert default == ema and ema != raw  # EMA by default; its negated head flips the order
    assert [r[0][0] for r in raw] == [e[-1][0] for e in ema]
    bf16 = top1("--amp", "bf16")
    assert [b[0][0] for b in bf16] == [e[0][0] for e in ema]
    assert np.allclose([b[0][1] for b in bf16], [e[0][1] for e in ema], atol=0.05)
    code, _, err = run_main(["predict", "--checkpoint", path, images[0], "--amp", "fp16",
                             "--device", "cpu"], capsys)
    assert code == 2 and "--amp fp16 needs a CUDA device" in err, err


# ------------------------------------------------------------------------ what a file is


@pytest.mark.filterwarnings("ignore:.*is deprecated:FutureWarning")
def test_files_that_are_not_checkpoints_are_named(ckpt, tmp_path, capsys):
    image = write_images(tmp_path, 1)[0]
    scripted = tmp_path / "model.torchscript.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))
    (tmp_path / "notes.txt").write_text("epoch 3: loss 0.1\n")
    (tmp_path / "empty.pth").write_bytes(b"")
    cases = {
        tmp_path: ("directory", "it is a directory, not a file"),
        image: ("image", "it is a PNG image, not a checkpoint"),
        scripted: ("torchscript", "it is a TorchScript archive"),
        tmp_path / "notes.txt": ("text", "it is a text file, not a checkpoint"),
        tmp_path / "empty.pth": ("empty", "the file is empty (0 bytes)"),
        ckpt: ("torch", None),
    }
    for path, (kind, fragment) in cases.items():
        assert file_kind(path) == kind, path
        if fragment is None:
            continue
        code, out, err = run_main(["predict", "--checkpoint", path, image], capsys)
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert fragment in err and str(path) in err, err
        if kind != "empty":  # what predict accepts instead
            assert "takes a checkpoint written by `ecvit train`" in err and ".onnx" in err, err


@pytest.mark.slow
def test_onnx_export_runs_in_onnxruntime_with_its_metadata(ckpt, tmp_path, capsys):
    import onnx

    images = write_images(tmp_path / "imgs", 5)
    out = tmp_path / "model.onnx"
    code, _, err = run_main(["export", "--checkpoint", ckpt, "--format", "onnx", "--out", out], capsys)
    assert code == 0, err
    assert file_kind(out) == "onnx"
    expected = predict(ckpt, images, topk=3)
    got = predict(out, images, topk=3, batch_size=2)
    for e, g in zip(expected, got):
        assert [t["class"] for t in g["top"]] == [t["class"] for t in e["top"]]
        assert [t["prob"] for t in g["top"]] == pytest.approx([t["prob"] for t in e["top"]], abs=1e-4)
    code, stdout, err = run_main(["predict", "--checkpoint", out, tmp_path / "imgs",
                                  "--results-file", tmp_path / "onnx.csv", "--topk", "2"], capsys)
    assert code == 0 and stdout.startswith(str(images[0])), err
    assert list(pd.read_csv(tmp_path / "onnx.csv").label_0) == [e["top"][0]["class"] for e in expected]
    code, _, err = run_main(["predict", "--checkpoint", out, images[0], "--use-ema"], capsys)
    assert code == 2 and "ONNX export" in err, err
    # an ONNX file from elsewhere, without the description the export stores
    proto = onnx.load(str(out))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    code, _, err = run_main(["predict", "--checkpoint", tmp_path / "bare.onnx", images[0]], capsys)
    assert code == 2 and "without the description" in err and "ecvit export --format onnx" in err, err


# ------------------------------------------------------------------------- bounded memory


def peak_rss_mb(argv, cwd):
    """Peak resident memory of one ``python -m ecvit`` child (its own rusage, from wait4)."""
    with open(cwd / "child.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ecvit", *map(str, argv)], cwd=cwd,
                                stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, (cwd / "child.log").read_text()[-2000:]
    return usage.ru_maxrss / 1024  # KiB on Linux


@pytest.mark.slow
def test_memory_does_not_grow_with_the_number_of_images(tmp_path):
    """Holding every decoded 320 px image (as predict once did) costs 1.2 MB each: 380 more
    images would add ~445 MB. Streamed, the peak of 400 images stays within the run-to-run
    noise (measured: +-15 MB around ~1 GB) of the peak of 20."""
    ckpt = write_checkpoint(tmp_path / "model.pth", img_size=320, patch_size=32)
    peaks = {}
    for count in (20, 400):
        folder = tmp_path / f"n{count}"
        write_images(folder, count, size=16)
        out = tmp_path / f"n{count}.csv"
        peaks[count] = peak_rss_mb(["predict", "--checkpoint", ckpt, folder, "--results-file", out,
                                    "--batch-size", "16", "--workers", "0", "--device", "cpu"],
                                   tmp_path)
        assert len(pd.read_csv(out)) == count
    held = 380 * 3 * 320 * 320 * 4 / 2**20
    assert peaks[400] - peaks[20] < held / 5, (peaks, held)
