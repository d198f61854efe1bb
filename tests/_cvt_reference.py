"""A small, independent re-statement of the official CvT forward pass (microsoft/CvT,
``lib/models/cls_cvt.py``), written from the facts in DESIGN.md section 3, as plain
functions over an official-layout state dict and an official ``MODEL.SPEC`` mapping.

It shares no code with ``ecvit.models.cvt``: the reference a SPEC-built model is compared
with. Eval mode only (BatchNorm running statistics, no dropout). Two points where the
official code cannot run are stated as what it evidently means: ``QKV_PROJ_METHOD linear``
(its forward never defines q/k/v) uses the tokens themselves, and the head does not squeeze
the batch dimension away at batch 1.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

LN_EPS = 1e-5
BN_EPS = 1e-5
QUICK_GELU = 1.702


def official_shapes(spec: dict[str, Any], num_classes: int, in_chans: int = 3) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of the official model for ``spec`` and its tensor shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(spec["NUM_STAGES"]):
        p, dim = f"stage{i}.", spec["DIM_EMBED"][i]
        k = spec["PATCH_SIZE"][i]
        shapes[p + "patch_embed.proj.weight"] = (dim, in_chans, k, k)
        shapes[p + "patch_embed.proj.bias"] = (dim,)
        shapes[p + "patch_embed.norm.weight"] = shapes[p + "patch_embed.norm.bias"] = (dim,)
        if spec["CLS_TOKEN"][i]:
            shapes[p + "cls_token"] = (1, 1, dim)
        hidden = int(dim * spec["MLP_RATIO"][i])
        method, kq = spec["QKV_PROJ_METHOD"][i], spec["KERNEL_QKV"][i]
        for j in range(spec["DEPTH"][i]):
            b = f"{p}blocks.{j}."
            for n in ("norm1", "norm2"):
                shapes[b + n + ".weight"] = shapes[b + n + ".bias"] = (dim,)
            for q in "qkv":
                if method == "dw_bn":  # (the 'avg' method has no parameters; q is linear there)
                    c = f"{b}attn.conv_proj_{q}."
                    shapes[c + "conv.weight"] = (dim, 1, kq, kq)
                    for t in ("weight", "bias", "running_mean", "running_var"):
                        shapes[c + "bn." + t] = (dim,)
                    shapes[c + "bn.num_batches_tracked"] = ()
                shapes[f"{b}attn.proj_{q}.weight"] = (dim, dim)
                if spec["QKV_BIAS"][i]:
                    shapes[f"{b}attn.proj_{q}.bias"] = (dim,)
            shapes[b + "attn.proj.weight"], shapes[b + "attn.proj.bias"] = (dim, dim), (dim,)
            shapes[b + "mlp.fc1.weight"], shapes[b + "mlp.fc1.bias"] = (hidden, dim), (hidden,)
            shapes[b + "mlp.fc2.weight"], shapes[b + "mlp.fc2.bias"] = (dim, hidden), (dim,)
        in_chans = dim
    last = spec["DIM_EMBED"][-1]
    shapes["norm.weight"] = shapes["norm.bias"] = (last,)
    shapes["head.weight"], shapes["head.bias"] = (num_classes, last), (num_classes,)
    return shapes


class Reader:
    """The state dict, recording which keys the forward pass read."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self.state, self.read = state, set()

    def __call__(self, key: str) -> torch.Tensor | None:
        if key not in self.state:
            return None
        self.read.add(key)
        return self.state[key].float()


def _layer_norm(x: torch.Tensor, w: Reader, name: str) -> torch.Tensor:
    return F.layer_norm(x.float(), x.shape[-1:], w(name + ".weight"), w(name + ".bias"), LN_EPS)


def _project(grid: torch.Tensor, w: Reader, name: str, method: str, kernel: int, stride: int,
             padding: int) -> torch.Tensor:
    """One of q/k/v: conv + BN ('dw_bn'), average pooling ('avg') or nothing, as tokens."""
    if method == "dw_bn":
        y = F.conv2d(grid, w(name + ".conv.weight"), None, stride, padding, groups=grid.shape[1])
        y = F.batch_norm(y, w(name + ".bn.running_mean"), w(name + ".bn.running_var"),
                         w(name + ".bn.weight"), w(name + ".bn.bias"), False, 0.0, BN_EPS)
    elif method == "avg":
        y = F.avg_pool2d(grid, kernel, stride, padding, ceil_mode=True)
    else:
        y = grid
    return y.flatten(2).transpose(1, 2)


