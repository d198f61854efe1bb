"""Small pieces shared by the model families: token <-> feature-map views, the CPU precision switch.

Model ``forward`` code reads no global state (autocast, grad mode): it computes in whatever
dtype autocast or the caller gives it, as timm's models do. The one precision policy the
families have, for training on CPUs under bf16 autocast, is opt-in through
``set_cpu_autocast_training``; it flips plain module attributes that ``forward`` reads.
"""

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import _symbolic_trace

# symbolic tracing only (torch >= 2.6 also has torch.export's, and warns on the older name)
_is_fx_tracing = getattr(_symbolic_trace, "is_fx_symbolic_tracing", _symbolic_trace.is_fx_tracing)

# With set_cpu_autocast_training on, attention over key sequences up to this length runs in
# fp32 in training. Measured fwd+bwd on 2 cores without AMX (benchmarks/NOTES.md), fp32 time
# / bf16 time: 0.39 at 50 keys (ECViT windows), 0.45 at 100, 0.60 at 50 keys with 197
# queries (CvT stage 3); 0.90 at 197 and 1.20 at 196 keys with 784 queries (CvT stage 2).
FP32_ATTENTION_MAX_KEYS = 128


def tokens_to_grid(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, H*W, C]`` tokens -> ``[B, C, H, W]`` map (for convolutions over the token grid)."""
    b, n, c = x.shape
    return x.transpose(1, 2).reshape(b, c, height, width)


def grid_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` map -> ``[B, H*W, C]`` tokens."""
    return x.flatten(2).transpose(1, 2)


def split_heads(packed: torch.Tensor, parts: int, num_heads: int) -> list[torch.Tensor]:
    """``[B, N, parts * heads * head_dim]`` (a fused q/k/v Linear's output) -> ``parts`` views
    ``[B, heads, N, head_dim]``.

    Unbinding the ``parts`` axis in place (not after moving it first, as timm does) gives the
    same views, but autograd's backward then stacks the attention gradients straight into the
    Linear's layout: one copy instead of a stack and a strided copy (-8 ms of a 45 ms
    attention forward + backward on ECViT's stage-1 windows, benchmarks/NOTES.md).
    """
    b, n = packed.shape[0], packed.shape[1]
    views = packed.reshape(b, n, parts, num_heads, -1).unbind(2)
    return [views[i].transpose(1, 2) for i in range(parts)]  # indexed: FX cannot iterate a traced value


@torch.jit.unused
def in_fp32(fn: Callable[..., Any], *tensors: torch.Tensor, **kwargs: Any) -> Any:
    """``fn(*tensors, **kwargs)`` with CPU autocast off and ``tensors`` cast to fp32 (a no-op
    for fp32 ones): how every module's path under ``set_cpu_autocast_training`` runs the ops
    whose reduced-precision CPU backward is the slow one. ``kwargs`` pass through uncast."""
    with torch.autocast("cpu", enabled=False):
        return fn(*(t.float() for t in tensors), **kwargs)


@torch.jit.unused
def fp32_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
                   dropout_p: float = 0.0, scale: float | None = None) -> torch.Tensor:
    """``scaled_dot_product_attention`` in fp32 with CPU autocast off: the switch's training path.

    The reduced-precision CPU SDPA backward is 2-3x slower than fp32 on short key sequences
    on CPUs without AMX; the casts cost less than that. q/k/v go to fp32 (a no-op if the
    caller cast them already); the fp32 output is cast back by the autocast Linear that
    follows. TorchScript cannot turn autocast off inside a scripted graph, so a scripted
    model raises here: script a model with the switch off (the default).
    """
    return in_fp32(F.scaled_dot_product_attention, q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale)


@torch.jit.unused
def folding_applies(module: nn.Module) -> bool:
    """Whether ``module`` runs with its BatchNorm folded into the neighbouring conv.

    In eval mode the folded form is the same function (exactly, up to float rounding), so
    eval mode always runs it, in eager Python (a scripted, traced or compiled graph keeps the
    plain path, which it optimises on its own), unless turned off with
    :func:`set_eval_folding`. Without autograd the folded weights are cached
    (:class:`FoldedWeights`), which makes ``model.eval()`` under ``torch.no_grad()`` or
    ``torch.inference_mode()`` as fast as ``model.fuse()`` while the module, its
    ``state_dict`` and ``train()`` stay exactly as they were; with autograd they are
    recomputed per call, so gradients reach the parameters as without folding.
    """
    return (module.fold_in_eval and not module.training and not _is_fx_tracing()
            and not torch.compiler.is_compiling())


