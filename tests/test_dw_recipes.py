"""The depth-wise shortcut paper's recipes (``experiments/{cifar10,cifar100,tiny-imagenet}/
{vit,cait,swin}/``): the 15 official configurations of ZTX-100/Efficient_ViT_with_DW, each
with and without shortcuts. Every file holds the official values, dry-runs, and trains one
epoch on a tiny generated dataset in the official on-disk layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from _cli_helpers import ROOT, run_entry
from test_data import make_cifar10, make_cifar100, make_tiny

from ecvit.cli import main
from ecvit.config import load_config

DATASETS = ("cifar10", "cifar100", "tiny-imagenet")
# file stem -> (model, base lr, drop path), from the official configs/ and config.py
MODELS = {
    "vit-tiny": ("dws_vit_tiny_paper", 5e-4, 0.0), "vit-tiny-dw": ("dws_vit_tiny_paper_dw", 5e-4, 0.0),
    "vit-small": ("dws_vit_small_paper", 5e-4, 0.0), "vit-small-dw": ("dws_vit_small_paper_dw", 5e-4, 0.0),
    "cait-xxs12": ("dws_cait_xxs12", 5e-4, 0.0), "cait-xxs12-dw": ("dws_cait_xxs12_dw", 5e-4, 0.0),
    "cait-xxs24": ("dws_cait_xxs24", 5e-4, 0.0), "cait-xxs24-dw": ("dws_cait_xxs24_dw", 5e-4, 0.0),
    "swin-tiny": ("dws_swin_tiny", 2.5e-4, 0.2), "swin-tiny-dw": ("dws_swin_tiny_dw", 2.5e-4, 0.2),
}
STATS = {"cifar10": ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
         "cifar100": ([0.5070, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762]),
         "tiny-imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])}
RECIPES = [f"{d}/{stem.split('-')[0]}/{stem}.yaml" for d in DATASETS for stem in MODELS]

# Small versions of each family for the one-epoch runs: fewer blocks and a smaller input
# (Swin: windows of 2 on a 16x16 patch grid, so every stage still has shifted windows, and a
# third of the width, 32-dim heads as in Swin-T: 2.3M instead of 20M parameters to train and save).
SMALL = {
    "vit": ["DATA.IMG_SIZE", "32", "MODEL.ARGS", "{depth: 2}"],
    "cait": ["DATA.IMG_SIZE", "32", "MODEL.ARGS", "{depth: 2}"],
    "swin": ["DATA.IMG_SIZE", "64", "MODEL.ARGS",
             "{depths: [2, 2, 2, 2], window_size: 2, embed_dim: 32, num_heads: [1, 2, 4, 8]}"],
}


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory) -> dict[str, Path]:
    """Tiny CIFAR-10/100 python batches and a Tiny-ImageNet tree as distributed."""
    base = tmp_path_factory.mktemp("recipes")
    make_cifar10(base / "cifar10", per_batch=2, test=4)  # 10 training images: two batches of 4
    make_cifar100(base / "cifar100")
    make_tiny(base / "tiny" / "tiny-imagenet-200", per_class=2)
    return {"cifar10": base / "cifar10", "cifar100": base / "cifar100", "tiny-imagenet": base / "tiny"}


def test_the_fifteen_official_configurations_with_and_without_shortcuts():
    found = sorted(p.relative_to(ROOT / "experiments").as_posix()
                   for d in DATASETS for arch in ("vit", "cait", "swin")
                   for p in (ROOT / "experiments" / d / arch).glob("*.yaml"))
    assert found == sorted(RECIPES) and len(found) == 30
    plain = [r for r in RECIPES if not r.endswith("-dw.yaml")]
    assert len(plain) == 15 and all(r.replace(".yaml", "-dw.yaml") in RECIPES for r in plain)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_holds_the_official_values(recipe):
    dataset, _, name = recipe.split("/")
    model, lr, drop_path = MODELS[name.removesuffix(".yaml")]
    cfg = load_config(ROOT / "experiments" / recipe)
    t, a, d = cfg.train, cfg.aug, cfg.data
    assert (cfg.model.name, cfg.model.drop_path_rate, d.dataset, d.img_size) == (model, drop_path, dataset, 224)
    assert (t.lr, t.warmup_lr, t.min_lr, t.lr_base_batch) == (lr, lr / 1000, lr / 100, 0)
    assert (t.epochs, t.warmup_epochs, t.batch_size, t.sched, t.optimizer) == (300, 20, 128, "cosine", "adamw")
    assert (t.weight_decay, t.clip_grad, t.amp, t.ema, t.sched_on_epochs) == (0.05, 5.0, "fp16", False, False)
    assert (a.mixup, a.cutmix, a.mixup_prob, a.mixup_switch_prob, a.label_smoothing) == (0.8, 1.0, 1.0, 0.5, 0.1)
    assert (a.rand_augment, a.reprob, a.remode, a.recount) == ("rand-m9-mstd0.5-inc1", 0.25, "pixel", 1)
    assert (d.crop_pct, d.crop_mode, d.interpolation) == (0.875, "center", "bicubic")
    assert (d.mean, d.std) == STATS[dataset]
    assert cfg.output_dir == f"output/{dataset}/{name.removesuffix('.yaml')}"


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_dry_runs(recipe, data_roots, capsys):
    dataset = recipe.split("/")[0]
    code, out, err = run_entry(main, ["train", "--cfg", str(ROOT / "experiments" / recipe), "--dry-run",
                                      "DATA.ROOT", str(data_roots[dataset]), "DEVICE", "cpu"], capsys)
    assert code == 0, err
    header = [line for line in out.splitlines() if line.startswith("#")]
    plan = yaml.safe_load(out)
    assert plan["TRAIN"]["LR"] == MODELS[Path(recipe).stem][1]  # not scaled by the batch
    assert any("224x224 px" in line and "crop 0.875" in line for line in header), header
    assert any("fp32" in line and "fp16" in line for line in header), header  # the CPU fallback note


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains_one_epoch(recipe, data_roots, tmp_path, capsys):
    """The recipe as written (RandAugment, Mixup/CutMix, erasing, warm-up, clipping, the fp16
    fallback) on a smaller model and input, one epoch of the generated data."""
    dataset, arch, _ = recipe.split("/")
    out_dir = tmp_path / "run"
    code, _, err = run_entry(main, [
        "train", "--cfg", str(ROOT / "experiments" / recipe), "DATA.ROOT", str(data_roots[dataset]),
        "DEVICE", "cpu", "DATA.WORKERS", "0", "TRAIN.EPOCHS", "1", "TRAIN.BATCH_SIZE", "4",
        "TEST.BATCH_SIZE", "8", "OUTPUT_DIR", str(out_dir), *SMALL[arch]], capsys)
    assert code == 0, err
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics[-1]["epoch"] == 1
    assert (out_dir / "checkpoint.pth").is_file()
