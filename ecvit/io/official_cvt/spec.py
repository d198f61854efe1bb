"""``MODEL.SPEC`` of an official CvT file -> our registered CvT variant and its arguments.

The official model reads one value per stage from each list; :class:`ecvit.models.cvt.CvT`
takes the same lists under the names below, so the translation is a renaming. The variant
is the registered one with the file's widths, depths and heads (``cvt_13``, ``cvt_21``,
``cvt_w24``), else ``cvt_13`` with those given as arguments; only values that differ from
the variant's own appear in MODEL.ARGS, so a plan reads "arguments: the variant's own"
for the published files.
"""

from __future__ import annotations

import inspect
from typing import Any

from ecvit.errors import UsageError
from ecvit.models.cvt import CvT

# official SPEC list -> CvT constructor argument
SPEC_ARGS = {
    "PATCH_SIZE": "patch_sizes", "PATCH_STRIDE": "patch_strides", "PATCH_PADDING": "patch_paddings",
    "DIM_EMBED": "embed_dims", "NUM_HEADS": "num_heads", "DEPTH": "depths", "MLP_RATIO": "mlp_ratio",
    "ATTN_DROP_RATE": "attn_drop_rate", "DROP_RATE": "drop_rate", "QKV_BIAS": "qkv_bias",
    "CLS_TOKEN": "cls_token", "QKV_PROJ_METHOD": "qkv_method", "KERNEL_QKV": "kernel_qkv",
    "PADDING_KV": "padding_kv", "STRIDE_KV": "stride_kv", "PADDING_Q": "padding_q", "STRIDE_Q": "stride_q",
}
# the registered variants: (widths, depths, heads)
VARIANTS = {
    "cvt_13": ([64, 192, 384], [1, 2, 10], [1, 3, 6]),
    "cvt_21": ([64, 192, 384], [1, 4, 16], [1, 3, 6]),
    "cvt_w24": ([192, 768, 1024], [2, 2, 20], [3, 12, 16]),
}
SHAPE_ARGS = ("embed_dims", "depths", "num_heads")


def spec_to_model(spec: dict[str, Any], source: str) -> tuple[str, dict[str, Any], float | list[float]]:
    """``(model name, MODEL.ARGS, MODEL.DROP_PATH_RATE)`` for an official ``MODEL.SPEC``.

    A list that is missing takes CvT-13's value; every list must have NUM_STAGES entries
    (a single value stands for all stages).
    """
    num_stages = spec.get("NUM_STAGES")
    if num_stages is None:
        num_stages = len(spec["DIM_EMBED"]) if isinstance(spec.get("DIM_EMBED"), list) else 3
    if not isinstance(num_stages, int) or isinstance(num_stages, bool) or num_stages < 1:
        raise UsageError(f"{source}: MODEL.SPEC.NUM_STAGES must be a positive integer, got {num_stages!r}")
    defaults = {k: p.default for k, p in inspect.signature(CvT.__init__).parameters.items()}
    values: dict[str, list[Any]] = {}
    for key, arg in SPEC_ARGS.items():
        if key in spec:
            values[arg] = _stage_list(spec[key], num_stages, f"MODEL.SPEC.{key}", source)
    for key in ("DIM_EMBED", "DEPTH", "NUM_HEADS"):
        arg = SPEC_ARGS[key]
        if arg not in values:
            values[arg] = _stage_list(list(defaults[arg]), num_stages, f"MODEL.SPEC.{key}", source)
    shape = tuple(values[a] for a in SHAPE_ARGS)
    name = next((n for n, v in VARIANTS.items() if tuple(v) == shape), "cvt_13")
    args: dict[str, Any] = {}
    if name == "cvt_13" and shape != tuple(VARIANTS["cvt_13"]):
        args.update(zip(SHAPE_ARGS, shape))
    kernels = values.get("kernel_qkv") or [defaults["kernel_qkv"]] * num_stages
    for arg, given in values.items():
        if arg in SHAPE_ARGS:
            continue
        default = defaults[arg]
        if arg in ("padding_kv", "padding_q"):
            own = [k // 2 for k in kernels]
        elif arg == "cls_token":
            own = [False] * (num_stages - 1) + [True]
        else:
            own = _stage_list(default, num_stages, arg, source)
        if given != own:
            args[arg] = given
    if "INIT" in spec:
        if spec["INIT"] != defaults["init"]:
            args["init"] = spec["INIT"]
    rates = _stage_list(spec.get("DROP_PATH_RATE", 0.0), num_stages, "MODEL.SPEC.DROP_PATH_RATE", source)
    rates = [float(r) for r in rates]
    drop_path: float | list[float] = rates[-1] if not any(rates[:-1]) else rates
    return name, args, drop_path


def _stage_list(value: Any, num_stages: int, key: str, source: str) -> list[Any]:
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        return [value] * num_stages
    if len(value) != num_stages:
        raise UsageError(f"{source}: {key} has {len(value)} values; MODEL.SPEC.NUM_STAGES is "
                         f"{num_stages} (one value per stage)")
    return list(value)


__all__ = ["spec_to_model", "SPEC_ARGS", "VARIANTS"]
