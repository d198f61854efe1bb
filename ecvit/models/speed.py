"""Speed forms of the model families: explicit swaps, never branches in a model's ``forward``.

Each family's modules compute the paper's math, one way. The faster forms of the same
functions live here, and a caller applies them on purpose, as timm applies
``reparameterize_model``:

* :func:`fuse` turns a model into its inference form, in place and in eval mode:
  BatchNorms folded into the neighbouring convs (ECViT's stem, CvT's conv projections,
  the depth-wise shortcuts, exactly even at the padded border), the I-FFN's last pointwise
  conv and fc1 as one Linear (their product), CvT's QuickGELU MLP as one SiLU with the
  1.702 baked into its Linears. Inference commands (validate, predict, export, benchmark,
  attention) call it; the state dict of a fused model differs, so load weights first.
* :func:`set_cpu_autocast_training` turns the training form for CPU bf16 autocast on or
  off, by swapping module classes (the modules keep their parameters and names, so the
  state dict is the same either way, and off restores the plain classes exactly). In
  training mode only: short-sequence attention, ECViT's stem depth-wise convs and CvT's
  conv projections run in fp32 (their reduced-precision CPU backward kernels are the slow
  ones on CPUs without AMX, ``benchmarks/NOTES.md``), the I-FFN runs its pointwise conv
  and fc1 as one product Linear where that is cheaper, and CvT's MLP runs QuickGELU as
  one SiLU with scaled weights. The engine turns it on for CPU bf16 training.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
import torch.fx
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import nn

from ecvit.models.cait import TalkingHeadsAttention
from ecvit.models.cvt import ConvAttention, ConvProjection, QuickGeluMlp
from ecvit.models.ecvit import ConvBnAct, InteractiveFFN, PartitionedAttention, _nchw_to_nhwc, _nhwc_to_nchw
from ecvit.models.swin_dw import WindowAttention
from ecvit.models.vit_dw import Attention, DWShortcut

__all__ = ["fuse", "set_cpu_autocast_training", "cpu_autocast_training_on", "batchnorm_affine",
           "fold_conv_bn", "FusedDWConv", "FusedInteractiveFFN", "SiluMlp", "FP32_ATTENTION_MAX_KEYS"]

# Under the CPU training policy, attention over key sequences up to this length runs in
# fp32. Measured fwd+bwd on 2 cores without AMX (benchmarks/NOTES.md), fp32 time / bf16
# time: 0.39 at 50 keys (ECViT windows), 0.45 at 100, 0.60 at 50 keys with 197 queries
# (CvT stage 3); 0.90 at 197 and 1.20 at 196 keys with 784 queries (CvT stage 2).
FP32_ATTENTION_MAX_KEYS = 128
QUICK_GELU_SCALE = 1.702


# ---------------------------------------------------------------- BatchNorm folding


def batchnorm_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode ``bn`` as a per-channel affine map ``scale * x + shift``."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """The conv (with a bias) that equals ``bn(conv(x))`` in eval mode."""
    scale, shift = batchnorm_affine(bn)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
                      device=conv.weight.device, dtype=conv.weight.dtype)
    fused.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1))
    fused.bias = nn.Parameter(shift if conv.bias is None else conv.bias * scale + shift)
    return fused


def _valid_taps(size: int, kernel_size: int, ref: torch.Tensor) -> torch.Tensor:
    """``[size, K]``: 1 where tap ``j`` of output position ``i`` reads inside the grid."""
    taps = torch.arange(kernel_size, device=ref.device) - kernel_size // 2
    pos = torch.arange(size, device=ref.device)[:, None] + taps
    return ((pos >= 0) & (pos < size)).to(ref.dtype)


def folded_dw_conv(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, border: torch.Tensor) -> torch.Tensor:
    """The folded shortcut conv of :class:`FusedDWConv`: ``conv_W(z) + bias + b * S_W``."""
    h, w = z.shape[-2], z.shape[-1]
    k = weight.shape[-1]
    out = F.conv2d(z, weight, None, padding=k // 2, groups=z.shape[1])
    rows, cols = _valid_taps(h, k, border), _valid_taps(w, k, border)
    # [H, W, C] then viewed as [C, H, W]: the same (channels-last) layout as ``out``
    corr = torch.einsum("hi,cij,wj->hwc", rows, border, cols) + bias
    return out + corr.permute(2, 0, 1)


class FusedDWConv(nn.Module):
    """Inference form of a depth-wise shortcut's branches: one depthwise conv, exact at the borders.

    For a branch ``conv_w(a * z + b)`` (BN as a per-channel affine ``a, b``) the padded border
    holds zeros *after* the BN, so folding ``a, b`` into the conv is only exact with a border
    term: ``conv_{w a}(z) + bias + b * S_w`` where ``S_w(h, w)`` sums the kernel taps that land
    inside the grid. ``S`` is separable in the valid-tap indicators, ``S = R W C^T``, so it is
    a tiny einsum for any grid size. All branches add up into one ``K x K`` kernel
    (``K`` = the largest kernel, smaller ones centred), one bias and one border kernel.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, border: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)  # [C, 1, K, K]
        self.bias = nn.Parameter(bias, requires_grad=False)  # [C]
        self.border = nn.Parameter(border, requires_grad=False)  # [C, K, K]

    @classmethod
    @torch.no_grad()
    def from_branches(cls, branches: Sequence[nn.Module]) -> "FusedDWConv":
        """Fold the branches (``DWBranch``: BN then depthwise conv) into one."""
        size = max(br.conv.kernel_size[0] for br in branches)
        first = branches[0].conv.weight
        dim = first.shape[0]
        weight = first.new_zeros(dim, 1, size, size)
        border = first.new_zeros(dim, size, size)
        bias = first.new_zeros(dim)
        for br in branches:
            scale, shift = batchnorm_affine(br.bn)
            pad = (size - br.conv.kernel_size[0]) // 2
            w = F.pad(br.conv.weight, (pad, pad, pad, pad))
            weight += w * scale[:, None, None, None]
            border += w[:, 0] * shift[:, None, None]
            bias += br.conv.bias
        return cls(weight, bias, border)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return folded_dw_conv(z, self.weight, self.bias, self.border)


