"""The training engine: one ``train`` / ``validate`` behind every front end.

- ``resolve(cfg)``: the preflight, a checked :class:`RunPlan` (nothing written);
- ``train(plan)``: train, evaluate and checkpoint every epoch (resumable bit for bit);
- ``validate(cfg, checkpoint)``: exact top-1/top-5/loss/per-class accuracy of a checkpoint;
- ``build_model(cfg, num_classes)`` / ``model_kwargs(cfg)``: the model a config describes;
- ``load_for_inference(path)``: the model a checkpoint describes, weights loaded, eval mode.
"""

from ecvit.engine.builder import build_model, load_for_inference, model_kwargs
from ecvit.engine.plan import RunPlan, resolve
from ecvit.engine.trainer import train
from ecvit.engine.validate_checkpoint import validate

__all__ = ["train", "validate", "resolve", "RunPlan", "build_model", "load_for_inference",
           "model_kwargs"]
