"""The package's layers, lowest first: a module imports only its own layer and lower ones.

``tests/test_layering.py`` reads :data:`LAYERS` and fails on an import that points up or
sideways (``data`` and ``models`` share a rank and do not import each other), on an import
cycle, and on a function-level ``ecvit`` import outside the command-line layer (only the
front ends import lazily, to keep ``--help`` fast and to set process-wide policy before
torch loads). See the package docstring for what each layer holds.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

# (layer, rank, module patterns (fnmatch)); equal ranks are siblings that do not import each other
LAYERS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("base", 0, ("ecvit.errors", "ecvit.openmp", "ecvit.version", "ecvit.layering")),
    ("config", 1, ("ecvit.config",)),
    ("data", 2, ("ecvit.data", "ecvit.data.*", "ecvit.inputs")),
    ("models", 2, ("ecvit.models", "ecvit.models.*", "ecvit.flops", "ecvit.model_table")),
    ("io", 3, ("ecvit.io", "ecvit.io.*")),
    ("engine", 4, ("ecvit.engine", "ecvit.engine.*")),
    ("tools", 5, ("ecvit.predict", "ecvit.onnx_predict", "ecvit.results_file", "ecvit.export",
                  "ecvit.bench", "ecvit.attention_map", "ecvit.detection")),
    ("command line", 6, ("ecvit", "ecvit.cli", "ecvit.__main__")),
)
LAZY_IMPORTS_ALLOWED = ("command line",)  # the only layer with function-level ecvit imports


def layer_of(module: str) -> tuple[str, int]:
    """``(layer, rank)`` of a dotted module name; a KeyError for a module no layer claims."""
    for name, rank, patterns in LAYERS:
        if any(fnmatchcase(module, p) for p in patterns):
            return name, rank
    raise KeyError(f"{module}: in no layer of ecvit.layering.LAYERS")


__all__ = ["LAYERS", "LAZY_IMPORTS_ALLOWED", "layer_of"]
