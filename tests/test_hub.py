"""Hub-style model folders: ``ecvit export --format hf``, ``local-dir:``/``hf-hub:`` loading
in timm and ecvit (offline, from a local Hugging Face cache), transformers CvT folders."""

import json
import shutil

import pytest
import timm
import torch
import yaml
from _cli_helpers import run_entry
from test_predict_export import CLASSES, make_checkpoint

import ecvit
from ecvit.io.checkpoint import read_checkpoint, save_atomic
from ecvit.cli import main
from ecvit.errors import CheckpointError

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder as `ecvit train` leaves it: checkpoint with history, config.yaml, validate.json."""
    folder = tmp_path_factory.mktemp("run")
    path = folder / "model_best.pth"
    model, _ = make_checkpoint(path, mean=(0.3, 0.4, 0.5), std=(0.2, 0.25, 0.3), crop_pct=0.9)
    ckpt = read_checkpoint(path)
    ckpt["dataset"] = "digits"
    ckpt["history"] = [{"epoch": 1, "val_top1": 61.25, "val_top5": 100.0, "best_top1": 61.25,
                        "val_loss": 0.8125}]
    save_atomic(ckpt, path)
    (folder / "config.yaml").write_text(yaml.safe_dump({"MODEL": {"NAME": "ecvit_tiny"},
                                                        "DATA": {"DATASET": "digits", "IMG_SIZE": 32}}))
    (folder / "model_best.validate.json").write_text(json.dumps({"top1": 58.5, "loss": 0.9}))
    return path, model


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    path, _ = run
    out = tmp_path_factory.mktemp("export") / "digits-ecvit"
    assert main(["export", "--checkpoint", str(path), "--format", "hf", "--output", str(out)]) == 0
    return out


def logits(model):
    with torch.no_grad():
        return model.eval()(X)


def test_export_writes_real_preprocessing_labels_and_card(exported):
    assert sorted(p.name for p in exported.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert [p.name for p in exported.parent.iterdir()] == [exported.name]  # no temp folder left
    config = json.loads((exported / "config.json").read_text())
    assert config["architecture"] == "ecvit_tiny" and config["num_classes"] == 3
    assert config["label_names"] == CLASSES
    pre = config["pretrained_cfg"]
    assert pre["input_size"] == [3, 32, 32]  # not timm's 224 px / ImageNet statistics
    assert pre["mean"] == [0.3, 0.4, 0.5] and pre["std"] == [0.2, 0.25, 0.3]
    assert (pre["interpolation"], pre["crop_pct"], pre["crop_mode"]) == ("bilinear", 0.9, "center")
    card = (exported / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: timm" in card
    for text in ("`ecvit_tiny`", "arXiv 2504.14825", "`digits`", "61.25", "58.5",
                 "ecvit train --cfg config.yaml", "IMG_SIZE: 32", "cat, dog, owl"):
        assert text in card, text


def test_timm_local_dir_loads_the_folder(exported, run):
    model = timm.create_model(f"local-dir:{exported}", pretrained=True)
    torch.testing.assert_close(logits(model), logits(run[1]))
    data = timm.data.resolve_data_config({}, model=model)
    assert data["input_size"] == (3, 32, 32) and data["mean"] == [0.3, 0.4, 0.5]
    assert data["interpolation"] == "bilinear" and data["crop_pct"] == 0.9
    assert model.pretrained_cfg["label_names"] == CLASSES


def test_ecvit_create_model_loads_the_folder(exported, run):
    model = ecvit.create_model(f"local-dir:{exported}")
    torch.testing.assert_close(logits(model), logits(run[1]))
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    assert model.pretrained_cfg["label_names"] == CLASSES
    fresh = ecvit.create_model(f"local-dir:{exported}", pretrained=False)
    assert not torch.allclose(logits(fresh), logits(run[1]))
    # as checkpoint_path (plain folder path too): the weights, and the preprocessing with them
    for ref in (exported, f"local-dir:{exported}"):
        again = ecvit.create_model("ecvit_tiny", num_classes=3, img_size=32, checkpoint_path=ref)
        torch.testing.assert_close(logits(again), logits(run[1]))
        assert again.pretrained_cfg["mean"] == (0.3, 0.4, 0.5)


def test_export_into_a_cloned_repository_keeps_its_files(run, exported, tmp_path):
    """A hub repository cloned to export into: .git, LICENSE, other weights and the
    repository's own README stay; only config.json and model.safetensors are written."""
    repo = tmp_path / "repo"
    (repo / ".git" / "objects").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (repo / "LICENSE").write_text("Apache-2.0")
    (repo / "other.pth").write_bytes(b"weights of another model")
    (repo / "README.md").write_text("# Our model\nhand-written card\n")
    assert main(["export", "--checkpoint", str(run[0]), "--format", "hf", "--out", str(repo)]) == 0
    assert (repo / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"
    assert (repo / "LICENSE").read_text() == "Apache-2.0"
    assert (repo / "other.pth").read_bytes() == b"weights of another model"
    assert (repo / "README.md").read_text() == "# Our model\nhand-written card\n"
    assert sorted(p.name for p in repo.iterdir()) == [".git", "LICENSE", "README.md", "config.json",
                                                     "model.safetensors", "other.pth"]
    assert (repo / "config.json").read_bytes() == (exported / "config.json").read_bytes()
    torch.testing.assert_close(logits(ecvit.create_model(f"local-dir:{repo}")), logits(run[1]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # nothing staged left behind


def test_reexport_replaces_its_own_files_only(run, exported, tmp_path, capsys):
    out = tmp_path / "hf"
    shutil.copytree(exported, out)
    (out / "notes.txt").write_text("mine")
    (out / "config.json").write_text("{}")
    (out / "README.md").write_text((out / "README.md").read_text().replace("61.25", "0.5"))
    assert main(["export", "--checkpoint", str(run[0]), "--format", "hf", "--out", str(out)]) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "config.json").read_bytes() == (exported / "config.json").read_bytes()
    assert (out / "README.md").read_text() == (exported / "README.md").read_text()  # our card: renewed
    mode = (out / "model.safetensors").stat().st_mode & 0o777
    assert mode == 0o666 & ~ecvit.io.checkpoint.current_umask()  # a plain file's mode, not a temp file's
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = run_entry(main, ["export", "--checkpoint", str(run[0]), "--format", "hf",
                                    "--out", str(tmp_path / "notes.txt")], capsys)
    assert code == 2 and "notes.txt exists and is not a folder" in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_export_never_overwrites_the_checkpoint_it_reads(run, tmp_path, capsys):
    out = tmp_path / "hf"
    out.mkdir()
    weights = out / "model.safetensors"
    assert main(["export", "--checkpoint", str(run[0]), "--format", "safetensors", "--out", str(weights)]) == 0
    before = weights.read_bytes()
    code, _, err = run_entry(main, ["export", "--checkpoint", str(weights), "--format", "hf",
                                    "--out", str(out)], capsys)
    assert code == 2 and "would overwrite the checkpoint being exported" in err
    assert weights.read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["model.safetensors"]


def hf_cache(tmp_path, monkeypatch, folder, repo="my-org/digits-ecvit"):
    """``folder`` placed in a fresh Hugging Face cache the way a download leaves it."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    root = cache / f"models--{repo.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(folder, root / "snapshots" / revision)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return f"hf-hub:{repo}"


def test_hf_hub_resolves_from_the_offline_cache(exported, run, tmp_path, monkeypatch):
    ref = hf_cache(tmp_path, monkeypatch, exported)
    torch.testing.assert_close(logits(ecvit.create_model(ref)), logits(run[1]))
    model = ecvit.create_model("ecvit_tiny", num_classes=3, img_size=32, checkpoint_path=ref)
    torch.testing.assert_close(logits(model), logits(run[1]))
    with pytest.raises(CheckpointError, match="hf-hub:my-org/missing: not found in the Hugging Face cache"):
        ecvit.create_model("hf-hub:my-org/missing")


def test_transformers_cvt_folder_loads(tmp_path):
    transformers = pytest.importorskip("transformers")
    from timm.layers import QuickGELU

    torch.manual_seed(0)
    config = transformers.CvtConfig(embed_dim=[16, 32, 48], num_heads=[1, 2, 3], depth=[1, 2, 3],
                                    num_labels=4)
    hf = transformers.CvtForImageClassification(config).eval()
    for module in hf.modules():  # the official activation and eps, which transformers hard-codes
        if type(module).__name__ == "CvtIntermediate":
            module.activation = QuickGELU()
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = 1e-5
    hf.save_pretrained(tmp_path / "cvt", safe_serialization=True)
    assert sorted(p.name for p in (tmp_path / "cvt").iterdir()) == ["config.json", "model.safetensors"]
    model = ecvit.create_model("cvt_13", num_classes=4, embed_dims=(16, 32, 48), depths=(1, 2, 3),
                               num_heads=(1, 2, 3), checkpoint_path=tmp_path / "cvt").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(x).logits, rtol=1e-4, atol=1e-4)
    with pytest.raises(CheckpointError, match="transformers CvT folder names no ecvit model"):
        ecvit.create_model(f"local-dir:{tmp_path / 'cvt'}")


def test_bad_folders_are_one_line_naming_the_file(exported, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=f"{empty / 'config.json'}: missing"):
        ecvit.create_model(f"local-dir:{empty}")
    unknown = tmp_path / "unknown"
    shutil.copytree(exported, unknown)
    config = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps({**config, "architecture": "resnet_nope"}))
    with pytest.raises(CheckpointError, match="unknown/config.json: .*model_name must be a registered"):
        ecvit.create_model(f"local-dir:{unknown}")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        ecvit.create_model("ecvit_tiny", num_classes=5, img_size=32, checkpoint_path=exported)
    code, _, err = run_entry(main, ["train", "--dataset", "digits", "--pretrained", str(empty),
                                    "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 2 and f"{empty / 'config.json'}: missing" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
