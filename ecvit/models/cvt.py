"""CvT: Convolutional vision Transformer (Wu et al. 2021, arXiv 2103.15808).

Three stages, each a convolutional token embedding (Sec. 3.1) followed by transformer
blocks whose attention uses a convolutional projection (Sec. 3.2): a depth-wise 3x3 conv
+ BatchNorm on the token grid before the linear q/k/v projections, with stride 2 for
keys and values. No positional embedding; a class token joins in the last stage only.
Every per-stage choice the official ``MODEL.SPEC`` can make (class tokens, projection
method, q and k/v kernels, strides and paddings, qkv bias, MLP ratio, dropouts, init) is a
constructor argument of :class:`CvT` (the translation of official files is
``ecvit.io.official_cvt``).

The module and parameter names reproduce the official implementation
(microsoft/CvT, ``lib/models/cls_cvt.py``), so its ``.pth`` files load with
``strict=True``; ``checkpoint_filter_fn`` also converts weights saved by the transformers
library (``cvt.encoder.stages...``, e.g. the hub's ``microsoft/cvt-13``).

Tokens travel as ``[B, N, C]``; a stage's token grid is handed to the next stage's conv
as a channels-last view, so no copy is made between the convolutional and token views.
"""

import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, QuickGELU, to_2tuple, trunc_normal_, use_fused_attn
from timm.models import build_model_with_cfg, checkpoint, generate_default_cfgs
from timm.models._features import feature_take_indices
from torch import nn

from ecvit.models.layers import GLOBAL_POOLS, img_size_cfg_overlay, tokens_to_grid
from ecvit.models.registry import register_model

__all__ = ["CvT", "checkpoint_filter_fn"]

QKV_METHODS = ("dw_bn", "avg", "linear")
INITS = ("trunc_norm", "xavier")
LN_EPS = 1e-5  # official LayerNorm eps (transformers' CvtConfig.layer_norm_eps is unused)
MAX_STAGES = 4  # forward_features names each stage (see CvT.forward_features)


