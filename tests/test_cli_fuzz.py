"""A fuzz harness over whole ``ecvit`` command lines: mutated valid commands (flags, values,
overrides, file paths) end with exit code 0, 1 or 2, never a raw traceback, never a hang.

Each example starts from a valid command (``train``/``validate`` dry runs, ``predict``,
``export``, ``benchmark``, ``models``) and applies a few mutations: a value replaced by a
hostile one (negative, huge, non-finite, not a number, an odd path), a token dropped or
repeated, a random flag or ``KEY VALUE`` override added. Commands run in-process (fast);
a per-example alarm turns a hang into a failure.

The CI run is short (``FUZZ_EXAMPLES`` examples, well under a minute). For a long run set
``ECVIT_FUZZ_EXAMPLES``, e.g.::

    ECVIT_FUZZ_EXAMPLES=2000 python -m pytest -q tests/test_cli_fuzz.py

Examples are derandomised: a failure reproduces on every run with the same count.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _cli_helpers import run_entry
from _engine_helpers import tiny_cfg
from test_config_fuzz import REAL_KEYS
from ecvit.cli import CONFIG_FLAGS, main

FUZZ_EXAMPLES = 60
EXAMPLES = int(os.environ.get("ECVIT_FUZZ_EXAMPLES", FUZZ_EXAMPLES))
PER_EXAMPLE_S = 60  # a hang fails the example instead of stalling the suite
PROBE = "engine_probe_net"

NUMBERS = ["0", "-1", "1", "2", "3", "-0", "0.5", "1e20", "-1e20", str(2**63), str(2**64 + 1),
           "nan", "inf", "-inf", "1e-320", "007", "0x10", "1_000", "3.0", " 4 "]
WORDS = ["", " ", "abc", "true", "false", "null", "~", "[]", "{}", "[1, 2]", "{a: 1}",
         "*alias", "&x", "!!python/object:os.system", "é", "\u202e", "--", "-", "%s", "{0}",
         "a" * 300]


# Every config key, plus a few that are wrong or reach into MODEL.ARGS.
CONFIG_KEYS = REAL_KEYS + ["MODEL.ARGS.WIDTH", "MODEL.ARGS.CHECKPOINT_PATH", "MODEL.ARGS", "NOPE.X"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """A trained probe checkpoint, an image, and a zoo of odd paths to put anywhere."""
    from PIL import Image

    from ecvit.engine import train

    root = tmp_path_factory.mktemp("fuzz")
    run = root / "run"
    train(tiny_cfg(run, "TRAIN.EPOCHS", "1", "DATA.TRAIN_SIZE", "16", model=PROBE))
    Image.new("RGB", (20, 20), (10, 200, 30)).save(root / "image.png")
    (root / "empty.pth").write_bytes(b"")
    (root / "text.yaml").write_text("TRAIN:\n  LR: [\n")
    (root / "good.yaml").write_text("TRAIN:\n  EPOCHS: 1\n")
    (root / "dup.yaml").write_text("TRAIN:\n  LR: 1\n  LR: 2\n")
    (root / "random.bin").write_bytes(bytes(range(256)) * 8)
    os.mkfifo(root / "fifo.png")
    (root / "dir").mkdir()
    return {"ckpt": str(run / "checkpoint.pth"), "image": str(root / "image.png"),
            "root": str(root), "paths": [str(run / "checkpoint.pth"), str(root / "image.png"),
                                         str(root / "empty.pth"), str(root / "text.yaml"),
                                         str(root / "good.yaml"), str(root / "dup.yaml"),
                                         str(root / "random.bin"), str(root / "fifo.png"),
                                         str(root / "dir"), str(root / "missing" / "x.pth"),
                                         "/dev/null", "/", str(run), str(run / "config.yaml")]}


def _base_commands(f: dict) -> list[list[str]]:
    out = str(Path(f["root"]) / "out")
    sim = ["--model", PROBE, "--dataset", "simulated", "--train-size", "16", "--val-size", "8",
           "--img-size", "32", "--batch-size", "8", "--epochs", "1", "--device", "cpu"]
    return [
        ["train", *sim, "--output-dir", out, "--dry-run"],
        ["train", "--cfg", str(Path(f["root"]) / "good.yaml"), *sim, "--output-dir", out,
         "--dry-run", "TRAIN.LR", "0.01"],
        ["validate", "--checkpoint", f["ckpt"], "--batch-size", "8", "--dry-run"],
        ["predict", "--checkpoint", f["ckpt"], f["image"], "--topk", "2"],
        ["predict", "--checkpoint", f["ckpt"], f["image"], "--json"],
        ["export", "--checkpoint", f["ckpt"], "--format", "safetensors", "--out", out + ".st"],
        ["benchmark", "--model", PROBE, "--batch-size", "2", "--img-size", "32", "--iters", "1",
         "--warmup", "0"],
        ["models", "--pattern", PROBE, "--img-size", "32"],
    ]


# Tokens a mutation may not remove: without them a dry run would train for real.
PROTECTED = {"--dry-run"}


@st.composite
def command_lines(draw, f: dict) -> list[str]:
    """A valid command with 1-3 mutations that keep its shape (so most reach the engine)."""
    argv = list(draw(st.sampled_from(_base_commands(f))))
    flags = [flag.option for flag in CONFIG_FLAGS] + ["--cfg", "--topk", "--json", "--format",
                                                      "--out", "--iters", "--use-ema", "--no-use-ema"]
    values = st.one_of(st.sampled_from(NUMBERS), st.sampled_from(WORDS), st.sampled_from(f["paths"]),
                       st.text(max_size=12).filter(lambda t: "\x00" not in t))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["value", "value", "value", "flag", "flag", "override", "drop"]))
        slots = [i for i in range(2, len(argv)) if argv[i - 1].startswith("--")
                 and not argv[i].startswith("--")]
        if kind == "value" and slots:
            argv[draw(st.sampled_from(slots))] = draw(values)
        elif kind == "drop" and slots:
            i = draw(st.sampled_from(slots))
            if argv[i - 1] not in PROTECTED:
                del argv[i - 1:i + 1]
        elif kind == "flag":
            argv[1:1] = [draw(st.sampled_from(flags)), draw(values)]
        elif kind == "override" and argv[0] in ("train", "validate"):
            argv += [draw(st.sampled_from(CONFIG_KEYS)), draw(values)]
    return argv


class Hang(BaseException):
    """Raised by the alarm; a BaseException, so no ``except OSError``/``Exception`` in the
    code under test can swallow it (TimeoutError is an OSError)."""


@pytest.fixture
def alarm():
    def expired(*_):
        raise Hang(f"an example ran past {PER_EXAMPLE_S} s: a hang")

    old = signal.signal(signal.SIGALRM, expired)
    yield lambda: signal.alarm(PER_EXAMPLE_S)
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.slow
def test_mutated_command_lines_exit_0_1_or_2_without_traceback(files, capsys, alarm, tmp_path,
                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths a mutation makes up land here
    monkeypatch.setenv("COLUMNS", "100")

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(argv=command_lines(files))
    def check(argv: list[str]) -> None:
        alarm()
        try:
            code, _, err = run_entry(main, argv, capsys)
        finally:
            signal.alarm(0)
        assert code in (0, 1, 2), (argv, code, err[-2000:])
        assert "Traceback" not in err, (argv, err[-2000:])
        if code:
            assert err.strip(), (argv, "a failure must say why")

    check()
