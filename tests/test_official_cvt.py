"""microsoft/CvT experiment files run unchanged: every official key accepted with its official
meaning, no-effect keys listed once, unknown keys refused in one line, one training step and
a test run per published file."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _cli_helpers import run_entry
from _official_cvt_files import NAMES, official_experiment, write_official
from PIL import Image

import ecvit
from ecvit.cli import main
from ecvit.cli import load_run_config as load_config
from ecvit.engine.optim import build_optimizer, build_scheduler, named_decay_groups
from ecvit.engine.samplers import RepeatedAugSampler
from ecvit.errors import UsageError
from ecvit.io.official_cvt.defaults import DEFAULTS, NO_EFFECT, OPEN_SECTIONS

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA = not torch.cuda.is_available()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A tiny ImageFolder with the official layout: train/<class>, val/<class>."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.RandomState(0)
    for split in ("train", "val"):
        for name in ("n01", "n02"):
            (root / split / name).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.randint(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / split / name / f"{i}.jpg")
    return root


def small_run(folder: Path, out: Path, size: int = 32) -> list[str]:
    """Overrides, in official keys, that make a published file a one-step CPU run."""
    return ["DATASET.ROOT", str(folder), "OUTPUT_DIR", str(out), "TRAIN.BATCH_SIZE_PER_GPU", "4",
            "TEST.BATCH_SIZE_PER_GPU", "4", "TRAIN.END_EPOCH", "1", "WORKERS", "0",
            "TRAIN.IMAGE_SIZE", f"[{size},{size}]", "TEST.IMAGE_SIZE", f"[{size},{size}]"]


# ----------------------------------------------------------------------- translation


@pytest.mark.parametrize("name", NAMES)
def test_published_files_translate_with_the_official_meaning(tmp_path, name):
    cfg = load_config(write_official(tmp_path, name))
    m, d, a, t, e = cfg.model, cfg.data, cfg.aug, cfg.train, cfg.test
    size = 384 if "384" in name else 224
    assert (m.name, m.args) == ({"13": "cvt_13", "21": "cvt_21", "w2": "cvt_w24"}[name[4:6]], {})
    assert m.drop_path_rate == (0.3 if "w24" in name else 0.1)
    assert (d.dataset, d.root, d.train_split, d.val_split) == ("folder", "DATASET/imagenet/", "train", "val")
    assert (d.img_size, e.img_size, d.interpolation, d.workers) == (size, size, "bicubic", 6)
    assert (d.crop_mode, d.crop_pct) == (("squash", 1.0) if size == 384 else ("center", 0.875))
    assert (t.epochs, t.optimizer, t.sched, t.warmup_epochs, t.warmup_lr, t.min_lr) == \
        (300, "adamw", "cosine", 5, 1e-6, 1e-5)
    assert t.sched_on_epochs and t.no_weight_decay == ["bn", "bias", "ln"]
    big = "-21-" in name or "w24" in name
    assert (t.batch_size, t.lr, t.weight_decay) == ((128, 1.25e-4, 0.1) if big else (256, 2.5e-4, 0.05))
    assert t.lr_base_batch == t.batch_size  # SCALE_LR: the lr grows with the number of GPUs
    assert (t.amp, t.amp_fallback, t.print_freq, e.batch_size) == ("fp16", True, 500, 32)
    assert (a.mixup, a.cutmix, a.mixup_prob, a.label_smoothing) == (0.8, 1.0, 1.0, 0.1)
    if name == "cvt-21-224x224":  # USE_LOADER false: torchvision crop + flip only
        assert (a.pipeline, a.rand_augment, a.reprob, a.interpolation, d.sampler) == \
            ("torchvision", "", 0.0, "bilinear", "repeated_aug")
    else:
        assert (a.pipeline, a.rand_augment, a.reprob, a.remode, a.interpolation, d.sampler) == \
            ("timm", "rand-m9-mstd0.5-inc1", 0.25, "pixel", "bicubic", "default")
    assert cfg.output_dir == str(Path("OUTPUT") / "imagenet" / name)
    assert cfg.official.no_effect == ["DATASET.DATA_FORMAT", "DEBUG.DEBUG", "MODEL.SPEC.POS_EMBED",
                                      "TRAIN.BEGIN_EPOCH", "TRAIN.LR_SCHEDULER.ARGS.cooldown_epochs",
                                      "TRAIN.LR_SCHEDULER.ARGS.decay_rate", "TRAIN.SHUFFLE"]
    assert (cfg.cudnn.benchmark, cfg.cudnn.deterministic, cfg.cudnn.enabled) == (True, False, True)


def every_official_key() -> dict:
    """A file setting every key of the official default.py (and of its open sections)."""
    data = copy.deepcopy(DEFAULTS)
    data["BASE"], data["NAME"] = [""], "-all"
    data["MODEL"].update(NAME="cls_cvt", SPEC=official_experiment("cvt-13-224x224")["MODEL"]["SPEC"])
    data["AUG"]["TIMM_AUG"] = official_experiment("cvt-13-224x224")["AUG"]["TIMM_AUG"]
    data["LOSS"]["LABEL_SMOOTHING"] = 0.1
    data["TRAIN"]["LR_SCHEDULER"] = {"METHOD": "timm", "ARGS": {
        "sched": "cosine", "epochs": 100, "min_lr": 1e-5, "warmup_lr": 1e-6, "warmup_epochs": 5,
        "cooldown_epochs": 10, "decay_rate": 0.1, "seed": 42}}
    data["TRAIN"]["OPTIMIZER_ARGS"] = {"lr": 0.1}
    data["FINETUNE"]["LR_SCHEDULER"] = {"DECAY_TYPE": "step"}
    return data


def test_every_key_of_the_official_schema_is_accepted(tmp_path, folder):
    data = every_official_key()
    data["DATASET"]["ROOT"] = str(folder)
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    assert (cfg.train.optimizer, cfg.train.weight_decay, cfg.train.epochs) == ("sgd", 1e-4, 100)  # the defaults
    assert cfg.output_dir == str(Path("imagenet") / "all-all")  # OUTPUT_DIR '' / dataset / file + NAME
    listed = {k for k in NO_EFFECT if not k.startswith("TRAIN.OPTIMIZER_ARGS")}  # lr: read with OPTIMIZER timm only
    assert listed <= set(cfg.official.no_effect)
    for section in OPEN_SECTIONS:  # every open section was exercised
        node = data
        for part in section.split("."):
            node = node[part]
        assert node


def test_no_effect_note_is_printed_once_and_amp_falls_back_in_one_line(tmp_path, folder, capsys):
    path = write_official(tmp_path, "cvt-13-224x224")
    code, out, err = run_entry(main, ["train", "--cfg", str(path), "--dry-run", *small_run(folder, tmp_path)], capsys)
    assert code == 0, err
    assert sum(line.startswith("# no effect: ") for line in out.splitlines()) == 1
    assert "TRAIN.SHUFFLE" in out and "DEBUG.DEBUG" in out
    if NO_CUDA:
        assert sum("fp32: AMP.ENABLED" in line for line in out.splitlines()) == 1


@pytest.mark.parametrize("name", NAMES)
def test_published_file_passes_the_dry_run(tmp_path, folder, capsys, name):
    path = write_official(tmp_path, name)
    code, out, err = run_entry(main, ["train", "--cfg", str(path), "--dry-run", "DATASET.ROOT", str(folder),
                                      "OUTPUT_DIR", str(tmp_path / "OUTPUT")], capsys)
    assert code == 0, err
    assert f"output {tmp_path / 'OUTPUT' / 'imagenet' / name}: fresh start" in out


@pytest.mark.parametrize("content, fragment", [
    ({"TRAIN": {"BATCH_SIZE_PER_GUP": 8}}, "unknown key TRAIN.BATCH_SIZE_PER_GUP in a microsoft/CvT "
                                           "experiment file (did you mean TRAIN.BATCH_SIZE_PER_GPU"),
    ({"MODEL": {"SPEC": {"DEPHT": [1, 2, 3]}}}, "did you mean MODEL.SPEC.DEPTH?"),
    ({"DATA": {"ROOT": "x"}}, "unknown key DATA in a microsoft/CvT experiment file (did you mean DATASET"),
    ({"TRAIN": {"LR_SCHEDULER": {"METHOD": "timm", "ARGS": {"warmup_epoch": 5}}}}, "ARGS.warmup_epochs"),
    ({"TRAIN": {"WD": "high"}}, "TRAIN.WD must be a number"),
])
def test_an_unknown_or_mistyped_key_is_one_line_with_a_suggestion(tmp_path, capsys, content, fragment):
    data = official_experiment("cvt-13-224x224")
    for section, values in content.items():
        node = data.setdefault(section, {})
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(node.get(key), dict):
                node[key].update(value)
            else:
                node[key] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    code, out, err = run_entry(main, ["train", "--cfg", str(path), "--dry-run"], capsys)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err


def test_overrides_name_official_keys_and_win_over_flags(tmp_path, folder):
    path = write_official(tmp_path, "cvt-13-224x224")
    cfg = load_config(path, ["TRAIN.BATCH_SIZE_PER_GPU", "8", "DEVICE", "cpu", "TEST.CENTER_CROP", "false"],
                      flags={"TRAIN.BATCH_SIZE": ("--batch-size", 4), "DATA.WORKERS": ("--workers", 1)})
    assert (cfg.train.batch_size, cfg.train.lr_base_batch, cfg.data.workers) == (8, 8, 1)
    assert (cfg.device, cfg.data.crop_mode) == ("cpu", "squash")
    with pytest.raises(UsageError, match="unknown key TRAIN.FOO .*did you mean"):
        load_config(path, ["TRAIN.FOO", "1"])


def test_base_files_are_merged_first(tmp_path):
    base = official_experiment("cvt-13-224x224")
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"BASE": ["base.yaml"], "NAME": "-ft", "TRAIN": {"WD": 0.2}}))
    cfg = load_config(child)
    assert (cfg.train.weight_decay, cfg.train.lr, cfg.model.name) == (0.2, 2.5e-4, "cvt_13")
    assert cfg.output_dir.endswith(str(Path("imagenet") / "child-ft"))


# --------------------------------------------------------------------- official meanings


def test_the_schedule_steps_once_per_epoch_as_the_official_loop(tmp_path):
    cfg = load_config(write_official(tmp_path, "cvt-13-224x224"), ["TRAIN.END_EPOCH", "20",
                                                                    "TRAIN.LR_SCHEDULER.ARGS.warmup_epochs", "3"])
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, cfg, cfg.train.lr)
    sched = build_scheduler(opt, cfg, updates_per_epoch=50)
    lr, lo, warm = 2.5e-4, 1e-5, 1e-6
    for epoch in range(20):
        sched.step(epoch)
        for update in range(3):  # updates within an epoch leave the lr alone
            sched.step_update(epoch * 50 + update)
        want = warm + epoch * (lr - warm) / 3 if epoch < 3 else lo + 0.5 * (lr - lo) * (1 + math.cos(math.pi * epoch / 20))
        assert opt.param_groups[0]["lr"] == pytest.approx(want, rel=1e-9), epoch


def test_multistep_and_cosine_annealing_methods(tmp_path):
    base = official_experiment("cvt-13-224x224")
    base["TRAIN"]["LR_SCHEDULER"] = {"METHOD": "MultiStep", "MILESTONES": [2, 4], "GAMMA": 0.5}
    path = tmp_path / "ms.yaml"
    path.write_text(yaml.safe_dump(base))
    cfg = load_config(path, ["TRAIN.END_EPOCH", "6"])
    opt = build_optimizer(torch.nn.Linear(2, 2), cfg, 1.0)
    sched = build_scheduler(opt, cfg, 10)
    got = []
    for epoch in range(6):
        sched.step(epoch)
        got.append(opt.param_groups[0]["lr"])
    assert got == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    base["TRAIN"]["LR_SCHEDULER"] = {"METHOD": "CyclicLR"}
    path.write_text(yaml.safe_dump(base))
    with pytest.raises(UsageError, match="CyclicLR"):
        load_config(path)


def test_without_wd_list_follows_the_official_rule():
    model = ecvit.create_model("cvt_13", depths=(1, 1, 1), num_classes=3)
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = named_decay_groups(model, ["bn", "bias", "ln"])
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert skipped == {n for n, p in model.named_parameters() if p.ndim <= 1} | {"stage2.cls_token"}
    decay, no_decay = named_decay_groups(model, ["dw"])
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert "stage0.blocks.0.attn.conv_proj_q.conv.weight" in skipped and "stage2.cls_token" in skipped
    assert "stage0.blocks.0.attn.proj_q.bias" not in skipped and no_decay["weight_decay"] == 0.0


def test_the_384_files_test_on_a_squashed_image(tmp_path, folder):
    from torchvision.transforms import functional as TF

    cfg = load_config(write_official(tmp_path, "cvt-w24-384x384"), ["DATASET.ROOT", str(folder),
                                                                     "TEST.IMAGE_SIZE", "[24,24]"])
    from ecvit.data import build_datasets

    data = build_datasets(cfg)
    image = Image.open(Path(folder) / "val" / "n01" / "0.jpg").convert("RGB")  # 48 x 40: not square
    want = TF.normalize(TF.to_tensor(TF.resize(image, [24, 24], TF.InterpolationMode.BICUBIC)),
                        [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    torch.testing.assert_close(data.val[0][0], want, atol=2e-2, rtol=0)


def test_use_loader_false_trains_with_torchvision_crop_and_flip_only(tmp_path, folder):
    from torchvision import transforms as T

    cfg = load_config(write_official(tmp_path, "cvt-21-224x224"), ["DATASET.ROOT", str(folder)])
    from ecvit.data import build_datasets

    steps = build_datasets(cfg).train.transform.transforms
    kinds = [type(s).__name__ for s in steps]
    assert kinds == ["ToRGB", "RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert steps[1].interpolation == T.InterpolationMode.BILINEAR  # AUG.INTERPOLATION 2


def test_repeated_aug_sampler_spreads_three_copies_over_ranks():
    samplers = [RepeatedAugSampler(512, num_replicas=4, rank=r, seed=0) for r in range(4)]
    for s in samplers:
        s.set_epoch(3)
    seen = [list(s) for s in samplers]
    assert all(len(x) == 512 // 4 for x in seen)
    full = [RepeatedAugSampler(512, 4, r) for r in range(4)]
    for s in full:
        s.set_epoch(3)
        s.num_selected = s.num_samples
    copies = sum((list(s) for s in full), [])
    assert sorted(copies) == sorted(list(range(512)) * 3)  # every image three times
    ranks: dict[int, set[int]] = {}
    for rank, sampler in enumerate(full):
        for index in sampler:
            ranks.setdefault(index, set()).add(rank)
    assert all(len(r) == 3 for r in ranks.values())  # each copy is augmented on another rank


@pytest.mark.slow
def test_valid_labels_evaluate_a_subset_of_the_outputs(tmp_path, folder, capsys):
    """A 5-output model (official-layout state dict) tested on 2 classes through outputs 1 and 3."""
    torch.manual_seed(0)
    model = ecvit.create_model("cvt_13", num_classes=5).eval()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([9.0, 0.0, 5.0, 1.0, 9.0]))  # output 1 < 3: always class n02
    weights = tmp_path / "official.pth"
    torch.save(model.state_dict(), weights)
    labels = tmp_path / "valid.txt"
    labels.write_text("3\n1\n")
    code, out, err = run_entry(main, ["validate", "--cfg", str(write_official(tmp_path, "cvt-13-224x224")),
                                      *small_run(folder, tmp_path), "TEST.MODEL_FILE", str(weights),
                                      "TEST.VALID_LABELS", str(labels)], capsys)
    assert code == 0, err
    assert "top1 50.00" in out
    labels.write_text("3\n")
    code, out, err = run_entry(main, ["validate", "--cfg", str(write_official(tmp_path, "cvt-13-224x224")),
                                      *small_run(folder, tmp_path), "TEST.MODEL_FILE", str(weights),
                                      "TEST.VALID_LABELS", str(labels)], capsys)
    assert code == 2 and "lists 1 outputs; the dataset has 2 classes" in err


def test_pretrained_and_frozen_layers(tmp_path):
    from ecvit.engine.builder import build_model

    source = ecvit.create_model("cvt_13", depths=(1, 1, 1), num_classes=3)
    weights = tmp_path / "w.pth"
    torch.save(source.state_dict(), weights)
    cfg = load_config(None, ["MODEL.NAME", "cvt_13", "MODEL.ARGS", "{depths: [1, 1, 1]}", "MODEL.PRETRAINED",
                             str(weights), "MODEL.PRETRAINED_LAYERS", "[stage0, stage1]",
                             "MODEL.FROZEN_LAYERS", "[stage0]"])
    model = build_model(cfg, 3)
    assert torch.equal(model.stage1.blocks[0].attn.proj_q.weight, source.stage1.blocks[0].attn.proj_q.weight)
    assert not torch.equal(model.stage2.blocks[0].attn.proj_q.weight, source.stage2.blocks[0].attn.proj_q.weight)
    assert not any(p.requires_grad for p in model.stage0.parameters())
    assert all(p.requires_grad for p in model.stage1.parameters())
    cfg.model.frozen_layers = ["stage9"]
    with pytest.raises(UsageError, match="no top-level module 'stage9'"):
        build_model(cfg, 3)


def test_cudnn_switches_apply_on_cuda_only():
    from ecvit.config import CudnnConfig
    from ecvit.engine.precision import apply_cudnn

    saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    try:
        apply_cudnn(CudnnConfig(benchmark=not saved[0], deterministic=True), torch.device("cpu"))
        assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) == saved
        apply_cudnn(CudnnConfig(benchmark=not saved[0], deterministic=True), torch.device("cuda"))
        assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) == (not saved[0], True)
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved


# ------------------------------------------------------------------ one step, then a test


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_published_file_trains_one_step(tmp_path, folder, capsys, name):
    """Each file as published, one block per stage (the full models are the SPEC tests' and
    take minutes to checkpoint on a CPU: CvT-W24's training state is 3.3 GB)."""
    path = write_official(tmp_path, name)
    code, out, err = run_entry(main, ["train", "--cfg", str(path), *small_run(folder, tmp_path),
                                      "MODEL.SPEC.DEPTH", "[1,1,1]"], capsys)
    assert code == 0, err
    run_dir = tmp_path / "imagenet" / name
    assert (run_dir / "model_best.pth").is_file() and "epoch 1/1" in out
    from ecvit.io.checkpoint import read_checkpoint
    from ecvit.io.spec import CheckpointSpec

    spec = CheckpointSpec.from_checkpoint(read_checkpoint(run_dir / "model_best.pth"), name)
    assert spec.crop_mode == ("squash" if "384" in name else "center")  # predict/export preprocess alike
    assert out.count("no effect: ") == 1
    if NO_CUDA:
        assert out.count("fp32: AMP.ENABLED asks for fp16 mixed precision, which needs CUDA") == 1


@pytest.mark.slow
def test_run_sh_tests_an_official_file_with_a_model_file(tmp_path, folder):
    path = write_official(tmp_path, "cvt-13-384x384")
    weights = tmp_path / "cvt13.pth"
    torch.save(ecvit.create_model("cvt_13", num_classes=2).state_dict(), weights)  # official layout
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(ROOT / "run.sh"), "-g", "1", "-t", "test", "--cfg", str(path),
                           *small_run(folder, tmp_path), "TEST.MODEL_FILE", str(weights)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "samples 4" in proc.stdout and "no effect: " in proc.stdout


# ----------------------------------------------------------------------------- recipes


def test_finetune_recipes_start_from_an_official_checkpoint():
    w24 = load_config(ROOT / "experiments/imagenet/cvt/cvt-w24-384x384-in22k-finetune.yaml")
    assert (w24.model.name, w24.model.pretrained, w24.model.finetune) == \
        ("cvt_w24", "pretrained/CvT-w24-384x384-IN-22k.pth", True)
    assert (w24.aug.pipeline, w24.aug.interpolation, w24.data.crop_mode, w24.data.img_size) == \
        ("resize-crop", "bicubic", "squash", 384)
    assert (w24.train.lr, w24.train.lr_base_batch, w24.train.optimizer, w24.train.weight_decay,
            w24.train.clip_grad) == (0.003, 512, "momentum", 0.0, 1.0)
    for dataset in ("cifar10", "cifar100", "oxford-pets"):
        cfg = load_config(ROOT / f"experiments/{dataset}/cvt/cvt-13-384x384-finetune.yaml")
        assert (cfg.model.name, cfg.model.finetune, cfg.data.dataset, cfg.data.img_size) == \
            ("cvt_13", True, dataset, 384)
        assert cfg.model.pretrained.endswith("CvT-13-384x384-IN-22k.pth")
        assert (cfg.aug.pipeline, cfg.train.lr, cfg.train.lr_base_batch, cfg.train.optimizer) == \
            ("resize-crop", 0.003, 512, "momentum")
        assert cfg.data.mean == [0.485, 0.456, 0.406]  # the pretrained model's statistics
    random = load_config(ROOT / "experiments/oxford-pets/cvt/cvt-13-384x384-finetune-random-split.yaml")
    assert (random.data.split, random.data.split_seed) == ("random", 0)


def test_the_resize_crop_pipeline_resizes_to_size_plus_32_then_crops():
    from ecvit.config import AugConfig
    from ecvit.data.transforms import build_train_transform

    tf = build_train_transform(16, (0.5,) * 3, (0.5,) * 3, AugConfig(pipeline="resize-crop"), "bicubic")
    kinds = [type(s).__name__ for s in tf.transforms]
    assert kinds == ["ToRGB", "Resize", "RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert tf.transforms[1].size == (48, 48) and tf(Image.new("RGB", (30, 70))).shape == (3, 16, 16)


def test_small_image_cvt_keeps_an_8x8_last_stage_and_trains_without_augmentation():
    cfg = load_config(ROOT / "experiments/cifar10/cvt/cvt-13-32x32.yaml")
    model = ecvit.create_model(cfg.model.name, num_classes=10, img_size=32, **cfg.model.args).eval()
    with torch.no_grad():
        maps = model.forward_intermediates(torch.randn(1, 3, 32, 32), intermediates_only=True)
    assert [tuple(m.shape[-2:]) for m in maps] == [(32, 32), (16, 16), (8, 8)]
    t, a = cfg.train, cfg.aug
    assert (t.epochs, t.lr, t.sched, t.warmup_epochs) == (200, 0.01, "cosine", 0)
    assert (a.mixup, a.cutmix, a.rand_augment, a.reprob, a.hflip, a.label_smoothing) == (0, 0, "", 0, 0, 0)
    from ecvit.data.transforms import build_eval_transform, build_train_transform

    image = Image.fromarray(np.random.RandomState(0).randint(0, 255, (32, 32, 3), dtype=np.uint8))
    train_tf = build_train_transform(32, (0.5,) * 3, (0.5,) * 3, a, "bicubic")
    eval_tf = build_eval_transform(32, (0.5,) * 3, (0.5,) * 3, "bicubic", 1.0)
    torch.testing.assert_close(train_tf(image), eval_tf(image))  # no augmentation at all


def test_oxford_pets_random_split_is_a_seeded_80_20_cut_of_list_txt(tmp_path):
    from ecvit.data.layouts import scan_oxford_pets

    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    lines = ["#Image CLASS-ID SPECIES BREED ID"]
    for i in range(50):
        breed, cid = ("Abyssinian", 1) if i % 2 else ("beagle", 2)
        Image.new("RGB", (4, 4)).save(tmp_path / "images" / f"{breed}_{i}.jpg")
        lines.append(f"{breed}_{i} {cid} 1 1")
    (tmp_path / "annotations" / "list.txt").write_text("\n".join(lines) + "\n")
    train, val, classes = scan_oxford_pets(tmp_path, "random", seed=0)
    assert (len(train), len(val), classes) == (40, 10, ["Abyssinian", "beagle"])
    assert not {p for p, _ in train} & {p for p, _ in val}
    assert scan_oxford_pets(tmp_path, "random", seed=0) == (train, val, classes)
    assert scan_oxford_pets(tmp_path, "random", seed=1)[1] != val
    with pytest.raises(ecvit.errors.DataError, match="trainval.txt"):
        scan_oxford_pets(tmp_path)  # the official split needs its own lists
