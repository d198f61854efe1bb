"""CaiT-XXS with depth-wise convolution shortcuts (Zhang et al. 2024, arXiv 2407.19394).

The network is the CaiT of the paper's code (``models/cait.py`` of ZTX-100/Efficient_ViT_with_DW),
which follows lucidrains/vit-pytorch's CaiT (Touvron et al. 2021, arXiv 2103.17239):

* a patch transformer over the patch tokens only (no class token there): pre-norm blocks
  ``x + g1 * MSA(LN(x))`` then ``x + g2 * MLP(LN(x))`` with LayerScale vectors ``g``
  (Sec. 2 of CaiT) initialised by the block's position ``i`` (1-based): 0.1 up to 18,
  1e-5 up to 24, 1e-6 beyond; talking-heads attention (Shazeer et al. 2020): the
  attention logits, and again the softmax weights, are mixed across heads by learned
  ``heads x heads`` matrices; layer dropout (whole blocks skipped at random in training);
* then 2 class-attention blocks of the same form in which a class token attends to
  ``[LN(class token); patch tokens]`` (the patch tokens enter un-normalised);
* the head: LayerNorm then Linear on the class token.

XXS: dim 192, 4 heads of 48, MLP 768, patch 16 at 224 px, depth 12 or 24. The paper's shortcut
wraps every patch block: ``x = x + attn; x = x + ffn; x = x + DW(block input)`` with
``DW = DWConv3x3(BN(GELU(.)))`` on the 14x14 patch grid (the module of :mod:`ecvit.models.vit_dw`).
With 10 classes the code builds 6,413,642 / 6,441,290 (XXS12 plain / with shortcuts) and
11,750,090 / 11,805,386 (XXS24) parameters; :func:`checkpoint_filter_fn` loads its checkpoints.

How this differs from timm's ``cait_xxs24_224`` (the CaiT paper's own layout): the class token
joins only in class attention there too, but timm's class attention has no talking heads and
uses separate q/k/v projections with a bias, over the *normalised* ``[class; patches]``
tokens; its talking-heads mixes are Linear layers with a bias; its q/k/v projections have a
bias; LayerNorm eps is 1e-6; every block starts LayerScale at 1e-5 (here 0.1 for blocks 1-18);
it has per-sample drop path at the same rate in every block instead of layer dropout and
trunc-normal(0.02) init, and its final LayerNorm, like ours, covers all tokens. Heads are
4 x 48 in both. The state dicts differ, so timm's weights do not load here.

Layer dropout here keeps each shortcut with its own block (a dropped block skips its
shortcut too); the paper's code pairs the ``i``-th *kept* block with the ``i``-th shortcut. The
two agree whenever no block is dropped, as in all the paper's runs (``DROP_RATE`` 0).
"""

import re
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, PatchEmbed, resample_abs_pos_embed, to_2tuple
from timm.models import build_model_with_cfg, checkpoint, generate_default_cfgs
from timm.models._features import feature_take_indices
from torch import nn

from ecvit.models.layers import GLOBAL_POOLS, img_size_cfg_overlay, split_heads, tokens_to_grid
from ecvit.models.registry import register_model
from ecvit.models.vit_dw import DWShortcut, patch_grid

# FX patches a wrapped name in each calling module (see vit_dw)
torch.fx.wrap("resample_abs_pos_embed")
torch.fx.wrap("patch_grid")

__all__ = ["TalkingHeadsAttention", "LayerScaleBlock", "GridDWShortcut", "CaiT", "checkpoint_filter_fn"]


def layer_scale_init(position: int) -> float:
    """LayerScale's initial value for the block at 1-based ``position`` (CaiT Sec. 2, as the paper's code)."""
    return 0.1 if position <= 18 else 1e-5 if position <= 24 else 1e-6


