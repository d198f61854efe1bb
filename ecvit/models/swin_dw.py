"""Swin Transformer with depth-wise convolution shortcuts (Zhang et al. 2024, arXiv 2407.19394).

The plain model is Swin (Liu et al. 2021, arXiv 2103.14030) built from timm's Swin pieces
(``PatchEmbed``, ``SwinTransformerBlock``, ``PatchMerging``) in timm's layout, so
``swin_tiny`` has the same parameters and state-dict keys as timm's
``swin_tiny_patch4_window7_224`` and loads its weights unchanged.

The paper's code (``models/swin_transformer.py`` of ZTX-100/Efficient_ViT_with_DW) adds one
shortcut to every Swin block, fed by the block's input on its token grid and added to the
block's output, inside each stage (before the stage's patch merging)::

    DW(x)  = DWConv3x3(BN(GELU(x)))      x: the block input as a [B, C, H, W] map
    out    = SwinBlock(x) + DW(x)        SwinBlock: both residual halves, W-MSA/SW-MSA and MLP

Its drop path acts inside the block only, never on the shortcut. The official code builds
the shortcuts in per-stage lists (``layers.{i}.batchnorms.{j}``, ``layers.{i}.convs.{j}``)
with the patch merging at the end of a stage; here each block owns its shortcut
(``layers.{i}.blocks.{j}.shortcut``) and the merging opens the next stage, as in timm:
:func:`checkpoint_filter_fn` maps the official keys. The official code skips the shortcuts
when gradient checkpointing is on (its ``use_checkpoint`` branch calls the block alone);
here checkpointing never changes the function: the shortcut stays outside the recomputed
part, so its BatchNorm statistics are also updated once per step.

Differences from the official module that leave the function unchanged: attention runs
through ``F.scaled_dot_product_attention`` with the relative position bias (and the
shifted-window mask) as its additive mask; the model keeps timm's channels-last
``[B, H, W, C]`` maps between blocks. Swin-T with the shortcuts and 10 classes has
27,580,036 parameters, 52,992 of them in the 12 shortcuts (as the official code builds it).
"""

import re
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import PatchEmbed, calculate_drop_path_rates, to_2tuple, trunc_normal_, use_fused_attn
from timm.models import build_model_with_cfg, checkpoint, generate_default_cfgs
from timm.models import swin_transformer as timm_swin
from timm.models._features import feature_take_indices
from torch import nn

from ecvit.models.layers import GLOBAL_POOLS, img_size_cfg_overlay, split_heads
from ecvit.models.registry import register_model
from ecvit.models.vit_dw import DWShortcut

__all__ = ["WindowAttention", "MapDWShortcut", "SwinBlock", "SwinStage", "SwinTransformerDW", "checkpoint_filter_fn"]


class WindowAttention(timm_swin.WindowAttention):
    """(Shifted-)window attention with relative position bias (Swin, Sec. 3.2, Eq. 4).

    timm's module and parameters; the forward uses SDPA unless ``fused_attn`` is off (then
    ``softmax`` is a module call that ``timm.utils.AttentionExtract`` finds).
    """

    def __init__(self, dim: int, num_heads: int, window_size: tuple[int, int]) -> None:
        super().__init__(dim, num_heads=num_heads, window_size=window_size, qkv_bias=True)
        self.fused_attn = use_fused_attn()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``[B * windows, Wh*Ww, C]``; ``mask``: ``[windows, Wh*Ww, Wh*Ww]`` (0 / -100) or None."""
        b, n, _ = x.shape
        q, k, v = split_heads(self.qkv(x), 3, self.num_heads)
        bias = self._get_rel_pos_bias()  # [1, heads, N, N]
        if mask is not None:  # per window; the windows of one image are consecutive
            windows = mask.shape[0]
            bias = (bias + mask.unsqueeze(1)).unsqueeze(0).expand(b // windows, -1, -1, -1, -1)
            bias = bias.reshape(b, self.num_heads, n, n)
        return self.proj(self.attend(q, k, v, bias).transpose(1, 2).reshape(b, n, -1))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``softmax(q k^T / sqrt(d) + B) v`` (Eq. 4), ``B`` the position bias plus the shift mask."""
        if self.fused_attn:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        attn = self.softmax((q * self.scale) @ k.transpose(-2, -1) + bias)
        return self.attn_drop(attn) @ v


