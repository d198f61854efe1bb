"""The ``ecvit`` command line: flags, precedence, errors, experiments and a tiny end-to-end run."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from _cli_helpers import run_main
from PIL import Image

from ecvit.cli import CONFIG_FLAGS, TRAIN, VALIDATE, build_parser, config_from_args, get_key, main
from ecvit.cli import load_run_config as load_config
from ecvit.config import Config
from ecvit.engine import model_kwargs, resolve
from ecvit.errors import TrainingError
from ecvit.flops import count_macs, count_params
from ecvit.model_table import human, human_macs
from ecvit.models import create_model

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "simulated", "--train-size", "48", "--val-size", "24", "--num-classes", "3",
        "--img-size", "32", "--batch-size", "16", "--epochs", "1", "--device", "cpu"]


def parse(argv):
    return build_parser().parse_args(argv)


def dry_run_config(argv, capsys) -> dict:
    code, out, err = run_main([*argv[:1], "--dry-run", *argv[1:]], capsys)
    assert code == 0, err
    return yaml.safe_load(out)


# ------------------------------------------------------------------------------- help


def test_help_documents_every_subcommand(capsys):
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0
    for command in ("train", "validate", "predict", "export", "attention", "models", "benchmark"):
        assert f"\n    {command}" in out


@pytest.mark.parametrize("command, expected", [
    ("train", ["(default: ecvit_tiny)", "(default: digits)", "(default: digits: 32, else the model's)",
               "(default: a new folder per run, output/train/<date>-<model>-<size>, with output/latest pointing at it)",
               "--overwrite-output-dir", "KEY VALUE", "precedence", "[TRAIN.LR]",
               "[MODEL.DROP_PATH_RATE] (default: the variant's)", "--no-resume",
               "[MODEL.ARGS.NUM_HEADS]"]),
    ("validate", ["[TEST.BATCH_SIZE] (default: 128)", "--checkpoint PATH"]),
    ("predict", ["(default: 5)"]),
    ("export", ["{onnx,safetensors,torchscript,hf}", "--out PATH, --output PATH"]),
    ("models", ["--markdown"]),
    ("benchmark", ["(default: 32)", "{off,bf16,fp16}", "--channels-last"]),
])
def test_subcommand_help_shows_defaults(capsys, command, expected):
    code, out, _ = run_main([command, "--help"], capsys)
    assert code == 0
    flat = " ".join(out.split())
    for text in expected:
        assert text in flat, text


def test_version(capsys):
    code, out, _ = run_main(["--version"], capsys)
    assert code == 0 and out.startswith("ecvit ")


# ------------------------------------------------------------------------ flag table


def key_value(cfg, key):
    """A config key's value; ``MODEL.ARGS.<NAME>`` reads the MODEL.ARGS entry."""
    if key.startswith("MODEL.ARGS."):
        return cfg.model.args[key.split(".")[-1].lower()]
    return get_key(cfg, key)


def test_flag_table_maps_each_flag_to_one_existing_key():
    from ecvit.models.registry import model_arguments

    options = [f.option for f in CONFIG_FLAGS]
    assert len(options) == len(set(options))
    cfg = Config()
    ecvit_args = model_arguments("ecvit_small")  # the reference CLI's shape flags are ECViT's
    for command in (TRAIN, VALIDATE):
        keys = [f.key_for(command) for f in CONFIG_FLAGS if command in f.commands]
        assert len(keys) == len(set(keys)), f"two {command} flags set the same key"
        for key in keys:
            if key.startswith("MODEL.ARGS."):
                assert key.split(".")[-1].lower() in ecvit_args, key
            else:
                get_key(cfg, key)  # raises AttributeError for a key the config does not have


SAMPLES = {int: ("7", 7), str: ("somewhere", "somewhere")}


