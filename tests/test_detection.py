"""``ecvit.detection``: every registered model as a torchvision detection backbone.

What is checked: each registered model yields maps ``"0"``-``"3"`` at strides 4/8/16/32 and
``"pool"``; the neck each family gets and where a missing stride comes from; ViTDet's simple
pyramid layout; one Faster / Mask R-CNN training step per family on a generated COCO-format
sample (finite losses, gradients in every backbone parameter); classification weights
loading into a backbone; bad arguments; the example script and the detection page's example.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _cli_helpers import ROOT, load_script
from test_model_contract import _cheap
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

import ecvit
from ecvit.detection import create_backbone
from ecvit.errors import UsageError
from ecvit.models.pyramid import ScaleLevels, SimpleFeaturePyramid

NAMES = [n for n in ecvit.list_models() if ecvit.models.model_entry(n).fn.__module__.startswith("ecvit.")]
WIDTH = 32  # pyramid width in these tests
# one small model per family for the training steps
TINY = {
    "ecvit_tiny": dict(depths=(1, 1)),
    "cvt_13": dict(depths=(1, 1, 1), embed_dims=(32, 64, 128), num_heads=(1, 2, 4)),
    "dws_vit_tiny_dw": dict(depth=2, embed_dim=64, num_heads=2),
    # Swin is built for one input size: the detector resizes every image to it (fixed_size)
    "dws_swin_tiny_dw": dict(depths=(2, 1, 1, 1), embed_dim=32, num_heads=(1, 2, 2, 4), img_size=(64, 128)),
}
DETECTOR_ARGS = {"dws_swin_tiny_dw": dict(fixed_size=(128, 64))}  # (width, height), torchvision's order


@pytest.fixture(scope="module")
def example():
    return load_script("examples/detection.py", "ecvit_detection_example")


@pytest.fixture(scope="module")
def coco(example, tmp_path_factory):
    folder = tmp_path_factory.mktemp("coco")
    example.write_coco_sample(folder)
    return example.load_coco(folder)


def _small_heads(num_classes: int, mask: bool) -> dict:
    """Narrow detector heads and few sampled boxes: the same code paths, a fraction of the time."""
    heads = dict(box_head=TwoMLPHead(WIDTH * 7 * 7, 64), box_predictor=FastRCNNPredictor(64, num_classes),
                 rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100, rpn_batch_size_per_image=64,
                 box_batch_size_per_image=32)
    if mask:
        heads.update(mask_head=MaskRCNNHeads(WIDTH, (WIDTH, WIDTH), 1),
                     mask_predictor=MaskRCNNPredictor(WIDTH, WIDTH, num_classes))
    return heads


@pytest.mark.parametrize("name", NAMES)
def test_every_model_gives_named_maps_at_the_pyramid_strides(name):
    # img_size: the input is the size the model is built for (Swin's window masks need it)
    backbone = create_backbone(name, out_channels=WIDTH, img_size=(64, 128), **_cheap(name)).eval()
    own = [int(info["reduction"]) for info in backbone.body.model.feature_info]
    assert backbone.pyramid == ("simple" if len(set(own)) == 1 else "fpn")
    assert backbone.out_channels == WIDTH and backbone.featmap_names == ["0", "1", "2", "3"]
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 64, 128))
    assert list(out) == ["0", "1", "2", "3", "pool"]
    for (key, y), stride in zip(out.items(), (4, 8, 16, 32, 64)):
        assert y.shape == (1, WIDTH, math.ceil(64 / stride), math.ceil(128 / stride)), key
    if backbone.pyramid == "fpn":  # every own map on a pyramid stride is used, as it is
        used = backbone.body.feature_info.reduction()
        assert set(used) == {s for s in own if s in (4, 8, 16, 32)}


def test_each_family_gets_the_documented_levels():
    ecv = create_backbone("ecvit_small", out_channels=WIDTH, depths=(1, 1, 0))
    assert ecv.body.feature_info.reduction() == [4, 8, 32]  # the 128 merging stage is pruned
    assert len(ecv.body.model.stages) == 2
    cvt = create_backbone("cvt_13", out_channels=WIDTH, **TINY["cvt_13"])
    assert cvt.body.feature_info.reduction() == [4, 8, 16]
    vit = create_backbone("dws_vit_tiny_dw", out_channels=WIDTH, **TINY["dws_vit_tiny_dw"])
    assert vit.pyramid == "simple" and isinstance(vit.neck, SimpleFeaturePyramid)
    assert vit.body.out_indices == [1]  # the last block
    # missing strides: ECViT's 16 pooled from 8, CvT's 32 pooled from 16; the rest as they are
    maps = [torch.randn(1, c, 40 // s, 40 // s) for c, s in zip((8, 16, 24), (4, 8, 32))]
    levels = ScaleLevels([8, 16, 24], [4, 8, 32], (4, 8, 16, 32))
    out = levels(maps)
    assert out[0] is maps[0] and out[1] is maps[1] and out[3] is maps[2]
    torch.testing.assert_close(out[2], F.max_pool2d(maps[1], 2, ceil_mode=True), rtol=0, atol=0)
    assert levels.channels == (8, 16, 16, 24)
    cvt_levels = ScaleLevels([8, 16, 24], [4, 8, 16], (4, 8, 16, 32))
    assert cvt_levels.sources == (0, 1, 2, 2) and isinstance(cvt_levels.ops[3], nn.MaxPool2d)


def test_either_neck_on_any_family_and_other_own_strides():
    x = torch.randn(1, 3, 64, 64)
    shapes = [(1, WIDTH, 64 // s, 64 // s) for s in (4, 8, 16, 32, 64)]
    cvt = create_backbone("cvt_13", out_channels=WIDTH, pyramid="simple", **TINY["cvt_13"]).eval()
    assert cvt.body.feature_info.reduction() == [16]  # from its last map, as ViTDet
    vit = create_backbone("dws_vit_tiny_dw", out_channels=WIDTH, pyramid="fpn", **TINY["dws_vit_tiny_dw"]).eval()
    assert [type(op) for op in vit.levels.ops][2:] == [nn.Identity, nn.MaxPool2d]
    ecv = create_backbone("ecvit_tiny", out_channels=WIDTH, depths=(1, 1, 1), embed_dims=(16, 16, 16),
                          num_heads=(1, 1, 1), mlp_ratios=(1.0, 1.0, 1.0), merge_kernel=2, merge_stride=2).eval()
    assert ecv.body.feature_info.reduction() == [4, 8, 16, 32]
    assert all(isinstance(op, nn.Identity) for op in ecv.levels.ops)
    with torch.no_grad():
        for backbone in (cvt, vit, ecv):
            assert [tuple(y.shape) for y in backbone(x).values()] == shapes


def test_simple_pyramid_is_vitdets_layout():
    sfp = SimpleFeaturePyramid(64, 16, out_channels=WIDTH)
    up4, up2, same, down = sfp.scales.ops
    assert [type(m) for m in up4] == [nn.ConvTranspose2d, type(up4[1]), nn.GELU, nn.ConvTranspose2d]
    assert [m.out_channels for m in (up4[0], up4[3])] == [32, 16]
    assert len(up2) == 1 and up2[0].out_channels == 32 and isinstance(same, nn.Identity)
    assert isinstance(down, nn.MaxPool2d) and down.kernel_size == 2
    assert [head[0].in_channels for head in sfp.outputs] == [16, 32, 64, 64]
    x = torch.randn(1, 64, 6, 5)
    out = sfp(x)
    assert [tuple(y.shape[-2:]) for y in out] == [(24, 20), (12, 10), (6, 5), (3, 3)]
    torch.testing.assert_close(out[2], sfp.outputs[2](x))


@pytest.mark.parametrize("name,detector", [("ecvit_tiny", "faster"), ("cvt_13", "mask"), ("dws_vit_tiny_dw", "mask"),
                                           ("dws_swin_tiny_dw", "mask")])
def test_one_training_step_per_family(example, coco, name, detector):
    samples, classes = coco
    backbone = create_backbone(name, out_channels=WIDTH, **TINY[name])
    model = example.build_detector(backbone, detector, None, min_size=96, max_size=128,
                                   **_small_heads(len(classes) + 1, detector == "mask"), **DETECTOR_ARGS.get(name, {}))
    before = [p.detach().clone() for p in backbone.body.parameters()]
    (losses,) = example.train(model, samples, steps=1)
    assert ("loss_mask" in losses) == (detector == "mask") and "loss_objectness" in losses
    assert all(math.isfinite(v) for v in losses.values()), losses
    # the model keeps no unused layer and is trained (a neck level may get no gradient in one
    # step: few anchors on the coarsest levels are sampled, and the boxes are pooled from one level)
    for (key, p), old in zip(backbone.body.named_parameters(), before):
        assert p.grad is not None and p.grad.abs().sum() > 0, key
        assert not torch.equal(p.detach(), old), key


def test_own_levels_only_with_matching_anchors(example, coco):
    samples, classes = coco
    backbone = create_backbone("cvt_13", out_channels=WIDTH, strides=(4, 8, 16), **TINY["cvt_13"])
    assert all(isinstance(op, nn.Identity) for op in backbone.levels.ops)
    levels = len(backbone.featmap_names) + 1  # + "pool"
    anchors = AnchorGenerator(tuple((16 * 2 ** i,) for i in range(levels)), ((0.5, 1.0, 2.0),) * levels)
    model = example.build_detector(backbone, "faster", None, 96, 128, rpn_anchor_generator=anchors,
                                   box_roi_pool=MultiScaleRoIAlign(backbone.featmap_names, 7, 2),
                                   **_small_heads(len(classes) + 1, mask=False))
    (losses,) = example.train(model, samples, steps=1)
    assert all(math.isfinite(v) for v in losses.values())


def test_classification_weights_load_into_the_backbone(tmp_path):
    trained = ecvit.create_model("ecvit_tiny", num_classes=10, **TINY["ecvit_tiny"])
    torch.save(trained.state_dict(), tmp_path / "weights.pth")
    backbone = create_backbone("ecvit_tiny", checkpoint_path=tmp_path / "weights.pth", **TINY["ecvit_tiny"])
    own = trained.state_dict()
    loaded = backbone.body.model.state_dict()
    assert loaded and all(torch.equal(v, own[k]) for k, v in loaded.items())


def test_coco_reading(example, tmp_path):
    example.write_coco_sample(tmp_path, num_images=1)
    coco = json.loads((tmp_path / "instances.json").read_text())
    for ann in coco["annotations"]:
        ann["category_id"] = {1: 7, 2: 3}[ann["category_id"]]  # ids need not be 1..K
    coco["categories"] = [dict(id=7, name="square"), dict(id=3, name="triangle")]
    crowd = dict(coco["annotations"][0], id=99, iscrowd=1, segmentation=dict(counts="x", size=[96, 128]))
    coco["annotations"].append(crowd)
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    [(image, target)], names = example.load_coco(tmp_path)
    assert names == ["triangle", "square"] and target["labels"].tolist() == [2, 1]
    assert image.shape == (3, 96, 128) and 0 <= image.min() and image.max() <= 1
    x, y, w, h = coco["annotations"][0]["bbox"]
    assert target["boxes"][0].tolist() == [x, y, x + w, y + h]
    square = target["masks"][0]
    assert square.dtype == torch.uint8 and square.sum() == 31 * 31  # PIL fills the outline too
    assert square[y:y + h + 1, x:x + w + 1].all()


def test_bad_arguments_are_one_line_errors(example, tmp_path, capsys):
    for kwargs, words in ((dict(pyramid="bifpn"), "pyramid must be"), (dict(strides=(8, 4)), "increasing"),
                          (dict(strides=(3, 6)), "can be resampled to stride 3"),
                          (dict(out_channels=0), "out_channels")):
        with pytest.raises(UsageError, match=words):
            create_backbone("dws_vit_tiny", **kwargs)
    with pytest.raises(UsageError, match="unknown model"):
        create_backbone("vit_tinny")
    with pytest.raises(SystemExit) as exc:
        example.main(["--data", str(tmp_path)])
    assert exc.value.code == 2 and "instances.json does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_example_script_trains_on_coco_folder(example, tmp_path, capsys):
    example.write_coco_sample(tmp_path / "coco")
    argv = ["--model", "ecvit_tiny", "--detector", "faster", "--data", str(tmp_path / "coco"), "--steps", "2",
            "--batch-size", "1", "--min-size", "96", "--max-size", "128", "--out-channels", "64"]
    assert example.main(argv) == 0
    assert re.search(r"step 2: loss_classifier=\S+ loss_box_reg=\S+ loss_objectness=", capsys.readouterr().out)


@pytest.mark.slow
def test_docs_detection_example_runs():
    text = (ROOT / "docs" / "detection.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, flags=re.S)[1]
    scope: dict = {}
    exec(compile(code, "docs/detection.md", "exec"), scope)
    assert all(math.isfinite(v.item()) for v in scope["losses"].values())
    assert {"loss_mask", "loss_box_reg"} <= set(scope["losses"])