class MapDWShortcut(DWShortcut):
    """The depth-wise shortcut (GELU -> BN -> DWConv3x3) on a ``[B, H, W, C]`` map without a
    class token (Swin's token layout); returns the update in the same layout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the permuted views are channels-last: BN and the depthwise conv take them as they are
        return self.forward_branches(self.act(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class SwinBlock(timm_swin.SwinTransformerBlock):
    """timm's Swin block (``x + DP(W-MSA(LN(x)))`` then ``x + DP(MLP(LN(x)))``) plus, with
    ``dw_kernels``, the shortcut fed by the block input: ``out = block(x) + DW(x)``."""

    def __init__(self, dim: int, input_resolution: tuple[int, int], num_heads: int, window_size: int,
                 shift_size: int, mlp_ratio: float, drop_path: float, dw_kernels: Sequence[int]) -> None:
        super().__init__(dim, input_resolution, num_heads=num_heads, window_size=window_size,
                         shift_size=shift_size, mlp_ratio=mlp_ratio, drop_path=drop_path)
        self.attn = WindowAttention(dim, num_heads, self.window_size)
        self.shortcut = MapDWShortcut(dim, dw_kernels) if dw_kernels else None
        self.grad_checkpointing = False

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        x = x + self.drop_path1(self._attn(self.norm1(x)))
        x = x.reshape(b, -1, c)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x.reshape(b, h, w, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, H, W, C]``. Checkpointing recomputes the block, never the shortcut."""
        if self.grad_checkpointing and not torch.jit.is_scripting():
            out = checkpoint(self._body, x)
        else:
            out = self._body(x)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return out


class SwinStage(nn.Module):
    """Patch merging (2x2 neighbours concatenated, LN, Linear to ``out_dim``; none in the first
    stage) then blocks alternating regular and shifted windows (shift ``window // 2``)."""

    def __init__(self, dim: int, out_dim: int, input_resolution: tuple[int, int], depth: int, downsample: bool,
                 num_heads: int, window_size: int, mlp_ratio: float, drop_path: Sequence[float],
                 dw_kernels: Sequence[int]) -> None:
        super().__init__()
        self.downsample = timm_swin.PatchMerging(dim, out_dim) if downsample else nn.Identity()
        resolution = tuple((r + 1) // 2 for r in input_resolution) if downsample else tuple(input_resolution)
        self.output_resolution = resolution
        self.blocks = nn.Sequential(*[
            SwinBlock(out_dim, resolution, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2,
                      mlp_ratio, drop_path[i], dw_kernels)
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))



class TokenPoolHead(nn.Module):
    """Mean over the tokens ('avg', the official AdaptiveAvgPool1d) or none (''), then ``fc``."""

    def __init__(self, in_features: int, num_classes: int, global_pool: str) -> None:
        super().__init__()
        self.global_pool = global_pool
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=1)
        return x if pre_logits else self.fc(x)


def _check_pool(global_pool: str) -> None:
    if global_pool == "token":
        raise ValueError("global_pool 'token' needs a class token; Swin has none (use 'avg' or '')")
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool {global_pool!r} is not one of {GLOBAL_POOLS}")


