"""An independent functional re-statement of the depth-wise shortcut paper's CaiT forward pass.

Written from the paper code's ``models/cait.py`` (vit-pytorch layout), in its state-dict key
names, with explicit per-step tensors: patch Linear over (row, column, channel) patches, positions,
patch blocks (talking heads, LayerScale) each followed by ``GELU -> BN -> DWConv3x3`` of its input,
then class-attention blocks on ``[LN(cls); patches]`` and ``mlp_head``. Eval mode (BN statistics).
"""

import torch
import torch.nn.functional as F


def official_state(depth: int, cls_depth: int, dim: int, heads: int, dim_head: int, mlp: int, patch: int,
                   img: int, classes: int, dw: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the official key names and shapes (BN statistics non-trivial)."""
    g = torch.Generator().manual_seed(seed)
    inner, n = heads * dim_head, (img // patch) ** 2

    def r(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    sd = {"pos_embedding": r(1, n, dim, scale=1.0), "cls_token": r(1, 1, dim, scale=1.0),
          "to_patch_embedding.1.weight": r(dim, 3 * patch * patch, scale=0.05), "to_patch_embedding.1.bias": r(dim)}
    for t, count in (("patch_transformer", depth), ("cls_transformer", cls_depth)):
        for i in range(count):
            a, f = f"{t}.layers.{i}.0.", f"{t}.layers.{i}.1."
            sd.update({a + "scale": r(1, 1, dim, scale=0.5), a + "fn.norm.weight": 1 + r(dim), a + "fn.norm.bias": r(dim),
                       a + "fn.fn.mix_heads_pre_attn": r(heads, heads, scale=1.0),
                       a + "fn.fn.mix_heads_post_attn": r(heads, heads, scale=1.0),
                       a + "fn.fn.to_q.weight": r(inner, dim), a + "fn.fn.to_kv.weight": r(2 * inner, dim),
                       a + "fn.fn.to_out.0.weight": r(dim, inner), a + "fn.fn.to_out.0.bias": r(dim),
                       f + "scale": r(1, 1, dim, scale=0.5), f + "fn.norm.weight": 1 + r(dim), f + "fn.norm.bias": r(dim),
                       f + "fn.fn.net.0.weight": r(mlp, dim), f + "fn.fn.net.0.bias": r(mlp),
                       f + "fn.fn.net.3.weight": r(dim, mlp), f + "fn.fn.net.3.bias": r(dim)})
    if dw:
        for i in range(depth):
            c, b = f"patch_transformer.convs.{i}.", f"patch_transformer.batchnorms.{i}."
            sd.update({c + "weight": r(dim, 1, 3, 3, scale=0.3), c + "bias": r(dim), b + "weight": 1 + r(dim),
                       b + "bias": r(dim), b + "running_mean": r(dim), b + "running_var": 0.5 + r(dim).abs(),
                       b + "num_batches_tracked": torch.tensor(7)})
    sd.update({"mlp_head.0.weight": 1 + r(dim), "mlp_head.0.bias": r(dim), "mlp_head.1.weight": r(classes, dim),
               "mlp_head.1.bias": r(classes)})
    return sd


def _attention(sd, p, x, context, heads):
    kv_in = x if context is None else torch.cat([x, context], dim=1)
    q = x @ sd[p + "to_q.weight"].T
    k, v = (kv_in @ sd[p + "to_kv.weight"].T).chunk(2, dim=-1)
    b, n, m = x.shape[0], x.shape[1], kv_in.shape[1]
    d = q.shape[-1] // heads
    q, k, v = (t.reshape(b, -1, heads, d).permute(0, 2, 1, 3) for t in (q, k, v))
    logits = q @ k.transpose(-1, -2) * d ** -0.5  # [b, h, n, m]
    logits = (logits.permute(0, 2, 3, 1) @ sd[p + "mix_heads_pre_attn"]).permute(0, 3, 1, 2)
    weights = logits.softmax(dim=-1)
    weights = (weights.permute(0, 2, 3, 1) @ sd[p + "mix_heads_post_attn"]).permute(0, 3, 1, 2)
    out = (weights @ v).permute(0, 2, 1, 3).reshape(b, n, heads * d)
    return out @ sd[p + "to_out.0.weight"].T + sd[p + "to_out.0.bias"]


def _transformer(sd, t, count, x, heads, context=None, grid=None):
    dim = x.shape[-1]
    for i in range(count):
        a, f = f"{t}.layers.{i}.0.", f"{t}.layers.{i}.1."
        block_in = x
        h = F.layer_norm(x, (dim,), sd[a + "fn.norm.weight"], sd[a + "fn.norm.bias"])
        x = _attention(sd, a + "fn.fn.", h, context, heads) * sd[a + "scale"] + x
        h = F.layer_norm(x, (dim,), sd[f + "fn.norm.weight"], sd[f + "fn.norm.bias"])
        h = F.gelu(h @ sd[f + "fn.fn.net.0.weight"].T + sd[f + "fn.fn.net.0.bias"])
        x = (h @ sd[f + "fn.fn.net.3.weight"].T + sd[f + "fn.fn.net.3.bias"]) * sd[f + "scale"] + x
        if grid is not None:
            c, bn = f"{t}.convs.{i}.", f"{t}.batchnorms.{i}."
            z = F.gelu(block_in).reshape(x.shape[0], grid, grid, dim).permute(0, 3, 1, 2)
            z = F.batch_norm(z, sd[bn + "running_mean"], sd[bn + "running_var"], sd[bn + "weight"], sd[bn + "bias"],
                             training=False, eps=1e-5)
            z = F.conv2d(z, sd[c + "weight"], sd[c + "bias"], padding=1, groups=dim)
            x = z.permute(0, 2, 3, 1).reshape(x.shape) + x
    return x


def official_logits(sd: dict[str, torch.Tensor], img: torch.Tensor, depth: int, cls_depth: int, heads: int,
                    patch: int) -> torch.Tensor:
    """The official CaiT's eval-mode logits for ``img`` under the official-layout weights ``sd``."""
    b, c, hh, ww = img.shape
    g = hh // patch
    patches = img.reshape(b, c, g, patch, g, patch).permute(0, 2, 4, 3, 5, 1).reshape(b, g * g, patch * patch * c)
    x = patches @ sd["to_patch_embedding.1.weight"].T + sd["to_patch_embedding.1.bias"]
    x = x + sd["pos_embedding"][:, : g * g]
    dw = "patch_transformer.convs.0.weight" in sd
    x = _transformer(sd, "patch_transformer", depth, x, heads, grid=g if dw else None)
    cls = sd["cls_token"].expand(b, -1, -1)
    cls = _transformer(sd, "cls_transformer", cls_depth, cls, heads, context=x)
    dim = x.shape[-1]
    y = F.layer_norm(cls[:, 0], (dim,), sd["mlp_head.0.weight"], sd["mlp_head.0.bias"])
    return y @ sd["mlp_head.1.weight"].T + sd["mlp_head.1.bias"]
