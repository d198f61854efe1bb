"""The model zoo: importing this package registers every family (here and in timm).

Networks and their registration only; weights are loaded by :mod:`ecvit.io.weights`. The
speed forms (:func:`fuse`, the CPU bf16 training policy) are swaps in :mod:`ecvit.models.speed`.
"""

from ecvit.models.registry import create_model, list_models, model_entry

from ecvit.models import cait, cvt, ecvit, swin_dw, vit_dw  # noqa: F401,E402  (registration side effect)
from ecvit.models.speed import fuse, set_cpu_autocast_training  # noqa: E402

__all__ = ["create_model", "fuse", "list_models", "model_entry", "set_cpu_autocast_training"]
