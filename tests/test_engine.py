"""The training engine: outputs, recipe options, validation, errors.

Most option tests run a couple of steps of ``engine_probe_net`` (a few hundred
parameters, records how it was called); the end-to-end runs use ``ecvit_tiny``.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from _engine_helpers import MODEL, ProbeNet, assert_same_weights, tiny_cfg, weights
from ecvit.io.checkpoint import read_checkpoint
from ecvit.io.weights import load_for_inference
from ecvit.config import Config
from ecvit.engine import build_model, model_kwargs, resolve, train, validate
from ecvit.engine.optim import build_optimizer, build_scheduler, build_train_loss, scaled_lr
from ecvit.errors import CheckpointError, DataError, TrainingError, UsageError

PROBE = "engine_probe_net"
CONTRACT_KEYS = {"model", "model_name", "model_args", "num_classes", "class_names", "img_size",
                 "mean", "std", "interpolation", "crop_pct", "config", "epoch", "best_top1",
                 "optimizer", "scheduler", "rng", "version"}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest (and steadiest on a shared machine) on one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ProbeNet.seen.clear()
    yield
    torch.set_num_threads(threads)


def probe_cfg(out: Path, *overrides: str) -> Config:
    return tiny_cfg(out, *overrides, model=PROBE)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """ecvit_tiny on simulated data, 4 epochs; shared by the output and validation tests."""
    out = tmp_path_factory.mktemp("run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = tiny_cfg(out, "DATA.TRAIN_SIZE", "256", "DATA.VAL_SIZE", "64", "TRAIN.EPOCHS", "4",
                   "TRAIN.BATCH_SIZE", "32", "MODEL.DROP_PATH_RATE", "0.05")
    result = train(cfg)
    torch.set_num_threads(threads)
    return cfg, out, result


@pytest.mark.slow
def test_train_beats_chance_and_writes_every_output(trained):
    cfg, out, result = trained
    assert result["val_top1"] >= 60.0  # 4 classes: chance is 25%
    rows = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    for row in rows:
        for key in ("epoch", "train_loss", "val_loss", "val_top1", "val_top5", "best_top1", "lr",
                    "epoch_time", "num_bad_images"):
            assert key in row
        assert 0 <= row["val_top1"] <= row["val_top5"] <= 100
        assert row["num_bad_images"] == 0
    assert rows[-1]["best_top1"] == max(r["val_top1"] for r in rows)
    assert rows[-1] == result
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]

    csv_lines = (out / "summary.csv").read_text().strip().splitlines()
    assert csv_lines[0].startswith("epoch,train_loss,val_loss,val_top1,val_top5,best_top1")
    assert len(csv_lines) == 5
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "tb").glob("events.out.tfevents.*"))
    resolved = resolve(cfg).cfg.to_dict()  # the run records concrete values, not "the variant's own"
    assert yaml.safe_load((out / "config.yaml").read_text()) == resolved

    ckpt = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert CONTRACT_KEYS <= set(ckpt)
    assert ckpt["epoch"] == 4 and ckpt["model_name"] == MODEL
    assert ckpt["num_classes"] == 4 and len(ckpt["class_names"]) == 4
    assert ckpt["config"] == resolved
    best = torch.load(out / "model_best.pth", map_location="cpu", weights_only=True)
    best_epoch = max(rows, key=lambda r: r["val_top1"])["epoch"]
    assert best["epoch"] == best_epoch and best["best_top1"] == rows[-1]["best_top1"]
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_validate_reproduces_training_metrics(trained, tmp_path):
    cfg, out, result = trained
    cfg = copy.deepcopy(cfg)
    cfg.output_dir = str(tmp_path)
    report = validate(cfg, str(out / "checkpoint.pth"))
    assert report["top1"] == result["val_top1"]
    assert report["top5"] is None and result["val_top5"] == 100.0  # 4 classes: top-5 is always 100
    assert report["loss"] == pytest.approx(result["val_loss"], rel=1e-5)
    assert report["num_samples"] == 64
    per_class = report["per_class"]
    assert list(per_class) == read_checkpoint(out / "checkpoint.pth")["class_names"]
    assert all(0 <= v <= 100 for v in per_class.values())
    # results sit beside the checkpoint, named after it: another run's files are never touched
    assert (out / "checkpoint.confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "checkpoint.validate.json").read_text())["top1"] == report["top1"]
    validate(cfg, str(out / "checkpoint.pth"), output_dir=str(tmp_path))
    assert json.loads((tmp_path / "checkpoint.validate.json").read_text())["top1"] == report["top1"]


@pytest.mark.slow
def test_load_for_inference_rebuilds_the_trained_model(trained):
    cfg, out, _ = trained
    model, spec = load_for_inference(str(out / "model_best.pth"))
    assert not model.training
    assert spec.model_name == MODEL and spec.num_classes == 4
    assert spec.img_size == 32 and spec.mean == (0.5, 0.5, 0.5)
    assert spec.dataset == "simulated" and spec.has_ema is False
    # the rebuilt model carries the checkpoint's preprocessing for timm's data tools
    from timm.data import resolve_data_config

    data_cfg = resolve_data_config(model=model)
    assert data_cfg["input_size"] == (3, 32, 32) and data_cfg["mean"] == (0.5, 0.5, 0.5)
    assert_same_weights(model.state_dict(), weights(out / "model_best.pth"))


def test_same_seed_same_run_other_seed_other_run(tmp_path):
    """Every RNG (init, shuffling, flips, drop path, Mixup) follows SEED."""
    common = ("TRAIN.EPOCHS", "1", "MODEL.DROP_PATH_RATE", "0.1", "AUG.MIXUP", "0.8")
    train(tiny_cfg(tmp_path / "a", *common))
    train(tiny_cfg(tmp_path / "b", *common))
    train(tiny_cfg(tmp_path / "c", *common, "SEED", "1"))
    a, b, c = (weights(tmp_path / d / "checkpoint.pth") for d in "abc")
    assert_same_weights(a, b)
    assert any(not torch.equal(a[k], c[k]) for k in a)


# ----------------------------------------------------------------------------- recipe


def test_no_weight_decay_on_norms_biases_and_tokens():
    cfg = tiny_cfg("unused")
    model = build_model(cfg, 4)
    opt = build_optimizer(model, cfg, lr=1e-3)
    assert isinstance(opt, torch.optim.AdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    decay = {names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decay and no_decay and decay | no_decay == set(names.values())
    assert {n for n in names.values() if n.endswith("bias") or "norm" in n} <= no_decay
    assert set(model.no_weight_decay()) <= no_decay  # class token, positional embedding
    assert all(dict(model.named_parameters())[n].ndim > 1 for n in decay)
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, cfg.train.weight_decay}


def test_sgd_optimizer_uses_momentum():
    cfg = tiny_cfg("unused", "TRAIN.OPTIMIZER", "sgd", "TRAIN.MOMENTUM", "0.8")
    opt = build_optimizer(build_model(cfg, 4), cfg, lr=0.1)
    assert isinstance(opt, torch.optim.SGD)
    assert all(g["momentum"] == 0.8 for g in opt.param_groups)


def _lrs(cfg: Config, per_epoch: int) -> list[float]:
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, cfg, lr=cfg.train.lr)
    sched = build_scheduler(opt, cfg, per_epoch)
    lrs = [opt.param_groups[0]["lr"]]
    for update in range(1, cfg.train.epochs * per_epoch + 1):
        sched.step_update(update)
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def test_cosine_schedule_warms_up_then_decays_per_update():
    cfg = tiny_cfg("unused", "TRAIN.EPOCHS", "10", "TRAIN.WARMUP_EPOCHS", "2", "TRAIN.LR", "0.1",
                   "TRAIN.WARMUP_LR", "0.001", "TRAIN.MIN_LR", "0.0001")
    lrs = _lrs(cfg, per_epoch=5)
    warm, decay = lrs[:11], lrs[10:]
    assert warm[0] == pytest.approx(0.001)
    assert all(a < b for a, b in zip(warm, warm[1:]))  # rises every update, not every epoch
    assert 0.09 < max(lrs) <= 0.1  # timm: the cosine spans the whole run, warmup included
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert decay[-1] == pytest.approx(0.0001, abs=1e-6)


def test_constant_schedule_keeps_lr_after_warmup():
    cfg = tiny_cfg("unused", "TRAIN.SCHED", "constant", "TRAIN.EPOCHS", "4",
                   "TRAIN.WARMUP_EPOCHS", "1", "TRAIN.LR", "0.05")
    lrs = _lrs(cfg, per_epoch=3)
    assert lrs[0] < lrs[1] < lrs[2] < 0.05
    assert lrs[3:] == pytest.approx([0.05] * (len(lrs) - 3))


def test_lr_is_scaled_by_the_global_batch(tmp_path):
    cfg = probe_cfg(tmp_path, "TRAIN.LR_BASE_BATCH", "8", "TRAIN.ACCUM_STEPS", "2",
                    "TRAIN.SCHED", "constant", "TRAIN.WARMUP_EPOCHS", "0", "TRAIN.EPOCHS", "1")
    assert scaled_lr(cfg, world_size=1) == pytest.approx(0.002 * 16 * 2 / 8)
    assert scaled_lr(cfg, world_size=4) == pytest.approx(0.002 * 16 * 4 * 2 / 8)
    assert train(cfg)["lr"] == pytest.approx(0.008)
    cfg.train.lr_base_batch = 0
    assert scaled_lr(cfg, world_size=4) == 0.002


def test_loss_follows_label_smoothing_and_mixup():
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    plain = tiny_cfg("unused")
    smooth = tiny_cfg("unused", "AUG.LABEL_SMOOTHING", "0.1")
    assert isinstance(build_train_loss(plain, None), torch.nn.CrossEntropyLoss)
    loss = build_train_loss(smooth, None)
    assert isinstance(loss, LabelSmoothingCrossEntropy) and loss.smoothing == 0.1
    assert isinstance(build_train_loss(smooth, object()), SoftTargetCrossEntropy)


def test_label_smoothing_trains(tmp_path):
    smooth = train(probe_cfg(tmp_path / "s", "AUG.LABEL_SMOOTHING", "0.3", "TRAIN.EPOCHS", "1"))
    plain = train(probe_cfg(tmp_path / "p", "TRAIN.EPOCHS", "1"))
    assert math.isfinite(smooth["train_loss"]) and smooth["train_loss"] != plain["train_loss"]


@pytest.mark.parametrize("aug", [("AUG.MIXUP", "0.8"), ("AUG.CUTMIX", "1.0")])
def test_mixup_and_cutmix_train_with_a_ragged_last_batch(tmp_path, aug):
    # 44 images in batches of 16: the last batch (12) is dropped so every batch pairs up
    cfg = probe_cfg(tmp_path, *aug, "DATA.TRAIN_SIZE", "44", "TRAIN.EPOCHS", "1")
    result = train(cfg)
    assert math.isfinite(result["train_loss"])
    assert len(ProbeNet.seen) == 2


def test_mixup_needs_an_even_batch(tmp_path):
    with pytest.raises(UsageError, match="TRAIN.BATCH_SIZE must be even"):
        train(probe_cfg(tmp_path, "AUG.MIXUP", "0.8", "TRAIN.BATCH_SIZE", "15"))


def test_drop_path_rate_reaches_the_model():
    def rates(rate: str) -> list[float]:  # timm's DropPath, ECViT's PairDropPath
        model = build_model(tiny_cfg("unused", "MODEL.DROP_PATH_RATE", rate), 4)
        return [m.drop_prob for m in model.modules() if hasattr(m, "drop_prob")]

    assert max(rates("0.2")) == pytest.approx(0.2)
    assert not any(rates("0.0"))


def test_model_kwargs_maps_stage_lists_and_args():
    cfg = tiny_cfg("unused", "MODEL.ARGS.EMBED_DIMS", "32,64", "MODEL.ARGS.DEPTHS", "1,1",
                   "MODEL.ARGS.NUM_HEADS", "1,2", "MODEL.ARGS.MLP_RATIOS", "2,2",
                   "MODEL.ARGS.BLOCK_SIZE", "2")
    cfg = resolve(cfg).cfg  # the plan brings the text values to the constructor's types
    assert model_kwargs(cfg) == {"embed_dims": [32, 64], "depths": [1, 1], "num_heads": [1, 2],
                                 "mlp_ratios": [2.0, 2.0], "block_size": 2}
    model = build_model(cfg, 3)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    assert model_kwargs(tiny_cfg("unused")) == {}


def test_gradient_accumulation_matches_the_large_batch(tmp_path):
    """2 x 8 accumulated equals one batch of 16 (the probe has no batch statistics)."""
    common = ("TRAIN.EPOCHS", "1", "DATA.TRAIN_SIZE", "32", "TRAIN.SCHED", "constant",
              "TRAIN.WARMUP_EPOCHS", "0", "TRAIN.LR", "0.05", "TRAIN.OPTIMIZER", "sgd")
    train(probe_cfg(tmp_path / "big", *common, "TRAIN.BATCH_SIZE", "16"))
    train(probe_cfg(tmp_path / "acc", *common, "TRAIN.BATCH_SIZE", "8", "TRAIN.ACCUM_STEPS", "2"))
    train(probe_cfg(tmp_path / "small", *common, "TRAIN.BATCH_SIZE", "8"))
    big, acc, small = (weights(tmp_path / d / "checkpoint.pth") for d in ("big", "acc", "small"))
    for k in big:
        torch.testing.assert_close(acc[k], big[k], rtol=1e-5, atol=1e-6)
    assert any((small[k] - big[k]).abs().max() > 1e-4 for k in big)
    assert read_checkpoint(tmp_path / "acc" / "checkpoint.pth")["optimizer"]["state"][0][
        "momentum_buffer"] is not None


def test_gradient_clipping_bounds_the_update(tmp_path):
    """One Nesterov SGD step (lr 0.5, momentum 0.9) with gradients clipped to norm 1e-3
    moves the weights by at most 0.5 * 1e-3 * (1 + 0.9)."""
    common = ("TRAIN.EPOCHS", "1", "DATA.TRAIN_SIZE", "16", "TRAIN.SCHED", "constant",
              "TRAIN.WARMUP_EPOCHS", "0", "TRAIN.LR", "0.5", "TRAIN.OPTIMIZER", "sgd",
              "TRAIN.WEIGHT_DECAY", "0")
    moved = {}
    for clip in ("0", "0.001"):
        ProbeNet.created.clear()
        out = tmp_path / clip
        train(probe_cfg(out, *common, "TRAIN.CLIP_GRAD", clip))
        start, end = ProbeNet.created[-1], weights(out / "checkpoint.pth")  # [-1]: after the plan's meta builds
        moved[clip] = torch.sqrt(sum(((end[k] - start[k]) ** 2).sum() for k in start)).item()
    assert moved["0.001"] <= 0.5 * 0.001 * 1.9 * (1 + 1e-4)
    assert moved["0"] > 10 * moved["0.001"]


def test_ema_is_updated_evaluated_and_saved(tmp_path):
    copy = train(probe_cfg(tmp_path / "copy", "TRAIN.EMA", "true", "TRAIN.EMA_DECAY", "0.0"))
    assert "ema_val_top1" in copy and copy["ema_val_top1"] == copy["val_top1"]
    assert_same_weights(weights(tmp_path / "copy" / "checkpoint.pth", "model_ema"),
                        weights(tmp_path / "copy" / "checkpoint.pth"))
    train(probe_cfg(tmp_path / "slow", "TRAIN.EMA", "true", "TRAIN.EMA_DECAY", "0.5"))
    ema = weights(tmp_path / "slow" / "checkpoint.pth", "model_ema")
    model = weights(tmp_path / "slow" / "checkpoint.pth")
    assert any(not torch.equal(ema[k], model[k]) for k in model)
    assert "ema_val_top1" in json.loads((tmp_path / "slow" / "metrics.json").read_text())[-1]


def test_bf16_autocast_and_channels_last_on_cpu(tmp_path):
    train(probe_cfg(tmp_path / "a", "TRAIN.EPOCHS", "1", "TRAIN.AMP", "bf16",
                    "TRAIN.CHANNELS_LAST", "true"))
    assert ProbeNet.seen and all(s["autocast"] and s["dtype"] == torch.bfloat16 and s["channels_last"]
                                 for s in ProbeNet.seen)
    ProbeNet.seen.clear()
    train(probe_cfg(tmp_path / "b", "TRAIN.EPOCHS", "1"))
    assert ProbeNet.seen and not any(s["autocast"] or s["channels_last"] for s in ProbeNet.seen)


def test_bf16_trains_ecvit_tiny(tmp_path):
    result = train(tiny_cfg(tmp_path, "TRAIN.EPOCHS", "1", "TRAIN.AMP", "bf16"))
    assert math.isfinite(result["train_loss"]) and math.isfinite(result["val_loss"])


def test_fp16_needs_cuda(tmp_path):
    with pytest.raises(UsageError, match="fp16 needs a CUDA device"):
        train(probe_cfg(tmp_path, "TRAIN.AMP", "fp16"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_with_grad_scaler_on_cuda(tmp_path):
    result = train(probe_cfg(tmp_path, "TRAIN.AMP", "fp16", "DEVICE", "cuda", "TRAIN.CLIP_GRAD", "1"))
    assert math.isfinite(result["train_loss"])
    ckpt = read_checkpoint(tmp_path / "checkpoint.pth")
    assert ckpt["scaler"]["scale"] > 0
    assert ProbeNet.seen and all(s["dtype"] == torch.float16 for s in ProbeNet.seen)


@pytest.mark.slow
def test_torch_compile_option(tmp_path, monkeypatch, capsys):
    compiled = []
    real = torch.compile

    def spy(model, *args, **kwargs):
        compiled.append(type(model).__name__)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    result = train(probe_cfg(tmp_path, "TRAIN.COMPILE", "true", "TRAIN.EPOCHS", "1",
                             "DATA.TRAIN_SIZE", "32"))
    assert compiled == ["ProbeNet"]
    assert math.isfinite(result["train_loss"])
    # the first epoch's long pause is announced before it starts
    out = capsys.readouterr().out
    assert "torch.compile: the first steps of training" in out
    assert out.index("torch.compile:") < out.index("epoch 1/1")


def test_sync_bn_in_one_process_is_a_noted_no_op(tmp_path, capsys):
    train(probe_cfg(tmp_path, "TRAIN.SYNC_BN", "true", "TRAIN.EPOCHS", "1"))
    assert "TRAIN.SYNC_BN has no effect in a single process" in capsys.readouterr().out


# ------------------------------------------------------------------- data and failures


def _image_folder(root: Path, corrupt: bool) -> Path:
    gen = torch.Generator().manual_seed(0)
    for split, per_class in (("train", 6), ("val", 3)):
        for c, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = (torch.rand(12, 12, 3, generator=gen) * 80 + 120 * c).byte().numpy()
                Image.fromarray(pixels).save(folder / f"{i}.png")
    if corrupt:
        (root / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
        (root / "val" / "dog" / "cut.png").write_bytes((root / "val" / "dog" / "0.png").read_bytes()[:40])
    return root


def test_bad_images_are_skipped_counted_and_reported(tmp_path, capsys):
    root = _image_folder(tmp_path / "data", corrupt=True)
    cfg = probe_cfg(tmp_path / "run", "DATA.DATASET", "folder", "DATA.ROOT", str(root),
                    "DATA.SKIP_BAD_IMAGES", "true", "TRAIN.BATCH_SIZE", "4", "DATA.IMG_SIZE", "16")
    result = train(cfg)
    assert result["num_bad_images"] == 2  # one train + one val image, every epoch
    assert re.findall(r"bad_images (\d+)", capsys.readouterr().out) == ["2", "2"]
    report = validate(cfg, str(tmp_path / "run" / "checkpoint.pth"))
    assert report["num_bad_images"] == 1 and report["num_samples"] == 6


@pytest.mark.parametrize("workers", ["0", "1"])
def test_bad_image_without_skip_names_the_file(tmp_path, workers):
    root = _image_folder(tmp_path / "data", corrupt=True)
    cfg = probe_cfg(tmp_path / "run", "DATA.DATASET", "folder", "DATA.ROOT", str(root),
                    "TRAIN.BATCH_SIZE", "4", "DATA.IMG_SIZE", "16", "DATA.WORKERS", workers)
    with pytest.raises(DataError, match="broken.png") as info:
        train(cfg)
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)


@pytest.mark.slow
def test_loader_workers_are_seeded(tmp_path):
    """With DATA.WORKERS > 0 the augmentation RNG lives in the workers; it follows SEED too."""
    for run in ("a", "b"):
        train(probe_cfg(tmp_path / run, "TRAIN.EPOCHS", "1", "DATA.WORKERS", "1",
                        "MODEL.DROP_PATH_RATE", "0.2"))
    assert_same_weights(weights(tmp_path / "a" / "checkpoint.pth"),
                        weights(tmp_path / "b" / "checkpoint.pth"))


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path):
    # 48 images / 16 = 3 steps per epoch: the 4th forward pass (epoch 2, step 1) is NaN
    cfg = probe_cfg(tmp_path, "MODEL.ARGS", "{nan_after: 3}", "TRAIN.EPOCHS", "3")
    with pytest.raises(TrainingError) as info:
        train(cfg)
    message = str(info.value)
    assert "non-finite loss" in message and "epoch 2/3, step 1/3" in message
    assert str(tmp_path / "checkpoint.pth") in message and "(epoch 1)" in message
    ckpt = read_checkpoint(tmp_path / "checkpoint.pth")
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
    assert read_checkpoint(tmp_path / "model_best.pth")["epoch"] == 1
    assert len(json.loads((tmp_path / "metrics.json").read_text())) == 1


def test_non_finite_loss_in_the_first_epoch_says_nothing_was_saved(tmp_path):
    with pytest.raises(TrainingError, match="epoch 1/2, step 2/3.*no checkpoint was written yet"):
        train(probe_cfg(tmp_path, "MODEL.ARGS", "{nan_after: 1}"))
    assert not (tmp_path / "checkpoint.pth").exists()


def test_validate_errors(tmp_path):
    cfg = probe_cfg(tmp_path, "TRAIN.EPOCHS", "1")
    with pytest.raises(UsageError, match="no checkpoint to validate"):
        validate(cfg)
    with pytest.raises(CheckpointError, match="not found"):
        validate(cfg, str(tmp_path / "missing.pth"))
    train(cfg)
    cfg.data.num_classes = 5
    with pytest.raises(CheckpointError, match="trained on simulated with 4 classes .* simulated has 5"):
        validate(cfg, str(tmp_path / "checkpoint.pth"))
    cfg.data.num_classes = 4
    cfg.test.model_file = str(tmp_path / "checkpoint.pth")
    assert validate(cfg)["num_samples"] == 21


def test_validate_plain_state_dict_uses_model_name(tmp_path):
    cfg = probe_cfg(tmp_path / "run", "TRAIN.EPOCHS", "1")
    trained = train(cfg)
    plain = tmp_path / "plain.pth"
    torch.save(weights(tmp_path / "run" / "checkpoint.pth"), plain)
    report = validate(cfg, str(plain))
    assert report["top1"] == trained["val_top1"]
    with pytest.raises(CheckpointError, match="carries no model description"):
        load_for_inference(str(plain))


@pytest.mark.parametrize("init_scale", [2.0**16, 3e38])
def test_grad_scaler_skips_overflowing_steps_without_failing(tmp_path, monkeypatch, init_scale):
    """The fp16 update path (scale, unscale for clipping, step, update) with a CPU scaler.

    A scale so large that the scaled loss overflows makes the scaler skip steps and back
    off: normal fp16 behaviour, which must not count as a non-finite loss.
    """
    from ecvit.engine.precision import Precision

    monkeypatch.setattr(Precision, "grad_scaler",
                        lambda self: torch.amp.GradScaler("cpu", init_scale=init_scale))
    ProbeNet.created.clear()
    result = train(probe_cfg(tmp_path, "TRAIN.CLIP_GRAD", "1.0"))
    assert math.isfinite(result["train_loss"])
    ckpt = read_checkpoint(tmp_path / "checkpoint.pth")
    if init_scale > 1e38:
        assert ckpt["scaler"]["scale"] < init_scale  # skipped (and backed off), run went on
    else:
        assert ckpt["scaler"]["scale"] == init_scale  # no overflow, no skip
        start, end = ProbeNet.created[-1], ckpt["model"]
        assert any(not torch.equal(start[k], end[k]) for k in start)
