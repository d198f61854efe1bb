import pytest

from ecvit.config import Config, config_from_dict, load_config, save_config
from ecvit.models.registry import check_model_args
from ecvit.errors import UsageError


def test_defaults_validate():
    cfg = load_config()
    assert cfg.model.name == "ecvit_tiny"
    assert cfg.data.dataset == "digits"


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("MODEL:\n  NAME: cvt_13\nTRAIN:\n  LR: 0.00025\n  EPOCHS: 300\n")
    cfg = load_config(path, ["TRAIN.LR", "0.1", "MODEL.ARGS.EMBED_DIMS", "64,192,384", "TRAIN.EMA", "true"])
    assert cfg.model.name == "cvt_13"
    assert cfg.train.lr == pytest.approx(0.1)
    assert cfg.train.epochs == 300
    assert cfg.model.args == {"embed_dims": "64,192,384"}
    assert check_model_args("cvt_13", cfg.model.args) == {"embed_dims": [64, 192, 384]}
    assert cfg.train.ema is True


def test_unset_generic_keys_mean_the_variants_own():
    cfg = Config()
    assert cfg.model.drop_path_rate is None and cfg.data.img_size is None
    assert cfg.data.interpolation == "" and cfg.data.crop_pct is None


def test_model_args_merge_key_by_key(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("MODEL:\n  ARGS:\n    DEPTH: 6\n    num_heads: 4\n")
    cfg = load_config(path, ["MODEL.ARGS.DEPTH", "2"])
    assert cfg.model.args == {"depth": 2, "num_heads": 4}


def test_round_trip_through_dict(tmp_path):
    cfg = load_config(None, ["TRAIN.BATCH_SIZE", "8", "AUG.SCALE", "[0.5, 1.0]"])
    again = config_from_dict(cfg.to_dict())
    assert again == cfg
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["TRAIN.LRR", "0.1"], "TRAIN.LRR"),
        (["TRAIN.LR", "fast"], "TRAIN.LR"),
        (["TRAIN.EPOCHS", "1.5"], "TRAIN.EPOCHS"),
        (["TRAIN.EPOCHS", "0"], "TRAIN.EPOCHS"),
        (["DATA.IMG_SIZE", "-3"], "DATA.IMG_SIZE"),
        (["TRAIN.AMP", "fp8"], "TRAIN.AMP"),
        (["MODEL", "x"], "MODEL"),
        (["TRAIN.LR"], "pairs"),
    ],
)
def test_bad_overrides_name_the_key(overrides, fragment):
    with pytest.raises(UsageError, match=fragment.replace(".", r"\.")):
        load_config(None, overrides)


def test_unknown_key_suggests(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("TRAIN:\n  EPOCH: 3\n")
    with pytest.raises(UsageError, match=r"bad\.yaml.*TRAIN\.EPOCH.*TRAIN\.EPOCHS"):
        load_config(path)


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("TRAIN: [1, 2\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_config(bad)


def test_config_is_a_plain_dataclass():
    assert Config().to_dict()["TRAIN"]["LR"] == Config().train.lr


def test_yaml_1_1_words_stay_strings(tmp_path):
    """``off``/``on``/``yes``/``no`` are strings for string keys (YAML 1.2 booleans)."""
    cfg = load_config(None, ["TRAIN.AMP", "off", "TRAIN.EMA", "yes"])
    assert cfg.train.amp == "off" and cfg.train.ema is True
    path = tmp_path / "exp.yaml"
    path.write_text("TRAIN:\n  AMP: off\n  COMPILE: false\n  EMA: on\n")
    cfg = load_config(path)
    assert cfg.train.amp == "off" and cfg.train.compile is False and cfg.train.ema is True
