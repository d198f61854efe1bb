"""The five microsoft/CvT experiment files (``experiments/imagenet/cvt/*.yaml``) as test
data: their keys and values, as a user brings them, written out as YAML by ``write_official``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

NAMES = ("cvt-13-224x224", "cvt-13-384x384", "cvt-21-224x224", "cvt-21-384x384", "cvt-w24-384x384")

_SPEC_13 = {
    "INIT": "trunc_norm", "NUM_STAGES": 3, "PATCH_SIZE": [7, 3, 3], "PATCH_STRIDE": [4, 2, 2],
    "PATCH_PADDING": [2, 1, 1], "DIM_EMBED": [64, 192, 384], "NUM_HEADS": [1, 3, 6], "DEPTH": [1, 2, 10],
    "MLP_RATIO": [4.0, 4.0, 4.0], "ATTN_DROP_RATE": [0.0, 0.0, 0.0], "DROP_RATE": [0.0, 0.0, 0.0],
    "DROP_PATH_RATE": [0.0, 0.0, 0.1], "QKV_BIAS": [True, True, True], "CLS_TOKEN": [False, False, True],
    "POS_EMBED": [False, False, False], "QKV_PROJ_METHOD": ["dw_bn", "dw_bn", "dw_bn"],
    "KERNEL_QKV": [3, 3, 3], "PADDING_KV": [1, 1, 1], "STRIDE_KV": [2, 2, 2], "PADDING_Q": [1, 1, 1],
    "STRIDE_Q": [1, 1, 1],
}

_BASE: dict[str, Any] = {
    "OUTPUT_DIR": "OUTPUT/", "WORKERS": 6, "PRINT_FREQ": 500, "AMP": {"ENABLED": True},
    "MODEL": {"NAME": "cls_cvt", "SPEC": _SPEC_13},
    "AUG": {"MIXUP_PROB": 1.0, "MIXUP": 0.8, "MIXCUT": 1.0, "TIMM_AUG": {
        "USE_LOADER": True, "RE_COUNT": 1, "RE_MODE": "pixel", "RE_SPLIT": False, "RE_PROB": 0.25,
        "AUTO_AUGMENT": "rand-m9-mstd0.5-inc1", "HFLIP": 0.5, "VFLIP": 0.0, "COLOR_JITTER": 0.4,
        "INTERPOLATION": "bicubic"}},
    "LOSS": {"LABEL_SMOOTHING": 0.1},
    "CUDNN": {"BENCHMARK": True, "DETERMINISTIC": False, "ENABLED": True},
    "DATASET": {"DATASET": "imagenet", "DATA_FORMAT": "jpg", "ROOT": "DATASET/imagenet/", "TEST_SET": "val",
                "TRAIN_SET": "train"},
    "TEST": {"BATCH_SIZE_PER_GPU": 32, "IMAGE_SIZE": [224, 224], "MODEL_FILE": "", "INTERPOLATION": 3},
    "TRAIN": {"BATCH_SIZE_PER_GPU": 256, "LR": 0.00025, "IMAGE_SIZE": [224, 224], "BEGIN_EPOCH": 0,
              "END_EPOCH": 300, "LR_SCHEDULER": {"METHOD": "timm", "ARGS": {
                  "sched": "cosine", "warmup_epochs": 5, "warmup_lr": 0.000001, "min_lr": 0.00001,
                  "cooldown_epochs": 10, "decay_rate": 0.1}},
              "OPTIMIZER": "adamW", "WD": 0.05, "WITHOUT_WD_LIST": ["bn", "bias", "ln"], "SHUFFLE": True},
    "DEBUG": {"DEBUG": False},
}


def official_experiment(name: str) -> dict[str, Any]:
    """The content of microsoft/CvT ``experiments/imagenet/cvt/{name}.yaml``."""
    data = copy.deepcopy(_BASE)
    spec, train, test = data["MODEL"]["SPEC"], data["TRAIN"], data["TEST"]
    if "-21-" in name or "w24" in name:
        train.update(BATCH_SIZE_PER_GPU=128, LR=0.000125, WD=0.1)
    if "-21-" in name:
        spec["DEPTH"] = [1, 4, 16]
    if "w24" in name:
        spec.update(DIM_EMBED=[192, 768, 1024], NUM_HEADS=[3, 12, 16], DEPTH=[2, 2, 20],
                    DROP_PATH_RATE=[0.0, 0.0, 0.3])
    if name.endswith("384x384"):
        train["IMAGE_SIZE"] = test["IMAGE_SIZE"] = [384, 384]
        test["CENTER_CROP"] = False
    if name == "cvt-21-224x224":
        data["AUG"]["TIMM_AUG"]["USE_LOADER"] = False
        data["DATASET"]["SAMPLER"] = "repeated_aug"
    return data


def write_official(folder: Path, name: str, **changes: Any) -> Path:
    """Write ``{name}.yaml`` into ``folder`` (``changes``: top-level sections replaced)."""
    data = official_experiment(name)
    data.update(changes)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
