"""The training engine: one ``train`` / ``validate`` behind every front end."""

from ecvit.engine.builder import build_model, load_for_inference, model_kwargs

__all__ = ["build_model", "load_for_inference", "model_kwargs"]
