"""ECViT: Efficient Convolutional Vision Transformer (Qian 2025, arXiv 2504.14825).

The network, as the paper describes it:

* stage 1, tokenizer (Sec. III-A, Eq. 1-3): two depthwise-separable convolutions (7x1 then
  1x7, stride 2, 32 channels), each Conv -> BN -> GELU, a 3x3 / stride 2 max pool, the
  low-level map reshaped into tokens, a Linear to the encoder width, a positional
  encoding and a learnable class token;
* stages 2 and 3: encoders, each a Partitioned MSA (P-MSA) then an Interactive FFN (I-FFN)
  with a residual connection after each, followed by a token-merging layer (4x4 / stride 4
  max pool on the token grid, then a Linear that raises the width);
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
  Linear, no hidden layer);
* the residuals are pre-norm (``x + f(LN(x))``, as ViT, CvT and Swin): the paper's "residual
  connections are applied after each module" also reads as post-norm; we take pre-norm;
* ``merge_norm`` [True] and ``layer_scale_init`` [0.1]: training stability, not in the
  paper. A LayerNorm before the merging Linear (as Swin's patch merging) and LayerScale
  vectors on both residual branches (CaiT's 0.1 for networks of up to 18 blocks). Without
  them ``ecvit_small`` collapsed to chance on the 32 px digits at lr 1e-3 in every seed:
  at 32 px its second stage runs 6 blocks on a 1x1 grid, the class token's
  input-independent part grew through the stage, and after warm-up the class token's
  spread over the batch fell to ~1e-4. ``merge_norm=False, layer_scale_init=None`` builds
  the network without them (and loads checkpoints trained before they existed).

Small inputs: the 8x tokenizer and the 4x merge leave a 1x1 grid for a second stage below
64 px (32 px: 4x4 tokens, then 1x1). Such a stage still trains (its windows hold the class
token and one token; the I-FFN's convolutions see only their centre tap), and the 32 px
recipes use it; ``stem_stride="kernel_axis"`` (4x) keeps a 2x2 grid there instead.

How ``ecvit_small``'s defaults were chosen: the paper reports 4.888M parameters and 0.698G
MACs (10 classes, 224x224). A sweep over widths (multiples of 32), depths, MLP ratios
{2, 3, 4} and both ``ffn_conv`` placements, counted with ``ecvit.flops`` (attention
included), gave as closest regular configuration embed_dims (96, 256, 384), depths
(6, 6, 0), heads (3, 8, 12) (head dim 32), MLP ratio 2, ``ffn_conv="input"``: measured
4,885,471 parameters (-0.05%) and 699,684,864 MACs (+0.24%) with 10 classes; with the
merge norms and LayerScale vectors 4,890,399 (+0.05%), MACs unchanged. Many other
configurations fit the two totals as well: ``ecvit_small`` is one fit, not the paper's
published configuration, which the material we have does not give. Stage 1 runs
on the 28x28 grid (16 windows of 7x7), stage 2 on 7x7 (one window), the depth-0 stage is
the final merge (2x2 grid) that lifts the class token to 384 for the head.

Note: the patch tokens leaving the last encoder only reach the (pooled-away) final patch
map, so the last encoder's I-FFN convolutions get gradients only from dense uses of the
features (``forward_intermediates`` / ``features_only``), not from the class logits.
"""

import math
from typing import Any, Literal, Optional, Sequence

import torch
import torch.fx
import torch.nn.functional as F
from timm.layers import LayerScale, register_notrace_function, to_2tuple, trunc_normal_, use_fused_attn
from timm.models import build_model_with_cfg, checkpoint, generate_default_cfgs
from timm.models._features import feature_take_indices
from torch import nn

