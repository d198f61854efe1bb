"""``ecvit predict`` and ``ecvit export``: a checkpoint alone is enough to use and ship a model."""

import json

import numpy as np
import pytest
import torch
from _cli_helpers import run_main
from PIL import Image

from ecvit.io.checkpoint import read_checkpoint, save_atomic
from ecvit.config import Config
from ecvit.data import build_eval_transform, load_image
from ecvit.engine import build_model, model_kwargs
from ecvit.engine.builder import training_spec
from ecvit.export import export_model
from ecvit.predict import predict

CLASSES = ["cat", "dog", "owl"]

# One small variant per family, all at 32 px (constructor arguments as MODEL.ARGS).
FAMILIES = {
    "ecvit_tiny": {},
    "cvt_13": {"embed_dims": [16, 32, 48], "depths": [1, 1, 2], "num_heads": [1, 2, 3]},
    "dws_vit_tiny_dw": {"embed_dim": 48, "depth": 2, "num_heads": 3},
}


def make_checkpoint(path, name="ecvit_tiny", mean=(0.3, 0.4, 0.5), std=(0.2, 0.25, 0.3),
                    crop_pct=0.9):
    """A checkpoint in the engine's format, with non-trivial BatchNorm statistics and a
    classifier scaled to give confident outputs."""
    cfg = Config()
    cfg.model.name, cfg.model.args, cfg.model.drop_path_rate = name, dict(FAMILIES[name]), 0.0
    cfg.data.img_size, cfg.data.crop_pct, cfg.data.interpolation = 32, crop_pct, "bilinear"
    model = build_model(cfg, len(CLASSES))
    gen = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
    with torch.no_grad():  # confident outputs, as a trained model's (the fresh ones are near uniform)
        model.get_classifier().weight.mul_(50.0)
    meta = training_spec(cfg, CLASSES, list(mean), list(std), crop_pct, has_ema=False).to_meta()
    assert meta["model_args"] == model_kwargs(cfg)
    save_atomic({"model": model.state_dict(), **meta, "epoch": 1}, path)
    return model.eval(), meta


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model_best.pth"
    model, meta = make_checkpoint(path)
    return path, model, meta


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = [folder / "rgb.png", folder / "gray.jpg", folder / "rgba.png"]
    Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(paths[0])
    Image.fromarray(rng.integers(0, 256, (30, 30), dtype=np.uint8)).save(paths[1])
    Image.fromarray(rng.integers(0, 256, (24, 36, 4), dtype=np.uint8), "RGBA").save(paths[2])
    return paths


def reference_probs(model, meta, paths):
    tf = build_eval_transform(meta["img_size"], meta["mean"], meta["std"], meta["interpolation"],
                              meta["crop_pct"])
    with torch.no_grad():
        return model(torch.stack([tf(load_image(p)) for p in paths])).softmax(-1)


# ---------------------------------------------------------------------------- predict