class TalkingHeadsAttention(nn.Module):
    """Multi-head attention with talking heads: logits and softmax weights mixed across heads.

    ``logits_g = sum_h W_pre[h, g] * q_h k_h^T / sqrt(d)``, ``A_g = softmax(logits_g)``,
    ``out_g = (sum_h W_post[h, g] A_h) v_g``. With ``context`` (class attention) the queries
    come from ``x`` and the keys/values from ``[x; context]``. No bias on q/kv, a bias on the
    output projection (vit-pytorch). The weights are explicit by default (``attn.softmax``,
    what ``timm.utils.AttentionExtract`` reads), vectorised over heads; ``fused_attn = True``
    computes the same function through SDPA (see :meth:`_fused`), which keeps no ``N x N``
    weights (less memory) for ``heads`` times the multiply-adds.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = head_dim ** -0.5
        # explicit by default: the SDPA form costs `heads` times the attention multiply-adds
        self.fused_attn = False
        inner = num_heads * head_dim
        self.q = nn.Linear(dim, inner, bias=False)
        self.kv = nn.Linear(dim, inner * 2, bias=False)
        self.mix_pre = nn.Parameter(torch.randn(num_heads, num_heads))
        self.mix_post = nn.Parameter(torch.randn(num_heads, num_heads))
        self.proj = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        src = x if context is None else torch.cat([x, context], dim=1)
        h, d = self.num_heads, self.head_dim
        q = self.q(x).reshape(b, n, h, d).transpose(1, 2)
        k, v = split_heads(self.kv(src), 2, h)
        out = self.attend(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, h * d))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Talking-heads attention: logits and softmax weights mixed across heads (CaiT Sec. 2)."""
        if self.fused_attn:
            return self._fused(q, k, v)
        attn = torch.einsum("bhnm,hg->bgnm", (q * self.scale) @ k.transpose(-2, -1), self.mix_pre)
        attn = attn.softmax(dim=-1)
        return torch.einsum("bhnm,hg->bgnm", attn, self.mix_post) @ v

    def _fused(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Talking heads through SDPA: mixed head ``g`` attends with the query
        ``[W_pre[h, g] q_h]_h`` to the keys ``[k_h]_h`` (all heads' channels concatenated), so its
        logits are the mixed ones; its output against ``[v_h]_h`` is ``A_g v_h`` for every ``h``,
        from which ``out_h = sum_g W_post[g, h] A_g v_h``. Costs ``heads`` times the plain
        attention's multiply-adds but keeps no ``N x N`` weights."""
        b, h, n, d = q.shape
        m = k.shape[2]
        q_mix = torch.einsum("bhnd,hg->bgnhd", q, self.mix_pre).reshape(b, h, n, h * d)
        k_all = k.transpose(1, 2).reshape(b, 1, m, h * d).expand(b, h, m, h * d)
        v_all = v.transpose(1, 2).reshape(b, 1, m, h * d).expand(b, h, m, h * d)
        out = F.scaled_dot_product_attention(q_mix, k_all, v_all, scale=self.scale)
        return torch.einsum("bgnhd,gh->bhnd", out.reshape(b, h, n, h, d), self.mix_post)


class LayerScaleBlock(nn.Module):
    """``x + g1 * MSA(LN(x), context)`` then ``x + g2 * MLP(LN(x))`` (CaiT Eq. of Sec. 2).

    ``g1``, ``g2`` are ``[1, 1, C]`` as in the paper's code, so weight decay applies to them as
    there (its optimizer exempts only 1-d parameters and biases).
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, mlp_hidden: int, init_value: float,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = TalkingHeadsAttention(dim, num_heads, head_dim)
        self.gamma1 = nn.Parameter(torch.full((1, 1, dim), init_value))
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_hidden, act_layer=nn.GELU)
        self.gamma2 = nn.Parameter(torch.full((1, 1, dim), init_value))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.gamma1 * self.attn(self.norm1(x), context))
        return x + self.drop_path(self.gamma2 * self.mlp(self.norm2(x)))


class GridDWShortcut(DWShortcut):
    """The depth-wise shortcut on ``[B, H*W, C]`` patch tokens without a class token."""

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        z = tokens_to_grid(self.act(x), grid[0], grid[1])
        return self.forward_branches(z).flatten(2).transpose(1, 2)


def _layer_keep(depth: int, rate: float, ref: torch.Tensor) -> torch.Tensor:
    """Layer dropout: which of ``depth`` blocks run (each dropped with ``rate``, at least one kept)."""
    drop = torch.rand(depth, device=ref.device) < rate
    rescue = torch.randint(depth, (1,), device=ref.device)
    return ~drop | (drop.all() & (torch.arange(depth, device=ref.device) == rescue))



class CaiT(nn.Module):
    """CaiT as the paper's code builds it, with optional depth-wise shortcuts on the patch blocks.

    Args:
        img_size: training resolution; the positional embedding lives on its patch grid and is
            interpolated (bicubic) for other inputs whose sides divide by ``patch_size``.
        depth: patch blocks; ``cls_depth``: class-attention blocks.
        head_dim: width of each head (XXS: 48, so 4 heads attend in 192 channels).
        mlp_hidden: MLP width (XXS: 768).
        dw_kernels: kernel sizes of the shortcut's parallel branches; ``()``: plain CaiT.
        layer_dropout: probability of skipping a whole block in training (vit-pytorch's;
            the paper's runs: 0), drawn separately for the patch and class blocks.
        drop_path_rate: per-sample stochastic depth (linear over the patch blocks, timm's
            form; not in the paper's code, default 0).
        global_pool: 'token' (the class token, as the paper), 'avg' (mean of the patch tokens)
            or '' (every token through the head).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 192,
        depth: int = 24,
        cls_depth: int = 2,
        num_heads: int = 4,
        head_dim: int = 48,
        mlp_hidden: int = 768,
        dw_kernels: Sequence[int] = (),
        layer_dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "token",
    ) -> None:
        super().__init__()
        img_size = to_2tuple(img_size)
        if any(s <= 0 or s % patch_size for s in img_size):
            raise ValueError(f"img_size {img_size} must be positive multiples of the patch size {patch_size}")
        dw_kernels = tuple(int(k) for k in dw_kernels)
        if any(k < 1 or k % 2 == 0 for k in dw_kernels):
            raise ValueError(f"dw_kernels {dw_kernels} must be odd positive kernel sizes")
        if depth < 1 or cls_depth < 1:
            raise ValueError(f"depth {depth} and cls_depth {cls_depth} must be positive")
        if not 0.0 <= layer_dropout < 1.0:
            raise ValueError(f"layer_dropout {layer_dropout} must be in [0, 1)")
        if global_pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool {global_pool!r} is not one of {GLOBAL_POOLS}")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.patch_size = patch_size
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1  # in forward_features' output: the class token, then the patches
        self.dw_kernels = dw_kernels
        self.layer_dropout = layer_dropout
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, strict_img_size=False)
        self.pos_grid = list(self.patch_embed.grid_size)
        self.pos_embed = nn.Parameter(torch.randn(1, self.patch_embed.num_patches, embed_dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim))
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(*[
            LayerScaleBlock(embed_dim, num_heads, head_dim, mlp_hidden, layer_scale_init(i + 1), dpr[i])
            for i in range(depth)])
        self.shortcuts = nn.ModuleList(GridDWShortcut(embed_dim, dw_kernels) for _ in range(depth if dw_kernels else 0))
        self.blocks_token_only = nn.ModuleList(
            LayerScaleBlock(embed_dim, num_heads, head_dim, mlp_hidden, layer_scale_init(i + 1))
            for i in range(cls_depth))
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=patch_size)
                             for i in range(depth)]
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """None besides 1-d parameters: the paper's code decays the positions and class token."""
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Layer-decay groups: stem, each patch block with its shortcut, the class blocks, head."""
        stem = r"^cls_token|^pos_embed|^patch_embed"
        if coarse:
            return dict(stem=stem, blocks=[(r"^blocks\.(\d+)", None), (r"^shortcuts\.(\d+)", None),
                                           (r"^blocks_token_only|^norm", (99999,))])
        return dict(stem=stem, blocks=[(r"^blocks\.(\d+)", None), (r"^shortcuts\.(\d+)", None),
                                       (r"^blocks_token_only\.(\d+)", (99998,)), (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each patch block in the backward pass instead of keeping its activations."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new ``num_classes`` head (PyTorch's default init); ``global_pool`` as in ``__init__``."""
        if global_pool is not None:
            if global_pool not in GLOBAL_POOLS:
                raise ValueError(f"global_pool {global_pool!r} is not one of {GLOBAL_POOLS}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes, device=self.pos_embed.device) if num_classes > 0 \
            else nn.Identity()

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        grid = patch_grid(x, self.patch_size)
        pos = resample_abs_pos_embed(self.pos_embed, new_size=[grid[0], grid[1]], old_size=self.pos_grid,
                                     num_prefix_tokens=0)
        return self.patch_embed(x) + pos, grid

    def _keep(self, depth: int, x: torch.Tensor) -> torch.Tensor | None:
        if self.training and self.layer_dropout > 0:
            return _layer_keep(depth, self.layer_dropout, x)
        return None

    def _after_block(self, i: int, x: torch.Tensor, out: torch.Tensor, grid: tuple[int, int],
                     keep: torch.Tensor | None) -> torch.Tensor:
        """Block ``i``'s output ``out`` plus its shortcut fed by the block input ``x``; ``x``
        itself where layer dropout skipped the block."""
        if not torch.jit.is_scripting():
            if len(self.shortcuts):
                out = out + self.shortcuts[i](x, grid)
        else:  # TorchScript indexes a ModuleList by literals only
            for s, shortcut in enumerate(self.shortcuts):
                if s == i:
                    out = out + shortcut(x, grid)
        return out if keep is None else torch.where(keep[i], out, x)

    def _class_attention(self, x: torch.Tensor) -> torch.Tensor:
        # a copy, not an expanded view (a no-grad view of a parameter confuses module hooks)
        cls = self.cls_token.repeat(x.shape[0], 1, 1)
        keep = self._keep(len(self.blocks_token_only), x)
        for i, block in enumerate(self.blocks_token_only):
            out = block(cls, x)
            cls = out if keep is None else torch.where(keep[i], out, cls)
        return self.norm(torch.cat([cls, x], dim=1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1 + H*W, C]``: the normalised class token after class attention, then the
        normalised patch tokens (LayerNorm is per token, so the class token is the head's input)."""
        x, grid = self._embed(x)
        keep = self._keep(len(self.blocks), x)
        for i, block in enumerate(self.blocks):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                out = checkpoint(block, x)
            else:
                out = block(x)
            x = self._after_block(i, x, out, grid, keep)
        return self._class_attention(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
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
        """timm's API: the patch blocks' outputs (after their shortcuts), NCHW maps at stride 16."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        b = x.shape[0]
        x, grid = self._embed(x)
        keep = self._keep(len(self.blocks), x)
        intermediates = []
        blocks = self.blocks[: max_index + 1] if stop_early else self.blocks
        for i, block in enumerate(blocks):
            out = checkpoint(block, x) if self.grad_checkpointing else block(x)
            x = self._after_block(i, x, out, grid, keep)
            if i in take_indices:
                intermediates.append(self.norm(x) if norm else x)
        if output_fmt == "NCHW":
            intermediates = [y.reshape(b, grid[0], grid[1], -1).permute(0, 3, 1, 2).contiguous()
                             for y in intermediates]
        if intermediates_only:
            return intermediates
        return self._class_attention(x), intermediates

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the patch blocks (and their shortcuts) after the last wanted index and, with
        ``prune_head``, the class attention with the head."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max_index + 1]
        self.shortcuts = self.shortcuts[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.blocks_token_only = nn.ModuleList()
            self.reset_classifier(0)
        return take_indices


# The paper code's key names (vit-pytorch layout) -> ours; {t}: a transformer, {i}: a block index.
_OFFICIAL_RULES = [(re.compile(p), r) for p, r in (
    (r"^patch_transformer\.layers\.", "blocks."),
    (r"^cls_transformer\.layers\.", "blocks_token_only."),
    (r"^(blocks\.|blocks_token_only\.)(\d+)\.0\.scale$", r"\1\2.gamma1"),
    (r"^(blocks\.|blocks_token_only\.)(\d+)\.1\.scale$", r"\1\2.gamma2"),
    (r"^(blocks\.|blocks_token_only\.)(\d+)\.0\.fn\.norm\.", r"\1\2.norm1."),
    (r"^(blocks\.|blocks_token_only\.)(\d+)\.1\.fn\.norm\.", r"\1\2.norm2."),
    (r"\.0\.fn\.fn\.to_q\.", ".attn.q."),
    (r"\.0\.fn\.fn\.to_kv\.", ".attn.kv."),
    (r"\.0\.fn\.fn\.to_out\.0\.", ".attn.proj."),
    (r"\.0\.fn\.fn\.mix_heads_pre_attn$", ".attn.mix_pre"),
    (r"\.0\.fn\.fn\.mix_heads_post_attn$", ".attn.mix_post"),
    (r"\.1\.fn\.fn\.net\.0\.", ".mlp.fc1."),
    (r"\.1\.fn\.fn\.net\.3\.", ".mlp.fc2."),
    (r"^patch_transformer\.convs\.(\d+)\.", r"shortcuts.\1.branches.0.conv."),
    (r"^patch_transformer\.batchnorms\.(\d+)\.", r"shortcuts.\1.branches.0.bn."),
    (r"^pos_embedding$", "pos_embed"),
    (r"^to_patch_embedding\.1\.bias$", "patch_embed.proj.bias"),
    (r"^mlp_head\.0\.", "norm."),
    (r"^mlp_head\.1\.", "head."),
)]


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: CaiT) -> dict[str, torch.Tensor]:
    """Load the paper code's CaiT checkpoints (``patch_transformer``, ``cls_transformer``,
    ``mlp_head`` ...) or ours; the positional embedding is resampled to the model's grid.

    Its patch embedding is a Linear over patches flattened as (row, column, channel), ours the
    equivalent stride-``p`` conv. LayerScale vectors saved as ``[C]`` (by earlier versions)
    become ``[1, 1, C]``. Unknown keys pass through (and are reported by the loader).
    """
    if "to_patch_embedding.1.weight" not in state_dict:
        out = dict(state_dict)
    else:
        out = {}
        for key, value in state_dict.items():
            if key == "to_patch_embedding.1.weight":
                p = model.patch_size
                weight = value.reshape(value.shape[0], p, p, value.shape[1] // (p * p))
                out["patch_embed.proj.weight"] = weight.permute(0, 3, 1, 2).contiguous()
                continue
            for pattern, repl in _OFFICIAL_RULES:
                key = pattern.sub(repl, key)
            out[key] = value
    for key, value in out.items():
        if key.endswith((".gamma1", ".gamma2")) and value.ndim == 1:
            out[key] = value.reshape(1, 1, -1)
    pos = out.get("pos_embed")
    if pos is not None and pos.shape != model.pos_embed.shape:
        out["pos_embed"] = resample_abs_pos_embed(pos, new_size=model.patch_embed.grid_size, num_prefix_tokens=0)
    return out


def _create_cait(variant: str, pretrained: bool = False, **kwargs: Any) -> CaiT:
    out_indices = kwargs.pop("out_indices", 3)
    return build_model_with_cfg(
        CaiT,
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
    "cait_xxs12": _cfg(),
    "cait_xxs12_dw": _cfg(),
    "cait_xxs24": _cfg(),
    "cait_xxs24_dw": _cfg(),
})

_XXS = dict(patch_size=16, embed_dim=192, cls_depth=2, num_heads=4, head_dim=48, mlp_hidden=768)
_PAPER = "Zhang et al. 2024, arXiv 2407.19394"


@register_model(paper=_PAPER)
def cait_xxs12(pretrained: bool = False, **kwargs: Any) -> CaiT:
    """CaiT-XXS12 as the paper's code builds it: the plain baseline (6,413,642 parameters, 10 classes)."""
    return _create_cait("cait_xxs12", pretrained, **{**_XXS, "depth": 12, **kwargs})


@register_model(paper=_PAPER)
def cait_xxs12_dw(pretrained: bool = False, **kwargs: Any) -> CaiT:
    """CaiT-XXS12 with a 3x3 depth-wise shortcut on every patch block (6,441,290 parameters, 10 classes)."""
    return _create_cait("cait_xxs12_dw", pretrained, **{**_XXS, "depth": 12, "dw_kernels": (3,), **kwargs})


@register_model(paper=_PAPER)
def cait_xxs24(pretrained: bool = False, **kwargs: Any) -> CaiT:
    """CaiT-XXS24 as the paper's code builds it: the plain baseline (11,750,090 parameters, 10 classes)."""
    return _create_cait("cait_xxs24", pretrained, **{**_XXS, "depth": 24, **kwargs})


@register_model(paper=_PAPER)
def cait_xxs24_dw(pretrained: bool = False, **kwargs: Any) -> CaiT:
    """CaiT-XXS24 with a 3x3 depth-wise shortcut on every patch block (11,805,386 parameters, 10 classes)."""
    return _create_cait("cait_xxs24_dw", pretrained, **{**_XXS, "depth": 24, "dw_kernels": (3,), **kwargs})