# ---------------------------------------------------------------- products of Linear maps


@torch.fx.wrap
@register_notrace_function
def linear_after_linear(x: torch.Tensor, first_weight: torch.Tensor, first_bias: Optional[torch.Tensor],
                        weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``linear(linear(x, first), second)``, computed as one Linear with the product weights
    when that is cheaper: the product costs ``out x mid x in`` MACs once per call, the
    intermediate Linear ``tokens x mid x in``, so it pays when the tokens outnumber the
    output features. The same function (up to float rounding) and the same gradients for
    both layers' parameters."""
    tokens = x.numel() // x.shape[-1]
    if tokens > weight.shape[0]:
        chained_bias = bias if first_bias is None else F.linear(first_bias, weight, bias)
        return F.linear(x, weight @ first_weight, chained_bias)
    return F.linear(F.linear(x, first_weight, first_bias), weight, bias)


class FusedInteractiveFFN(InteractiveFFN):
    """Inference form of the I-FFN (``conv_pos="input"``): the 1x3 conv's pointwise conv and
    fc1 as one Linear, ``fc1_mixed`` (weights ``W_fc1 W_pw``, bias ``W_fc1 b_pw + b_fc1``).

    The class token still goes through ``fc1``; ``conv_v.pw`` stays (unused) so the module
    keeps the attributes TorchScript compiles the shared ``forward`` against.
    """

    def __init__(self, ffn: InteractiveFFN) -> None:
        nn.Module.__init__(self)
        self.conv_pos = ffn.conv_pos
        for name, child in ffn.named_children():
            self.add_module(name, child)
        pw, fc1 = ffn.conv_v.pw, ffn.fc1
        self.fc1_mixed = nn.Linear(fc1.in_features, fc1.out_features, device=fc1.weight.device,
                                   dtype=fc1.weight.dtype)
        with torch.no_grad():
            self.fc1_mixed.weight.copy_(fc1.weight @ pw.weight.flatten(1))
            self.fc1_mixed.bias.copy_(F.linear(pw.bias, fc1.weight, fc1.bias))

    def mixed_fc1(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_h.forward_nhwc(x)
        return self.fc1_mixed(_nchw_to_nhwc(self.conv_v.dw(_nhwc_to_nchw(x))))


@register_notrace_function
def silu_fresh(h: torch.Tensor) -> torch.Tensor:
    """SiLU of a freshly computed tensor, in place when no autograd graph records it.

    Decided by the tensor itself (``requires_grad``), not by global grad mode: in place only
    when nothing can need ``h`` for a backward pass. That saves allocating (and
    page-faulting) a fresh buffer of the widest activation: -12% of CvT-13's CPU inference
    time (``benchmarks/NOTES.md``). A leaf for FX, which cannot trace the decision.
    """
    return F.silu(h, inplace=not h.requires_grad)


torch.fx.wrap("silu_fresh")


class SiluMlp(nn.Module):
    """Inference form of CvT's QuickGELU MLP: ``fc2'(SiLU(fc1'(x)))`` with ``fc1' = 1.702 fc1``
    and ``fc2' = fc2 / 1.702``.

    QuickGELU(z) = z * sigmoid(1.702 z) = SiLU(1.702 z) / 1.702: one elementwise kernel over
    the widest activation instead of three, the scales baked into the Linears once.
    """

    def __init__(self, mlp: QuickGeluMlp) -> None:
        super().__init__()
        self.fc1, self.fc2, self.drop = mlp.fc1, mlp.fc2, mlp.drop
        with torch.no_grad():
            self.fc1.weight.mul_(QUICK_GELU_SCALE)
            self.fc1.bias.mul_(QUICK_GELU_SCALE)
            self.fc2.weight.div_(QUICK_GELU_SCALE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(silu_fresh(self.fc1(x)))))


@torch.no_grad()
def fuse(model: nn.Module) -> nn.Module:
    """``model`` in its inference form (see the module docstring), in place; returns it in eval mode.

    The same function in eval mode, up to float rounding. Uses the BatchNorm running
    statistics, so load the weights first. Fusing twice is harmless; a module this file does
    not know is left as it is, so any model can be passed.
    """
    model.eval()
    for name, module in list(model.named_modules()):
        if isinstance(module, ConvBnAct) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv.pw, module.bn = fold_conv_bn(module.conv.pw, module.bn), nn.Identity()
        elif isinstance(module, ConvProjection) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv, module.bn = fold_conv_bn(module.conv, module.bn), nn.Identity()
        elif isinstance(module, DWShortcut) and not isinstance(module.branches[0], FusedDWConv):
            module.branches = nn.ModuleList([FusedDWConv.from_branches(module.branches)])
        elif isinstance(module, QuickGeluMlp):
            model.set_submodule(name, SiluMlp(module))
        elif (isinstance(module, InteractiveFFN) and module.conv_pos == "input"
              and not isinstance(module, FusedInteractiveFFN)):
            model.set_submodule(name, FusedInteractiveFFN(module))
    return model.eval()


# ---------------------------------------------------------------- CPU bf16 training policy


def in_fp32(fn: Callable[..., Any], *tensors: torch.Tensor) -> Any:
    """``fn(*tensors)`` with CPU autocast off and ``tensors`` cast to fp32 (a no-op for fp32 ones).

    The fp32 output goes on to the next op, which autocast casts back.
    """
    with torch.autocast("cpu", enabled=False):
        return fn(*(t.float() for t in tensors))


class _ShortAttentionInFp32:
    """Training form of an attention module: ``attend`` in fp32 over at most
    ``FP32_ATTENTION_MAX_KEYS`` keys (the short-sequence reduced-precision CPU SDPA backward
    is 2-3x slower than fp32 on CPUs without AMX; the casts cost less than that)."""

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args: Any) -> torch.Tensor:
        plain = super().attend  # type: ignore[misc]
        if self.training and k.shape[-2] <= FP32_ATTENTION_MAX_KEYS:  # type: ignore[attr-defined]
            return in_fp32(lambda q_, k_, v_: plain(q_, k_, v_, *args), q, k, v)
        return plain(q, k, v, *args)


