"""The suite never runs in the user's checkout: a run left there (``output/checkpoint.pth``
from ``ecvit train``) cannot leak into a test, and no test leaves files behind in it."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def module_cwd() -> Path:
    return Path.cwd()


def test_each_test_runs_in_its_own_empty_folder(tmp_path):
    assert Path.cwd() == tmp_path and os.listdir(".") == []
    assert ROOT not in Path.cwd().parents and Path.cwd() != ROOT


def test_module_fixtures_run_outside_the_repository(module_cwd):
    assert module_cwd != ROOT and ROOT not in module_cwd.parents


def test_a_relative_output_folder_is_the_tests_own(tmp_path, capsys):
    """A dry run with a relative OUTPUT_DIR sees this test's ``output``, not the repo's."""
    from ecvit.cli import main

    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "checkpoint.pth").write_bytes(b"another run's garbage")
    assert main(["train", "--dry-run", "--output-dir", "output"]) == 2  # this test's own leftover is found ...
    assert "output/checkpoint.pth" in capsys.readouterr().err


def test_the_next_test_does_not_see_it(capsys):
    from ecvit.cli import main

    assert not Path("output").exists()
    assert main(["train", "--dry-run", "--output-dir", "output"]) == 0, capsys.readouterr().err  # ... and only there