def _sample(flag):
    if flag.const is not None:
        return [flag.option], flag.const
    if flag.type is None:
        return [flag.option], True
    if flag.choices:
        return [flag.option, flag.choices[-1]], flag.choices[-1]
    if flag.option in ("--embed-dims", "--depths", "--num-heads"):
        return [flag.option, "2,4,6"], [2, 4, 6]
    if flag.option == "--mlp-ratios":
        return [flag.option, "2,3.5"], [2.0, 3.5]
    if flag.option in ("--lr", "--weight-decay", "--drop-path", "--layer-decay", "--smoothing",
                       "--mixup", "--cutmix", "--clip-grad"):
        return [flag.option, "0.25"], 0.25
    text, value = SAMPLES[flag.type]
    return [flag.option, text], value


@pytest.mark.parametrize("command", [TRAIN, VALIDATE])
def test_every_flag_sets_its_key(command):
    for flag in CONFIG_FLAGS:
        if command not in flag.commands:
            continue
        argv, value = _sample(flag)
        cfg = config_from_args(parse([command, *argv]), command)
        assert key_value(cfg, flag.key_for(command)) == value, flag.option


def test_batch_size_is_the_eval_batch_for_validate():
    assert config_from_args(parse(["validate", "--batch-size", "9"]), VALIDATE).test.batch_size == 9
    assert config_from_args(parse(["train", "--batch-size", "9"]), TRAIN).train.batch_size == 9


def test_switch_flags_turn_off_a_yaml_value(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("DATA:\n  SKIP_BAD_IMAGES: true\n")
    assert config_from_args(parse(["train", "--cfg", str(path)]), TRAIN).data.skip_bad_images
    cfg = config_from_args(parse(["train", "--cfg", str(path), "--no-skip-bad-images"]), TRAIN)
    assert cfg.data.skip_bad_images is False


def test_precedence_defaults_yaml_flags_overrides(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text("TRAIN:\n  LR: 0.5\n  EPOCHS: 7\n  BATCH_SIZE: 8\nDATA:\n  IMG_SIZE: 48\n")
    cfg = dry_run_config(["train", "--cfg", str(path), "--lr", "0.2", "--batch-size", "4",
                          "TRAIN.LR", "0.1"], capsys)
    assert cfg["TRAIN"]["LR"] == 0.1  # override beats flag beats YAML
    assert cfg["TRAIN"]["BATCH_SIZE"] == 4  # flag beats YAML
    assert cfg["TRAIN"]["EPOCHS"] == 7 and cfg["DATA"]["IMG_SIZE"] == 48  # unset flags keep YAML
    assert cfg["TRAIN"]["WEIGHT_DECAY"] == Config().train.weight_decay  # defaults underneath
    assert cfg == resolve(load_config(path, ["TRAIN.LR", "0.1", "TRAIN.BATCH_SIZE", "4"])).cfg.to_dict()


def test_no_arguments_trains_ecvit_tiny_on_digits(capsys):
    cfg = dry_run_config(["train"], capsys)
    assert cfg["MODEL"]["NAME"] == "ecvit_tiny" and cfg["DATA"]["DATASET"] == "digits"


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--model", "ecvit_tinny"], "did you mean ecvit_tiny"),
    (["train", "--depths", "1,2,3"], "per-stage lists must have the same length"),
    (["train", "--model", "cvt_13", "--num-heads", "1,3"], "num_heads needs 3 values"),
    (["train", "--model", "dws_vit_tiny_dw", "--img-size", "30"], "patch size 16"),
    (["train", "--img-size", "0"], "--img-size: DATA.IMG_SIZE must be positive"),
    (["train", "--batch-size", "-4"], "--batch-size: TRAIN.BATCH_SIZE must be positive"),
    (["train", "--epochs", "0"], "TRAIN.EPOCHS must be positive"),
    (["train", "DATA.VAL_SIZE", "-1"], "error: DATA.VAL_SIZE must be positive"),
    (["train", "--val-size", "3", "DATA.VAL_SIZE", "0"], "error: DATA.VAL_SIZE must be positive"),
    (["train", "TRAIN.LRR", "0.1"], "did you mean TRAIN.LR"),
    (["train", "TRAIN.EPOCHS", "many"], "TRAIN.EPOCHS must be an integer"),
    (["train", "TRAIN.LR", "0.1", "--epochs", "3"], "flags go before the KEY VALUE overrides"),
    (["train", "TRAIN.LR"], "KEY VALUE pairs"),
    (["train", "--cfg", "missing.yaml"], "config file not found"),
    (["validate", "--output-dir", "nowhere"], "no checkpoint to evaluate"),
    (["models", "--pattern", "resnet*"], "no registered model matches"),
])
def test_usage_errors_are_one_line_exit_2(argv, fragment, capsys):
    code, out, err = run_main(argv, capsys)
    assert code == 2
    assert err.startswith("error: ") and fragment in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("document, fragment", [
    ("TRAIN:\n  EPOCH: 3\n", "unknown key TRAIN.EPOCH (did you mean TRAIN.EPOCHS?)"),
    ("TRAIN:\n  LR: fast\n", "TRAIN.LR must be a finite number"),
    ("AUG:\n  SCALE: [0.5, big]\n", "AUG.SCALE[1] must be a finite number"),
    ("MODEL:\n  DEPTHS: [1, 2]\n", "unknown key MODEL.DEPTHS (a model's own constructor arguments "
                                     "go in MODEL.ARGS: MODEL.ARGS.DEPTHS)"),
    ("DATA: 3\n", "DATA must be a section"),
    ("- just\n- a list\n", "expected a mapping"),
    ("TRAIN: {LR: [\n", "not valid YAML"),
])
def test_bad_yaml_is_one_line_exit_2_naming_file_and_key(tmp_path, capsys, document, fragment):
    path = tmp_path / "exp.yaml"
    path.write_text(document)
    code, _, err = run_main(["train", "--cfg", str(path)], capsys)
    assert code == 2 and fragment in err and "exp.yaml" in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["train", "--depths", "1,x"], ["train", "--optimizer", "lion"],
                                  ["train", "--img-size", "big"], ["predict", "--checkpoint", "x"],
                                  ["nonsense"]])