from ecvit.models.layers import GLOBAL_POOLS, img_size_cfg_overlay, split_heads
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
    """Depthwise-separable conv -> BatchNorm -> GELU: the tokenizer's f_h / f_v (Sec. III-A, Eq. 1-2).

    ``ecvit.models.speed.fuse`` folds the BatchNorm into the pointwise conv for inference.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel: tuple[int, int],
                 stride: tuple[int, int]) -> None:
        super().__init__()
        self.conv = SeparableConv(in_chs, out_chs, kernel, stride, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(out_chs)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._activate(self.bn(self.conv(x)))

    def _activate(self, x: torch.Tensor) -> torch.Tensor:
        """GELU on the NHWC view of the channels-last map: same values, but PyTorch's CPU GELU
        runs ~1.5x faster (forward and backward) on a contiguous NHWC tensor than on the
        4-D channels-last one (measured at 16x32x112x112, benchmarks/NOTES.md)."""
        return _nhwc_to_nchw(self.act(_nchw_to_nhwc(x)))


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

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The two separable convs: image -> low-level map ``[B, stem_chans, H/4, W/4]`` (channels-last)."""
        # Channels-last end to end: convs, pool and the NHWC token view run without copies
        # (on CPU the pool alone is >10x faster than on an NCHW bf16 map).
        x = x.contiguous(memory_format=torch.channels_last)
        return self.conv_v(self.conv_h(x))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Low-level map -> max pool -> patch tokens ``[B, H, W, embed_dim]`` (Eq. 3)."""
        return self.proj(_nchw_to_nhwc(self.pool(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(self.stem(x))


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


# The window helpers below branch on the grid size; FX cannot trace that, so they are leaves
# of its graphs (torch.fx.wrap for any tracer, register_notrace_function for timm's).


@torch.fx.wrap
@register_notrace_function
def partition_windows(cls: torch.Tensor, x: torch.Tensor, block_size: int) -> torch.Tensor:
    """``cls`` [B, C], ``x`` [B, H, W, C] -> windows ``[B*nW, 1 + wh*ww, C]``, class token first.

    The grid is padded at the bottom/right to whole windows; one copy at width C.
    """
    b, h, w, c = x.shape
    wh, ww, hp, wp = _window_layout(h, w, block_size)
    gh, gw = hp // wh, wp // ww
    if hp != h or wp != w:
        x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    tokens = x.new_empty([b, gh, gw, 1 + wh * ww, c])
    tokens[:, :, :, 0] = cls[:, None, None]
    tokens[:, :, :, 1:].view(b, gh, gw, wh, ww, c).copy_(
        x.view(b, gh, wh, gw, ww, c).permute(0, 1, 3, 2, 4, 5))
    return tokens.view(b * gh * gw, 1 + wh * ww, c)


@torch.fx.wrap
@register_notrace_function
def window_key_mask(x: torch.Tensor, block_size: int) -> Optional[torch.Tensor]:
    """Bool ``[B*nW, 1, 1, 1 + wh*ww]`` keeping the real keys (and the class key) of ``x``'s
    windows; None when the grid needs no padding."""
    b, h, w = x.shape[0], x.shape[1], x.shape[2]
    wh, ww, hp, wp = _window_layout(h, w, block_size)
    if hp == h and wp == w:
        return None
    valid = _window_valid(h, w, block_size, x.device)  # [nW, t]
    n_win = valid.shape[0]
    keep = torch.cat([valid.new_ones([n_win, 1]), valid], dim=1)  # class key always kept
    return keep[None, :, None, None, :].expand(b, -1, 1, 1, -1).reshape(b * n_win, 1, 1, 1 + wh * ww)


@torch.fx.wrap
@register_notrace_function
def mask_scores(attn: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Attention scores with the masked-out (padded) keys at -inf."""
    if mask is None:
        return attn
    return attn.masked_fill(~mask, float("-inf"))


