"""Random values at the config: a valid Config or a clean UsageError, never anything else."""

import dataclasses
import subprocess
import sys

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecvit.config import Config, load_config
from ecvit.errors import UsageError


def _real_keys() -> list[str]:
    keys = []
    for section in dataclasses.fields(Config):
        value = getattr(Config(), section.name)
        if dataclasses.is_dataclass(value):
            keys += [f"{section.name}.{f.name}".upper() for f in dataclasses.fields(value)]
        else:
            keys.append(section.name.upper())
    return keys


REAL_KEYS = _real_keys()
FAKE_KEYS = ["TRAIN.LRR", "MODEL", "DATA..IMG_SIZE", "", ".", "NOPE.X", "TRAIN.LR.X",
             "model.name", "AUG.SCALE.0", "MODEL.ARGS.depth"]

# Text that YAML turns into every scalar type and some structures.
VALUE_TEXT = st.one_of(
    st.sampled_from(["9" * 5000, "0", "-1", "1", "3", "1.5", "1e-3", "nan", ".inf", "-.inf", "true", "no",
                     "null", "~", "", "[]", "[1, 2]", "1,2,3", "[0.5, 1.0]", "{a: 1}", "'",
                     "[", "{", "a: b: c", "- x", "&a [*a]", "2024-01-01", "9" * 400,
                     "cvt_13", "cpu", "bf16", "adamw", "0x10", "1_000", "!!python/none ''",
                     "{a: " + "[" * 2000 + "]" * 2000 + "}"]),
    st.text(max_size=20),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)

YAML_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10),
                        st.floats(allow_nan=True, allow_infinity=True))
YAML_VALUE = st.recursive(YAML_SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
YAML_KEY = st.one_of(st.sampled_from(REAL_KEYS + FAKE_KEYS), st.text(max_size=8))


def _doc_from(pairs: list[tuple[str, object]]) -> dict:
    """Nest dotted keys into sections the way an experiment file is written."""
    doc: dict = {}
    for key, value in pairs:
        parts = key.split(".")
        node = doc
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = node[part] = {}
            node = nxt
        node[parts[-1]] = value
    return doc


def _check(fn) -> None:
    try:
        cfg = fn()
    except UsageError as exc:
        assert str(exc).strip(), "a UsageError must say what is wrong"
        return
    assert isinstance(cfg, Config)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(REAL_KEYS + FAKE_KEYS), VALUE_TEXT), max_size=4))
def test_random_overrides_give_config_or_usage_error(pairs):
    overrides = [token for pair in pairs for token in pair]
    _check(lambda: load_config(None, overrides))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(YAML_KEY, YAML_VALUE), max_size=5))
def test_random_yaml_documents_give_config_or_usage_error(tmp_path_factory, pairs):
    path = tmp_path_factory.mktemp("fuzz") / "exp.yaml"
    path.write_text(yaml.safe_dump(_doc_from(pairs), allow_unicode=True))
    _check(lambda: load_config(path))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_random_file_bytes_give_config_or_usage_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "exp.yaml"
    path.write_bytes(data)
    _check(lambda: load_config(path))


@pytest.mark.parametrize("value", ["nan", ".inf", "-.inf", "9" * 400, "9" * 5000])
def test_non_finite_and_huge_numbers_are_refused(value):
    with pytest.raises(UsageError, match=r"TRAIN\.LR"):
        load_config(None, ["TRAIN.LR", value])


def test_deeply_nested_yaml_file_is_a_usage_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("MODEL:\n  ARGS: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(UsageError, match="deep.yaml"):
        load_config(path)


def test_a_valid_random_looking_config_is_kept(tmp_path):
    cfg = load_config(None, ["MODEL.ARGS", "{depth: 2}", "AUG.SCALE", "0.5,1", "SEED", "0x10"])
    assert cfg.model.args == {"depth": 2}
    assert cfg.aug.scale == [0.5, 1.0]
    assert cfg.seed == 16


@pytest.mark.slow
def test_python_dash_m_rejects_a_fuzzed_value_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "ecvit", "train", "TRAIN.LR", "nan"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error:") and "TRAIN.LR" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
