"""ViT with depth-wise convolution shortcuts (Zhang et al. 2024, arXiv 2407.19394).

The plain model is the DeiT/timm ViT (pre-norm blocks, LayerNorm eps 1e-6, GELU MLP, qkv
bias, class token, learnable absolute positional embedding), so ``vit_tiny`` has the
same parameters and state-dict keys as timm's ``deit_tiny_patch16_224``.

The paper's addition (Sec. 3) is a shortcut that bypasses whole transformer blocks::

    DW(x)  = DWConv_k(BN(GELU(patch tokens of x)))    on the 2-D patch-token grid
    out    = Blocks(x) + [0; DW(x)]                    (class-token position gets zeros)

``dw_span=k`` lets one shortcut bypass ``k`` consecutive blocks (the input of the first
block feeds it, its output is added to the output of the last one) and
``dw_kernels=(3, 5, 7)`` sums parallel modules with different kernel sizes over the same
span, each with its own BatchNorm and convolution (the GELU is shared, as it has no
parameters and sees the same input). ``depth`` must be a multiple of ``dw_span``.

With class-token pooling the last shortcut only changes the final patch tokens, so it
matters for dense features (``forward_intermediates``) but not for the logits; it is kept
because the paper counts it (ViT-Tiny: 12 modules, 27,648 parameters).

Two sets of names: ``vit_tiny``/``vit_small`` and their ``_dw`` are timm-compatible (DeiT's
layout and init, timm/DeiT weights load), while ``vit_tiny_paper``/``vit_small_paper`` and
their ``_dw`` are the network of the paper's code (vit-pytorch's ViT: no qkv bias, LayerNorm
eps 1e-5, heads of 64 channels, PyTorch's default init with ``randn`` positions and class
token, weight decay on both), whose weights load through :func:`checkpoint_filter_fn`. With
the shortcut and 10 classes they have 5,547,082 (Tiny) and 21,710,986 (Small) parameters,
as the paper's code builds them; the DeiT ones have the qkv bias on top (+6,912 on Tiny).
"""

import re
from typing import Any, Sequence

import torch
import torch.fx
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import (DropPath, Mlp, PatchEmbed, register_notrace_function, to_2tuple,
                         resample_abs_pos_embed, trunc_normal_, use_fused_attn)
from timm.models import build_model_with_cfg, checkpoint, generate_default_cfgs
from timm.models._features import feature_take_indices
from torch import nn

from ecvit.models.layers import GLOBAL_POOLS, img_size_cfg_overlay, split_heads, tokens_to_grid
from ecvit.models.registry import register_model

