"""Class-token attention maps (ecvit.attention_map) on one small image, for every family."""

from __future__ import annotations

import pytest
import timm
import torch
from PIL import Image

from ecvit.attention_map import class_token_attention, save_attention_png

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # torchvision's FX train/eval node note

IMG = 64
# name, cheap kwargs, expected map grids at 64 px
CASES = [
    ("dws_vit_tiny", dict(depth=3), [(4, 4)] * 3),  # one map per block on the 4x4 patch grid
    ("cvt_13", dict(depths=(1, 1, 2)), [(2, 2)]),  # last stage only (class token), stride-2 keys of 4x4
    ("ecvit_tiny", dict(depths=(1, 1)), [(8, 8), (2, 2)]),  # 8x8 grid: padded 7x7 windows
    ("ecvit_small", dict(depths=(1, 1, 0)), [(8, 8), (2, 2)]),  # the depth-0 stage has no attention
]


def _image() -> torch.Tensor:
    """A small structured picture (a bright square on a gradient), normalised like a model input."""
    y, x = torch.meshgrid(torch.linspace(0, 1, IMG), torch.linspace(0, 1, IMG), indexing="ij")
    img = torch.stack([x, y, 1 - x]) * 0.5
    img[:, 20:40, 24:44] = 1.0
    return (img - 0.45) / 0.25


@pytest.mark.parametrize("name, kwargs, grids", CASES)
def test_maps_have_the_key_grids_and_sum_to_at_most_one(name, kwargs, grids):
    torch.manual_seed(0)
    model = timm.create_model(name, img_size=IMG, **kwargs).train()
    maps = class_token_attention(model, _image())
    assert [tuple(m.shape) for m in maps] == grids
    for m in maps:
        assert m.dtype == torch.float32 and (m >= 0).all()
        assert 0.05 < m.sum().item() <= 1 + 1e-5
    # the model is left as it was: training mode, fused attention
    assert model.training
    assert all(m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))


def test_vit_maps_are_the_class_token_rows_of_the_attention():
    """Reference: recompute each block's softmax(q k^T / sqrt(d)) from its input."""
    torch.manual_seed(0)
    model = timm.create_model("dws_vit_tiny", img_size=IMG, depth=2).eval()
    inputs = []
    for block in model.blocks:
        block.attn.register_forward_pre_hook(lambda mod, args: inputs.append(args[0]))
    image = _image()
    maps = class_token_attention(model, image)
    inputs.clear()
    with torch.no_grad():
        model(image[None])
    for attn_in, block, got in zip(inputs, model.blocks, maps):
        qkv = block.attn.qkv(attn_in).unflatten(-1, (3, 3, 64)).permute(2, 0, 3, 1, 4)
        weights = (qkv[0] @ qkv[1].transpose(-2, -1) * 64**-0.5).softmax(-1)
        expected = weights[0, :, 0, 1:].mean(0).reshape(4, 4)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_ecvit_single_window_map_is_the_window_softmax_row():
    """A 7x7 grid is one window: the map is the class row of that window's softmax (weight 1)."""
    torch.manual_seed(0)
    model = timm.create_model("ecvit_tiny", img_size=56, depths=(1, 1)).eval()  # 56 px -> 7x7 tokens
    image = torch.nn.functional.interpolate(_image()[None], size=(56, 56), mode="bilinear")[0]
    first = class_token_attention(model, image)[0]
    assert first.shape == (7, 7)
    cls_to_self = 1 - first.sum().item()
    assert 0 < cls_to_self < 1


def test_one_image_at_a_time():
    model = timm.create_model("dws_vit_tiny", img_size=IMG, depth=1)
    with pytest.raises(ValueError, match="one image"):
        class_token_attention(model, torch.randn(2, 3, IMG, IMG))


@pytest.mark.parametrize("as_pil", [False, True])
def test_png_is_written(tmp_path, as_pil):
    torch.manual_seed(0)
    model = timm.create_model("ecvit_tiny", img_size=IMG, depths=(1, 1))
    image = _image()
    maps = class_token_attention(model, image)
    shown = image
    if as_pil:
        pixels = ((image - image.min()) / (image.max() - image.min()) * 255).byte().permute(1, 2, 0).numpy()
        shown = Image.fromarray(pixels)
    path = save_attention_png(maps, shown, tmp_path / "out" / "attention.png")
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as png:
        assert png.format == "PNG" and png.width > png.height  # image plus one panel per map, side by side
