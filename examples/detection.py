"""Train torchvision's Faster R-CNN or Mask R-CNN on COCO-format data with an ecvit backbone.

    python examples/detection.py --model cvt_13 --detector mask --data my_coco --steps 100
    python examples/detection.py --model dws_vit_tiny_dw --steps 1      # on a generated sample

``--data`` is a folder with ``instances.json`` (COCO: ``images``, ``annotations`` with
``bbox`` and polygon ``segmentation``, ``categories``) and the image files it names. It is
read with the json module and polygons are drawn with PIL, so pycocotools is not needed
(RLE-encoded crowd regions are skipped). Without ``--data`` a small sample is generated
in a temporary folder. The backbone is :func:`ecvit.detection.create_backbone`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.transforms.functional import pil_to_tensor

from ecvit.detection import create_backbone
from ecvit.errors import UsageError

Sample = tuple[torch.Tensor, dict[str, torch.Tensor]]


def write_coco_sample(folder: Path, num_images: int = 2, size: tuple[int, int] = (96, 128),
                      seed: int = 0) -> Path:
    """Noise images with a rectangle and a triangle each, and their ``instances.json``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    height, width = size
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        image = Image.fromarray(rng.integers(0, 96, (height, width, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(image)
        x, y = int(rng.integers(4, width // 2 - 30)), int(rng.integers(4, height - 40))
        square = [x, y, x + 30, y, x + 30, y + 30, x, y + 30]
        x = int(rng.integers(width // 2, width - 40))
        triangle = [x, y + 36, x + 18, y, x + 36, y + 36]
        for category_id, polygon in ((1, square), (2, triangle)):
            draw.polygon(polygon, fill=(255, 220, 40) if category_id == 1 else (40, 200, 255))
            xs, ys = polygon[0::2], polygon[1::2]
            bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id, category_id=category_id,
                                    segmentation=[polygon], bbox=bbox, area=bbox[2] * bbox[3], iscrowd=0))
        name = f"{image_id:012d}.jpg"
        image.save(folder / name)
        images.append(dict(id=image_id, file_name=name, height=height, width=width))
    categories = [dict(id=1, name="square"), dict(id=2, name="triangle")]
    path = folder / "instances.json"
    path.write_text(json.dumps(dict(images=images, annotations=annotations, categories=categories)))
    return path


def load_coco(folder: Path) -> tuple[list[Sample], list[str]]:
    """Images (float ``[3, H, W]`` in 0-1) with torchvision detection targets, and class names.

    Category ids become labels 1..K in id order (0 is the background); boxes go from COCO's
    ``[x, y, w, h]`` to ``[x1, y1, x2, y2]``; each annotation's polygons are drawn into one mask.
    """
    coco = json.loads((folder / "instances.json").read_text())
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    label = {c["id"]: i for i, c in enumerate(cats, start=1)}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in coco["annotations"]:
        if not ann.get("iscrowd") and isinstance(ann.get("segmentation"), list):
            by_image.setdefault(ann["image_id"], []).append(ann)
    samples = []
    for info in coco["images"]:
        image = Image.open(folder / info["file_name"]).convert("RGB")
        anns = by_image.get(info["id"], [])
        masks = []
        for ann in anns:
            mask = Image.new("L", image.size, 0)
            for polygon in ann["segmentation"]:
                ImageDraw.Draw(mask).polygon([float(v) for v in polygon], fill=1)
            masks.append(torch.from_numpy(np.array(mask)))
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)],
                             dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([label[a["category_id"]] for a in anns], dtype=torch.int64)
        empty = torch.zeros(0, image.height, image.width, dtype=torch.uint8)
        target = dict(boxes=boxes, labels=labels, masks=torch.stack(masks) if masks else empty)
        samples.append((pil_to_tensor(image).float() / 255, target))
    return samples, [c["name"] for c in cats]


def build_detector(backbone: nn.Module, detector: str, num_classes: int | None, min_size: int = 800,
                   max_size: int = 1333, **kwargs: Any) -> nn.Module:
    """torchvision's detector on ``backbone``, normalising images with the model's mean/std.

    ``kwargs`` go to ``FasterRCNN`` / ``MaskRCNN`` (heads, anchor generator, sampling sizes).
    """
    cfg = backbone.pretrained_cfg
    cls = MaskRCNN if detector == "mask" else FasterRCNN
    return cls(backbone, num_classes=num_classes, min_size=min_size, max_size=max_size,
               image_mean=list(cfg.get("mean", (0.485, 0.456, 0.406))),
               image_std=list(cfg.get("std", (0.229, 0.224, 0.225))), **kwargs)


def train(model: nn.Module, samples: Sequence[Sample], steps: int, batch_size: int = 2,
          lr: float = 1e-4) -> list[dict[str, float]]:
    """``steps`` AdamW steps (ViTDet's optimizer) over the samples in turn; each step's losses."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.05)
    model.train()
    history = []
    for step in range(steps):
        start = step * batch_size % len(samples)
        batch = [samples[(start + i) % len(samples)] for i in range(min(batch_size, len(samples)))]
        images = [image for image, _ in batch]
        targets = [target for _, target in batch]
        losses = model(images, targets)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append({k: v.item() for k, v in losses.items()})
    return history


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dws_vit_tiny_dw", help="a registered model name")
    parser.add_argument("--detector", choices=("faster", "mask"), default="mask")
    parser.add_argument("--data", type=Path, help="COCO folder (instances.json + images); default: generated")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--min-size", type=int, default=800, help="shorter image side fed to the detector")
    parser.add_argument("--max-size", type=int, default=1333, help="longest image side fed to the detector")
    parser.add_argument("--out-channels", type=int, default=256, help="pyramid width")
    parser.add_argument("--pyramid", choices=("auto", "fpn", "simple"), default="auto")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be >= 1")
    if args.data is not None and not (args.data / "instances.json").is_file():
        parser.error(f"--data: {args.data / 'instances.json'} does not exist")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.data or write_coco_sample(Path(tmp)).parent
        samples, names = load_coco(folder)
    try:
        backbone = create_backbone(args.model, out_channels=args.out_channels, pyramid=args.pyramid)
    except UsageError as exc:
        parser.error(str(exc))
    model = build_detector(backbone, args.detector, len(names) + 1, args.min_size, args.max_size)
    history = train(model, samples, args.steps, args.batch_size, args.lr)
    for step, losses in enumerate(history, start=1):
        print(f"step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in losses.items()))
    return 0 if all(math.isfinite(v) for losses in history for v in losses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
