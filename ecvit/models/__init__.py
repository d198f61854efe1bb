"""The model zoo: importing this package registers every family (here and in timm).

Networks and their registration only; weights are loaded by :mod:`ecvit.io.weights`.
"""

from ecvit.models.layers import set_cpu_autocast_training, set_eval_folding
from ecvit.models.registry import create_model, list_models, model_entry

from ecvit.models import cait, cvt, ecvit, swin_dw, vit_dw  # noqa: F401,E402  (registration side effect)

__all__ = ["create_model", "list_models", "model_entry", "set_cpu_autocast_training", "set_eval_folding"]
