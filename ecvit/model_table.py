"""``ecvit models``: the model zoo as a table of parameters, MACs, input size and paper.

Every model is built on the meta device, so even CvT-W24 at 384 px costs no memory and
no compute; MACs are :func:`ecvit.flops.count_macs` (multiply-accumulates, attention
included), which is what the papers call "FLOPs".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from ecvit.flops import count_macs, count_params
from ecvit.models import create_model, list_models, model_entry


@dataclass(frozen=True)
class ModelRow:
    name: str
    params: int
    macs: int
    img_size: int
    num_classes: int
    paper: str


def default_input(name: str) -> tuple[int, int]:
    """``(img_size, num_classes)`` from the model's timm pretrained config (224, 1000 if none)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return 224, 1000
    return int(cfg.input_size[-1]), int(cfg.num_classes or 1000)


def model_row(name: str, img_size: int | None = None, num_classes: int | None = None) -> ModelRow:
    """Count one registered model at ``img_size`` (default: its own) on the meta device."""
    entry = model_entry(name)
    own_size, own_classes = default_input(name)
    size = img_size or own_size
    classes = num_classes or own_classes
    with torch.device("meta"):
        model = create_model(name, num_classes=classes, img_size=size)
        macs = count_macs(model, size)
    return ModelRow(name, count_params(model), macs, size, classes, entry.paper)


def model_rows(pattern: str | None = None, img_size: int | None = None,
               num_classes: int | None = None) -> list[ModelRow]:
    """One row per registered model whose name matches the shell wildcard ``pattern``."""
    return [model_row(name, img_size, num_classes) for name in list_models(pattern)]


def human(count: int) -> str:
    """``19997480 -> "20.00M"``, ``625600 -> "0.63M"``, ``4503000000 -> "4.50G"``."""
    for unit, scale, floor in (("G", 1e9, 1e9), ("M", 1e6, 1e5), ("K", 1e3, 1e3)):
        if count >= floor:
            return f"{count / scale:.2f}{unit}"
    return str(count)


def human_macs(count: int) -> str:
    """MACs in G as the papers print them: ``696750000 -> "0.697G"``; tiny counts in M."""
    if count >= 1e9:
        return f"{count / 1e9:.2f}G"
    if count >= 1e7:
        return f"{count / 1e9:.3f}G"
    return human(count)


HEADERS = ("model", "params", "MACs", "input", "classes", "paper")


def _cells(row: ModelRow) -> tuple[str, ...]:
    return (row.name, human(row.params), human_macs(row.macs), f"{row.img_size}x{row.img_size}",
            str(row.num_classes), row.paper)


def format_table(rows: list[ModelRow], markdown: bool = False) -> str:
    """A plain aligned table, or a Markdown table for the README."""
    cells = [_cells(r) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(HEADERS) + " |",
                 "|" + "|".join(["---"] + ["---:"] * 4 + ["---"]) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(HEADERS)]
    right = {1, 2, 3, 4}

    def fmt(values: tuple[str, ...]) -> str:
        return "  ".join(v.rjust(w) if i in right else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    return "\n".join([fmt(HEADERS)] + [fmt(c) for c in cells])


__all__ = ["ModelRow", "model_row", "model_rows", "format_table", "human", "human_macs",
           "default_input"]
