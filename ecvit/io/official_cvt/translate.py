"""A merged official CvT config (defaults + file) -> our nested config mapping.

Each function maps one official section with the meaning the official code gives it
(``tools/train.py``, ``lib/dataset``, ``lib/optim``, ``lib/scheduler``, ``update_config``);
what the official code would crash on is refused here in one line instead.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ecvit.errors import UsageError
from ecvit.io.official_cvt.defaults import PIL_INTERPOLATION
from ecvit.io.official_cvt.spec import spec_to_model

# official TRAIN.OPTIMIZER -> ours (timm names); 'sgd' depends on TRAIN.NESTEROV
OPTIMIZERS = {"adamW": "adamw", "adam": "adam"}
# timm 0.3.2 scheduler names -> ours
TIMM_SCHEDS = ("cosine", "step", "tanh")
TIMM_OPTIMIZERS = {"adamw": "adamw", "adam": "adam", "sgd": "sgd", "nesterov": "sgd", "momentum": "momentum"}


def to_ours(o: dict[str, Any], source: str, no_effect: list[str], stem: str) -> dict[str, Any]:
    """Our nested mapping (upper-case keys, as in our YAML files) for the merged official ``o``."""
    if o["MODEL"]["NAME"] != "cls_cvt":
        raise UsageError(f"{source}: MODEL.NAME {o['MODEL']['NAME']!r}: the official CvT code "
                         "builds 'cls_cvt' only (its model is given by MODEL.SPEC)")
    if o["LOSS"].get("LOSS", "softmax") != "softmax":
        raise UsageError(f"{source}: LOSS.LOSS must be 'softmax' (the official code knows no other)")
    if "imagenet" not in str(o["DATASET"]["DATASET"]):
        raise UsageError(f"{source}: DATASET.DATASET {o['DATASET']['DATASET']!r}: the official code "
                         "reads ImageFolder datasets named '...imagenet...' only")
    if o["TRAIN"]["EVAL_BEGIN_EPOCH"] != 0:
        raise UsageError(f"{source}: TRAIN.EVAL_BEGIN_EPOCH {o['TRAIN']['EVAL_BEGIN_EPOCH']}: ecvit "
                         "validates after every epoch (it chooses model_best.pth by it); use 0")
    name = (stem + o["NAME"]) or "run"
    train, sched_no_effect = _train(o, source)
    return {
        "MODEL": _model(o, source),
        "DATA": _data(o, source),
        "AUG": _aug(o, source),
        "TRAIN": train,
        "TEST": _test(o, source),
        "CUDNN": {k: bool(v) for k, v in o["CUDNN"].items()},
        "OUTPUT_DIR": str(Path(o["OUTPUT_DIR"]) / str(o["DATASET"]["DATASET"]) / name),
        "OFFICIAL": {"FILE": source, "NO_EFFECT": sorted(set(no_effect) | set(sched_no_effect)),
                     "NUM_CLASSES": int(o["MODEL"]["NUM_CLASSES"])},
    }


def _model(o: dict[str, Any], source: str) -> dict[str, Any]:
    m, f = o["MODEL"], o["FINETUNE"]
    name, args, drop_path = spec_to_model(m["SPEC"], source)
    out: dict[str, Any] = {"NAME": name, "ARGS": args, "DROP_PATH_RATE": drop_path,
                           "PRETRAINED": m["PRETRAINED"] if m["INIT_WEIGHTS"] else "",
                           "PRETRAINED_LAYERS": [str(x) for x in m["PRETRAINED_LAYERS"]] or ["*"],
                           "FINETUNE": bool(f["FINETUNE"]),
                           "FROZEN_LAYERS": [str(x) for x in f["FROZEN_LAYERS"]] if f["FINETUNE"] else []}
    return out


def _square(size: Any, key: str, source: str) -> int:
    if not isinstance(size, list) or len(size) != 2 or size[0] != size[1]:
        raise UsageError(f"{source}: {key} must be [width, height] of a square image, got {size!r} "
                         "(the official training crop uses the width only)")
    return int(size[0])


def _interp(code: Any, key: str, source: str) -> str:
    if isinstance(code, str) and code in PIL_INTERPOLATION.values():
        return code
    if code not in PIL_INTERPOLATION:
        raise UsageError(f"{source}: {key} must be a PIL resampling code "
                         f"({', '.join(f'{k} {v}' for k, v in PIL_INTERPOLATION.items())}), got {code!r}")
    return PIL_INTERPOLATION[code]


def _data(o: dict[str, Any], source: str) -> dict[str, Any]:
    d, t = o["DATASET"], o["TEST"]
    sampler = str(d["SAMPLER"])
    if sampler not in ("default", "repeated_aug"):
        raise UsageError(f"{source}: DATASET.SAMPLER must be 'default' or 'repeated_aug', got {sampler!r}")
    return {
        "DATASET": "folder",
        "ROOT": str(d["ROOT"]),
        "TRAIN_SPLIT": str(d["TRAIN_SET"]),
        "VAL_SPLIT": str(d["TEST_SET"]),
        "IMG_SIZE": _square(o["TRAIN"]["IMAGE_SIZE"], "TRAIN.IMAGE_SIZE", source),
        "MEAN": [float(v) for v in o["INPUT"]["MEAN"]],
        "STD": [float(v) for v in o["INPUT"]["STD"]],
        "INTERPOLATION": _interp(t["INTERPOLATION"], "TEST.INTERPOLATION", source),
        # CENTER_CROP: resize to int(size / 0.875) then crop; else squash to size x size
        "CROP_PCT": 0.875 if t["CENTER_CROP"] else 1.0,
        "CROP_MODE": "center" if t["CENTER_CROP"] else "squash",
        "WORKERS": int(o["WORKERS"]),
        "PIN_MEMORY": bool(o["PIN_MEMORY"]),
        "SAMPLER": sampler,
    }


def _test(o: dict[str, Any], source: str) -> dict[str, Any]:
    t = o["TEST"]
    return {"BATCH_SIZE": int(t["BATCH_SIZE_PER_GPU"]), "MODEL_FILE": str(t["MODEL_FILE"]),
            "IMG_SIZE": _square(t["IMAGE_SIZE"], "TEST.IMAGE_SIZE", source),
            "VALID_LABELS": str(t["VALID_LABELS"])}


def _aug(o: dict[str, Any], source: str) -> dict[str, Any]:
    a, timm_aug, f = o["AUG"], o["AUG"]["TIMM_AUG"], o["FINETUNE"]
    mixing = a["MIXUP"] > 0 or a["MIXCUT"] > 0 or bool(a["MIXCUT_MINMAX"])
    out: dict[str, Any] = {
        "SCALE": [float(v) for v in a["SCALE"]], "RATIO": [float(v) for v in a["RATIO"]],
        # update_config: any mixing turns MIXUP_PROB to 1; Mixup runs only if MIXUP_PROB > 0
        "MIXUP": float(a["MIXUP"]) if a["MIXUP_PROB"] > 0 or mixing else 0.0,
        "CUTMIX": float(a["MIXCUT"]) if a["MIXUP_PROB"] > 0 or mixing else 0.0,
        "CUTMIX_MINMAX": [float(v) for v in a["MIXCUT_MINMAX"]],
        "MIXUP_PROB": 1.0 if mixing else float(a["MIXUP_PROB"]),
        "MIXUP_SWITCH_PROB": float(a["MIXUP_SWITCH_PROB"]), "MIXUP_MODE": str(a["MIXUP_MODE"]),
        "LABEL_SMOOTHING": float(o["LOSS"]["LABEL_SMOOTHING"]),
        "RAND_AUGMENT": "", "REPROB": 0.0, "COLOR_JITTER": 0.0, "HFLIP": 0.5, "VFLIP": 0.0,
        "JITTER": [], "GRAYSCALE": 0.0, "GAUSSIAN_BLUR": 0.0, "RESPLIT": False,
    }
    if timm_aug["USE_LOADER"] or timm_aug["USE_TRANSFORM"]:  # timm's pipeline (loader or transform)
        jitter = timm_aug.get("COLOR_JITTER", 0.4)
        if not isinstance(jitter, (int, float)) or isinstance(jitter, bool):
            raise UsageError(f"{source}: AUG.TIMM_AUG.COLOR_JITTER must be one number, got {jitter!r}")
        auto = timm_aug.get("AUTO_AUGMENT") or ""
        if auto and not str(auto).startswith("rand"):
            raise UsageError(f"{source}: AUG.TIMM_AUG.AUTO_AUGMENT {auto!r}: only RandAugment specs "
                             "('rand-m9-mstd0.5-inc1') are supported")
        out.update(
            PIPELINE="timm", RAND_AUGMENT=str(auto), REPROB=float(timm_aug.get("RE_PROB", 0.0)),
            REMODE=str(timm_aug.get("RE_MODE", "const")), RECOUNT=int(timm_aug.get("RE_COUNT", 1)),
            # re_split reaches timm's loader only (USE_LOADER), not create_transform
            RESPLIT=bool(timm_aug.get("RE_SPLIT", False)) and bool(timm_aug["USE_LOADER"]),
            HFLIP=float(timm_aug.get("HFLIP", 0.5)), VFLIP=float(timm_aug.get("VFLIP", 0.0)),
            COLOR_JITTER=float(jitter), INTERPOLATION=str(timm_aug.get("INTERPOLATION", "bilinear")),
        )
    elif f["FINETUNE"] and not f["USE_TRAIN_AUG"]:  # resize to size + 32, random crop, flip
        out.update(PIPELINE="resize-crop", INTERPOLATION=_interp(a["INTERPOLATION"], "AUG.INTERPOLATION", source))
    else:  # torchvision: random-resized crop, flip, optional jitter / grey / blur
        cj = [float(v) for v in a["COLOR_JITTER"]]
        if len(cj) != 5:
            raise UsageError(f"{source}: AUG.COLOR_JITTER must be [brightness, contrast, saturation, "
                             f"hue, probability], got {a['COLOR_JITTER']!r}")
        out.update(PIPELINE="torchvision", INTERPOLATION=_interp(a["INTERPOLATION"], "AUG.INTERPOLATION", source),
                   JITTER=cj if cj[-1] > 0 else [], GRAYSCALE=float(a["GRAY_SCALE"]),
                   GAUSSIAN_BLUR=float(a["GAUSSIAN_BLUR"]))
    return out


def _train(o: dict[str, Any], source: str) -> tuple[dict[str, Any], list[str]]:
    t, f, amp = o["TRAIN"], o["FINETUNE"], o["AMP"]
    lr, base_batch = float(t["LR"]), int(t["BATCH_SIZE_PER_GPU"]) if t["SCALE_LR"] else 0
    if f["FINETUNE"]:  # BASE_LR is the learning rate of a global batch of FINETUNE.BATCH_SIZE
        lr, base_batch = float(f["BASE_LR"]), int(f["BATCH_SIZE"])
    out: dict[str, Any] = {
        "EPOCHS": int(t["END_EPOCH"]), "BATCH_SIZE": int(t["BATCH_SIZE_PER_GPU"]), "LR": lr,
        "LR_BASE_BATCH": base_batch, "MOMENTUM": float(t["MOMENTUM"]), "WEIGHT_DECAY": float(t["WD"]),
        "NO_WEIGHT_DECAY": [str(x) for x in t["WITHOUT_WD_LIST"]], "CLIP_GRAD": float(t["CLIP_GRAD_NORM"]),
        "AMP": "fp16" if amp["ENABLED"] else "off", "AMP_FALLBACK": True,
        "CHANNELS_LAST": bool(amp["ENABLED"] and amp["MEMORY_FORMAT"] == "nhwc"),
        "AUTO_RESUME": bool(t["AUTO_RESUME"]),
        "RESUME": str(t["CHECKPOINT"]) if t["AUTO_RESUME"] else "",
        "PRINT_FREQ": int(o["PRINT_FREQ"]), "SAVE_ALL": bool(t["SAVE_ALL_MODELS"]),
        "DETECT_ANOMALY": bool(t["DETECT_ANOMALY"]), "EMA": False, "ACCUM_STEPS": 1,
        "SCHED_ON_EPOCHS": True, "LAYER_DECAY": 0.0,
    }
    out.update(_optimizer(t, source))
    sched, no_effect = _scheduler(t, source)
    out.update(sched)
    return out, no_effect


def _optimizer(t: dict[str, Any], source: str) -> dict[str, Any]:
    name = str(t["OPTIMIZER"])
    if name == "sgd":
        return {"OPTIMIZER": "sgd" if t["NESTEROV"] else "momentum"}
    if name in OPTIMIZERS:
        return {"OPTIMIZER": OPTIMIZERS[name]}
    if name == "timm":  # timm's create_optimizer(args): its own wd rule, no WITHOUT_WD_LIST
        args = t["OPTIMIZER_ARGS"]
        opt = str(args.get("opt", "sgd")).lower()
        if opt not in TIMM_OPTIMIZERS:
            raise UsageError(f"{source}: TRAIN.OPTIMIZER_ARGS.opt {opt!r} is not supported; choose "
                             f"from {', '.join(TIMM_OPTIMIZERS)}")
        out: dict[str, Any] = {"OPTIMIZER": TIMM_OPTIMIZERS[opt], "NO_WEIGHT_DECAY": None,
                               "WEIGHT_DECAY": float(args.get("weight_decay", 0.0))}
        if "momentum" in args:
            out["MOMENTUM"] = float(args["momentum"])
        if "opt_eps" in args or "opt_betas" in args:
            raise UsageError(f"{source}: TRAIN.OPTIMIZER_ARGS opt_eps / opt_betas are not supported "
                             "(ecvit uses the optimizer's defaults)")
        return out
    raise UsageError(f"{source}: TRAIN.OPTIMIZER {name!r}: choose from sgd, adam, adamW, timm "
                     "(the official rmsprop reads keys its schema lacks and cannot run)")


def _scheduler(t: dict[str, Any], source: str) -> tuple[dict[str, Any], list[str]]:
    """TRAIN.LR_SCHEDULER as ours; stepped once per epoch, as the official loop does."""
    s = t["LR_SCHEDULER"]
    method = s.get("METHOD")
    if method is None:
        raise UsageError(f"{source}: TRAIN.LR_SCHEDULER.METHOD is not set (the official code "
                         "requires it): timm, MultiStep or CosineAnnealing")
    plain = {"WARMUP_EPOCHS": 0, "WARMUP_LR": 0.0, "SCHED_ARGS": {}}
    if method == "MultiStep":
        return {**plain, "SCHED": "multistep", "MIN_LR": 0.0,
                # torch's MultiStepLR decays at epoch m; timm's multistep at m - 1: shift by one
                "SCHED_ARGS": {"decay_milestones": [int(m) + 1 for m in s.get("MILESTONES", [])],
                               "decay_rate": float(s.get("GAMMA", 0.1))}}, []
    if method == "CosineAnnealing":
        return {**plain, "SCHED": "cosine", "MIN_LR": float(s.get("ETA_MIN", 0.0))}, []
    if method != "timm":
        raise UsageError(f"{source}: TRAIN.LR_SCHEDULER.METHOD {method!r}: choose from timm, "
                         "MultiStep, CosineAnnealing (the official CyclicLR passes an argument "
                         "torch does not take and cannot run)")
    args = dict(s.get("ARGS") or {})
    sched = str(args.get("sched", "cosine"))
    if sched not in TIMM_SCHEDS:
        raise UsageError(f"{source}: TRAIN.LR_SCHEDULER.ARGS.sched {sched!r}: choose from "
                         f"{', '.join(TIMM_SCHEDS)} (plateau needs a metric the official loop never passes)")
    for key in ("lr_cycle_mul", "lr_cycle_limit", "lr_noise"):
        if args.get(key) not in (None, 1, 1.0) and not (key == "lr_noise" and not args.get(key)):
            raise UsageError(f"{source}: TRAIN.LR_SCHEDULER.ARGS.{key} is not supported (one cycle, no noise)")
    out: dict[str, Any] = {
        "SCHED": sched, "WARMUP_EPOCHS": int(args.get("warmup_epochs", 0)),
        "WARMUP_LR": float(args.get("warmup_lr", 0.0)), "MIN_LR": float(args.get("min_lr", 0.0)),
        "SCHED_ARGS": {},
    }
    no_effect: list[str] = []
    if sched == "step":
        epochs = args.get("decay_epochs", 30)
        out["SCHED_ARGS"] = {"decay_epochs": float(epochs) if not math.isnan(float(epochs)) else 30.0,
                             "decay_rate": float(args.get("decay_rate", 0.1))}
    elif "decay_rate" in args:  # cosine/tanh: the decay between cycles, and there is one cycle
        no_effect.append("TRAIN.LR_SCHEDULER.ARGS.decay_rate")
    if "decay_epochs" in args and sched != "step":
        no_effect.append("TRAIN.LR_SCHEDULER.ARGS.decay_epochs")
    return out, no_effect
