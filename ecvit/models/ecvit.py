"""ECViT: Efficient Convolutional Vision Transformer (Qian 2025, arXiv 2504.14825).

The network, as the paper describes it:

* stage 1, tokenizer (Sec. III-A, Eq. 1-3): two depthwise-separable convolutions (7x1 then
  1x7, stride 2, 32 channels), each Conv -> BN -> GELU, a 3x3 / stride 2 max pool, the
  low-level map reshaped into tokens, a Linear to the encoder width, a positional
  encoding and a learnable class token;
* stages 2 and 3: encoders, each a Partitioned MSA (P-MSA) then an Interactive FFN (I-FFN)
  with pre-norm residuals, followed by a token-merging layer (4x4 / stride 4 max pool on
  the token grid, then a Linear that raises the width);
* head: norm, then an MLP on the class token.

Here a "stage" is a run of encoders at one width; a merging layer opens every stage after
the first. The paper's second merging layer (after its stage 3) is a final stage of depth
0: its class token feeds the head.

Choices the paper leaves open are constructor arguments (defaults in brackets):

* ``embed_dims``, ``depths``, ``num_heads``, ``mlp_ratios`` (per stage),
  ``block_size`` [7], ``stem_chans`` [32];
* ``stem_stride`` ["both"]: "stride 2" taken literally (both axes of each conv), so the
  tokenizer reduces 8x (224 -> 28x28 tokens); "kernel_axis" strides only along each
  kernel's long axis (4x: 224 -> 56x56 tokens);
* ``ffn_conv`` ["input"]: where the I-FFN's convolutions sit relative to its Linear
  layers. "input" follows the paper's wording step by step: class token set aside, patch
  tokens to 2-D, dw-sep 3x1, dw-sep 1x3, flatten, class token back, then the FFN
  fc1 -> GELU -> fc2 on all tokens. "hidden" puts the convolutions on the expanded width
  (fc1 -> GELU -> dw-sep 3x1 -> dw-sep 1x3 -> GELU -> fc2, as in CeiT's LeFF); the class
  token then skips only the convolutions;
* ``cls_merge`` ["mean"]: how the per-window class-token outputs become one (see
  ``PartitionedAttention``); "max" is the element-wise maximum;
* ``pos_embed`` ["learnable"]: a learnable table for the ``img_size`` token grid,
  resampled with ``pos_interp`` ["bicubic"] (align_corners=False, no antialias) for other
  grids; "sincos" is a fixed 2-D sin-cos table computed for the actual grid;
* ``merge_kernel`` / ``merge_stride`` [4 / 4]: pooling uses ``ceil_mode``, so a grid
  smaller than the kernel (or not divisible by the stride) keeps a last partial window,
  the max over the real tokens it covers (e.g. 7x7 -> 2x2, 2x2 -> 1x1);
* ``head_hidden`` [None: the last width]: width of the MLP head's hidden layer (0: a single
  Linear, no hidden layer).

How ``ecvit_small``'s defaults were chosen: the paper reports 4.888M parameters and 0.698G
MACs (10 classes, 224x224). A sweep over widths (multiples of 32), depths, MLP ratios
{2, 3, 4} and both ``ffn_conv`` placements, counted with ``ecvit.flops`` (attention
included), gave as closest regular configuration embed_dims (96, 256, 384), depths
(6, 6, 0), heads (3, 8, 12) (head dim 32), MLP ratio 2, ``ffn_conv="input"``: measured
4,885,471 parameters (-0.05%) and 699,684,864 MACs (+0.24%) with 10 classes. Stage 1 runs
on the 28x28 grid (16 windows of 7x7), stage 2 on 7x7 (one window), the depth-0 stage is
the final merge (2x2 grid) that lifts the class token to 384 for the head.

Note: the patch tokens leaving the last encoder only reach the (pooled-away) final patch
map, so the last encoder's I-FFN convolutions get gradients only from dense uses of the
features (``forward_intermediates`` / ``features_only``), not from the class logits.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, build_sincos2d_pos_embed, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs
from timm.models._features import feature_take_indices
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ecvit.models.layers import attention, fp32_attention_for as fp32_attention
from ecvit.models.registry import register_model

__all__ = ["ECViT", "Tokenizer", "PartitionedAttention", "InteractiveFFN", "TokenMerging",
           "EncoderBlock", "ECViTStage", "checkpoint_filter_fn"]

PAPER = "Qian 2025, arXiv 2504.14825"

def _nhwc_to_nchw(x: torch.Tensor) -> torch.Tensor:
    """[B, H, W, C] -> [B, C, H, W] as a view (channels-last memory, no copy)."""
    return x.permute(0, 3, 1, 2)


def _nchw_to_nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


class SeparableConv(nn.Module):
    """Depthwise ``kernel`` conv then pointwise 1x1 conv: a depthwise-separable convolution."""

    def __init__(self, in_chs: int, out_chs: int, kernel: tuple[int, int],
                 stride: tuple[int, int] = (1, 1), bias: bool = True) -> None:
        super().__init__()
        padding = (kernel[0] // 2, kernel[1] // 2)
        self.dw = nn.Conv2d(in_chs, in_chs, kernel, stride, padding, groups=in_chs, bias=bias)
        self.pw = nn.Conv2d(in_chs, out_chs, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))

    def forward_nhwc(self, x: torch.Tensor) -> torch.Tensor:
        """Same function on a token map ``[B, H, W, C]``: the 1x1 conv runs as a Linear on the
        channels-last tokens (same weights), which avoids a layout decision per call."""
        x = _nchw_to_nhwc(self.dw(_nhwc_to_nchw(x)))
        return F.linear(x, self.pw.weight.flatten(1), self.pw.bias)


class ConvBnAct(nn.Module):
    """Depthwise-separable conv -> BatchNorm -> GELU (the tokenizer's f_h / f_v, Eq. 1-2)."""

    def __init__(self, in_chs: int, out_chs: int, kernel: tuple[int, int],
                 stride: tuple[int, int]) -> None:
        super().__init__()
        self.conv = SeparableConv(in_chs, out_chs, kernel, stride, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(out_chs)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold the BN into the pointwise conv (exact in eval mode)."""
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv.pw = fuse_conv_bn_eval(self.conv.pw.eval(), self.bn.eval())
            self.bn = nn.Identity()


class Tokenizer(nn.Module):
    """Stage 1 (Sec. III-A): x_l = MaxPool(f_v(f_h(x))), then tokens = Linear(x_l) (+ pos).

    Returns patch tokens as an NHWC map ``[B, H, W, embed_dim]``; positional encoding and
    class token are added by the model, which owns them (timm's ``no_weight_decay`` names).
    """

    def __init__(self, in_chans: int, stem_chans: int, embed_dim: int,
                 stem_stride: Literal["both", "kernel_axis"] = "both") -> None:
        super().__init__()
        if stem_stride == "both":
            s_h, s_v = (2, 2), (2, 2)
        elif stem_stride == "kernel_axis":
            s_h, s_v = (2, 1), (1, 2)
        else:
            raise ValueError(f"stem_stride must be 'both' or 'kernel_axis', got {stem_stride!r}")
        self.stem_stride = stem_stride
        self.conv_h = ConvBnAct(in_chans, stem_chans, (7, 1), s_h)
        self.conv_v = ConvBnAct(stem_chans, stem_chans, (1, 7), s_v)
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        self.proj = nn.Linear(stem_chans, embed_dim)

    def grid_size(self, img_size: tuple[int, int]) -> tuple[int, int]:
        """Token grid produced for an ``img_size`` input (0 when it yields no tokens)."""
        h, w = img_size
        if self.stem_stride == "both":
            h, w = (h + 1) // 2, (w + 1) // 2  # 7x1 conv, pad (3, 0), stride 2
            h, w = (h + 1) // 2, (w + 1) // 2  # 1x7 conv, pad (0, 3), stride 2
        else:
            h, w = (h + 1) // 2, (w + 1) // 2
        return (h + 1) // 2, (w + 1) // 2  # 3x3 max pool, pad 1, stride 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last end to end: convs, pool and the NHWC token view run without copies
        # (on CPU the pool alone is >10x faster than on an NCHW bf16 map).
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.pool(self.conv_v(self.conv_h(x)))
        return self.proj(_nchw_to_nhwc(x))


def _window_layout(height: int, width: int, block_size: int) -> tuple[int, int, int, int]:
    """Window height/width and padded grid size; a grid smaller than the block is one window."""
    wh, ww = min(block_size, height), min(block_size, width)
    return wh, ww, math.ceil(height / wh) * wh, math.ceil(width / ww) * ww


def _window_valid(height: int, width: int, block_size: int, device: torch.device) -> torch.Tensor:
    """Bool ``[nW, wh*ww]``: which window slots hold real tokens (the rest is padding)."""
    wh, ww, hp, wp = _window_layout(height, width, block_size)
    rows = torch.arange(hp, device=device) < height
    cols = torch.arange(wp, device=device) < width
    valid = rows[:, None] & cols[None, :]  # [Hp, Wp]
    valid = valid.view(hp // wh, wh, wp // ww, ww).permute(0, 2, 1, 3)
    return valid.reshape(-1, wh * ww)


class PartitionedAttention(nn.Module):
    """Partitioned multi-head self-attention, P-MSA (Sec. III-B, Eq. 4-9).

    The patch grid is cut into non-overlapping ``block_size`` x ``block_size`` windows; the
    class token is prepended to every window and attention runs inside each window, all
    windows in one batched ``scaled_dot_product_attention`` call. The windows' class-token
    outputs are merged into the new class token.

    Padding: a grid not divisible by the window is padded at the bottom/right; padded keys
    are masked out, so real tokens and class tokens never attend to padding (padded query
    rows are computed and dropped). A grid smaller than ``block_size`` is one window of its
    own size. ``cls_merge="mean"`` weights each window by its number of real tokens, so a
    window that is mostly padding counts for the real tokens it holds (for a divisible grid
    this is the plain mean over windows); ``"max"`` takes the element-wise maximum.

    As in the paper (Eq. 7-9) each window's MSA, output projection included, runs first and
    the windows' class-token outputs are merged afterwards.
    """

    def __init__(self, dim: int, num_heads: int, block_size: int = 7, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0,
                 cls_merge: Literal["mean", "max"] = "mean") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
        if cls_merge not in ("mean", "max"):
            raise ValueError(f"cls_merge must be 'mean' or 'max', got {cls_merge!r}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.block_size = block_size
        self.cls_merge = cls_merge
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, cls: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``cls`` [B, C], ``x`` [B, H, W, C] -> same shapes."""
        b, h, w, c = x.shape
        nh, hd = self.num_heads, self.head_dim
        wh, ww, hp, wp = _window_layout(h, w, self.block_size)
        gh, gw = hp // wh, wp // ww
        n_win, t = gh * gw, wh * ww

        padded = hp != h or wp != w
        if padded:
            x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
        # Window order, class token in front of every window: one copy at width C.
        tokens = x.new_empty(b, gh, gw, 1 + t, c)
        tokens[:, :, :, 0] = cls[:, None, None]
        tokens[:, :, :, 1:].view(b, gh, gw, wh, ww, c).copy_(
            x.view(b, gh, wh, gw, ww, c).permute(0, 1, 3, 2, 4, 5))
        qkv = self.qkv(tokens.view(b * n_win, 1 + t, c))
        if fp32_attention(qkv, 1 + t):  # cast once here rather than q, k and v separately
            qkv = qkv.float()
        q, k, v = qkv.view(b * n_win, 1 + t, 3, nh, hd).permute(2, 0, 3, 1, 4).unbind(0)  # [B*nW, nh, 1+t, hd]

        mask = None
        if padded:
            valid = _window_valid(h, w, self.block_size, x.device)  # [nW, t]
            keep = torch.cat([valid.new_ones(n_win, 1), valid], dim=1)  # class key always kept
            mask = keep[None, :, None, None, :].expand(b, -1, 1, 1, -1).reshape(b * n_win, 1, 1, 1 + t)
        dropout_p = self.attn_drop if self.training else 0.0
        out = attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, gh, gw, 1 + t, c)))

        cls_win = out[:, :, :, 0]  # [B, gh, gw, C]: each window's class-token output
        if self.cls_merge == "max":
            cls_out = cls_win.amax(dim=(1, 2))
        elif not padded:
            cls_out = cls_win.mean(dim=(1, 2))
        else:
            weight = valid.sum(1).to(cls_win.dtype).view(1, gh, gw, 1) / (h * w)
            cls_out = (cls_win * weight).sum(dim=(1, 2))

        patches = out[:, :, :, 1:].view(b, gh, gw, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(b, hp, wp, c)
        if padded:
            patches = patches[:, :h, :w]
        return cls_out, patches


class InteractiveFFN(nn.Module):
    """Interactive feed-forward network, I-FFN (Sec. III-C).

    The class token is set aside, patch tokens go back to a 2-D map, pass a
    depthwise-separable 3x1 then a depthwise-separable 1x3 convolution (stride 1) and are
    flattened again; the class token rejoins. Order with ``conv_pos="hidden"``:
    fc1 -> GELU -> sepconv 3x1 -> sepconv 1x3 -> GELU -> fc2 (the convs act on the
    expanded width). With ``conv_pos="input"``: sepconv 3x1 -> sepconv 1x3 -> fc1 -> GELU ->
    fc2. The class token skips only the convolutions.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop: float = 0.0,
                 conv_pos: Literal["hidden", "input"] = "input") -> None:
        super().__init__()
        if conv_pos not in ("hidden", "input"):
            raise ValueError(f"ffn_conv must be 'hidden' or 'input', got {conv_pos!r}")
        hidden = int(dim * mlp_ratio)
        if hidden < 1:
            raise ValueError(f"mlp_ratio {mlp_ratio} gives an empty hidden layer for width {dim}")
        self.conv_pos = conv_pos
        conv_chs = hidden if conv_pos == "hidden" else dim
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.conv_h = SeparableConv(conv_chs, conv_chs, (3, 1))
        self.conv_v = SeparableConv(conv_chs, conv_chs, (1, 3))
        self.conv_act = nn.GELU() if conv_pos == "hidden" else nn.Identity()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)

    def _spatial(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens [B, H, W, C] through the two separable convs (channels-last views)."""
        return self.conv_v.forward_nhwc(self.conv_h.forward_nhwc(x))

    def forward(self, cls: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.conv_pos == "input":
            x = self._spatial(x)
        cls, x = self.act(self.fc1(cls)), self.act(self.fc1(x))
        if self.conv_pos == "hidden":
            x = self.conv_act(self._spatial(x))
        cls, x = self.drop(cls), self.drop(x)
        return self.drop(self.fc2(cls)), self.drop(self.fc2(x))


class EncoderBlock(nn.Module):
    """One encoder: x = x + P-MSA(LN(x)); x = x + I-FFN(LN(x)) (pre-norm residuals)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, block_size: int,
                 drop_path: float = 0.0, proj_drop: float = 0.0, attn_drop: float = 0.0,
                 cls_merge: Literal["mean", "max"] = "mean",
                 ffn_conv: Literal["hidden", "input"] = "input") -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = PartitionedAttention(dim, num_heads, block_size, attn_drop=attn_drop,
                                         proj_drop=proj_drop, cls_merge=cls_merge)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = InteractiveFFN(dim, mlp_ratio, drop=proj_drop, conv_pos=ffn_conv)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, cls: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a_cls, a_x = self.attn(self.norm1(cls), self.norm1(x))
        cls, x = cls + self.drop_path(a_cls), x + self.drop_path(a_x)
        f_cls, f_x = self.ffn(self.norm2(cls), self.norm2(x))
        return cls + self.drop_path(f_cls), x + self.drop_path(f_x)


class TokenMerging(nn.Module):
    """Tokens merging (Sec. III-D): max pool on the patch grid, Linear raising the width.

    The class token goes through the same Linear. ``ceil_mode`` pooling keeps the last
    partial window, so any grid (even 1x1) merges to at least one token.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel: int = 4, stride: int = 4) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(kernel, stride, ceil_mode=True)
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, cls: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _nchw_to_nhwc(self.pool(_nhwc_to_nchw(x)))
        return self.proj(cls), self.proj(x)


class ECViTStage(nn.Module):
    """Optional token merging from the previous width, then ``depth`` encoders."""

    def __init__(self, in_dim: int | None, dim: int, depth: int, num_heads: int,
                 mlp_ratio: float, block_size: int, drop_path: Sequence[float],
                 merge_kernel: int = 4, merge_stride: int = 4, **block_kwargs) -> None:
        super().__init__()
        self.merge = TokenMerging(in_dim, dim, merge_kernel, merge_stride) if in_dim else None
        self.blocks = nn.ModuleList([
            EncoderBlock(dim, num_heads, mlp_ratio, block_size, drop_path=drop_path[i], **block_kwargs)
            for i in range(depth)])

    def forward(self, cls: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.merge is not None:
            cls, x = self.merge(cls, x)
        for blk in self.blocks:
            cls, x = blk(cls, x)
        return cls, x


class MlpHead(nn.Module):
    """The classifier on the class token: Linear -> GELU -> dropout -> Linear (or one Linear)."""

    def __init__(self, in_features: int, num_classes: int, hidden: int | None, drop: float = 0.0) -> None:
        super().__init__()
        self.pre_logits: nn.Module = nn.Identity()
        width = in_features
        if hidden:
            self.pre_logits = nn.Sequential()
            self.pre_logits.add_module("fc", nn.Linear(in_features, hidden))
            self.pre_logits.add_module("act", nn.GELU())
            width = hidden
        self.width = width
        self.drop = nn.Dropout(drop)
        self.fc: nn.Module = nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.pre_logits(x))
        return x if pre_logits else self.fc(x)


def _to_pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


class ECViT(nn.Module):
    """ECViT (Qian 2025): tokenizer, stages of P-MSA / I-FFN encoders with token merging, MLP head.

    Per-stage lists (``embed_dims``, ``depths``, ``num_heads``, ``mlp_ratios``) must have the
    same length; a stage of depth 0 is only a merging layer (the paper's final one).
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (96, 256, 384),
        depths: Sequence[int] = (6, 6, 0),
        num_heads: Sequence[int] = (3, 8, 12),
        mlp_ratios: Sequence[float] = (2.0, 2.0, 2.0),
        block_size: int = 7,
        stem_chans: int = 32,
        stem_stride: Literal["both", "kernel_axis"] = "both",
        ffn_conv: Literal["hidden", "input"] = "input",
        cls_merge: Literal["mean", "max"] = "mean",
        pos_embed: Literal["learnable", "sincos"] = "learnable",
        pos_interp: Literal["bicubic", "bilinear"] = "bicubic",
        merge_kernel: int = 4,
        merge_stride: int = 4,
        head_hidden: int | None = None,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "token",
    ) -> None:
        super().__init__()
        lists = {"embed_dims": embed_dims, "depths": depths, "num_heads": num_heads,
                 "mlp_ratios": mlp_ratios}
        lengths = {k: len(v) for k, v in lists.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError("per-stage lists must have the same length, got "
                             + ", ".join(f"{k}={n}" for k, n in lengths.items()))
        if not embed_dims:
            raise ValueError("at least one stage is needed (embed_dims is empty)")
        if any(d < 1 for d in embed_dims) or any(n < 0 for n in depths) or any(h < 1 for h in num_heads):
            raise ValueError(f"embed_dims and num_heads must be >= 1 and depths >= 0, got "
                             f"{list(embed_dims)}, {list(num_heads)}, {list(depths)}")
        for i, (d, n, h) in enumerate(zip(embed_dims, depths, num_heads)):
            if n and d % h:
                raise ValueError(f"stage {i}: embed dim {d} is not divisible by num_heads {h}")
        if pos_embed not in ("learnable", "sincos"):
            raise ValueError(f"pos_embed must be 'learnable' or 'sincos', got {pos_embed!r}")
        if pos_interp not in ("bicubic", "bilinear"):
            raise ValueError(f"pos_interp must be 'bicubic' or 'bilinear', got {pos_interp!r}")
        if pos_embed == "sincos" and embed_dims[0] % 4:
            raise ValueError(f"sincos positional encoding needs embed_dims[0] divisible by 4, got {embed_dims[0]}")
        if merge_kernel < 1 or merge_stride < 1:
            raise ValueError(f"merge_kernel and merge_stride must be >= 1, got {merge_kernel}, {merge_stride}")
        if global_pool != "token":
            raise ValueError(f"ECViT classifies from the class token; global_pool must be 'token', got {global_pool!r}")

        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.img_size = _to_pair(img_size)
        self.num_features = self.embed_dim = embed_dims[-1]
        self.pos_embed_type = pos_embed
        self.pos_interp = pos_interp
        self.block_size = block_size

        self.tokenizer = Tokenizer(in_chans, stem_chans, embed_dims[0], stem_stride)
        self.grid_size = self.tokenizer.grid_size(self.img_size)
        if min(self.grid_size) < 1:
            raise ValueError(f"img_size {self.img_size} is too small for ECViT")
        self.cls_token = nn.Parameter(torch.zeros(1, embed_dims[0]))
        if pos_embed == "learnable":
            self.pos_embed = nn.Parameter(torch.zeros(1, *self.grid_size, embed_dims[0]))
        else:
            self.register_parameter("pos_embed", None)

        total = sum(depths)
        dpr = [drop_path_rate * i / max(1, total - 1) for i in range(total)]  # linear over all blocks
        stages, self.feature_info = [], []
        reduction = self.img_size[0] / self.grid_size[0]
        start = 0
        for i, (dim, depth, heads, ratio) in enumerate(zip(embed_dims, depths, num_heads, mlp_ratios)):
            if i:
                reduction *= merge_stride
            stages.append(ECViTStage(
                embed_dims[i - 1] if i else None, dim, depth, heads, ratio, block_size,
                dpr[start:start + depth], merge_kernel, merge_stride, proj_drop=proj_drop_rate,
                attn_drop=attn_drop_rate, cls_merge=cls_merge, ffn_conv=ffn_conv))
            start += depth
            self.feature_info.append(dict(num_chs=dim, reduction=int(reduction), module=f"stages.{i}"))
        self.stages = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(self.num_features)
        if head_hidden is not None and head_hidden < 0:
            raise ValueError(f"head_hidden must be >= 0 (0: a single Linear), got {head_hidden}")
        hidden = self.num_features if head_hidden is None else head_hidden
        self.head = MlpHead(self.num_features, num_classes, hidden, drop_rate)
        self.head_hidden_size = self.head.width
        self.init_weights()

    def init_weights(self) -> None:
        """timm-style: trunc_normal(0.02) for Linear weights, class token and pos table; zero biases."""
        trunc_normal_(self.cls_token, std=0.02)
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "pos_embed"} if self.pos_embed is not None else {"cls_token"}

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New final Linear for ``num_classes`` (0: none); the MLP's hidden layer is kept."""
        if global_pool not in (None, "", "token"):
            raise ValueError(f"ECViT classifies from the class token; global_pool {global_pool!r} is not supported")
        self.num_classes = num_classes
        self.head.fc = nn.Linear(self.head.width, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            trunc_normal_(self.head.fc.weight, std=0.02)
            nn.init.zeros_(self.head.fc.bias)

    def _pos_table(self, grid: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        """Positional encoding [1, H, W, C] for the actual token grid."""
        if self.pos_embed is None:
            table = build_sincos2d_pos_embed(list(grid), dim=like.shape[-1], device=like.device)
            return table.view(1, *grid, -1).to(like.dtype)
        if tuple(grid) == tuple(self.pos_embed.shape[1:3]):
            return self.pos_embed
        table = F.interpolate(_nhwc_to_nchw(self.pos_embed), size=grid, mode=self.pos_interp,
                              align_corners=False)
        return _nchw_to_nhwc(table)

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = x.shape[-2:]
        if min(self.tokenizer.grid_size((h, w))) < 1:
            raise ValueError(f"input {h}x{w} yields no tokens")
        x = self.tokenizer(x)
        x = x + self._pos_table((x.shape[1], x.shape[2]), x)
        # repeat, not expand: a view of a parameter confuses module hooks under no_grad
        cls = self.cls_token.repeat(x.shape[0], 1)
        return cls, x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> normalised tokens ``[B, 1 + H*W, C]`` of the last stage (class token first)."""
        cls, x = self._embed(x)
        for stage in self.stages:
            cls, x = stage(cls, x)
        tokens = torch.cat([cls[:, None], x.flatten(1, 2)], dim=1)
        return self.norm(tokens)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x[:, 0], pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's API: per-stage patch-token maps (NCHW); ``norm`` normalises the last stage's."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages[:max_index + 1] if stop_early else self.stages
        intermediates = []
        cls, x = self._embed(x)
        last = len(self.stages) - 1
        for i, stage in enumerate(stages):
            cls, x = stage(cls, x)
            if i in take:
                feat = self.norm(x) if norm and i == last else x
                intermediates.append(_nhwc_to_nchw(feat).contiguous() if output_fmt == "NCHW" else feat)
        if intermediates_only:
            return intermediates
        if len(stages) != len(self.stages):
            for stage in self.stages[len(stages):]:
                cls, x = stage(cls, x)
        return self.norm(torch.cat([cls[:, None], x.flatten(1, 2)], dim=1)), intermediates

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop stages after the last wanted one (and the norm / head when asked)."""
        take, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        if max_index < len(self.feature_info) - 1 or prune_norm:
            self.norm = nn.Identity()
        if max_index < len(self.feature_info) - 1:
            self.num_features = self.feature_info[max_index]["num_chs"]
            self.head = MlpHead(self.num_features, 0, None)
            self.head_hidden_size = self.num_features
        if prune_head:
            self.reset_classifier(0)
        return take

    @torch.no_grad()
    def fuse(self) -> "ECViT":
        """Fold the tokenizer's BatchNorms into their convs for inference (exact in eval mode)."""
        self.eval()
        self.tokenizer.conv_h.fuse()
        self.tokenizer.conv_v.fuse()
        return self


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: ECViT) -> dict[str, torch.Tensor]:
    """Resample a learnable ``pos_embed`` saved for another ``img_size`` to the model's grid."""
    table = state_dict.get("pos_embed")
    own = getattr(model, "pos_embed", None)
    if table is not None and own is not None and table.ndim == 4 and table.shape[1:3] != own.shape[1:3]:
        state_dict = dict(state_dict)
        resized = F.interpolate(_nhwc_to_nchw(table.float()), size=tuple(own.shape[1:3]),
                                mode=model.pos_interp, align_corners=False)
        state_dict["pos_embed"] = _nchw_to_nhwc(resized).contiguous().to(table.dtype)
    return state_dict


def _create_ecvit(variant: str, pretrained: bool = False, **kwargs) -> ECViT:
    out_indices = kwargs.pop("out_indices", tuple(range(len(kwargs.get("depths", (0, 0, 0))))))
    return build_model_with_cfg(
        ECViT, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
        **kwargs,
    )


def _cfg(**kwargs) -> dict:
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": None,
        "crop_pct": 0.875, "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225), "first_conv": "tokenizer.conv_h.conv.dw",
        "classifier": "head", "paper_ids": "arXiv:2504.14825", **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "ecvit_tiny.untrained": _cfg(),
    "ecvit_small.untrained": _cfg(),
    "ecvit_base.untrained": _cfg(),
})