def fold_batchnorm(weight: torch.Tensor, bias: torch.Tensor | None,
                   bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight, bias)`` of the conv ``bn(conv(x))`` equals in eval mode (plain tensors)."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    folded_bias = shift if bias is None else bias * scale + shift
    return weight * scale.view(-1, *([1] * (weight.dim() - 1))), folded_bias


class FoldedWeights:
    """Tensors derived from a module's weights (a BatchNorm folded into a conv), rebuilt when
    a source tensor changes or the module changes mode.

    An in-place change through torch (``load_state_dict``, an optimizer step, ``p.copy_()``)
    bumps the tensor's version counter and ``.to()`` gives it new storage: both are in the key.
    BatchNorm's running statistics are updated inside its kernel without a version bump, but
    only in training mode, so owners call :meth:`clear` from ``train()`` (which ``eval()``
    calls too). Changes made through ``.data`` are invisible: call ``model.eval()`` after them.
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self._key: tuple | None = None
        self._value: Any = None

    def get(self, sources: Sequence[torch.Tensor], build: Callable[[], Any]) -> Any:
        """``build()``'s value: cached, or fresh (never cached) when autograd would record it."""
        if _records_grad(sources):
            return build()
        key = tuple((t.data_ptr(), t._version, t.dtype) for t in sources)
        if key != self._key:
            self._value, self._key = build(), key
        return self._value


def _records_grad(sources: Sequence[torch.Tensor]) -> bool:
    """Whether an op on these tensors is recorded by autograd now, asked of a one-element op
    rather than of the global grad mode (forward decides from tensors, as everywhere here)."""
    for t in sources:
        if t.requires_grad:
            return bool((t.reshape(-1)[:1] * 1).requires_grad)
    return False


class FoldsInEval(nn.Module):
    """Base of the modules whose eval form folds weights together (a BatchNorm into a conv,
    two Linear maps into one; see :func:`folding_applies`): their weight cache, cleared on
    every mode change, and the ``set_eval_folding`` flag."""

    def __init__(self) -> None:
        super().__init__()
        self.folded = FoldedWeights()
        self.fold_in_eval = True

    def train(self, mode: bool = True):
        self.folded.clear()  # BatchNorm statistics may change in training (FoldedWeights)
        return super().train(mode)


def set_eval_folding(model: nn.Module, enabled: bool) -> dict[nn.Module, bool]:
    """Let (default) or stop the BatchNorm folding of eval-mode forward passes.

    Sets the ``fold_in_eval`` attribute of every submodule that has one and returns the
    previous values (``restore_eval_folding`` puts them back). Off, such a forward runs the
    modules exactly as written, e.g. to count the model's own MACs (``ecvit.flops``).
    """
    previous = {}
    for module in model.modules():
        if isinstance(getattr(module, "fold_in_eval", None), bool):
            previous[module] = module.fold_in_eval
            module.fold_in_eval = bool(enabled)
    return previous


def restore_eval_folding(previous: dict[nn.Module, bool]) -> None:
    for module, value in previous.items():
        module.fold_in_eval = value


def set_cpu_autocast_training(model: nn.Module, enabled: bool) -> nn.Module:
    """Turn the CPU precision policy for training under CPU bf16 autocast on or off; returns ``model``.

    On, and only while a module is in training mode: attention over at most
    ``FP32_ATTENTION_MAX_KEYS`` keys runs in fp32 (ECViT's windows, CvT's last stage), and
    CvT's depth-wise conv projections run in fp32; both are the slow reduced-precision CPU
    backward kernels on CPUs without AMX (``benchmarks/NOTES.md``). Inference (eval mode)
    and everything else are unchanged. Off (the default) the models compute in the dtype
    autocast or the caller gives them and are pure functions of their inputs and weights.

    Call it when training on the CPU under bf16 autocast. It sets the ``cpu_autocast_training``
    attribute of every submodule that has one (wrappers such as DDP or feature extractors
    are walked through), so families opt in by giving their modules that attribute.
    """
    for module in model.modules():
        if isinstance(getattr(module, "cpu_autocast_training", None), bool):
            module.cpu_autocast_training = bool(enabled)
    return model


def img_size_cfg_overlay(kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """``pretrained_cfg_overlay`` for a model built at ``kwargs['img_size']``, merged with the caller's.

    The data pipeline reads the input size from the pretrained cfg, so a model built at
    another size records it there (``in_chans`` too). Pops ``pretrained_cfg_overlay``.
    """
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    img_size = kwargs.get("img_size")
    if img_size is not None:
        size = tuple(img_size) if isinstance(img_size, (list, tuple)) else (img_size, img_size)
        overlay["input_size"] = (kwargs.get("in_chans", 3), *(int(s) for s in size))
    return overlay or None