class SwinTransformerDW(nn.Module):
    """Swin Transformer with optional depth-wise shortcuts on every block.

    Args:
        img_size: the input size; fixed, as Swin's shifted-window masks are built for it.
            Stage grids that are not multiples of the window are padded (timm); the official
            code needs multiples.
        window_size: attention window side; a stage whose grid is not larger than the window
            attends over the whole grid without shifting (official and timm).
        dw_kernels: kernel sizes of the parallel shortcut branches; ``()`` gives plain Swin,
            ``(3,)`` the paper's model.
        global_pool: 'avg' (mean of the last stage's tokens, official) or '' (no pooling:
            ``forward_head`` returns every token). There is no class token.

    ``forward_features`` returns the normed tokens of the last stage, ``[B, H*W, C]`` (the
    official layout before pooling); ``forward_intermediates`` gives NCHW maps at strides
    ``patch_size * (1, 2, 4, 8)``.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        dw_kernels: Sequence[int] = (),
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        img_size = to_2tuple(img_size)
        if any(s <= 0 or s % patch_size for s in img_size):
            raise ValueError(f"img_size {img_size} must be positive multiples of the patch size {patch_size}")
        if len(depths) != len(num_heads) or not depths:
            raise ValueError(f"depths {tuple(depths)} and num_heads {tuple(num_heads)} need one entry per stage")
        if window_size < 1:
            raise ValueError(f"window_size {window_size} must be positive")
        dw_kernels = tuple(int(k) for k in dw_kernels)
        if any(k < 1 or k % 2 == 0 for k in dw_kernels):
            raise ValueError(f"dw_kernels {dw_kernels} must be odd positive kernel sizes")
        _check_pool(global_pool)
        dims = [embed_dim * 2 ** i for i in range(len(depths))]
        for dim, heads in zip(dims, num_heads):
            if dim % heads:
                raise ValueError(f"stage width {dim} is not divisible by num_heads {heads}")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_prefix_tokens = 0
        self.dw_kernels = dw_kernels
        self.num_features = self.head_hidden_size = dims[-1]

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, norm_layer=nn.LayerNorm,
                                      output_fmt="NHWC")
        dpr = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)  # linear over all blocks
        resolution = tuple(self.patch_embed.grid_size)
        stages = []
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            stages.append(SwinStage(dims[max(i - 1, 0)], dims[i], resolution, depth, i > 0, heads, window_size,
                                    mlp_ratio, dpr[i], dw_kernels))
            resolution = stages[-1].output_resolution
        self.layers = nn.Sequential(*stages)
        self.feature_info = [dict(num_chs=dims[i], reduction=patch_size * 2 ** i, module=f"layers.{i}")
                             for i in range(len(depths))]
        self.norm = nn.LayerNorm(self.num_features)
        self.head = TokenPoolHead(self.num_features, num_classes, global_pool)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """The official init: trunc-normal(0.02) Linear weights, zero biases (LayerNorm 1/0, the
        relative position tables trunc-normal(0.02), convs and BatchNorms PyTorch's defaults)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """The relative position tables (official ``no_weight_decay_keywords``)."""
        return {n for n, _ in self.named_parameters() if "relative_position_bias_table" in n}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise lr decay, as timm's Swin; a shortcut joins its block."""
        return dict(
            stem=r"^patch_embed",
            blocks=r"^layers\.(\d+)" if coarse else [
                (r"^layers\.(\d+)\.downsample", (0,)),
                (r"^layers\.(\d+)\.\w+\.(\d+)", None),
                (r"^norm", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block (not its shortcut) in the backward pass instead of keeping its activations."""
        for m in self.modules():
            if isinstance(m, SwinBlock):
                m.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New (trunc_normal-initialised) ``num_classes`` head; ``global_pool`` as in ``__init__``."""
        if global_pool is not None:
            _check_pool(global_pool)
            self.global_pool = global_pool
        self.num_classes = num_classes
        device = self.patch_embed.proj.weight.device
        self.head = TokenPoolHead(self.num_features, num_classes, self.global_pool).to(device)
        if num_classes > 0:
            trunc_normal_(self.head.fc.weight, std=0.02)
            nn.init.zeros_(self.head.fc.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.patch_embed(x))
        return self.norm(x.flatten(1, 2))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the tokens (mean, or none with '') and classify."""
        return self.head(x, pre_logits=pre_logits)

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
        """timm's API: each stage's output (shortcuts included) as an NCHW map; ``norm`` applies
        the final LayerNorm to the last stage's (the only width it has)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        last = len(self.layers) - 1
        stages = self.layers if torch.jit.is_scripting() or not stop_early else self.layers[: max_index + 1]
        intermediates = []
        x = self.patch_embed(x)
        i = 0
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                y = self.norm(x) if norm and i == last else x
                intermediates.append(y.permute(0, 3, 1, 2).contiguous())
        if intermediates_only:
            return intermediates
        return self.norm(x.flatten(1, 2)) if i == last else x.flatten(1, 2), intermediates

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last wanted index (and the final norm and head with them)."""
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        pruned = max_index < len(self.layers) - 1
        self.layers = self.layers[: max_index + 1]
        if prune_norm or pruned:
            self.norm = nn.Identity()  # sized for the last stage only
        if pruned:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or pruned:
            self.reset_classifier(0, "")
        return take_indices


# The official shortcut lists of stage i, entry j -> the shortcut of block j of our stage i
_OFFICIAL_SHORTCUT = re.compile(r"^layers\.(\d+)\.(batchnorms|convs)\.(\d+)\.")


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: SwinTransformerDW) -> dict[str, torch.Tensor]:
    """Adapt the official layouts; timm's (and ours) pass through unchanged.

    The paper code's shortcuts (``layers.{i}.batchnorms.{j}``, ``layers.{i}.convs.{j}``)
    become ``layers.{i}.blocks.{j}.shortcut.branches.0.{bn,conv}``; then timm's Swin filter
    handles the rest of the official (microsoft/Swin-Transformer) layout: patch merging at
    the end of stage i becomes the opening ``downsample`` of stage i + 1, ``head`` becomes
    ``head.fc``, the index and mask buffers are dropped, and a relative position table or
    patch embedding of another size is resampled.
    """
    state_dict = state_dict.get("model", state_dict)
    out = {}
    for key, value in state_dict.items():
        match = _OFFICIAL_SHORTCUT.match(key)
        if match:
            stage, kind, block = match.groups()
            part = "bn" if kind == "batchnorms" else "conv"
            key = f"layers.{stage}.blocks.{block}.shortcut.branches.0.{part}.{key[match.end():]}"
        out[key] = value
    return timm_swin.checkpoint_filter_fn(out, model)


def _create_swin_dw(variant: str, pretrained: bool = False, **kwargs: Any) -> SwinTransformerDW:
    out_indices = kwargs.pop("out_indices", tuple(range(len(kwargs.get("depths", (2, 2, 6, 2))))))
    return build_model_with_cfg(
        SwinTransformerDW,
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
        "pool_size": (7, 7),
        "crop_pct": 0.875,  # the paper code's test crop (Resize 256, CenterCrop 224)
        "interpolation": "bicubic",
        "fixed_input_size": True,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head.fc",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "swin_tiny": _cfg(),
    "swin_tiny_dw": _cfg(),
})

# Swin-T as the paper's config (configs/swin/swin_tiny_patch4_window7_224_*.yaml): drop path 0.2
_TINY = dict(patch_size=4, window_size=7, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
             drop_path_rate=0.2)
_PAPER = "Zhang et al. 2024, arXiv 2407.19394"
_SWIN = "Liu et al. 2021, arXiv 2103.14030"


@register_model(paper=_SWIN)
def swin_tiny(pretrained: bool = False, **kwargs: Any) -> SwinTransformerDW:
    """Swin-T (patch 4, window 7): the baseline of the depth-wise shortcut paper; timm's
    ``swin_tiny_patch4_window7_224`` weights load into it."""
    return _create_swin_dw("swin_tiny", pretrained, **{**_TINY, **kwargs})


@register_model(paper=_PAPER)
def swin_tiny_dw(pretrained: bool = False, **kwargs: Any) -> SwinTransformerDW:
    """Swin-T with a 3x3 depth-wise shortcut on every block, as the paper's code (27,580,036
    parameters with 10 classes); loads its checkpoints."""
    return _create_swin_dw("swin_tiny_dw", pretrained, **{**_TINY, "dw_kernels": (3,), **kwargs})