__all__ = ["Attention", "Block", "DWBranch", "DWShortcut", "VisionTransformerDW",
           "checkpoint_filter_fn"]


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (ViT, Dosovitskiy et al. Eq. 2).

    ``fused_attn`` (timm's switch, on by default) picks SDPA; off, the attention weights are
    computed explicitly (``attn.softmax``), which is what ``timm.utils.AttentionExtract`` reads.
    ``head_dim`` (None: ``dim // num_heads``) sets the width of each head, so the attention
    works in ``num_heads * head_dim`` channels (vit-pytorch's ``dim_head``).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, head_dim: int | None = None) -> None:
        super().__init__()
        if head_dim is None:
            if dim % num_heads:
                raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
            head_dim = dim // num_heads
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = head_dim ** -0.5
        self.fused_attn = use_fused_attn()
        inner = num_heads * head_dim
        self.qkv = nn.Linear(dim, inner * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(0.0)  # no attention dropout (DeiT); named for timm's hooks
        self.proj = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = split_heads(self.qkv(x), 3, self.num_heads)
        x = self.attend(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``softmax(q k^T / sqrt(d)) v`` per head (ViT Eq. 2)."""
        if self.fused_attn:
            return F.scaled_dot_product_attention(q, k, v)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        attn = self.attn_drop(attn)
        return attn @ v

    def class_token_map(self, attn: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Class token's attention weights (``[B, heads, N, N]``) over the patches: ``[B, height, width]``.

        Averaged over heads.
        """
        return attn[:, :, 0, 1:].mean(dim=1).reshape(attn.shape[0], height, width)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + MSA(LN(x))`` then ``x + MLP(LN(x))``.

    Parameter names match timm's ViT ``Block`` so timm/DeiT weights load unchanged.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 qkv_bias: bool = True, head_dim: int | None = None, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, head_dim)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class DWBranch(nn.Module):
    """One kernel of the shortcut: BatchNorm2d then a depthwise ``k x k`` conv with bias (Sec. 3)."""

    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(dim)
        self.conv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(z))


class DWShortcut(nn.Module):
    """The depth-wise shortcut of Zhang et al. (Sec. 3): GELU -> BN -> DWConv over the patch grid.

    Several kernels give parallel branches whose outputs are summed (the paper's multi-kernel
    variant). Returns the update for the patch tokens only, ``[B, H*W, C]``.
    """

    def __init__(self, dim: int, kernels: Sequence[int] = (3,)) -> None:
        super().__init__()
        self.act = nn.GELU()
        self.branches = nn.ModuleList(DWBranch(dim, k) for k in kernels)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        # GELU on the sliced patch tokens makes the one necessary copy; the [B, C, H, W] view
        # of it is channels-last, which the BN and depthwise conv take without copying.
        z = tokens_to_grid(self.act(x[:, 1:]), grid[0], grid[1])
        return self.forward_branches(z).flatten(2).transpose(1, 2)

    def forward_branches(self, z: torch.Tensor) -> torch.Tensor:
        """The summed branches on an activated ``[B, C, H, W]`` map; subclasses for other token
        layouts (Swin's ``[B, H, W, C]`` maps) share it. ``ecvit.models.speed.fuse`` folds
        them into one conv."""
        out = self.branches[0](z)
        for i, branch in enumerate(self.branches):  # (TorchScript cannot slice a ModuleList)
            if i > 0:
                out = out + branch(z)
        return out


# timm wraps it for FX in its own module; FX patches a wrapped name in each calling module
torch.fx.wrap("resample_abs_pos_embed")


@torch.fx.wrap
@register_notrace_function
def patch_grid(x: torch.Tensor, patch_size: int) -> tuple[int, int]:
    """The patch grid of an image batch; a ValueError if its sides do not divide by the patch."""
    h, w = x.shape[-2], x.shape[-1]
    if h % patch_size or w % patch_size:
        raise ValueError(f"input size {h}x{w} is not divisible by the patch size {patch_size}")
    return h // patch_size, w // patch_size


@torch.fx.wrap
@register_notrace_function
def add_to_patch_tokens(x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """``x[:, 1:] += update``, in place into a block's fresh output (the class position keeps +0
    without a padded copy of the update); returns ``x``. A leaf for FX, which cannot trace
    item assignment."""
    x[:, 1:] += update
    return x


WEIGHT_INITS = ("timm", "torch")


class VisionTransformerDW(nn.Module):
    """ViT (class token, learnable absolute positions) with optional depth-wise shortcuts.

    Args:
        img_size: training resolution; the positional embedding is defined on its patch grid
            and interpolated (bicubic) for other inputs whose sides divide by ``patch_size``.
        dw_kernels: kernel sizes of the parallel shortcut branches; ``()`` gives the plain ViT.
        dw_span: number of consecutive blocks one shortcut bypasses; must divide ``depth``.
        global_pool: 'token' (class token, DeiT), 'avg' (mean of the patch tokens) or ''
            (no pooling: ``forward_head`` returns every token).
        qkv_bias: a bias on the fused qkv projection (DeiT: yes; the paper's code: no).
        head_dim: width of each attention head; None: ``embed_dim // num_heads``. The paper's
            code (vit-pytorch) sets 64, attending in ``num_heads * 64`` channels.
        norm_eps: LayerNorm epsilon (DeiT 1e-6; the paper's code, PyTorch's default, 1e-5).
        weight_init: 'timm' (trunc-normal(0.02) Linear weights and positions, DeiT) or
            'torch' (PyTorch's default Linear init, ``randn`` positions and class token, as
            the paper's code).
        decay_tokens: weight decay applies to ``pos_embed`` and ``cls_token`` too
            (``no_weight_decay()`` is empty): the paper's code names no exemption, DeiT does.

    The defaults are DeiT/timm's; ``vit_*_paper*`` set the paper code's values.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        dw_kernels: Sequence[int] = (),
        dw_span: int = 1,
        global_pool: str = "token",
        qkv_bias: bool = True,
        head_dim: int | None = None,
        norm_eps: float = 1e-6,
        weight_init: str = "timm",
        decay_tokens: bool = False,
    ) -> None:
        super().__init__()
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"weight_init {weight_init!r} is not one of {WEIGHT_INITS}")
        if head_dim is not None and head_dim < 1:
            raise ValueError(f"head_dim {head_dim} must be positive")
        img_size = to_2tuple(img_size)
        if any(s <= 0 or s % patch_size for s in img_size):
            raise ValueError(f"img_size {img_size} must be positive multiples of the patch size {patch_size}")
        dw_kernels = tuple(int(k) for k in dw_kernels)
        if any(k < 1 or k % 2 == 0 for k in dw_kernels):
            raise ValueError(f"dw_kernels {dw_kernels} must be odd positive kernel sizes")
        if dw_span < 1 or depth % dw_span:
            raise ValueError(f"dw_span {dw_span} must be a positive divisor of depth {depth}")
        if global_pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool {global_pool!r} is not one of {GLOBAL_POOLS}")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.patch_size = patch_size
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        self.dw_kernels = dw_kernels
        self.dw_span = dw_span
        self.weight_init = weight_init
        self.decay_tokens = decay_tokens
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, strict_img_size=False)
        self.pos_grid = list(self.patch_embed.grid_size)  # the grid pos_embed is defined on
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear, as timm
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio, dpr[i], qkv_bias, head_dim, norm_eps)
                                      for i in range(depth)])
        self.shortcuts = nn.ModuleList(
            DWShortcut(embed_dim, dw_kernels) for _ in range(depth // dw_span if dw_kernels else 0))
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=patch_size)
                             for i in range(depth)]
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """timm's ViT init: trunc-normal(0.02) Linear weights and positions, zero biases;
        ``weight_init='torch'``: PyTorch's default Linear init, standard-normal positions and
        class token (vit-pytorch, the paper's code)."""
        if self.weight_init == "torch":
            nn.init.normal_(self.pos_embed)
            nn.init.normal_(self.cls_token)
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    m.reset_parameters()
            return
        trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters the optimizer leaves undecayed besides 1-d ones (none with ``decay_tokens``)."""
        return set() if self.decay_tokens else {"pos_embed", "cls_token"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise lr decay (timm's ``param_groups_layer_decay``).

        As timm's ViT; each shortcut joins the last block of the span it bypasses (whose
        output it is added to).
        """
        if coarse:
            return dict(stem=r"^cls_token|^pos_embed|^patch_embed", blocks=r"^blocks\.(\d+)")
        ends = [(rf"^shortcuts\.{s}\.", (s * self.dw_span + self.dw_span - 1,)) for s in range(len(self.shortcuts))]
        return dict(
            stem=r"^cls_token|^pos_embed|^patch_embed",
            blocks=[(r"^blocks\.(\d+)", None), *ends, (r"^norm", (99999,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of keeping its activations."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New ``num_classes`` head, initialised as ``weight_init`` says; ``global_pool`` as in ``__init__``."""
        if global_pool is not None:
            if global_pool not in GLOBAL_POOLS:
                raise ValueError(f"global_pool {global_pool!r} is not one of {GLOBAL_POOLS}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Identity()
        if num_classes > 0:
            self.head = nn.Linear(self.embed_dim, num_classes, device=self.pos_embed.device)
            if self.weight_init == "timm":
                trunc_normal_(self.head.weight, std=0.02)
                nn.init.zeros_(self.head.bias)

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch tokens, class token and (interpolated if needed) positions; also the grid size."""
        grid = patch_grid(x, self.patch_size)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), self.patch_embed(x)], dim=1)
        pos = resample_abs_pos_embed(self.pos_embed, new_size=[grid[0], grid[1]], old_size=self.pos_grid,
                                     num_prefix_tokens=1)  # the table itself on its own grid
        return x + pos, grid

    def _shortcut(self, index: int, span_in: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Shortcut ``index``'s update for the patch tokens (TorchScript indexes a ModuleList
        only by a literal, so a scripted model looks it up in a loop)."""
        if not torch.jit.is_scripting():
            return self.shortcuts[index](span_in, grid)
        out = span_in
        for s, shortcut in enumerate(self.shortcuts):
            if s == index:
                out = shortcut(span_in, grid)
        return out

    def _end_span(self, i: int, x: torch.Tensor, span_in: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """After block ``i``: at the end of a span, add the shortcut fed by the span's input."""
        s, last = divmod(i, self.dw_span)
        if last == self.dw_span - 1 and s < len(self.shortcuts):
            x = add_to_patch_tokens(x, self._shortcut(s, span_in, grid))
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, grid = self._embed(x)
        span_in = x
        for i, block in enumerate(self.blocks):
            if i % self.dw_span == 0:
                span_in = x
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(block, x)
            else:
                x = block(x)
            x = self._end_span(i, x, span_in, grid)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the tokens (class token by default; '' keeps them all) and classify."""
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's API: block outputs (after any shortcut ending there), NCHW maps at stride 16."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        b = x.shape[0]
        x, grid = self._embed(x)
        span_in = x
        intermediates = []
        blocks = self.blocks[: max_index + 1] if stop_early else self.blocks
        for i, block in enumerate(blocks):
            if i % self.dw_span == 0:
                span_in = x
            x = checkpoint(block, x) if self.grad_checkpointing else block(x)
            x = self._end_span(i, x, span_in, grid)
            if i in take_indices:
                intermediates.append(self.norm(x) if norm else x)
        intermediates = [y[:, 1:] for y in intermediates]
        if output_fmt == "NCHW":
            intermediates = [y.reshape(b, grid[0], grid[1], -1).permute(0, 3, 1, 2).contiguous()
                             for y in intermediates]
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the blocks (and shortcuts of incomplete spans) after the last wanted index."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max_index + 1]
        self.shortcuts = self.shortcuts[: (max_index + 1) // self.dw_span]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take_indices


# The paper code's ViT (vit-pytorch layout, ``models/vit.py`` of ZTX-100/Efficient_ViT_with_DW):
# per-block key patterns -> ours ({i}: block index).
_OFFICIAL_BLOCK_KEYS = {
    "transformer.layers.{i}.0.norm.": "blocks.{i}.norm1.",
    "transformer.layers.{i}.0.fn.to_qkv.": "blocks.{i}.attn.qkv.",
    "transformer.layers.{i}.0.fn.to_out.0.": "blocks.{i}.attn.proj.",
    "transformer.layers.{i}.1.norm.": "blocks.{i}.norm2.",
    "transformer.layers.{i}.1.fn.net.0.": "blocks.{i}.mlp.fc1.",
    "transformer.layers.{i}.1.fn.net.3.": "blocks.{i}.mlp.fc2.",
    "transformer.convs.{i}.": "shortcuts.{i}.branches.0.conv.",
    "transformer.batchnorms.{i}.": "shortcuts.{i}.branches.0.bn.",
}
_OFFICIAL_KEYS = {"pos_embedding": "pos_embed", "cls_token": "cls_token",
                  "to_patch_embedding.1.bias": "patch_embed.proj.bias",
                  "mlp_head.0.weight": "norm.weight", "mlp_head.0.bias": "norm.bias",
                  "mlp_head.1.weight": "head.weight", "mlp_head.1.bias": "head.bias"}
_OFFICIAL_BLOCK = re.compile(r"^transformer\.(?:layers|convs|batchnorms)\.(\d+)\.")


def _from_official(state_dict: dict[str, torch.Tensor], patch_size: int) -> dict[str, torch.Tensor]:
    """Rename the paper code's ViT keys to ours. Its patch embedding is a Linear over patches
    flattened as (row, column, channel); ours is the equivalent stride-16 conv, so the weight
    is reshaped to ``[dim, channels, p, p]``. Unknown keys pass through (and are reported by
    the loader)."""
    out = {}
    for key, value in state_dict.items():
        match = _OFFICIAL_BLOCK.match(key)
        if key == "to_patch_embedding.1.weight":
            p = patch_size
            weight = value.reshape(value.shape[0], p, p, value.shape[1] // (p * p))
            out["patch_embed.proj.weight"] = weight.permute(0, 3, 1, 2).contiguous()
        elif key in _OFFICIAL_KEYS:
            out[_OFFICIAL_KEYS[key]] = value
        elif match:
            i = match.group(1)
            for theirs, ours in _OFFICIAL_BLOCK_KEYS.items():
                prefix = theirs.format(i=i)
                if key.startswith(prefix):
                    out[ours.format(i=i) + key[len(prefix):]] = value
                    break
            else:
                out[key] = value
        else:
            out[key] = value
    return out


def checkpoint_filter_fn(
    state_dict: dict[str, torch.Tensor], model: VisionTransformerDW
) -> dict[str, torch.Tensor]:
    """Adapt timm/DeiT-layout weights, or the paper code's (``to_patch_embedding``,
    ``transformer.layers``, ``transformer.convs``, ``mlp_head``; load those into a
    ``vit_*_paper_dw`` model), then resample the positional embedding to the model's grid."""
    official = "to_patch_embedding.1.weight" in state_dict
    out = _from_official(state_dict, model.patch_size) if official else dict(state_dict)
    pos = out.get("pos_embed")
    if pos is not None and pos.shape != model.pos_embed.shape:
        out["pos_embed"] = resample_abs_pos_embed(pos, new_size=model.patch_embed.grid_size,
                                                  num_prefix_tokens=1)
    return out


def _create_vit_dw(variant: str, pretrained: bool = False, **kwargs: Any) -> VisionTransformerDW:
    out_indices = kwargs.pop("out_indices", 3)
    return build_model_with_cfg(
        VisionTransformerDW,
        variant,
        pretrained,
        pretrained_cfg_overlay=img_size_cfg_overlay(kwargs),
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs,
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "vit_tiny": _cfg(),
    "vit_small": _cfg(),
    "vit_tiny_dw": _cfg(),
    "vit_small_dw": _cfg(),
    "vit_tiny_paper": _cfg(),
    "vit_small_paper": _cfg(),
    "vit_tiny_paper_dw": _cfg(),
    "vit_small_paper_dw": _cfg(),
})

_TINY = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0)
_SMALL = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0)
# The paper code's ViT (vit-pytorch's): see the module docstring
_PAPER_VIT = dict(qkv_bias=False, head_dim=64, norm_eps=1e-5, weight_init="torch", decay_tokens=True)
_PAPER = "Zhang et al. 2024, arXiv 2407.19394"
_DEIT = "Touvron et al. 2021, arXiv 2012.12877"


@register_model(paper=_DEIT)
def vit_tiny(pretrained: bool = False, **kwargs: Any) -> VisionTransformerDW:
    """ViT-Tiny/16 (DeiT-Tiny): the baseline of the depth-wise shortcut paper."""
    return _create_vit_dw("vit_tiny", pretrained, **{**_TINY, **kwargs})


@register_model(paper=_DEIT)
def vit_small(pretrained: bool = False, **kwargs: Any) -> VisionTransformerDW:
    """ViT-Small/16 (DeiT-Small)."""
    return _create_vit_dw("vit_small", pretrained, **{**_SMALL, **kwargs})


@register_model(paper=_PAPER)
def vit_tiny_dw(pretrained: bool = False, **kwargs: Any) -> VisionTransformerDW:
    """ViT-Tiny with a 3x3 depth-wise shortcut around every block (``dw_span``/``dw_kernels`` vary it)."""
    return _create_vit_dw("vit_tiny_dw", pretrained, **{**_TINY, "dw_kernels": (3,), **kwargs})


@register_model(paper=_PAPER)
def vit_small_dw(pretrained: bool = False, **kwargs: Any) -> VisionTransformerDW:
    """ViT-Small with a 3x3 depth-wise shortcut around every block."""
    return _create_vit_dw("vit_small_dw", pretrained, **{**_SMALL, "dw_kernels": (3,), **kwargs})


@register_model(paper=_PAPER)
def vit_tiny_paper(pretrained: bool = False, **kwargs: Any) -> VisionTransformerDW:
    """ViT-Tiny/16 as the paper's code builds it (vit-pytorch's ViT): its plain baseline."""
    return _create_vit_dw("vit_tiny_paper", pretrained, **{**_TINY, **_PAPER_VIT, **kwargs})


@register_model(paper=_PAPER)
def vit_small_paper(pretrained: bool = False, **kwargs: Any) -> VisionTransformerDW:
    """ViT-Small/16 as the paper's code builds it (vit-pytorch's ViT): its plain baseline."""
    return _create_vit_dw("vit_small_paper", pretrained, **{**_SMALL, **_PAPER_VIT, **kwargs})


@register_model(paper=_PAPER)
def vit_tiny_paper_dw(pretrained: bool = False, **kwargs: Any) -> VisionTransformerDW:
    """ViT-Tiny with a 3x3 depth-wise shortcut around every block, exactly as the paper's code
    (5,547,082 parameters with 10 classes); loads its checkpoints."""
    return _create_vit_dw("vit_tiny_paper_dw", pretrained, **{**_TINY, **_PAPER_VIT, "dw_kernels": (3,), **kwargs})


@register_model(paper=_PAPER)
def vit_small_paper_dw(pretrained: bool = False, **kwargs: Any) -> VisionTransformerDW:
    """ViT-Small with a 3x3 depth-wise shortcut around every block, exactly as the paper's code
    (21,710,986 parameters with 10 classes); loads its checkpoints."""
    return _create_vit_dw("vit_small_paper_dw", pretrained, **{**_SMALL, **_PAPER_VIT, "dw_kernels": (3,), **kwargs})