@register_model(paper=PAPER)
def ecvit_tiny(pretrained: bool = False, **kwargs) -> ECViT:
    """Small and fast, for 32-64 px inputs and CPU training (a 32 px input gives a 4x4 token
    grid, one window; 64 px an 8x8 grid, padded 7x7 windows)."""
    args = dict(embed_dims=(64, 128), depths=(2, 2), num_heads=(2, 4), mlp_ratios=(2.0, 2.0))
    return _create_ecvit("ecvit_tiny", pretrained, **dict(args, **kwargs))


@register_model(paper=PAPER)
def ecvit_small(pretrained: bool = False, **kwargs) -> ECViT:
    """The paper's model: ~4.9M parameters / ~0.7G MACs at 224 with 10 classes."""
    args = dict(embed_dims=(96, 256, 384), depths=(6, 6, 0), num_heads=(3, 8, 12), mlp_ratios=(2.0, 2.0, 2.0))
    return _create_ecvit("ecvit_small", pretrained, **dict(args, **kwargs))


@register_model(paper=PAPER)
def ecvit_base(pretrained: bool = False, **kwargs) -> ECViT:
    """A wider, deeper ECViT for larger datasets."""
    args = dict(embed_dims=(128, 320, 512), depths=(6, 8, 0), num_heads=(4, 10, 16), mlp_ratios=(2.0, 2.0, 2.0))
    return _create_ecvit("ecvit_base", pretrained, **dict(args, **kwargs))
