"""The microsoft/CvT configuration schema, re-stated as data: every key its
``lib/config/default.py`` defines, with its default, plus the keys of the sections it leaves
open (``new_allowed``) that its code reads.

An official experiment file is merged over :data:`DEFAULTS` exactly as the official loader
does, so a key the file leaves out means what it means there (``TRAIN.OPTIMIZER`` is then
``sgd``, ``TEST.CENTER_CROP`` true ...).
"""

from __future__ import annotations

from typing import Any

# Open sections: the keys the official code (or timm 0.3.2, which it hands them to) reads.
SPEC_KEYS = ("INIT", "NUM_STAGES", "PATCH_SIZE", "PATCH_STRIDE", "PATCH_PADDING", "DIM_EMBED",
             "NUM_HEADS", "DEPTH", "MLP_RATIO", "ATTN_DROP_RATE", "DROP_RATE", "DROP_PATH_RATE",
             "QKV_BIAS", "CLS_TOKEN", "POS_EMBED", "QKV_PROJ_METHOD", "KERNEL_QKV", "PADDING_KV",
             "STRIDE_KV", "PADDING_Q", "STRIDE_Q")
TIMM_AUG_KEYS = ("USE_LOADER", "USE_TRANSFORM", "RE_PROB", "RE_MODE", "RE_COUNT", "RE_SPLIT",
                 "HFLIP", "VFLIP", "COLOR_JITTER", "AUTO_AUGMENT", "INTERPOLATION")
LR_SCHEDULER_KEYS = ("METHOD", "ARGS", "MILESTONES", "GAMMA", "ETA_MIN", "BASE_LR", "MAX_LR",
                     "STEP_SIZE_UP")
# timm 0.3.2 create_scheduler(args) reads these attributes (lower case, as in the files)
SCHEDULER_ARGS = ("sched", "epochs", "min_lr", "warmup_lr", "warmup_epochs", "cooldown_epochs",
                  "decay_rate", "decay_epochs", "lr_cycle_mul", "lr_cycle_limit", "lr_noise",
                  "lr_noise_pct", "lr_noise_std", "seed", "patience_epochs")
# timm 0.3.2 create_optimizer(args, model) reads these
OPTIMIZER_ARGS = ("opt", "lr", "weight_decay", "momentum", "opt_eps", "opt_betas")
LOSS_KEYS = ("LABEL_SMOOTHING", "LOSS")
FINETUNE_LR_SCHEDULER_KEYS = ("DECAY_TYPE",)

