"""``ecvit predict``: top-k classes for any number of images, from a checkpoint alone.

The checkpoint (or an ``ecvit export`` ``.safetensors`` / ``.onnx`` file) carries everything
inference needs (model, class names, input size, mean/std, interpolation, crop), so
predictions use exactly the preprocessing the model was evaluated with during training.

Images stream through a :class:`~torch.utils.data.DataLoader` over the list of paths: each
batch is read (by ``workers`` processes), classified and written out before the next is
read, so memory stays flat for a folder of 100,000 images. Only the path strings are held.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ecvit.data import build_eval_transform, load_image
from ecvit.engine.outputs import check_output_dir
from ecvit.engine.precision import Precision, resolve_device
from ecvit.errors import CheckpointError, DataError, UsageError, printable
from ecvit.inputs import expand_inputs
from ecvit.io.checkpoint import describe_file, file_kind, write_atomic
from ecvit.io.spec import CheckpointSpec
from ecvit.io.weights import load_for_inference
from ecvit.models import fuse
from ecvit.onnx_predict import OnnxClassifier
from ecvit.results_file import ResultsWriter, result_row, results_format

DEFAULT_BATCH_SIZE = 32
CONSOLE_IMAGES = 20  # with --results-file, the console shows this many images, then a summary
SHOWN_ERRORS = 10  # skipped images named one per line on stderr, then only counted
EXPECTED = ("`ecvit predict` takes a checkpoint written by `ecvit train` (.pth) or a file "
            "written by `ecvit export` (.safetensors, .onnx)")
NOT_CHECKPOINTS = ("directory", "torchscript", "image", "text", "unknown")


def load_classifier(checkpoint: str | Path, use_ema: bool | None = None, device: str | None = None,
                    amp: str = "off") -> tuple[Callable[[torch.Tensor], torch.Tensor], CheckpointSpec]:
    """``(logits_fn, spec)`` for a checkpoint, a ``.safetensors`` export or an ONNX export.

    ``logits_fn`` maps a CPU batch ``[B, C, H, W]`` to float32 logits; the file's kind is read
    from its first bytes (:func:`ecvit.io.checkpoint.file_kind`), not its name.
    """
    kind = file_kind(checkpoint)
    if kind == "onnx":
        if use_ema:
            raise UsageError(f"--use-ema: {checkpoint} is an ONNX export, which holds the one set "
                             "of weights chosen when exporting (`ecvit export --use-ema`)")
        if amp != "off":
            raise UsageError(f"--amp {amp}: {checkpoint} is an ONNX export, which runs in the "
                             "precision it was exported in; drop --amp")
        onnx_model = OnnxClassifier(checkpoint, device)
        return onnx_model, onnx_model.spec
    if kind in NOT_CHECKPOINTS:
        raise CheckpointError(f"{checkpoint}: {describe_file(checkpoint)}; {EXPECTED}")

    target = resolve_device(device, "--device")
    precision = Precision(amp, target.type, flag="--amp")
    model, spec = load_for_inference(str(checkpoint), use_ema)
    model = fuse(model).to(target)

    def logits(batch: torch.Tensor) -> torch.Tensor:
        with precision.autocast():
            return model(batch.to(target, non_blocking=True)).float()

    return logits, spec


class ImageFiles(Dataset):
    """``(index, tensor, None)`` per path, or ``(index, None, reason)`` for an unreadable one,
    so a bad file reaches the main process as a message, not a worker's traceback."""

    def __init__(self, paths: Sequence[str], transform: Callable[[Any], torch.Tensor]) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return index, self.transform(load_image(self.paths[index])), None
        except DataError as exc:
            return index, None, str(exc)


def _collate(items: list[tuple[int, torch.Tensor | None, str | None]]) -> tuple[
        list[int], torch.Tensor | None, list[tuple[int, str]]]:
    good = [(i, t) for i, t, err in items if err is None]
    errors = [(i, err) for i, _, err in items if err is not None]
    batch = torch.stack([t for _, t in good]) if good else None
    return [i for i, _ in good], batch, errors