def _attention(x: torch.Tensor, h: int, wdt: int, w: Reader, b: str, spec: dict[str, Any], i: int) -> torch.Tensor:
    cls = bool(spec["CLS_TOKEN"][i])
    heads, method, kernel = spec["NUM_HEADS"][i], spec["QKV_PROJ_METHOD"][i], spec["KERNEL_QKV"][i]
    bsz, _, dim = x.shape
    front, tokens = (x[:, :1], x[:, 1:]) if cls else (None, x)
    grid = tokens.transpose(1, 2).reshape(bsz, dim, h, wdt)
    q_method = "linear" if method == "avg" else method
    q = _project(grid, w, b + "attn.conv_proj_q", q_method, kernel, spec["STRIDE_Q"][i], spec["PADDING_Q"][i])
    k = _project(grid, w, b + "attn.conv_proj_k", method, kernel, spec["STRIDE_KV"][i], spec["PADDING_KV"][i])
    v = _project(grid, w, b + "attn.conv_proj_v", method, kernel, spec["STRIDE_KV"][i], spec["PADDING_KV"][i])
    if cls:
        q, k, v = (torch.cat((front, t), dim=1) for t in (q, k, v))
    q, k, v = (F.linear(t, w(f"{b}attn.proj_{n}.weight"), w(f"{b}attn.proj_{n}.bias"))
               for t, n in ((q, "q"), (k, "k"), (v, "v")))
    q, k, v = (t.reshape(bsz, t.shape[1], heads, dim // heads).transpose(1, 2) for t in (q, k, v))
    scores = torch.einsum("bhld,bhtd->bhlt", q, k) * dim ** -0.5  # the whole width, not the head's
    out = torch.einsum("bhlt,bhtd->bhld", scores.softmax(dim=-1), v)
    out = out.transpose(1, 2).reshape(bsz, -1, dim)
    return F.linear(out, w(b + "attn.proj.weight"), w(b + "attn.proj.bias"))


def _mlp(x: torch.Tensor, w: Reader, b: str) -> torch.Tensor:
    hidden = F.linear(x, w(b + "mlp.fc1.weight"), w(b + "mlp.fc1.bias"))
    hidden = hidden * torch.sigmoid(QUICK_GELU * hidden)
    return F.linear(hidden, w(b + "mlp.fc2.weight"), w(b + "mlp.fc2.bias"))


def official_forward(state: dict[str, torch.Tensor], spec: dict[str, Any], images: torch.Tensor,
                     grids: list[tuple[int, int]] | None = None) -> tuple[torch.Tensor, set[str]]:
    """Logits of the official model with weights ``state`` (eval mode), and the keys read.

    ``grids`` (optional) collects each stage's token grid ``(h, w)``.
    """
    w = Reader(state)
    x, cls_out = images.float(), None
    for i in range(spec["NUM_STAGES"]):
        p = f"stage{i}."
        x = F.conv2d(x, w(p + "patch_embed.proj.weight"), w(p + "patch_embed.proj.bias"),
                     spec["PATCH_STRIDE"][i], spec["PATCH_PADDING"][i])
        bsz, dim, h, wdt = x.shape
        if grids is not None:
            grids.append((h, wdt))
        t = _layer_norm(x.flatten(2).transpose(1, 2), w, p + "patch_embed.norm")
        if spec["CLS_TOKEN"][i]:
            t = torch.cat((w(p + "cls_token").expand(bsz, -1, -1), t), dim=1)
        for j in range(spec["DEPTH"][i]):
            b = f"{p}blocks.{j}."
            t = t + _attention(_layer_norm(t, w, b + "norm1"), h, wdt, w, b, spec, i)
            t = t + _mlp(_layer_norm(t, w, b + "norm2"), w, b)
        if spec["CLS_TOKEN"][i]:
            cls_out, t = t[:, :1], t[:, 1:]
        x = t.transpose(1, 2).reshape(bsz, dim, h, wdt)
    if spec["CLS_TOKEN"][-1]:
        features = _layer_norm(cls_out, w, "norm")[:, 0]
    else:
        features = _layer_norm(x.flatten(2).transpose(1, 2), w, "norm").mean(dim=1)
    return F.linear(features, w("head.weight"), w("head.bias")), w.read