DEFAULTS: dict[str, Any] = {
    "BASE": [""],
    "NAME": "",
    "DATA_DIR": "",
    "DIST_BACKEND": "nccl",
    "GPUS": [0],
    "MULTIPROCESSING_DISTRIBUTED": True,
    "OUTPUT_DIR": "",
    "PIN_MEMORY": True,
    "PRINT_FREQ": 20,
    "RANK": 0,
    "VERBOSE": True,
    "WORKERS": 4,
    "MODEL_SUMMARY": False,
    "AMP": {"ENABLED": False, "MEMORY_FORMAT": "nchw"},
    "CUDNN": {"BENCHMARK": True, "DETERMINISTIC": False, "ENABLED": True},
    "MODEL": {"NAME": "cls_hrnet", "INIT_WEIGHTS": True, "PRETRAINED": "", "PRETRAINED_LAYERS": ["*"],
              "NUM_CLASSES": 1000, "SPEC": {}},
    "LOSS": {"LABEL_SMOOTHING": 0.0, "LOSS": "softmax"},
    "DATASET": {"ROOT": "", "DATASET": "imagenet", "TRAIN_SET": "train", "TEST_SET": "val",
                "DATA_FORMAT": "jpg", "LABELMAP": "", "TRAIN_TSV_LIST": [], "TEST_TSV_LIST": [],
                "SAMPLER": "default", "TARGET_SIZE": -1},
    "INPUT": {"MEAN": [0.485, 0.456, 0.406], "STD": [0.229, 0.224, 0.225]},
    "AUG": {"SCALE": [0.08, 1.0], "RATIO": [3.0 / 4.0, 4.0 / 3.0], "COLOR_JITTER": [0.4, 0.4, 0.4, 0.1, 0.0],
            "GRAY_SCALE": 0.0, "GAUSSIAN_BLUR": 0.0, "DROPBLOCK_LAYERS": [3, 4], "DROPBLOCK_KEEP_PROB": 1.0,
            "DROPBLOCK_BLOCK_SIZE": 7, "MIXUP_PROB": 0.0, "MIXUP": 0.0, "MIXCUT": 0.0, "MIXCUT_MINMAX": [],
            "MIXUP_SWITCH_PROB": 0.5, "MIXUP_MODE": "batch", "MIXCUT_AND_MIXUP": False, "INTERPOLATION": 2,
            "TIMM_AUG": {"USE_LOADER": False, "USE_TRANSFORM": False}},
    "TRAIN": {"AUTO_RESUME": True, "CHECKPOINT": "", "LR_SCHEDULER": {}, "SCALE_LR": True, "LR": 0.001,
              "OPTIMIZER": "sgd", "OPTIMIZER_ARGS": {}, "MOMENTUM": 0.9, "WD": 0.0001, "WITHOUT_WD_LIST": [],
              "NESTEROV": True, "GAMMA1": 0.99, "GAMMA2": 0.0, "BEGIN_EPOCH": 0, "END_EPOCH": 100,
              "IMAGE_SIZE": [224, 224], "BATCH_SIZE_PER_GPU": 32, "SHUFFLE": True, "EVAL_BEGIN_EPOCH": 0,
              "DETECT_ANOMALY": False, "CLIP_GRAD_NORM": 0.0, "SAVE_ALL_MODELS": False},
    "TEST": {"BATCH_SIZE_PER_GPU": 32, "CENTER_CROP": True, "IMAGE_SIZE": [224, 224], "INTERPOLATION": 2,
             "MODEL_FILE": "", "REAL_LABELS": False, "VALID_LABELS": ""},
    "FINETUNE": {"FINETUNE": False, "USE_TRAIN_AUG": False, "BASE_LR": 0.003, "BATCH_SIZE": 512,
                 "EVAL_EVERY": 3000, "TRAIN_MODE": True, "FROZEN_LAYERS": [],
                 "LR_SCHEDULER": {"DECAY_TYPE": "step"}},
    "DEBUG": {"DEBUG": False},
}

# Sections whose keys are open in the official schema -> the keys accepted in them.
OPEN_SECTIONS: dict[str, tuple[str, ...]] = {
    "MODEL.SPEC": SPEC_KEYS,
    "AUG.TIMM_AUG": TIMM_AUG_KEYS,
    "LOSS": LOSS_KEYS,
    "TRAIN.LR_SCHEDULER": LR_SCHEDULER_KEYS,
    "TRAIN.LR_SCHEDULER.ARGS": SCHEDULER_ARGS,
    "TRAIN.OPTIMIZER_ARGS": OPTIMIZER_ARGS,
    "FINETUNE.LR_SCHEDULER": FINETUNE_LR_SCHEDULER_KEYS,
}

# Keys the official code never reads (or whose value it overwrites before use): accepted,
# and listed in the run's "no effect:" note when a file or an override sets them.
NO_EFFECT = frozenset({
    "DATA_DIR", "DIST_BACKEND", "GPUS", "MULTIPROCESSING_DISTRIBUTED", "RANK", "VERBOSE",
    "MODEL_SUMMARY", "DATASET.DATA_FORMAT", "DATASET.LABELMAP", "DATASET.TRAIN_TSV_LIST",
    "DATASET.TEST_TSV_LIST", "DATASET.TARGET_SIZE", "AUG.DROPBLOCK_LAYERS", "AUG.DROPBLOCK_KEEP_PROB",
    "AUG.DROPBLOCK_BLOCK_SIZE", "AUG.MIXCUT_AND_MIXUP", "TRAIN.SHUFFLE", "TRAIN.BEGIN_EPOCH",
    "TRAIN.GAMMA1", "TRAIN.GAMMA2", "TEST.REAL_LABELS", "FINETUNE.EVAL_EVERY", "FINETUNE.TRAIN_MODE",
    "FINETUNE.LR_SCHEDULER.DECAY_TYPE", "DEBUG.DEBUG", "MODEL.SPEC.POS_EMBED",
    "TRAIN.LR_SCHEDULER.ARGS.epochs", "TRAIN.LR_SCHEDULER.ARGS.cooldown_epochs",
    "TRAIN.LR_SCHEDULER.ARGS.seed", "TRAIN.OPTIMIZER_ARGS.lr",
})

# PIL's integer resampling codes (TEST.INTERPOLATION, AUG.INTERPOLATION)
PIL_INTERPOLATION = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