def test_predict_uses_the_checkpoints_model_classes_and_preprocessing(ckpt, images):
    path, model, meta = ckpt
    results = predict(path, images, topk=2)
    expected = reference_probs(model, meta, images)
    assert [r["image"] for r in results] == [str(p) for p in images]
    for result, probs in zip(results, expected):
        top = result["top"]
        assert len(top) == 2 and top[0]["prob"] >= top[1]["prob"]
        best = int(probs.argmax())
        assert top[0]["index"] == best and top[0]["class"] == CLASSES[best]
        assert top[0]["prob"] == pytest.approx(float(probs[best]), abs=1e-5)
    # the normalisation really comes from the checkpoint: other statistics, other outputs
    shifted = dict(meta, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    assert not torch.allclose(reference_probs(model, shifted, images), expected, atol=1e-4)


def test_predict_cli_text_and_json(ckpt, images, capsys):
    path = ckpt[0]
    code, out, err = run_main(["predict", "--checkpoint", str(path), str(images[0]), "--topk", "9"],
                              capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == str(images[0]) and len(lines) == 4  # topk capped at the 3 classes
    assert {line.split()[1] for line in lines[1:]} == set(CLASSES)
    assert all(line.strip().endswith("%") for line in lines[1:])
    code, out, err = run_main(["predict", "--checkpoint", str(path), *map(str, images), "--json"],
                              capsys)
    assert code == 0, err
    data = json.loads(out)
    assert len(data) == 3 and all(sum(t["prob"] for t in d["top"]) == pytest.approx(1, abs=1e-5)
                                  for d in data)


@pytest.mark.parametrize("case", ["bad_image", "missing_image", "missing_checkpoint",
                                  "no_metadata", "topk_zero"])
def test_predict_errors_are_one_line(ckpt, images, tmp_path, capsys, case):
    path = str(ckpt[0])
    argv = ["predict", "--checkpoint", path, str(images[0])]
    if case == "bad_image":
        bad = tmp_path / "broken.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
        argv.append(str(bad))
        fragment = "broken.png"
    elif case == "missing_image":
        argv.append(str(tmp_path / "nope.jpg"))
        fragment = "nope.jpg"
    elif case == "missing_checkpoint":
        argv[2] = str(tmp_path / "none.pth")
        fragment = "checkpoint not found"
    elif case == "no_metadata":
        plain = tmp_path / "weights.pth"
        torch.save(read_checkpoint(path)["model"], plain)
        argv[2] = str(plain)
        fragment = "no model description"
    else:
        argv += ["--topk", "0"]
        fragment = "positive integer"
    code, out, err = run_main(argv, capsys)
    assert code == 2 and fragment in err, err
    assert "Traceback" not in err and out == ""
    if case != "topk_zero":
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")


# -------------------------------------------------------------------------- safetensors


def test_safetensors_export_is_a_checkpoint_for_predict_and_validate(ckpt, images, tmp_path, capsys):
    path, _, meta = ckpt
    out = tmp_path / "model.safetensors"
    code, stdout, err = run_main(["export", "--checkpoint", str(path), "--format", "safetensors",
                                  "--out", str(out)], capsys)
    assert code == 0 and str(out) in stdout, err
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as fh:
        stored = fh.metadata()
    for key, value in meta.items():
        assert json.loads(stored[key]) == value, key
    loaded = read_checkpoint(out)
    assert loaded["class_names"] == CLASSES and loaded["img_size"] == 32
    assert predict(out, images) == predict(path, images)

    # another dataset's classes: refused, never a meaningless number
    code, stdout, err = run_main(["validate", "--checkpoint", str(out), "--dataset", "simulated",
                                  "--num-classes", "3", "--train-size", "12", "--val-size", "9",
                                  "--device", "cpu", "--output-dir", str(tmp_path / "val")],
                                 capsys)
    assert code == 2 and "cat, dog, owl" in err and "simulated has 3 (0, 1, 2)" in err, err
    assert not (tmp_path / "val").exists()
    root = tmp_path / "pets"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(
                    root / split / name / f"{i}.png")
    code, stdout, err = run_main(["validate", "--checkpoint", str(out), "--dataset", "folder",
                                  "--data-path", str(root), "--device", "cpu",
                                  "--output-dir", str(tmp_path / "val")], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "val" / "model.validate.json").read_text())["num_samples"] == 9


def test_default_export_path_and_errors(ckpt, tmp_path, capsys):
    path = ckpt[0]
    copy = tmp_path / "run.pth"
    copy.write_bytes(path.read_bytes())
    assert export_model(copy, "safetensors") == tmp_path / "run.safetensors"
    assert (tmp_path / "run.safetensors").is_file()
    for argv, fragment in (
        (["--out", str(copy)], "would overwrite the checkpoint"),
        (["--out", str(tmp_path / "no" / "dir" / "m.onnx")], "does not exist"),
    ):
        code, _, err = run_main(["export", "--checkpoint", str(copy), "--format", "onnx", *argv],
                                capsys)
        assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_main(["export", "--checkpoint", str(copy), "--format", "tflite"], capsys)
    assert code == 2 and "invalid choice" in err


# ---------------------------------------------------------------------- ONNX, TorchScript


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_ckpt(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / "model.pth"
    model, meta = make_checkpoint(path, request.param)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(x)
    return path, x, expected


@pytest.mark.slow
def test_onnx_matches_pytorch_at_batch_1_and_3(family_ckpt, capsys):
    import onnx
    import onnxruntime as ort

    path, x, expected = family_ckpt
    code, _, err = run_main(["export", "--checkpoint", str(path), "--format", "onnx"], capsys)
    assert code == 0, err
    out = path.with_suffix(".onnx")
    proto = onnx.load(str(out))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["class_names"]) == CLASSES
    assert json.loads(props["model_name"]) == read_checkpoint(path)["model_name"]
    if json.loads(props["model_name"]) == "cvt_13":  # exported fused: BatchNorms folded away
        assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for batch in (1, 3):
        (logits,) = session.run(None, {name: x[:batch].numpy()})
        np.testing.assert_allclose(logits, expected[:batch].numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*is deprecated:FutureWarning")
def test_torchscript_loads_and_matches(family_ckpt, tmp_path):
    path, x, expected = family_ckpt
    out = export_model(path, "torchscript", tmp_path / "model.pt")
    extra = {"ecvit_meta.json": ""}
    scripted = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["ecvit_meta.json"])["class_names"] == CLASSES
    with torch.no_grad():
        for batch in (1, 3):
            torch.testing.assert_close(scripted(x[:batch]), expected[:batch], atol=1e-4, rtol=1e-4)


def test_onnx_without_the_onnx_packages_is_a_clean_usage_error(ckpt, tmp_path, monkeypatch, capsys):
    """Without the `onnx` extra, export says what to install instead of a traceback."""
    import builtins

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name.split(".")[0] in ("onnx", "onnxscript"):
            raise ImportError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    from ecvit.cli import main

    path = ckpt[0]
    assert main(["export", "--checkpoint", str(path), "--format", "onnx",
                 "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "ecvit[onnx]" in err and "Traceback" not in err