class LayerNorm(nn.LayerNorm):
    """LayerNorm with the official eps 1e-5, output in the input dtype.

    bf16/fp16 inputs go through the kernel's fp32 accumulation (mean, variance and affine in
    fp32 with the fp32 weights, one rounding at the end), which equals the official
    upcast-first ``LayerNorm`` up to that final rounding, without the two extra copies.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim, eps=LN_EPS)


class ConvEmbed(nn.Module):
    """Convolutional token embedding (Sec. 3.1): overlapping strided Conv2d, LayerNorm over channels."""

    def __init__(self, in_chans: int, dim: int, patch_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride, padding)
        self.norm = LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """``[B, C_in, H_in, W_in]`` map -> ``[B, H*W, C]`` tokens and the grid size ``H, W``."""
        x = self.proj(x)
        height, width = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), height, width


class ConvProjection(nn.Module):
    """Depth-wise conv + BatchNorm on the token grid: the 'dw_bn' projection of Sec. 3.2.

    ``ecvit.models.speed.fuse`` folds the BatchNorm into the conv for inference.
    """

    def __init__(self, dim: int, kernel_size: int, stride: int, padding: int | None = None) -> None:
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(dim, dim, kernel_size, stride, padding, groups=dim, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class QuickGeluMlp(nn.Module):
    """The official MLP: ``fc1 -> QuickGELU -> dropout -> fc2 -> dropout``, QuickGELU(z) = z * sigmoid(1.702 z).

    ``ecvit.models.speed`` has its one-SiLU forms (fused for inference, and for training
    under its CPU policy).
    """

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = QuickGELU()
        self.fc2 = nn.Linear(hidden, dim)
        # official Mlp: dropout after the activation and after fc2 (no parameters, no state)
        self.drop: nn.Module = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def _build_projection(method: str, dim: int, kernel_size: int, stride: int, padding: int) -> nn.Module | None:
    """'dw_bn': ConvProjection; 'avg': average pooling (no parameters); 'linear': none."""
    if method == "dw_bn":
        return ConvProjection(dim, kernel_size, stride, padding)
    if method == "avg":
        return nn.AvgPool2d(kernel_size, stride, padding, ceil_mode=True)
    return None


def _projected_size(proj: nn.Module | None, size: int) -> int:
    """Side of the key grid ``proj`` makes from a query grid side ``size`` (conv or ceil-mode pool)."""
    if proj is None:
        return size
    if isinstance(proj, ConvProjection):
        k, s, p = proj.conv.kernel_size[0], proj.conv.stride[0], proj.conv.padding[0]
        return (size + 2 * p - k) // s + 1
    k, s, p = proj.kernel_size, proj.stride, proj.padding
    out = -(-(size + 2 * p - k) // s) + 1
    return out - 1 if (out - 1) * s >= size + p else out  # the last window must start inside


class ConvAttention(nn.Module):
    """Multi-head attention with convolutional projection (Sec. 3.2, Fig. 3).

    The patch tokens are laid back on their grid and projected by ``conv_proj_{q,k,v}``
    (q with stride ``stride_q``, k/v with ``stride_kv``, the squeezed projection); a class
    token is split off before and concatenated in front again before the linear
    ``proj_{q,k,v}``. Scores are scaled by ``dim ** -0.5`` (the stage width, as in the
    official code, not the head width). With ``method='avg'`` queries use no conv and
    keys/values are average-pooled; with ``'linear'`` there is no conv projection at all
    (plain ViT attention; the official code declares this option but never runs it).

    ``fused_attn`` (timm's switch, on by default) picks SDPA; off, the attention weights are
    computed explicitly (``attn.softmax``), which is what ``timm.utils.AttentionExtract`` reads.
    ``padding_q``/``padding_kv`` default to ``kernel_size // 2``; ``attn_drop`` drops attention
    weights and ``proj_drop`` the output (the official ``ATTN_DROP_RATE`` / ``DROP_RATE``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        method: str = "dw_bn",
        kernel_size: int = 3,
        stride_q: int = 1,
        stride_kv: int = 2,
        num_prefix_tokens: int = 0,
        padding_q: int | None = None,
        padding_kv: int | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        padding_q = kernel_size // 2 if padding_q is None else padding_q
        padding_kv = kernel_size // 2 if padding_kv is None else padding_kv
        self.num_heads = num_heads
        self.scale = dim**-0.5
        self.num_prefix_tokens = num_prefix_tokens
        self.fused_attn = use_fused_attn()
        q_method = "linear" if method == "avg" else method
        self.conv_proj_q = _build_projection(q_method, dim, kernel_size, stride_q, padding_q)
        self.conv_proj_k = _build_projection(method, dim, kernel_size, stride_kv, padding_kv)
        self.conv_proj_v = _build_projection(method, dim, kernel_size, stride_kv, padding_kv)
        self.proj_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop_p = float(attn_drop)
        self.attn_drop = nn.Dropout(attn_drop)  # named for timm's hooks
        self.proj = nn.Linear(dim, dim)
        self.proj_drop: nn.Module = nn.Dropout(proj_drop) if proj_drop > 0 else nn.Identity()

    def _with_prefix(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Conv-projected grid back to tokens, the class token (from ``x``) in front."""
        y = y.flatten(2).transpose(1, 2)
        if self.num_prefix_tokens > 0:
            y = torch.cat((x[:, : self.num_prefix_tokens], y), dim=1)
        return y

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        grid = tokens_to_grid(x[:, self.num_prefix_tokens :], height, width)
        q, k, v = x, x, x
        if self.conv_proj_q is not None:
            q = self._with_prefix(self.conv_proj_q(grid), x)
        if self.conv_proj_k is not None:
            k = self._with_prefix(self.conv_proj_k(grid), x)
        if self.conv_proj_v is not None:
            v = self._with_prefix(self.conv_proj_v(grid), x)
        q, k, v = self._heads(self.proj_q(q)), self._heads(self.proj_k(k)), self._heads(self.proj_v(v))
        return self.proj_drop(self.proj(self.attend(q, k, v).transpose(1, 2).flatten(2)))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``softmax(q k^T * scale) v`` per head (Sec. 3.2), scale ``dim ** -0.5``."""
        dropout = self.attn_drop_p if self.training else 0.0
        if self.fused_attn:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.scale)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        attn = self.attn_drop(attn)
        return attn @ v

    def key_grid(self, height: int, width: int) -> tuple[int, int]:
        """The grid the keys lie on for a ``height x width`` query grid (the squeezed projection's output)."""
        return _projected_size(self.conv_proj_k, height), _projected_size(self.conv_proj_k, width)

    def class_token_map(self, attn: torch.Tensor, height: int, width: int) -> torch.Tensor | None:
        """Class token's attention weights (``[B, heads, Nq, Nk]``) over the patch keys: ``[B, h_k, w_k]``.

        Averaged over heads; None in stages without a class token.
        """
        if self.num_prefix_tokens == 0:
            return None
        keys = attn[:, :, 0, self.num_prefix_tokens :].mean(dim=1)
        return keys.reshape(attn.shape[0], *self.key_grid(height, width))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))`` (QuickGELU MLP).

    ``attn_args`` go to :class:`ConvAttention` (projection method, kernel, strides, paddings,
    qkv bias, dropouts); ``drop`` is the MLP's dropout.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        num_prefix_tokens: int = 0,
        drop_path: float = 0.0,
        drop: float = 0.0,
        **attn_args: Any,
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = ConvAttention(dim, num_heads, num_prefix_tokens=num_prefix_tokens, proj_drop=drop, **attn_args)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = LayerNorm(dim)
        self.mlp = QuickGeluMlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, height: int, width: int, dtype: torch.dtype) -> torch.Tensor:
        """``dtype``: the stage's compute dtype (that of its embedding, see CvTStage).

        The attention reads its normalised input up to nine times (three convs, the class
        token, three Linears), so it is cast to ``dtype`` once here rather than by each of them.
        """
        x = x + self.drop_path(self.attn(self.norm1(x).to(dtype), height, width))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CvTStage(nn.Module):
    """One stage: conv token embedding, optional class token, ``depth`` blocks.

    Stochastic depth rises linearly from 0 to ``drop_path_rate`` over the stage's blocks,
    as in the official code; ``drop_rate`` is applied to the tokens entering the blocks and
    inside each block (the official ``DROP_RATE``). ``block_args`` go to every :class:`Block`.
    """

    def __init__(
        self,
        in_chans: int,
        dim: int,
        depth: int,
        num_heads: int,
        patch_size: int,
        patch_stride: int,
        patch_padding: int,
        cls_token: bool = False,
        drop_path_rate: float = 0.0,
        drop_rate: float = 0.0,
        **block_args: Any,
    ) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.patch_embed = ConvEmbed(in_chans, dim, patch_size, patch_stride, patch_padding)
        self.num_prefix_tokens = int(cls_token)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token else None
        self.pos_drop: nn.Module = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, num_prefix_tokens=self.num_prefix_tokens, drop_path=rate, drop=drop_rate,
                  **block_args)
            for rate in rates
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """``[B, C_in, H_in, W_in]`` -> ``[B, prefix + H*W, C]`` tokens and the grid size.

        The embedding's dtype is the stage's compute dtype (under autocast, the autocast
        dtype its conv ran in). The class token (an fp32 parameter) promotes the residual
        stream after it to fp32 under autocast, as in the official code; the blocks cast
        their normalised inputs back to the compute dtype.
        """
        x, height, width = self.patch_embed(x)
        dtype = x.dtype
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = self.pos_drop(x)
        for block in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(block, x, height, width, dtype)
            else:
                x = block(x, height, width, dtype)
        return x, height, width

    def to_grid(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """This stage's output tokens as a ``[B, C, H, W]`` map (the class token dropped)."""
        return tokens_to_grid(x[:, self.num_prefix_tokens :], height, width)


def _per_stage(value: Any, num_stages: int, name: str) -> tuple:
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * num_stages
    if len(values) != num_stages:
        raise ValueError(f"{name} needs {num_stages} values (one per stage), got {len(values)}")
    return values


def _check_stages(embed_dims: Sequence[int], per_stage: dict[str, tuple], init: str) -> None:
    """Refuse per-stage values no CvT can run (ValueError naming the argument)."""
    if init not in INITS:
        raise ValueError(f"init {init!r} is not one of {', '.join(INITS)}")
    for method in per_stage["qkv_method"]:
        if method not in QKV_METHODS:
            raise ValueError(f"qkv_method {method!r} is not one of {', '.join(QKV_METHODS)}")
    for dim, heads in zip(embed_dims, per_stage["num_heads"]):
        if dim % heads:
            raise ValueError(f"stage width {dim} is not divisible by {heads} heads")
    for name in ("stride_kv", "stride_q", "kernel_qkv"):
        if any(v < 1 for v in per_stage[name]):
            raise ValueError(f"{name} must be >= 1, got {list(per_stage[name])}")
    for i, (method, k, s, p) in enumerate(zip(per_stage["qkv_method"], per_stage["kernel_qkv"],
                                              per_stage["stride_q"], per_stage["padding_q"])):
        p = k // 2 if p is None else p
        if method == "dw_bn" and (s != 1 or 2 * p != k - 1):
            raise ValueError(f"stage {i}: stride_q {s} / padding_q {p} with kernel {k} change the "
                             "query grid, which the residual cannot add (the official code fails "
                             "too); use stride_q 1 and padding_q (kernel - 1) / 2")


def _init_xavier(module: nn.Module) -> None:
    """xavier-uniform Linear weights, zero biases (official ``init='xavier'``)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class CvT(nn.Module):
    """Convolutional vision Transformer (Wu et al. 2021, Sec. 3 and Table 2).

    Every per-stage argument takes one value for all stages or a sequence with one value
    per stage; together they express whatever the official ``MODEL.SPEC`` can (the YAML
    key is in brackets). Defaults are CvT-13's.

    Args:
        img_size: expected input size; CvT has no positional embedding and runs at any
            size of at least ``patch_sizes[0] - 2 * patch_paddings[0]`` pixels.
        drop_path_rate: a float is the maximum stochastic-depth rate of the last stage
            (earlier stages get none, as in every official configuration); a sequence
            gives each stage's maximum [DROP_PATH_RATE]. Rates rise linearly within a stage.
        qkv_method: 'dw_bn' (paper), 'avg' or 'linear' [QKV_PROJ_METHOD].
        cls_token: which stages have a class token [CLS_TOKEN]; None: the last stage only.
            Without one in the last stage the head averages the last stage's tokens.
        mlp_ratio: MLP hidden width / stage width [MLP_RATIO].
        qkv_bias: bias of the linear q/k/v projections [QKV_BIAS].
        kernel_qkv: kernel of the conv (or pooling) projection [KERNEL_QKV].
        stride_kv, padding_kv: stride and padding of the key/value projection [STRIDE_KV,
            PADDING_KV]; stride 1 disables the squeeze. Padding None: ``kernel_qkv // 2``.
        stride_q, padding_q: the same for queries [STRIDE_Q, PADDING_Q]; they must keep the
            token grid (the residual adds the attention output to its input).
        drop_rate: dropout on the stage's input tokens, the attention output and the MLP
            [DROP_RATE]; attn_drop_rate: dropout on the attention weights [ATTN_DROP_RATE].
        init: 'trunc_norm' (Linear weights trunc_normal std 0.02) or 'xavier' (xavier
            uniform) [INIT]; biases zero, norms 1/0; the head is trunc_normal in both.
        global_pool: 'token' (class token, paper), 'avg' (mean of the last stage's patch
            tokens) or '' (no pooling); None: 'token' when the last stage has a class token,
            else 'avg' (the official rule).
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str | None = None,
        embed_dims: Sequence[int] = (64, 192, 384),
        depths: Sequence[int] = (1, 2, 10),
        num_heads: Sequence[int] = (1, 3, 6),
        mlp_ratio: float | Sequence[float] = 4.0,
        patch_sizes: Sequence[int] = (7, 3, 3),
        patch_strides: Sequence[int] = (4, 2, 2),
        patch_paddings: Sequence[int] = (2, 1, 1),
        qkv_method: str | Sequence[str] = "dw_bn",
        stride_kv: int | Sequence[int] = 2,
        qkv_bias: bool | Sequence[bool] = True,
        drop_path_rate: float | Sequence[float] = 0.1,
        cls_token: bool | Sequence[bool] | None = None,
        kernel_qkv: int | Sequence[int] = 3,
        padding_kv: int | Sequence[int] | None = None,
        stride_q: int | Sequence[int] = 1,
        padding_q: int | Sequence[int] | None = None,
        drop_rate: float | Sequence[float] = 0.0,
        attn_drop_rate: float | Sequence[float] = 0.0,
        init: str = "trunc_norm",
    ) -> None:
        super().__init__()
        num_stages = len(embed_dims)
        if not 1 <= num_stages <= MAX_STAGES:
            raise ValueError(f"CvT has 1 to {MAX_STAGES} stages, got {num_stages}")
        if isinstance(drop_path_rate, (int, float)):
            drop_path_rate = (0.0,) * (num_stages - 1) + (float(drop_path_rate),)
        if cls_token is None:
            cls_token = (False,) * (num_stages - 1) + (True,)
        per_stage = {
            name: _per_stage(value, num_stages, name)
            for name, value in dict(
                depths=depths, num_heads=num_heads, patch_sizes=patch_sizes, patch_strides=patch_strides,
                patch_paddings=patch_paddings, qkv_method=qkv_method, drop_path_rate=drop_path_rate,
                cls_token=cls_token, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, kernel_qkv=kernel_qkv,
                stride_kv=stride_kv, padding_kv=padding_kv, stride_q=stride_q, padding_q=padding_q,
                drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
            ).items()
        }
        _check_stages(embed_dims, per_stage, init)
        size = to_2tuple(img_size)
        min_size = per_stage["patch_sizes"][0] - 2 * per_stage["patch_paddings"][0]
        if min(size) < max(min_size, 1):
            raise ValueError(f"img_size {img_size} is too small: CvT needs at least {max(min_size, 1)} pixels")

        self.num_classes = num_classes
        self.num_stages = num_stages
        self.embed_dims = tuple(embed_dims)
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.feature_info = []
        reduction = 1
        for i in range(num_stages):
            arg = {name: values[i] for name, values in per_stage.items()}
            stage = CvTStage(
                in_chans if i == 0 else embed_dims[i - 1],
                embed_dims[i],
                arg["depths"],
                arg["num_heads"],
                arg["patch_sizes"],
                arg["patch_strides"],
                arg["patch_paddings"],
                cls_token=bool(arg["cls_token"]),
                drop_path_rate=arg["drop_path_rate"],
                drop_rate=arg["drop_rate"],
                mlp_ratio=arg["mlp_ratio"],
                qkv_bias=bool(arg["qkv_bias"]),
                method=arg["qkv_method"],
                kernel_size=arg["kernel_qkv"],
                stride_q=arg["stride_q"],
                stride_kv=arg["stride_kv"],
                padding_q=arg["padding_q"],
                padding_kv=arg["padding_kv"],
                attn_drop=arg["attn_drop_rate"],
            )
            setattr(self, f"stage{i}", stage)
            reduction *= arg["patch_strides"]
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=reduction, module=f"stage{i}"))
        self.num_prefix_tokens = int(bool(per_stage["cls_token"][-1]))  # the last stage's class token
        self.norm = LayerNorm(embed_dims[-1])
        self.global_pool = "token" if self.num_prefix_tokens else "avg"
        self.head: nn.Module = nn.Identity()
        self.apply(_init_xavier if init == "xavier" else self._init_weights)
        for i in range(num_stages):
            cls = getattr(self, f"stage{i}").cls_token
            if cls is not None:
                trunc_normal_(cls, std=0.02)
        self.reset_classifier(num_classes, global_pool)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """trunc_normal(0.02) Linear weights, zero biases (official ``init='trunc_norm'``)."""
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def _stages(self) -> list[CvTStage]:
        return [getattr(self, f"stage{i}") for i in range(self.num_stages)]

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Class tokens are excluded from weight decay (official ``no_weight_decay``)."""
        return {f"stage{i}.cls_token" for i, s in enumerate(self._stages()) if s.cls_token is not None}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise lr decay (timm's ``param_groups_layer_decay``).

        The first embedding and the class token form the stem; a later stage's embedding
        joins its first block (as timm's downsampling layers do); the final norm joins the
        last block. ``coarse`` groups by stage.
        """
        return dict(
            stem=r"^stage0\.patch_embed|^stage\d+\.cls_token",
            blocks=r"^stage(\d+)" if coarse else [
                (r"^stage(\d+)\.patch_embed", (0,)),
                (r"^stage(\d+)\.blocks\.(\d+)", None),
                (r"^norm", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of keeping its activations."""
        for stage in self._stages():
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New (trunc_normal-initialised) ``num_classes`` head; ``global_pool`` as in ``__init__``."""
        if global_pool is not None:
            if global_pool not in GLOBAL_POOLS:
                raise ValueError(f"global_pool {global_pool!r} is not one of {GLOBAL_POOLS}")
            if global_pool == "token" and self.num_prefix_tokens == 0:
                raise ValueError("global_pool='token' needs a class token in the last stage")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(self.head)


    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> normalised last-stage tokens ``[B, 1 + H*W, C]`` (class token first).

        The stages are the attributes ``stage0``, ``stage1``, ... (the official names, so no
        container of them); TorchScript calls submodules only by name, so the chain is
        written out up to ``MAX_STAGES``. ``hasattr`` is resolved when scripting, and
        ``prune_intermediate_layers`` deletes the stages it drops.
        """
        x, height, width = self.stage0(x)
        if hasattr(self, "stage1"):
            x, height, width = self.stage1(self.stage0.to_grid(x, height, width))
        if hasattr(self, "stage2"):
            x, height, width = self.stage2(self.stage1.to_grid(x, height, width))
        if hasattr(self, "stage3"):
            x, height, width = self.stage3(self.stage2.to_grid(x, height, width))
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the tokens (class token by default; '' keeps them all) and classify."""
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens :].mean(dim=1)
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
        """Per-stage patch-token maps ``[B, C_i, H/r_i, W/r_i]`` (timm's API).

        ``indices``: last n stages if int, all if None, else the listed stages.
        ``norm`` applies the final LayerNorm to the last stage's map (the only one of its width).
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt {output_fmt!r} is not supported; CvT returns 'NCHW'")
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        stages = self._stages()[: max_index + 1] if stop_early else self._stages()
        last = self.num_stages - 1
        intermediates = []
        for i, stage in enumerate(stages):
            x, height, width = stage(x)
            feat = self.norm(x) if norm and i == last else x
            if i in take_indices:
                intermediates.append(stage.to_grid(feat, height, width))
            if i < last:
                x = stage.to_grid(x, height, width)
        if intermediates_only:
            return intermediates
        if len(stages) == self.num_stages:
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(
        self,
        indices: int | Sequence[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop stages after the last wanted one (and the norm/head they feed); timm's API."""
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        prune_end = max_index < self.num_stages - 1
        for i in range(max_index + 1, self.num_stages):
            delattr(self, f"stage{i}")
        self.num_stages = max_index + 1
        self.num_prefix_tokens = self._stages()[-1].num_prefix_tokens
        if prune_end:
            self.num_features = self.head_hidden_size = self.embed_dims[max_index]
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices


# transformers' CvtForImageClassification names -> official names, within a block
_HF_BLOCK_KEYS = {
    **{
        f"attention.attention.convolution_projection_{long}.convolution_projection.{hf}.": f"attn.conv_proj_{p}.{ours}."
        for long, p in (("query", "q"), ("key", "k"), ("value", "v"))
        for hf, ours in (("convolution", "conv"), ("normalization", "bn"))
    },
    **{f"attention.attention.projection_{long}.": f"attn.proj_{p}." for long, p in (("query", "q"), ("key", "k"), ("value", "v"))},
    "attention.output.dense.": "attn.proj.",
    "intermediate.dense.": "mlp.fc1.",
    "output.dense.": "mlp.fc2.",
    "layernorm_before.": "norm1.",
    "layernorm_after.": "norm2.",
}
_HF_STAGE_KEYS = {
    "embedding.convolution_embeddings.projection.": "patch_embed.proj.",
    "embedding.convolution_embeddings.normalization.": "patch_embed.norm.",
    "cls_token": "cls_token",
}
_HF_TOP_KEYS = {"layernorm.": "norm.", "classifier.": "head."}
_HF_BLOCK = re.compile(r"cvt\.encoder\.stages\.(\d+)\.layers\.(\d+)\.(.+)")
_HF_STAGE = re.compile(r"cvt\.encoder\.stages\.(\d+)\.(.+)")


def _rename(rest: str, table: dict[str, str]) -> str | None:
    for old, new in table.items():
        if rest.startswith(old):
            return new + rest[len(old) :]
    return None


def _from_transformers_key(key: str) -> str:
    """One transformers-layout key -> its official name (unknown keys are returned unchanged)."""
    if match := _HF_BLOCK.fullmatch(key):
        new = _rename(match[3], _HF_BLOCK_KEYS)
        return f"stage{match[1]}.blocks.{match[2]}.{new}" if new else key
    if match := _HF_STAGE.fullmatch(key):
        new = _rename(match[2], _HF_STAGE_KEYS)
        return f"stage{match[1]}.{new}" if new else key
    return _rename(key, _HF_TOP_KEYS) or key


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Bring a CvT state dict to the official layout (our ``state_dict()`` keys).

    Official keys pass through; a ``module.`` prefix (DistributedDataParallel) is stripped;
    transformers-layout weights (``cvt.encoder.stages.{i}...``, ``layernorm``, ``classifier``)
    are renamed tensor by tensor. The tensors themselves are identical in both layouts.
    """
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    if not any(k.startswith("cvt.encoder.") for k in state_dict):
        return state_dict
    return {_from_transformers_key(k): v for k, v in state_dict.items()}


def _create_cvt(variant: str, pretrained: bool = False, **kwargs: Any) -> CvT:
    return build_model_with_cfg(
        CvT,
        variant,
        pretrained,
        pretrained_cfg_overlay=img_size_cfg_overlay(kwargs),
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2)),
        **kwargs,
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.875,  # official test: resize 256, center crop 224
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stage0.patch_embed.proj",
        "classifier": "head",
        "paper_ids": "arXiv:2103.15808",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "cvt_13": _cfg(),
        "cvt_21": _cfg(),
        "cvt_w24": _cfg(input_size=(3, 384, 384), crop_pct=1.0),
    }
)

_PAPER = "Wu et al. 2021, arXiv 2103.15808"


@register_model(paper=_PAPER)
def cvt_13(pretrained: bool = False, **kwargs: Any) -> CvT:
    """CvT-13 (Table 2): widths 64/192/384, depths 1/2/10; 20.0M parameters, 4.5G MACs at 224."""
    args = dict(embed_dims=(64, 192, 384), depths=(1, 2, 10), num_heads=(1, 3, 6), drop_path_rate=0.1)
    return _create_cvt("cvt_13", pretrained, **dict(args, **kwargs))


@register_model(paper=_PAPER)
def cvt_21(pretrained: bool = False, **kwargs: Any) -> CvT:
    """CvT-21 (Table 2): widths 64/192/384, depths 1/4/16; 31.6M parameters, 7.1G MACs at 224."""
    args = dict(embed_dims=(64, 192, 384), depths=(1, 4, 16), num_heads=(1, 3, 6), drop_path_rate=0.1)
    return _create_cvt("cvt_21", pretrained, **dict(args, **kwargs))


@register_model(paper=_PAPER)
def cvt_w24(pretrained: bool = False, **kwargs: Any) -> CvT:
    """CvT-W24 (Table 2): widths 192/768/1024, depths 2/2/20; 277.2M parameters, 193.2G MACs at 384."""
    args = dict(
        img_size=384, embed_dims=(192, 768, 1024), depths=(2, 2, 20), num_heads=(3, 12, 16), drop_path_rate=0.3
    )
    return _create_cvt("cvt_w24", pretrained, **dict(args, **kwargs))