@torch.fx.wrap
@register_notrace_function
def merge_windows(out: torch.Tensor, height: int, width: int, block_size: int,
                  cls_merge: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows ``[B*nW, 1 + t, C]`` -> merged class token ``[B, C]`` and patches ``[B, H, W, C]``.

    ``cls_merge="mean"`` weights each window by its number of real tokens (the plain mean
    for a divisible grid), ``"max"`` takes the element-wise maximum; padding is cropped.
    """
    wh, ww, hp, wp = _window_layout(height, width, block_size)
    gh, gw = hp // wh, wp // ww
    c = out.shape[-1]
    out = out.view(-1, gh, gw, 1 + wh * ww, c)
    b = out.shape[0]
    padded = hp != height or wp != width
    cls_win = out[:, :, :, 0]  # [B, gh, gw, C]: each window's class-token output
    if cls_merge == "max":
        cls_out = cls_win.amax(dim=(1, 2))
    elif not padded:
        cls_out = cls_win.mean(dim=(1, 2))
    else:
        valid = _window_valid(height, width, block_size, out.device)
        weight = valid.sum(1).to(cls_win.dtype).view(1, gh, gw, 1) / (height * width)
        cls_out = (cls_win * weight).sum(dim=(1, 2))
    patches = out[:, :, :, 1:].view(b, gh, gw, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(b, hp, wp, c)
    if padded:
        patches = patches[:, :height, :width]
    return cls_out, patches


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

    ``fused_attn`` (timm's switch, on by default) picks SDPA; off, the attention weights are
    computed explicitly (``attn.softmax``), which is what ``timm.utils.AttentionExtract`` reads.
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
        self.scale = self.head_dim ** -0.5
        self.block_size = block_size
        self.cls_merge = cls_merge
        self.fused_attn = use_fused_attn()
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, cls: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``cls`` [B, C], ``x`` [B, H, W, C] -> same shapes."""
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        tokens = partition_windows(cls, x, self.block_size)
        mask = window_key_mask(x, self.block_size)
        bw, n = tokens.shape[0], tokens.shape[1]
        q, k, v = split_heads(self.qkv(tokens), 3, self.num_heads)
        out = self.attend(q, k, v, mask)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(bw, n, c)))
        return merge_windows(out, h, w, self.block_size, self.cls_merge)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: Optional[torch.Tensor]) -> torch.Tensor:
        """``softmax(q k^T / sqrt(d)) v`` inside each window (Eq. 5-6), padded keys masked out."""
        dropout_p = self.attn_drop.p if self.training else 0.0
        if self.fused_attn:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = mask_scores(attn, mask)
        attn = attn.softmax(dim=-1)
        attn = self.attn_drop(attn)
        return attn @ v

    def class_token_map(self, attn: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Class token's attention weights over the ``height x width`` patch grid: ``[B, H, W]``.

        ``attn`` is ``[B*nW, heads, 1 + t, 1 + t]`` (one softmax per window); averaged over
        heads, each window's map is weighted as the mean merge weights its class-token
        output (its share of the real tokens), so the map sums to at most 1, like a ViT's.
        For ``cls_merge="max"`` the same weights are an approximation.
        """
        wh, ww, hp, wp = _window_layout(height, width, self.block_size)
        gh, gw = hp // wh, wp // ww
        weight = _window_valid(height, width, self.block_size, attn.device).sum(1).to(attn.dtype)
        maps = attn[:, :, 0, 1:].mean(dim=1).view(-1, gh * gw, wh * ww) * (weight / (height * width))[:, None]
        maps = maps.view(-1, gh, gw, wh, ww).permute(0, 1, 3, 2, 4).reshape(-1, hp, wp)
        return maps[:, :height, :width]


class InteractiveFFN(nn.Module):
    """Interactive feed-forward network, I-FFN (Sec. III-C).

    The class token is set aside, patch tokens go back to a 2-D map, pass a
    depthwise-separable 3x1 then a depthwise-separable 1x3 convolution (stride 1) and are
    flattened again; the class token rejoins. Order with ``conv_pos="hidden"``:
    fc1 -> GELU -> sepconv 3x1 -> sepconv 1x3 -> GELU -> fc2 (the convs act on the
    expanded width). With ``conv_pos="input"``: sepconv 3x1 -> sepconv 1x3 -> fc1 -> GELU ->
    fc2. The class token skips only the convolutions.

    With ``conv_pos="input"`` the 1x3 conv's pointwise conv and fc1 are two Linear maps in a
    row; ``ecvit.models.speed`` computes them as one (their product) in its fused and
    training forms, which override :meth:`mixed_fc1`.
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

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens [B, H, W, C] through the two separable convs (channels-last views)."""
        return self.conv_v.forward_nhwc(self.conv_h.forward_nhwc(x))

    def mixed_fc1(self, x: torch.Tensor) -> torch.Tensor:
        """``fc1(mix(x))``: the ``conv_pos="input"`` order."""
        return self.fc1(self.mix(x))

    def forward(self, cls: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.conv_pos == "input":
            x = self.act(self.mixed_fc1(x))
        else:
            x = self.conv_act(self.mix(self.act(self.fc1(x))))
        cls = self.act(self.fc1(cls))
        cls, x = self.drop(cls), self.drop(x)
        return self.drop(self.fc2(cls)), self.drop(self.fc2(x))


class PairDropPath(nn.Module):
    """Stochastic depth for a block's two outputs, class token ``[B, C]`` and patch tokens.

    A sample's class token and its patch tokens are one residual branch: one keep/drop draw
    per sample applies to both (timm's ``DropPath`` on each would draw them independently).
    Kept branches are scaled by ``1 / (1 - drop_prob)``, as timm does.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, cls: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.drop_prob == 0.0 or not self.training:
            return cls, x
        keep = 1.0 - self.drop_prob
        mask = cls.new_empty(cls.shape[0], 1).bernoulli_(keep)
        if keep > 0.0:
            mask = mask / keep
        return cls * mask, x * mask.view(mask.shape[0], 1, 1, 1)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class EncoderBlock(nn.Module):
    """One encoder (Sec. III-B, III-C): x = x + g1 * P-MSA(LN(x)); x = x + g2 * I-FFN(LN(x)).

    Pre-norm residuals; ``g1``, ``g2`` are LayerScale vectors (``layer_scale_init``; None:
    no scaling, the plain residual).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, block_size: int,
                 drop_path: float = 0.0, proj_drop: float = 0.0, attn_drop: float = 0.0,
                 cls_merge: Literal["mean", "max"] = "mean",
                 ffn_conv: Literal["hidden", "input"] = "input",
                 layer_scale_init: float | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = PartitionedAttention(dim, num_heads, block_size, attn_drop=attn_drop,
                                         proj_drop=proj_drop, cls_merge=cls_merge)
        self.ls1 = LayerScale(dim, layer_scale_init) if layer_scale_init else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = InteractiveFFN(dim, mlp_ratio, drop=proj_drop, conv_pos=ffn_conv)
        self.ls2 = LayerScale(dim, layer_scale_init) if layer_scale_init else nn.Identity()
        self.drop_path = PairDropPath(drop_path)

    def forward(self, cls: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a_cls, a_x = self.attn(self.norm1(cls), self.norm1(x))
        a_cls, a_x = self.drop_path(self.ls1(a_cls), self.ls1(a_x))
        cls, x = cls + a_cls, x + a_x
        f_cls, f_x = self.ffn(self.norm2(cls), self.norm2(x))
        f_cls, f_x = self.drop_path(self.ls2(f_cls), self.ls2(f_x))
        return cls + f_cls, x + f_x


class TokenMerging(nn.Module):
    """Tokens merging (Sec. III-D): max pool on the patch grid, Linear raising the width.

    The class token goes through the same Linear. ``ceil_mode`` pooling keeps the last
    partial window, so any grid (even 1x1) merges to at least one token. ``norm`` (ours, as
    Swin's patch merging) puts a LayerNorm before the Linear: the max pool adds a positive,
    input-independent offset that would otherwise grow stage by stage.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel: int = 4, stride: int = 4,
                 norm: bool = True) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(kernel, stride, ceil_mode=True)
        self.norm = nn.LayerNorm(in_dim) if norm else nn.Identity()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, cls: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _nchw_to_nhwc(self.pool(_nhwc_to_nchw(x)))
        return self.proj(self.norm(cls)), self.proj(self.norm(x))


class ECViTStage(nn.Module):
    """Optional token merging from the previous width, then ``depth`` encoders."""

    def __init__(self, in_dim: int | None, dim: int, depth: int, num_heads: int,
                 mlp_ratio: float, block_size: int, drop_path: Sequence[float],
                 merge_kernel: int = 4, merge_stride: int = 4, merge_norm: bool = True,
                 **block_kwargs) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.merge = (TokenMerging(in_dim, dim, merge_kernel, merge_stride, merge_norm)
                      if in_dim else None)
        self.blocks = nn.ModuleList([
            EncoderBlock(dim, num_heads, mlp_ratio, block_size, drop_path=drop_path[i], **block_kwargs)
            for i in range(depth)])

    def forward(self, cls: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.merge is not None:
            cls, x = self.merge(cls, x)
        for blk in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                cls, x = checkpoint(blk, cls, x)
            else:
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


def sincos_table(height: int, width: int, dim: int, device: torch.device) -> torch.Tensor:
    """Fixed 2-D sin-cos positional table ``[1, H, W, dim]``: sin(row), sin(col), cos(row), cos(col).

    Each quarter uses the frequencies ``10000 ** -(i / (dim / 4))``; the same table as timm's
    ``build_sincos2d_pos_embed``, written here so TorchScript can compile it.
    """
    quarter = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(quarter, device=device).float() / quarter))
    rows = torch.arange(height, device=device).float()[:, None, None] * omega
    cols = torch.arange(width, device=device).float()[None, :, None] * omega
    rows, cols = rows.expand(height, width, quarter), cols.expand(height, width, quarter)
    return torch.cat([rows.sin(), cols.sin(), rows.cos(), cols.cos()], dim=-1)[None]


@torch.fx.wrap
@register_notrace_function
def position_table(pos_embed: Optional[torch.Tensor], like: torch.Tensor, mode: str) -> torch.Tensor:
    """Positional encoding ``[1, H, W, C]`` for the token grid of ``like`` ([B, H, W, C]).

    A learnable table is used as is on its own grid and resampled (``mode``, align_corners
    False) for others; without one, the sin-cos table of the actual grid.
    """
    height, width = like.shape[1], like.shape[2]
    if pos_embed is None:
        return sincos_table(height, width, like.shape[-1], like.device).to(like.dtype)
    if pos_embed.shape[1] == height and pos_embed.shape[2] == width:
        return pos_embed
    table = F.interpolate(_nhwc_to_nchw(pos_embed), size=[height, width], mode=mode, align_corners=False)
    return _nchw_to_nhwc(table)


@torch.fx.wrap
@register_notrace_function
def checked_image(x: torch.Tensor, stem_stride: str) -> torch.Tensor:
    """``x`` itself, or a ValueError if it is too small to yield a single token."""
    h, w = x.shape[-2], x.shape[-1]
    for _ in range(2 if stem_stride == "both" else 1):  # the stem's stride-2 convs
        h, w = (h + 1) // 2, (w + 1) // 2
    if min(h, w) < 1:
        raise ValueError(f"input {x.shape[-2]}x{x.shape[-1]} yields no tokens")
    return x


class ECViT(nn.Module):
    """ECViT (Qian 2025): tokenizer, stages of P-MSA / I-FFN encoders with token merging, MLP head.

    Per-stage lists (``embed_dims``, ``depths``, ``num_heads``, ``mlp_ratios``) must have the
    same length; a stage of depth 0 is only a merging layer (the paper's final one).
    ``global_pool``: 'token' (the class token, paper), 'avg' (mean of the last stage's patch
    tokens) or '' (no pooling: the head runs on every token). Feature levels
    (``feature_info``, ``forward_intermediates``): the tokenizer's stem map, then each stage.
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
        merge_norm: bool = True,
        layer_scale_init: float | None = 0.1,
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
        if global_pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool {global_pool!r} is not one of {GLOBAL_POOLS}")

        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.img_size = tuple(int(s) for s in to_2tuple(img_size))
        self.embed_dims = tuple(embed_dims)
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
        stages = []
        reduction = self.img_size[0] / self.grid_size[0]
        self.feature_info = [dict(num_chs=stem_chans, reduction=4 if stem_stride == "both" else 2,
                                  module="tokenizer")]
        start = 0
        for i, (dim, depth, heads, ratio) in enumerate(zip(embed_dims, depths, num_heads, mlp_ratios)):
            if i:
                reduction *= merge_stride
            stages.append(ECViTStage(
                embed_dims[i - 1] if i else None, dim, depth, heads, ratio, block_size,
                dpr[start:start + depth], merge_kernel, merge_stride, proj_drop=proj_drop_rate,
                attn_drop=attn_drop_rate, cls_merge=cls_merge, ffn_conv=ffn_conv,
                merge_norm=merge_norm, layer_scale_init=layer_scale_init))
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
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise lr decay (timm's ``param_groups_layer_decay``).

        Tokenizer, class token and positions form the stem; a stage's merging layer joins
        its first block (as timm's downsampling layers do) and the final norm the last group.
        ``coarse`` groups by stage.
        """
        return dict(
            stem=r"^cls_token|^pos_embed|^tokenizer",
            blocks=r"^stages\.(\d+)" if coarse else [
                (r"^stages\.(\d+)\.merge", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                (r"^norm", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each encoder in the backward pass instead of keeping its activations."""
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New final Linear for ``num_classes`` (0: none); the MLP's hidden layer is kept.

        ``global_pool`` as in ``__init__``; '' leaves the tokens unpooled.
        """
        if global_pool is not None:
            if global_pool not in GLOBAL_POOLS:
                raise ValueError(f"global_pool {global_pool!r} is not one of {GLOBAL_POOLS}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head.fc = nn.Linear(self.head.width, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            trunc_normal_(self.head.fc.weight, std=0.02)
            nn.init.zeros_(self.head.fc.bias)

    def _embed(self, stem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stem map -> class token ``[B, C]`` and positioned patch tokens ``[B, H, W, C]``."""
        x = self.tokenizer.tokens(stem)
        x = x + position_table(self.pos_embed, x, self.pos_interp)
        # repeat, not expand: a view of a parameter confuses module hooks under no_grad
        cls = self.cls_token.repeat(x.shape[0], 1)
        return cls, x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> normalised tokens ``[B, 1 + H*W, C]`` of the last stage (class token first)."""
        cls, x = self._embed(self.tokenizer.stem(checked_image(x, self.tokenizer.stem_stride)))
        for stage in self.stages:
            cls, x = stage(cls, x)
        tokens = torch.cat([cls[:, None], x.flatten(1, 2)], dim=1)
        return self.norm(tokens)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the tokens (class token by default; '' keeps them all) and run the MLP head."""
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x[:, 1:].mean(dim=1)
        return self.head(x, pre_logits=pre_logits)

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
        """timm's API: the stem map, then each stage's patch-token map; ``norm`` normalises the last stage's."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take, max_index = feature_take_indices(1 + len(self.stages), indices)
        intermediates = []
        stem = self.tokenizer.stem(checked_image(x, self.tokenizer.stem_stride))
        if 0 in take:
            intermediates.append(stem.contiguous() if output_fmt == "NCHW" else _nchw_to_nhwc(stem))
        cls, x = self._embed(stem)
        stages = self.stages[:max_index] if stop_early else self.stages
        for level, stage in enumerate(stages, start=1):
            cls, x = stage(cls, x)
            if level in take:
                feat = self.norm(x) if norm and level == len(self.stages) else x
                intermediates.append(_nhwc_to_nchw(feat).contiguous() if output_fmt == "NCHW" else feat)
        if intermediates_only:
            return intermediates
        for stage in self.stages[len(stages):]:
            cls, x = stage(cls, x)
        return self.norm(torch.cat([cls[:, None], x.flatten(1, 2)], dim=1)), intermediates

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop stages after the last wanted level (and the norm / the whole MLP head when asked)."""
        take, max_index = feature_take_indices(1 + len(self.stages), indices)
        pruned_end = max_index < len(self.stages)
        self.stages = self.stages[:max_index]  # level i > 0 is stage i - 1
        if pruned_end or prune_norm:
            self.norm = nn.Identity()
        if pruned_end:
            self.num_features = self.embed_dims[max(max_index - 1, 0)]
        if pruned_end or prune_head:  # a feature extractor keeps no head layer, the hidden one included
            self.head = MlpHead(self.num_features, 0, None)
            self.head_hidden_size = self.num_features
        if prune_head:
            self.reset_classifier(0)
        return take


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
    # feature levels: the tokenizer's stem, then every stage
    out_indices = kwargs.pop("out_indices", tuple(range(1 + len(kwargs.get("depths", (0, 0, 0))))))
    return build_model_with_cfg(
        ECViT, variant, pretrained,
        pretrained_cfg_overlay=img_size_cfg_overlay(kwargs),
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
        **kwargs,
    )


def _cfg(**kwargs) -> dict:
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": None,
        "crop_pct": 0.875, "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225), "first_conv": "tokenizer.conv_h.conv.dw",
        "classifier": "head.fc", "paper_ids": "arXiv:2504.14825", **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "ecvit_tiny.untrained": _cfg(),
    "ecvit_small.untrained": _cfg(),
    "ecvit_base.untrained": _cfg(),
})


@register_model(paper=PAPER)
def ecvit_tiny(pretrained: bool = False, **kwargs) -> ECViT:
    """Small and fast, for 32-64 px inputs and CPU training (a 32 px input gives a 4x4 token
    grid, one window; 64 px an 8x8 grid, padded 7x7 windows). Drop path 0.1, as DeiT-Tiny."""
    args = dict(embed_dims=(64, 128), depths=(2, 2), num_heads=(2, 4), mlp_ratios=(2.0, 2.0),
                drop_path_rate=0.1)
    return _create_ecvit("ecvit_tiny", pretrained, **dict(args, **kwargs))


@register_model(paper=PAPER)
def ecvit_small(pretrained: bool = False, **kwargs) -> ECViT:
    """A configuration fitted to the paper's totals: ~4.89M parameters / ~0.70G MACs at 224 px
    with 10 classes (the widths, depths and heads are ours, see the module docstring)."""
    args = dict(embed_dims=(96, 256, 384), depths=(6, 6, 0), num_heads=(3, 8, 12), mlp_ratios=(2.0, 2.0, 2.0))
    return _create_ecvit("ecvit_small", pretrained, **dict(args, **kwargs))


@register_model(paper=PAPER)
def ecvit_base(pretrained: bool = False, **kwargs) -> ECViT:
    """A wider, deeper ECViT for larger datasets."""
    args = dict(embed_dims=(128, 320, 512), depths=(6, 8, 0), num_heads=(4, 10, 16), mlp_ratios=(2.0, 2.0, 2.0))
    return _create_ecvit("ecvit_base", pretrained, **dict(args, **kwargs))
