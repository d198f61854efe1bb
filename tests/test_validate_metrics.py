"""``ecvit validate``: precision/recall/F1, expected calibration error, top-k only when
meaningful, the per-class console table and ``--tta`` (flip, five-crop, ten-crop)."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from sklearn.metrics import f1_score, precision_score, recall_score

from _engine_helpers import tiny_cfg
from ecvit.cli import main
from ecvit.engine import train
from ecvit.engine.distributed import DistInfo
from ecvit.engine.evaluate import evaluate, tta_views
from ecvit.engine.plan import resolve
from ecvit.engine.metrics import calibration_bins, expected_calibration_error, precision_recall_f1

PROBE = "engine_probe_net"


def test_ece_by_hand():
    # top-1 confidences 0.9, 0.9 (one right) share bin 13 (0.867, 0.933]; 0.7 (right) is in bin 10
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.3, 0.7]])
    correct = torch.tensor([True, False, True])
    bins = calibration_bins(probs, correct)
    assert bins[:, 0].tolist().count(0) == 13 and bins[13, 0] == 2 and bins[10, 0] == 1
    expected = 100 * (abs(1 - 1.8) + abs(1 - 0.7)) / 3
    assert expected_calibration_error(bins) == pytest.approx(expected)
    assert expected_calibration_error(torch.zeros(15, 3)) == 0.0


def test_precision_recall_f1_match_sklearn_on_labels():
    y_true = [0, 0, 1, 1, 2, 2, 2, 3]
    y_pred = [0, 1, 1, 1, 2, 0, 2, 0]
    confusion = torch.zeros(4, 4, dtype=torch.int64)
    for t, p in zip(y_true, y_pred):
        confusion[t, p] += 1
    out = precision_recall_f1(confusion, ["a", "b", "c", "d"])
    kw = dict(average="macro", zero_division=0)
    assert out["precision_macro"] == pytest.approx(100 * precision_score(y_true, y_pred, **kw))
    assert out["recall_macro"] == pytest.approx(100 * recall_score(y_true, y_pred, **kw))
    assert out["f1_macro"] == pytest.approx(100 * f1_score(y_true, y_pred, **kw))
    assert out["per_class_metrics"]["b"] == pytest.approx(
        {"precision": 100 * 2 / 3, "recall": 100.0, "f1": 80.0, "support": 2})
    assert out["per_class_metrics"]["d"]["f1"] == 0.0


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, probe_run):
    """Probe models trained 1 epoch on 4 (the session's shared ``conftest.probe_run``) and on
    7 simulated classes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("c7")
    train(tiny_cfg(out, "TRAIN.EPOCHS", "1", "DATA.NUM_CLASSES", "7", model=PROBE))
    torch.set_num_threads(threads)
    return {4: probe_run, 7: out}


def _validate(run: Path, out: Path, *flags: str) -> dict:
    assert main(["validate", "--checkpoint", str(run / "model_best.pth"), "--output-dir", str(out),
                 "--device", "cpu", *flags]) == 0
    return json.loads((out / "model_best.validate.json").read_text())


@pytest.mark.slow
def test_validate_reports_metrics_and_hides_top5_with_few_classes(checkpoints, tmp_path, capsys):
    result = _validate(checkpoints[4], tmp_path / "v4")
    console = capsys.readouterr().out
    assert result["top5"] is None and "top5" not in console
    assert result["ece_bins"] == 15 and 0.0 <= result["ece"] <= 100.0
    assert set(result["per_class_metrics"]) == set(result["per_class"]) and len(result["per_class"]) == 4
    assert {"precision_macro", "recall_macro", "f1_macro"} <= set(result)
    supports = sum(m["support"] for m in result["per_class_metrics"].values())
    assert supports == result["num_samples"] == 21
    assert "macro precision" in console and "ece" in console
    table = [line for line in console.splitlines() if line.split()[:1] and line.split()[0] in result["per_class"]]
    assert len(table) == 4

    result7 = _validate(checkpoints[7], tmp_path / "v7")
    assert result7["top5"] is not None and "top5" in capsys.readouterr().out


@pytest.mark.slow
def test_tta_flip_averages_the_mirror_image(checkpoints, tmp_path, capsys):
    plain = _validate(checkpoints[4], tmp_path / "plain")
    flip = _validate(checkpoints[4], tmp_path / "flip", "--tta", "flip")
    assert flip["tta"] == "flip" and plain["tta"] == "none"
    assert flip["num_samples"] == plain["num_samples"]
    assert flip["loss"] != plain["loss"]  # the probe net is not mirror-symmetric
    assert "tta flip" in capsys.readouterr().out


def _loss_of_views(model, images, labels, views):
    probs = torch.stack([model(v).softmax(1) for v in views]).mean(0)
    return torch.nn.functional.nll_loss(probs.log(), labels).item(), probs.argmax(1)


@pytest.mark.parametrize("tta", ["flip", "five-crop", "ten-crop"])
def test_tta_is_the_mean_of_the_views_softmax(tta):
    torch.manual_seed(0)
    size = 8 if tta == "flip" else 10
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3)).eval()
    images, labels = torch.randn(12, 3, size, size), torch.randint(0, 3, (12,))
    loader = [(images[:7], labels[:7], 0), (images[7:], labels[7:], 0)]
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    result = evaluate(model, loader, 3, info, nullcontext, tta=tta, crop_size=8)

    # the views by hand: corners, center and mirrors
    crops = [images[..., :8, :8], images[..., :8, -8:], images[..., -8:, :8], images[..., -8:, -8:],
             images[..., 1:9, 1:9]]
    views = {"flip": [images, images.flip(-1)], "five-crop": crops,
             "ten-crop": crops + [c.flip(-1) for c in crops]}[tta]
    assert [v.shape for v in tta_views(images, tta, 8)] == [v.shape for v in views]
    with torch.no_grad():
        loss, predicted = _loss_of_views(model, images, labels, views)
        single = model(images[..., 1:9, 1:9] if tta != "flip" else images).argmax(1)
    assert result.loss == pytest.approx(loss, rel=1e-5)
    assert result.top1 == pytest.approx(100 * (predicted == labels).float().mean().item())
    assert result.num_samples == 12
    assert not torch.equal(predicted, single) or tta == "flip"  # the views change predictions


@pytest.mark.slow
@pytest.mark.parametrize("tta", ["five-crop", "ten-crop"])
def test_tta_crops_through_validate(checkpoints, tmp_path, capsys, tta):
    plain = _validate(checkpoints[4], tmp_path / "plain")
    crops = _validate(checkpoints[4], tmp_path / tta, "--tta", tta)
    console = capsys.readouterr().out
    assert crops["tta"] == tta and crops["num_samples"] == plain["num_samples"]
    assert crops["loss"] != plain["loss"]
    assert f"TEST.TTA {tta}: crops of 32 px from the 36 px resize" in console


@pytest.mark.parametrize("crop_pct, resize", [("0.5", 64), ("1.0", 36)])
def test_crop_tta_reads_the_crop_pct_resize(tmp_path, crop_pct, resize):
    plan = resolve(tiny_cfg(tmp_path, "TEST.TTA", "five-crop", "DATA.CROP_PCT", crop_pct), training=False)
    assert f"crops of 32 px from the {resize} px resize" in " ".join(plan.notes)
    assert plan.datasets.val[0][0].shape[-2:] == (resize, resize)
    assert plan.cfg.data.crop_pct == float(crop_pct)  # the plan keeps the user's settings


def test_bad_tta_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["validate", "--tta", "crops"])
    assert exc.value.code == 2 and "--tta" in capsys.readouterr().err
