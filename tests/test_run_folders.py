"""A run owns its folder: `ecvit train` without --output-dir gives each run a folder of its
own, and no fresh start writes over another run's checkpoints, log or events unless
--overwrite-output-dir says so."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _cli_helpers import run_entry

from ecvit.cli import main

DIGITS = ["train", "--dataset", "digits", "--epochs", "1", "--batch-size", "64"]
RUN_FILES = {"checkpoint.pth", "model_best.pth", "metrics.json", "curves.png", "train.log",
             "config.yaml", "summary.csv", "tb"}


def train(capsys, *argv: str) -> tuple[int, str, str]:
    return run_entry(main, [*DIGITS, *argv], capsys)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def events_of_one_run(folder: Path) -> bool:
    """TensorBoard events of exactly one run: one events file in each writer's folder."""
    files = sorted(folder.glob("tb/**/events.out.tfevents.*"))
    return bool(files) and len(files) == len({f.parent for f in files})


@pytest.mark.slow
def test_two_default_runs_leave_two_complete_folders(in_tmp, capsys):
    code, first_out, err = train(capsys)
    assert code == 0, err
    code, second_out, err = train(capsys)
    assert code == 0, err
    runs = sorted((in_tmp / "output" / "train").iterdir())
    assert len(runs) == 2
    for run, out in zip(runs, (first_out, second_out)):
        assert RUN_FILES <= {p.name for p in run.iterdir()}, run
        assert run.name.endswith("-ecvit_tiny-32")
        relative = f"output/train/{run.name}"
        assert f"output {relative}: fresh start" in out  # the banner names the folder
        assert f"wrote {relative}/model_best.pth" in out  # and so does the end line
        log = (run / "train.log").read_text()
        assert log.count("fresh start") == 1 and log.count("done:") == 1  # one run per log
        assert events_of_one_run(run)
    latest = in_tmp / "output" / "latest"
    assert latest.is_symlink() and latest.resolve() == runs[1].resolve()
    code, out, err = run_entry(main, ["validate", "--batch-size", "64"], capsys)  # the latest run
    assert code == 0 and f"{runs[1].name}/model_best.pth" in out + err, out + err


@pytest.mark.slow
def test_a_fresh_start_never_replaces_another_run(in_tmp, capsys):
    run = in_tmp / "run"
    assert train(capsys, "--output-dir", str(run))[0] == 0
    (run / "notes.txt").write_text("mine")
    before = {name: (run / name).read_bytes() for name in ("checkpoint.pth", "model_best.pth", "train.log")}
    code, _, err = train(capsys, "--output-dir", str(run), "--no-resume")
    assert code == 2 and "holds another run (checkpoint.pth, model_best.pth" in err, err
    assert "--overwrite-output-dir" in err and "Traceback" not in err
    assert {name: (run / name).read_bytes() for name in before} == before
    code, _, err = train(capsys, "--output-dir", str(run), "--overwrite-output-dir", "--resume",
                         str(run / "checkpoint.pth"))
    assert code == 2 and "cannot be combined with --resume" in err, err
    code, out, err = train(capsys, "--output-dir", str(run), "--overwrite-output-dir", "--seed", "1")
    assert code == 0 and "fresh start, replacing the earlier run's files" in out, err
    log = (run / "train.log").read_text()
    assert log.count("fresh start") == 1 and log.count("done:") == 1  # not appended to the old log
    assert events_of_one_run(run)  # the old run's events are gone
    assert (run / "notes.txt").read_text() == "mine"  # files that are not the run's stay
    assert (run / "model_best.pth").read_bytes() != before["model_best.pth"]


def test_dry_run_names_a_new_folder_and_writes_nothing(in_tmp, capsys):
    code, out, err = train(capsys, "--dry-run")
    assert code == 0, err
    folder = next(line for line in out.splitlines() if line.startswith("# output "))
    assert folder.startswith("# output output/train/") and "-ecvit_tiny-32: fresh start" in folder
    assert os.listdir(in_tmp) == []