class Predictor:
    """A loaded model and its preprocessing; :meth:`run` streams predictions for paths."""

    def __init__(self, checkpoint: str | Path, use_ema: bool | None = None, device: str | None = None,
                 amp: str = "off") -> None:
        self.logits, self.spec = load_classifier(checkpoint, use_ema, device, amp)
        spec = self.spec
        self.transform = build_eval_transform(spec.img_size, spec.mean, spec.std, spec.interpolation,
                                              spec.crop_pct, channels=int(spec.model_args.get("in_chans", 3)),
                                              crop_mode=spec.crop_mode)
        self.pin_memory = device == "cuda" or (device in (None, "") and torch.cuda.is_available())

    def run(self, paths: Sequence[str], topk: int = 5, batch_size: int = DEFAULT_BATCH_SIZE,
            workers: int = 0, skip_bad_images: bool = False, progress: bool = False
            ) -> Iterator[dict[str, Any]]:
        """``{"image": path, "top": [{"class", "index", "prob"}, ...]}`` per image, in order.

        An unreadable image raises a :class:`DataError` naming it; with ``skip_bad_images``
        it yields ``{"image": path, "error": reason}`` instead. ``topk`` is capped at the
        number of classes.
        """
        from tqdm import tqdm

        k = min(topk, self.spec.num_classes)
        batches = -(-len(paths) // batch_size)
        workers = 0 if batches <= 1 else min(workers, batches)  # a worker costs a fork
        loader = DataLoader(ImageFiles(paths, self.transform), batch_size=batch_size, shuffle=False,
                            num_workers=workers, collate_fn=_collate, pin_memory=self.pin_memory)
        names = self.spec.class_names
        with tqdm(total=len(paths), unit="img", file=sys.stderr, disable=not progress,
                  dynamic_ncols=True) as bar, torch.inference_mode():
            for indices, batch, errors in loader:
                if errors and not skip_bad_images:
                    raise DataError(f"{errors[0][1]} (--skip-bad-images skips and counts such files)")
                tops = []
                if batch is not None:
                    values, classes = self.logits(batch).softmax(dim=-1).topk(k, dim=-1)
                    tops = [[{"class": names[c], "index": c, "prob": p} for p, c in zip(vals, idxs)]
                            for vals, idxs in zip(values.tolist(), classes.tolist())]
                found = {i: {"image": str(paths[i]), "top": top} for i, top in zip(indices, tops)}
                found.update((i, {"image": str(paths[i]), "error": reason}) for i, reason in errors)
                yield from (found[i] for i in sorted(found))
                bar.update(len(found))


def predict(checkpoint: str | Path, images: Sequence[str | Path], topk: int = 5,
            use_ema: bool | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
            device: str | None = None, amp: str = "off") -> list[dict[str, Any]]:
    """``[{"image": path, "top": [{"class", "index", "prob"}, ...]}, ...]`` in input order.

    ``images`` may hold files, folders, globs and ``@LIST`` files
    (:func:`ecvit.inputs.expand_inputs`); ``use_ema`` None uses the EMA weights when the
    checkpoint has them (``--use-ema``). An unreadable image raises a
    :class:`~ecvit.errors.DataError` naming it. The whole list is returned: for very many
    images, iterate :meth:`Predictor.run` (what ``ecvit predict`` does) instead.
    """
    paths = expand_inputs(images)
    predictor = Predictor(checkpoint, use_ema, device, amp)
    return list(predictor.run(paths, topk, batch_size))


def format_predictions(results: list[dict[str, Any]]) -> str:
    """One block per image: the path, then ``rank. class  probability%`` lines."""
    lines = []
    for item in results:
        lines.append(item["image"])
        width = max(len(t["class"]) for t in item["top"])
        for rank, top in enumerate(item["top"], 1):
            lines.append(f"  {rank}. {top['class']:<{width}}  {100 * top['prob']:6.2f}%")
    return "\n".join(lines)


# ------------------------------------------------------------------------ the command


class _Console:
    """What ``ecvit predict`` prints while predictions stream by.

    A table block per image (all of them without ``--results-file``; the first
    :data:`CONSOLE_IMAGES` with one, then a summary line), or a JSON array of all of them
    (``--json``); skipped images on stderr; nothing but errors with ``--quiet``.
    """

    def __init__(self, as_json: bool, results_file: str | None, quiet: bool) -> None:
        self.as_json, self.results_file, self.quiet = as_json, results_file, quiet
        self.count, self.skipped, self.top1 = 0, 0, collections.Counter()
        self.start = time.perf_counter()

    def add(self, item: dict[str, Any]) -> None:
        if "error" in item:
            self.skipped += 1
            if self.skipped <= SHOWN_ERRORS:
                print(printable(f"skipped: {item['error']}"), file=sys.stderr)
            return
        self.count += 1
        self.top1[item["top"][0]["class"]] += 1
        if self.quiet:
            return
        if self.as_json:
            text = json.dumps(item, indent=2)
            print(("[\n" if self.count == 1 else ",\n") + text, end="")
        elif self.results_file is None or self.count <= CONSOLE_IMAGES:
            print(printable(format_predictions([item])))

    def check(self) -> None:
        """At the end of the stream: refuse a run where no image could be read."""
        if self.count == 0:
            raise DataError(f"none of the {self.skipped} images could be read")
        if self.skipped:
            print(f"skipped {self.skipped} unreadable image{'s' * (self.skipped != 1)} "
                  "(--skip-bad-images)", file=sys.stderr)

    def finish(self) -> None:
        """The JSON array's end, or the summary line naming the results file."""
        if self.quiet:
            return
        if self.as_json:
            print("\n]")
        if self.results_file is not None:
            seconds = time.perf_counter() - self.start
            shown = f", the first {CONSOLE_IMAGES} shown above" if self.count > CONSOLE_IMAGES and not self.as_json else ""
            common = ", ".join(f"{name} {n}" for name, n in self.top1.most_common(5))
            print(printable(f"wrote {self.count} predictions to {self.results_file} in {seconds:.1f} s"
                            f"{shown}; most frequent top-1 classes: {common}"),
                  file=sys.stderr if self.as_json else sys.stdout)  # stdout stays valid JSON


def predict_command(args: argparse.Namespace) -> int:
    """``ecvit predict``: expand the inputs, then stream batches to the console and the file."""
    paths = expand_inputs(args.images)
    fmt = results_format(args.results_file) if args.results_file else None
    if fmt:
        check_output_dir(Path(args.results_file).parent, "--results-file")
    predictor = Predictor(args.checkpoint, args.use_ema, args.device, args.amp)
    k = min(args.topk, predictor.spec.num_classes)
    console = _Console(args.json, args.results_file, args.quiet)
    items = predictor.run(paths, k, args.batch_size, args.workers, args.skip_bad_images,
                          progress=not args.quiet and sys.stderr.isatty())

    def write(fh: BinaryIO) -> None:
        writer = ResultsWriter(fh, fmt, k)
        try:
            for item in items:
                console.add(item)
                if "top" in item:
                    writer.write([result_row(item)])
            console.check()  # before the rename: no file when no image could be read
        finally:  # also on errors: the temp file is then removed, but the writer is done
            writer.close()

    if fmt:
        write_atomic(args.results_file, write, what="results file")
    else:
        for item in items:
            console.add(item)
        console.check()
    console.finish()
    return 0


__all__ = ["predict", "Predictor", "load_classifier", "format_predictions", "predict_command",
           "ImageFiles"]
