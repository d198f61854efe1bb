"""``ecvit predict``: top-k classes for image files, from a checkpoint alone.

The checkpoint carries everything inference needs (model name and arguments, class names,
input size, mean/std, interpolation, crop), so predictions use exactly the preprocessing
the model was evaluated with during training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

CHUNK = 32  # images per forward pass: bounded memory for any number of files


def predict(checkpoint: str | Path, images: Sequence[str | Path], topk: int = 5,
            use_ema: bool | None = None) -> list[dict[str, Any]]:
    """``[{"image": path, "top": [{"class", "index", "prob"}, ...]}, ...]`` in input order.

    ``use_ema`` None uses the EMA weights when the checkpoint has them (``--use-ema``).

    Every image is read before the model runs, so a bad file fails fast with a
    :class:`~ecvit.errors.DataError` naming it.
    """
    from ecvit.data import build_eval_transform, load_image
    from ecvit.engine import load_for_inference

    model, spec = load_for_inference(str(checkpoint), use_ema)
    transform = build_eval_transform(spec.img_size, spec.mean, spec.std, spec.interpolation,
                                     spec.crop_pct, channels=int(spec.model_args.get("in_chans", 3)),
                                     crop_mode=spec.crop_mode)
    tensors = [transform(load_image(path)) for path in images]
    names = spec.class_names
    k = min(topk, spec.num_classes)
    results = []
    with torch.inference_mode():
        for start in range(0, len(tensors), CHUNK):
            batch = torch.stack(tensors[start:start + CHUNK])
            probs = model(batch).float().softmax(dim=-1)
            values, indices = probs.topk(k, dim=-1)
            for row, (vals, idxs) in enumerate(zip(values.tolist(), indices.tolist())):
                results.append({
                    "image": str(images[start + row]),
                    "top": [{"class": names[i], "index": i, "prob": p} for p, i in zip(vals, idxs)],
                })
    return results


def format_predictions(results: list[dict[str, Any]]) -> str:
    """One block per image: the path, then ``rank. class  probability%`` lines."""
    lines = []
    for item in results:
        lines.append(item["image"])
        width = max(len(t["class"]) for t in item["top"])
        for rank, top in enumerate(item["top"], 1):
            lines.append(f"  {rank}. {top['class']:<{width}}  {100 * top['prob']:6.2f}%")
    return "\n".join(lines)


__all__ = ["predict", "format_predictions"]