class PartitionedAttentionFp32(_ShortAttentionInFp32, PartitionedAttention):
    """ECViT's window attention (50 keys at block size 7) under the CPU training policy."""


class ConvAttentionFp32(_ShortAttentionInFp32, ConvAttention):
    """CvT's attention under the CPU training policy (CvT-13's last stage; longer ones keep bf16)."""


class AttentionFp32(_ShortAttentionInFp32, Attention):
    """ViT attention under the CPU training policy (small inputs only: 224 px has 197 keys)."""


class TalkingHeadsAttentionFp32(_ShortAttentionInFp32, TalkingHeadsAttention):
    """CaiT's (class) attention under the CPU training policy."""


class WindowAttentionFp32(_ShortAttentionInFp32, WindowAttention):
    """Swin's window attention (49 keys) under the CPU training policy."""


class Conv2dFp32(nn.Conv2d):
    """A depth-wise conv whose training forward runs in fp32: oneDNN's bf16 depth-wise
    backward is 2-6x (ECViT's stem, ~10% of an ECViT-small bf16 step) to ~50x (CvT's stride-2
    projections, a quarter of a CvT-13 step) slower than fp32 on CPUs without AMX."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return in_fp32(super().forward, x)
        return super().forward(x)


class InteractiveFFNChained(InteractiveFFN):
    """The I-FFN in training with its pointwise conv and fc1 as their product where that is
    cheaper (:func:`linear_after_linear`; 10% of ECViT-small's Linear MACs)."""

    def mixed_fc1(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().mixed_fc1(x)
        x = _nchw_to_nhwc(self.conv_v.dw(_nhwc_to_nchw(self.conv_h.forward_nhwc(x))))
        pw = self.conv_v.pw
        return linear_after_linear(x, pw.weight.flatten(1), pw.bias, self.fc1.weight, self.fc1.bias)


class QuickGeluMlpSilu(QuickGeluMlp):
    """CvT's MLP in training as one SiLU, the 1.702 applied to the weights on the fly
    (weight-sized work): the same function and gradients, one elementwise kernel (forward
    and backward) over the widest activation instead of three (-10% of a CvT-13 bf16 step)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        h = F.linear(x, self.fc1.weight * QUICK_GELU_SCALE, self.fc1.bias * QUICK_GELU_SCALE)
        return self.drop(F.linear(self.drop(silu_fresh(h)), self.fc2.weight / QUICK_GELU_SCALE, self.fc2.bias))


# plain class -> its training form (a subclass with the same parameters and names)
TRAINING_FORMS: dict[type, type] = {
    PartitionedAttention: PartitionedAttentionFp32,
    ConvAttention: ConvAttentionFp32,
    Attention: AttentionFp32,
    TalkingHeadsAttention: TalkingHeadsAttentionFp32,
    WindowAttention: WindowAttentionFp32,
    InteractiveFFN: InteractiveFFNChained,
    QuickGeluMlp: QuickGeluMlpSilu,
    nn.Conv2d: Conv2dFp32,  # only the convs _policy_modules names
}
_PLAIN_FORMS = {form: plain for plain, form in TRAINING_FORMS.items()}


def _policy_modules(model: nn.Module) -> list[nn.Module]:
    """The modules the policy swaps: every one of a listed class, and of the convs only ECViT's
    stem depth-wise convs and CvT's conv projections (other convs keep autocast's dtype)."""
    out = []
    for m in model.modules():
        if isinstance(m, ConvBnAct):
            out.append(m.conv.dw)
        elif isinstance(m, ConvProjection):
            out.append(m.conv)
        elif not isinstance(m, nn.Conv2d) and (type(m) in TRAINING_FORMS or type(m) in _PLAIN_FORMS):
            out.append(m)
    return out


def set_cpu_autocast_training(model: nn.Module, enabled: bool) -> nn.Module:
    """Turn the training form for CPU bf16 autocast on or off (see the module docstring); returns ``model``.

    A class swap of the listed modules: parameters, buffers and state dict keys stay, eval
    mode runs the plain forward, and off restores the plain classes. Script a model with
    the policy off (its fp32 paths turn autocast off, which TorchScript cannot).
    Wrappers (DDP, feature extractors) are walked through.
    """
    swap = TRAINING_FORMS if enabled else _PLAIN_FORMS
    for module in _policy_modules(model):
        new = swap.get(type(module))
        if new is not None:
            module.__class__ = new
    return model


def cpu_autocast_training_on(model: nn.Module) -> bool:
    """Whether any module of ``model`` runs in the CPU training policy's form."""
    return any(type(m) in _PLAIN_FORMS for m in model.modules())
