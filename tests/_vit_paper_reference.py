"""The paper code's ViT as plain tensor functions, independent of ``ecvit.models``.

``ZTX-100/Efficient_ViT_with_DW`` (``models/vit.py``) uses vit-pytorch's ViT with one
depth-wise shortcut per block. Stated here from its definition, over a state dict in its
own key layout:

- patches flattened as ``b c (h p1) (w p2) -> b (h w) (p1 p2 c)``, then a Linear;
- class token first, then ``pos_embedding`` added;
- per block ``i``: ``s = DWConv3x3(BN(GELU(patch tokens)))`` of the block input, zero at the
  class token; ``x = attn(LN(x)) + x``; ``x = ff(LN(x)) + x``; ``x = s + x``;
- attention: ``to_qkv`` (no bias) split into q, k, v, heads of ``dim_head``, softmax of
  ``q k^T / sqrt(dim_head)``, ``to_out.0``; feed-forward ``net.0`` -> GELU -> ``net.3``;
- head: ``mlp_head`` = LayerNorm then Linear on the class token. LayerNorm eps 1e-5.

Checked once against the official module itself (built outside this repository with
einops): identical logits for random weights, eval and training mode, at 224 and 48 px.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-5


def official_state_dict(dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int,
                        num_classes: int, img_size: int, patch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights (and BatchNorm statistics) under the official key names and shapes."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    inner = heads * dim_head
    grid = img_size // patch
    state = {
        "pos_embedding": rand(1, grid * grid + 1, dim, scale=1.0),
        "cls_token": rand(1, 1, dim, scale=1.0),
        "to_patch_embedding.1.weight": rand(dim, patch * patch * 3, scale=0.05),
        "to_patch_embedding.1.bias": rand(dim),
        "mlp_head.0.weight": 1 + rand(dim),
        "mlp_head.0.bias": rand(dim),
        "mlp_head.1.weight": rand(num_classes, dim),
        "mlp_head.1.bias": rand(num_classes),
    }
    for i in range(depth):
        block = f"transformer.layers.{i}."
        state.update({
            block + "0.norm.weight": 1 + rand(dim), block + "0.norm.bias": rand(dim),
            block + "0.fn.to_qkv.weight": rand(inner * 3, dim),
            block + "0.fn.to_out.0.weight": rand(dim, inner), block + "0.fn.to_out.0.bias": rand(dim),
            block + "1.norm.weight": 1 + rand(dim), block + "1.norm.bias": rand(dim),
            block + "1.fn.net.0.weight": rand(mlp_dim, dim), block + "1.fn.net.0.bias": rand(mlp_dim),
            block + "1.fn.net.3.weight": rand(dim, mlp_dim), block + "1.fn.net.3.bias": rand(dim),
            f"transformer.convs.{i}.weight": rand(dim, 1, 3, 3), f"transformer.convs.{i}.bias": rand(dim),
            f"transformer.batchnorms.{i}.weight": 1 + rand(dim),
            f"transformer.batchnorms.{i}.bias": rand(dim),
            f"transformer.batchnorms.{i}.running_mean": rand(dim),
            f"transformer.batchnorms.{i}.running_var": 0.5 + torch.rand(dim, generator=g),
            f"transformer.batchnorms.{i}.num_batches_tracked": torch.tensor(7),
        })
    return state


def _shortcut(s: dict[str, torch.Tensor], i: int, x: torch.Tensor, grid: int, training: bool) -> torch.Tensor:
    b, _, d = x.shape
    z = F.gelu(x[:, 1:].transpose(1, 2).reshape(b, d, grid, grid))
    bn = f"transformer.batchnorms.{i}."
    z = F.batch_norm(z, s[bn + "running_mean"].clone(), s[bn + "running_var"].clone(), s[bn + "weight"],
                     s[bn + "bias"], training=training, eps=EPS)
    z = F.conv2d(z, s[f"transformer.convs.{i}.weight"], s[f"transformer.convs.{i}.bias"], padding=1, groups=d)
    z = z.reshape(b, d, grid * grid).transpose(1, 2)
    return torch.cat([torch.zeros(b, 1, d), z], dim=1)


def _attention(s: dict[str, torch.Tensor], block: str, x: torch.Tensor, heads: int, dim_head: int) -> torch.Tensor:
    b, n, _ = x.shape
    q, k, v = F.linear(x, s[block + "fn.to_qkv.weight"]).chunk(3, dim=-1)
    q, k, v = (t.reshape(b, n, heads, dim_head).transpose(1, 2) for t in (q, k, v))
    attn = torch.softmax(q @ k.transpose(-1, -2) * dim_head ** -0.5, dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(b, n, heads * dim_head)
    return F.linear(out, s[block + "fn.to_out.0.weight"], s[block + "fn.to_out.0.bias"])


def _layer_norm(s: dict[str, torch.Tensor], prefix: str, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], s[prefix + "weight"], s[prefix + "bias"], eps=EPS)


def official_forward(s: dict[str, torch.Tensor], x: torch.Tensor, heads: int, dim_head: int, patch: int,
                     training: bool = False) -> torch.Tensor:
    """Logits of the official ViT with shortcuts; ``training`` uses batch BatchNorm statistics."""
    b, c, height, width = x.shape
    grid = height // patch
    patches = x.reshape(b, c, grid, patch, grid, patch).permute(0, 2, 4, 3, 5, 1).reshape(b, grid * grid, -1)
    x = F.linear(patches, s["to_patch_embedding.1.weight"], s["to_patch_embedding.1.bias"])
    x = torch.cat([s["cls_token"].expand(b, -1, -1), x], dim=1) + s["pos_embedding"]
    depth = len([k for k in s if k.endswith(".0.fn.to_qkv.weight")])
    for i in range(depth):
        shortcut = _shortcut(s, i, x, grid, training)
        block = f"transformer.layers.{i}."
        x = _attention(s, block + "0.", _layer_norm(s, block + "0.norm.", x), heads, dim_head) + x
        hidden = F.gelu(F.linear(_layer_norm(s, block + "1.norm.", x), s[block + "1.fn.net.0.weight"],
                                 s[block + "1.fn.net.0.bias"]))
        x = F.linear(hidden, s[block + "1.fn.net.3.weight"], s[block + "1.fn.net.3.bias"]) + x
        x = shortcut + x
    cls = _layer_norm(s, "mlp_head.0.", x[:, 0])
    return F.linear(cls, s["mlp_head.1.weight"], s["mlp_head.1.bias"])