def test_argparse_errors_exit_2(argv, capsys):
    code, _, err = run_main(argv, capsys)
    assert code == 2 and "usage:" in err


def test_training_error_exits_1_and_interrupt_130(monkeypatch, capsys):
    import ecvit.engine

    def fail(cfg):
        raise TrainingError("non-finite loss at epoch 1 step 3; last good checkpoint kept")

    monkeypatch.setattr(ecvit.engine, "train", fail)
    code, _, err = run_main(["train", *TINY], capsys)
    assert code == 1 and err == "error: non-finite loss at epoch 1 step 3; last good checkpoint kept\n"

    def interrupt(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(ecvit.engine, "train", interrupt)
    code, _, err = run_main(["train", *TINY], capsys)
    assert code == 130 and "interrupted" in err


def test_other_exceptions_keep_their_traceback(monkeypatch):
    import ecvit.engine

    def bug(cfg):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(ecvit.engine, "train", bug)
    with pytest.raises(ZeroDivisionError):
        main(["train", *TINY])


# ----------------------------------------------------------------------- experiments

EXPERIMENTS = sorted((ROOT / "experiments").rglob("*.yaml"))
DATASET_CLASSES = {"folder": 1000, "cifar10": 10, "cifar100": 100, "tiny-imagenet": 200,
                   "digits": 10, "simulated": None, "oxford-pets": 37, "svhn": 10, "mnist": 10,
                   "fashion-mnist": 10}


def test_experiment_layout():
    assert len(EXPERIMENTS) >= 11
    names = {p.relative_to(ROOT / "experiments").as_posix() for p in EXPERIMENTS}
    for required in ("imagenet/cvt/cvt-13-224x224.yaml", "imagenet/cvt/cvt-21-224x224.yaml",
                     "imagenet/cvt/cvt-w24-384x384.yaml", "cifar10/vit/vit-tiny.yaml",
                     "cifar10/vit/vit-tiny-dw.yaml", "cifar100/vit/vit-tiny-dw.yaml",
                     "tiny-imagenet/vit/vit-tiny-dw.yaml", "digits/ecvit/ecvit-tiny.yaml",
                     "cifar10/ecvit/ecvit-small-224x224.yaml"):
        assert required in names
    for path in EXPERIMENTS:  # experiments/{dataset}/{arch}/NAME.yaml
        assert len(path.relative_to(ROOT / "experiments").parts) == 3, path


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_experiment_loads_and_builds_its_model(path):
    cfg = load_config(path)
    classes = DATASET_CLASSES[cfg.data.dataset] or cfg.data.num_classes
    with torch.device("meta"):
        model = create_model(cfg.model.name, num_classes=classes, img_size=cfg.data.img_size,
                             drop_path_rate=cfg.model.drop_path_rate, **model_kwargs(cfg))
    assert count_params(model) > 0
    assert path.parts[-3] == cfg.data.dataset.replace("folder", "imagenet")


def test_cvt_recipes_follow_the_official_experiments(tmp_path):
    """experiments/imagenet/cvt/ holds the five official files' settings: translated, they give
    the config the published files give (only the data root and output folder differ)."""
    from _official_cvt_files import NAMES, write_official

    for name in NAMES:
        ours = load_config(ROOT / f"experiments/imagenet/cvt/{name}.yaml").to_dict()
        official = load_config(write_official(tmp_path, name)).to_dict()
        assert ours["DATA"].pop("ROOT") == "data/imagenet/" and official["DATA"].pop("ROOT") == "DATASET/imagenet/"
        assert ours.pop("OUTPUT_DIR") == f"output/imagenet/{name}"
        official.pop("OUTPUT_DIR")
        notes, official_notes = ours.pop("OFFICIAL"), official.pop("OFFICIAL")
        notes.pop("FILE"), official_notes.pop("FILE")
        assert ours == official and notes == official_notes, name
    w24 = load_config(ROOT / "experiments/imagenet/cvt/cvt-w24-384x384.yaml")
    assert (w24.train.weight_decay, w24.data.crop_mode, w24.model.drop_path_rate) == (0.1, "squash", 0.3)


def test_dw_recipes_follow_the_paper():
    for path in sorted((ROOT / "experiments").glob("*/vit/*.yaml")):
        cfg = load_config(path)
        t, a = cfg.train, cfg.aug
        assert (t.lr, t.weight_decay, t.epochs, t.warmup_epochs, t.batch_size, t.clip_grad) == \
            (5e-4, 0.05, 300, 20, 128, 5.0), path
        assert (a.mixup, a.cutmix, a.label_smoothing, a.reprob) == (0.8, 1.0, 0.1, 0.25), path
        assert a.rand_augment and cfg.data.img_size == 224, path


def test_experiment_through_cli_with_override(tmp_path, capsys):
    for split in ("train", "val"):  # the preflight reads the data root: a two-class stand-in
        for name in ("n01", "n02"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / name / "a.png")
    cfg = dry_run_config(["train", "--cfg", str(ROOT / "experiments/imagenet/cvt/cvt-13-224x224.yaml"),
                          "TRAIN.LR", "0.1", "DATA.ROOT", str(tmp_path), "TRAIN.AMP", "bf16"], capsys)
    assert cfg["TRAIN"]["LR"] == 0.1 and cfg["TRAIN"]["EPOCHS"] == 300
    assert cfg["MODEL"]["NAME"] == "cvt_13"


# --------------------------------------------------------------------------- models


def test_models_table_counts_match_direct_counts(capsys):
    code, out, _ = run_main(["models", "--pattern", "ecvit_t*", "--img-size", "64",
                             "--num-classes", "10"], capsys)
    assert code == 0
    header, row = out.strip().splitlines()
    assert header.split()[:5] == ["model", "params", "MACs", "input", "classes"]
    model = create_model("ecvit_tiny", num_classes=10, img_size=64)
    params, macs = count_params(model), count_macs(model, 64)
    cells = row.split()
    assert cells[0] == "ecvit_tiny" and cells[3] == "64x64" and cells[4] == "10"
    assert (cells[1], cells[2]) == (human(params), human_macs(macs))
    assert "arXiv 2504.14825" in row


def test_counts_read_like_the_papers():
    assert [human(n) for n in (19_997_480, 625_600, 45_181, 999)] == \
        ["20.00M", "0.63M", "45.18K", "999"]
    assert [human_macs(n) for n in (4_503_000_000, 696_750_000, 2_150_000)] == \
        ["4.50G", "0.697G", "2.15M"]


def test_models_markdown_lists_every_family(capsys):
    code, out, _ = run_main(["models", "--markdown"], capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("| model | params | MACs |") and lines[1].startswith("|---|")
    names = [line.split("|")[1].strip() for line in lines[2:]]
    assert {"cvt_13", "cvt_w24", "dws_vit_tiny_dw", "ecvit_small"} <= set(names)
    cvt13 = next(line for line in lines if line.startswith("| cvt_13 |"))
    assert "| 224x224 |" in cvt13 and "| 20.00M |" in cvt13  # 19.997M parameters (paper: 20M)
    w24 = next(line for line in lines if line.startswith("| cvt_w24 |"))
    assert "| 384x384 |" in w24


# --------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_train_writes_outputs_and_the_merged_config(pets_run, pets_folder):
    """The session's shared ``ecvit train`` run (``conftest.pets_run``: --seed 1, 2 epochs)."""
    for name in ("checkpoint.pth", "model_best.pth", "metrics.json", "config.yaml", "curves.png"):
        assert (pets_run / name).is_file(), name
    saved = load_config(pets_run / "config.yaml")
    assert saved.seed == 1 and saved.train.warmup_epochs == 0 and saved.train.epochs == 2
    assert (saved.data.dataset, saved.data.root, saved.data.img_size) == ("folder", str(pets_folder), 32)
    assert json.loads((pets_run / "metrics.json").read_text())[-1]["epoch"] == 2


@pytest.mark.slow
def test_validate_defaults_to_the_runs_best_checkpoint(pets_run, pets_folder, tmp_path, capsys):
    data = ["--dataset", "folder", "--data-path", str(pets_folder), "--img-size", "32",
            "--batch-size", "16"]
    code, out, err = run_main(["validate", *data, "--device", "cpu", "--output-dir", str(pets_run)],
                              capsys)
    assert code == 0, err
    result = json.loads((pets_run / "model_best.validate.json").read_text())
    assert result["num_samples"] == 18 and str(pets_run / "model_best.pth") in out
    code, _, err = run_main(["validate", *data, "--output-dir", str(tmp_path),
                             "--checkpoint", str(pets_run / "model_best.pth")], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "model_best.validate.json").read_text())["top1"] == result["top1"]
    assert (tmp_path / "model_best.confusion.png").is_file()


@pytest.mark.slow
def test_benchmark_dispatches_to_the_benchmark_module(tmp_path, capsys):
    path = tmp_path / "bench.json"
    code, out, err = run_main(["benchmark", "--model", "ecvit_tiny", "--batch-size", "2",
                               "--img-size", "32", "--device", "cpu", "--warmup", "0",
                               "--iters", "1", "--json", str(path)], capsys)
    assert code == 0, err
    result = json.loads(path.read_text())
    assert result["model"] == "ecvit_tiny" and result["batch_size"] == 2 and result["img_size"] == 32
