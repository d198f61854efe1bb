"""The training engine: one ``train`` / ``validate`` behind every front end.

- ``resolve(cfg)``: the preflight, a checked :class:`RunPlan` (nothing written);
- ``train(plan)``: train, evaluate and checkpoint every epoch (resumable bit for bit);
- ``validate(cfg, checkpoint)``: exact top-1/top-5/loss/per-class accuracy of a checkpoint;
- ``build_model(cfg, num_classes)`` / ``model_kwargs(cfg)``: the model a config describes.

The model a checkpoint describes comes from :func:`ecvit.io.weights.load_for_inference`.
"""

from ecvit.engine.builder import build_model, model_kwargs
from ecvit.engine.plan import RunPlan, resolve
from ecvit.engine.trainer import train
from ecvit.engine.validate_checkpoint import validate

__all__ = ["train", "validate", "resolve", "RunPlan", "build_model", "model_kwargs"]
