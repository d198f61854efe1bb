"""``benchmarks/small_data.py``: the small-data study end to end at a tiny budget."""

from __future__ import annotations

import json

import pytest
from _cli_helpers import load_script


def _load_study():
    return load_script("benchmarks/small_data.py", "ecvit_small_data")


@pytest.mark.slow
def test_study_runs_end_to_end_and_resumes(tmp_path, capsys):
    study = _load_study()
    argv = ["--models", "vit_mini,ecvit_tiny", "--seeds", "1", "--epochs", "1", "--img-size", "16",
            "--train-fraction", "0.05", "--out", str(tmp_path / "results"), "--work-dir", str(tmp_path / "runs")]
    assert study.main(argv) == 0
    out = capsys.readouterr().out
    assert "2 runs: 0 already finished, 2 to run" in out
    assert "[1/2] vit_mini seed 0: epoch 1/1 val top-1" in out
    doc = json.loads((tmp_path / "results" / "digits-5pct.json").read_text())
    assert doc["settings"]["baseline"] == "vit_mini" and doc["settings"]["img_size"] == 16
    vit, ecvit = doc["models"]["vit_mini"], doc["models"]["ecvit_tiny"]
    assert vit["args"]["patch_size"] == 4 and vit["params"] > ecvit["params"] > 0
    assert len(vit["history"]["0"]) == 1 and "paired_vs" not in vit
    run = tmp_path / "runs" / "digits-5pct" / "ecvit_tiny" / "seed0"
    expected = ecvit["history"]["0"][0]["val_top1"] - vit["history"]["0"][0]["val_top1"]
    assert ecvit["paired_vs"]["final_top1_diff"][0] == pytest.approx(expected)
    table = (tmp_path / "results" / "digits-5pct.md").read_text()
    assert "| ecvit_tiny | 0.45M |" in table and "final - vit_mini (paired)" in table
    assert (tmp_path / "results" / "digits-5pct.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((run / "metrics.json").read_text())[0]["epoch"] == 1
    # a finished model/seed is not run again
    stamp = (run / "checkpoint.pth").stat().st_mtime_ns
    assert study.main(argv) == 0
    assert "2 runs: 2 already finished, 0 to run" in capsys.readouterr().out
    assert (run / "checkpoint.pth").stat().st_mtime_ns == stamp


def test_study_flags_are_checked(capsys):
    study = _load_study()
    for argv, message in ((["--models", "vit_huge"], "--models: unknown vit_huge"),
                          (["--seeds", "0"], "--seeds must be at least 1"),
                          (["--train-fraction", "1.5"], "--train-fraction must be in (0, 1]"),
                          (["--baseline", "vit_tiny"], "--baseline vit_tiny is not one of --models")):
        with pytest.raises(SystemExit) as exc:
            study.main(argv)
        assert exc.value.code == 2 and message in capsys.readouterr().err
    assert study.main(["--list-models"]) == 0
    assert "cvt_13: cvt_13" in capsys.readouterr().out
