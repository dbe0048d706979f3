"""A training run's recipe and identity: ``TrainConfig``, the default recipes, ``run_key``.

Plain Python (no JAX), so that reading sweep files and results never starts JAX.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math

from sqzdse.model import config as C

INITS = ("caffe", "msra")  # initialisation schemes; sqzdse.model.network.INITS holds their fillers
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("poly", "cosine", "constant")
DTYPES = ("float32", "bfloat16")  # compute dtypes; parameters stay float32
# TrainConfig fields a sweep may vary ([space]) as it varies metaparameters; the others (the dataset, limits, the
# validation split, checkpoints) are one per study.
SWEEPABLE = ("epochs", "batch_size", "iter_size", "optimizer", "lr", "momentum", "weight_decay", "schedule", "power",
             "warmup_epochs", "init", "dtype")  # fmt: skip
CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "init": INITS, "dtype": DTYPES}  # the word-valued fields


# What each TrainConfig field means (`sqzdse train`'s flags, `sqzdse sweep keys`); a new field needs a line.
TRAIN_HELP = {
    "dataset": "fashion_mnist, mnist, cifar10, cifar100, imagenette, imagenet2012",
    "epochs": "passes over the training split (fractions allowed)",
    "batch_size": "images per forward pass",
    "iter_size": "micro-batches accumulated per update (Caffe's iter_size)",
    "optimizer": "the update rule",
    "lr": "base learning rate",
    "momentum": "SGD momentum / Adam beta1",
    "weight_decay": "L2 on the gradient (decoupled for adamw)",
    "schedule": "learning-rate decay after warm-up",
    "power": "poly decay power",
    "warmup_epochs": "linear learning-rate warm-up",
    "seed": "seeds initialisation, data order, augmentation and dropout",
    "train_limit": "train on the first N training images only",
    "val_size": "images carved from the training split for validation",
    "eval_limit": "evaluate on the first N validation and test images only",
    "init": "caffe: the prototxts' fillers; msra: He for conv1 and the Fire modules",
    "dtype": "compute dtype (parameters stay float32)",
    "checkpoint_every": "also checkpoint every N updates (0: at each epoch's end only)",
    "devices": "local devices each batch is split across, parameters replicated (data parallel); 0: all",
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run's budget and recipe (the model's metaparameters live in SqueezeNetConfig)."""

    dataset: str = "fashion_mnist"
    epochs: float = 2.0  # may be fractional: 0.5 = half an epoch of steps
    batch_size: int = 128  # per forward pass (Caffe: batch_size)
    iter_size: int = 1  # gradient accumulation (Caffe: iter_size); an update sees batch_size * iter_size images
    optimizer: str = "adam"  # "sgd" (Caffe: momentum, lr folded into the velocity), "adam", "adamw"
    lr: float = 2e-3  # base learning rate
    momentum: float = 0.9  # SGD momentum / Adam b1
    weight_decay: float = 5e-4  # L2 added to the gradient (Caffe's weight_decay); decoupled for adamw
    schedule: str = "cosine"  # "poly" (Caffe: lr * (1 - it/max_iter)^power), "cosine", "constant"
    power: float = 1.0  # poly decay power
    warmup_epochs: float = 0.5  # linear warm-up from 0
    seed: int = 0
    train_limit: int | None = None  # use only the first N training images (quick runs)
    val_size: int | None = None  # images carved from the training split for validation (default: data's)
    eval_limit: int | None = None  # evaluate on the first N images of val and test
    init: str = "caffe"  # "caffe": the prototxts' fillers (xavier; gaussian 0.01 on conv10); "msra": He before conv10
    dtype: str = "float32"  # compute dtype ("bfloat16" keeps float32 parameters)
    checkpoint_every: int = 0  # also checkpoint every N updates (0: at epoch ends only)
    devices: int = 1  # local devices each batch is split across, parameters replicated (data parallel); 0: all

    def __post_init__(self):
        for name, lo in (("batch_size", 1), ("iter_size", 1), ("checkpoint_every", 0), ("seed", 0), ("devices", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise C.ConfigError(f"{name}={v!r}: must be an integer >= {lo}")
        for name in ("train_limit", "val_size", "eval_limit"):  # 0 would leave nothing to train or evaluate on
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise C.ConfigError(f"{name}={v!r}: must be unset or an integer >= 1")
        for name in ("epochs", "lr", "momentum", "weight_decay", "power", "warmup_epochs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise C.ConfigError(f"{name}={v!r}: must be a finite number")
        if not self.epochs > 0:
            raise C.ConfigError(f"epochs={self.epochs!r}: must be > 0")
        if not self.lr > 0:
            raise C.ConfigError(f"lr={self.lr!r}: must be > 0")
        if self.power < 0:  # a negative power makes poly's rate grow without bound at the end
            raise C.ConfigError(f"power={self.power!r}: must be >= 0")
        if not 0 <= self.momentum < 1:
            raise C.ConfigError(f"momentum={self.momentum!r}: must be in [0, 1)")
        if self.weight_decay < 0 or self.warmup_epochs < 0:
            raise C.ConfigError("weight_decay and warmup_epochs must be >= 0")
        choices = dict(optimizer=OPTIMIZERS, schedule=SCHEDULES, init=INITS, dtype=DTYPES)
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise C.ConfigError(f"{name}={getattr(self, name)!r}: must be one of {', '.join(allowed)}")


# TrainConfig fields that do not change a run's result: a resumed run ends exactly as an uninterrupted one
# (tested), so where it checkpoints is bookkeeping. Every other field, the seed included, is part of what a run is.
RESULT_NEUTRAL = ("checkpoint_every", "devices")  # a run resumes under other values; its results are the same


def run_identity(cfg: C.SqueezeNetConfig, tc: TrainConfig) -> dict:
    """What a run trains, JSON-ready: the model configuration and every result-changing training setting."""
    train = {k: v for k, v in dataclasses.asdict(tc).items() if k not in RESULT_NEUTRAL}
    return json.loads(json.dumps(dict(config=C.to_dict(cfg), train_config=train)))


def run_key(cfg: C.SqueezeNetConfig, tc: TrainConfig) -> str:
    """A stable 16-character name of `run_identity` (base32 of its sha256: never parses as a number)."""
    digest = hashlib.sha256(json.dumps(run_identity(cfg, tc), sort_keys=True).encode()).digest()
    return base64.b32encode(digest).decode()[:16].lower()


def caffe_solver(**overrides) -> TrainConfig:
    """SqueezeNet_v1.0/solver.prototxt: SGD momentum 0.9, base_lr 0.04, poly power 1, weight decay 2e-4,
    batch 32 x iter_size 16 (effective 512). ImageNet presets default to this."""
    defaults = dict(
        optimizer="sgd", lr=0.04, momentum=0.9, weight_decay=2e-4, schedule="poly", power=1.0,
        warmup_epochs=0.0, batch_size=32, iter_size=16,
    )  # fmt: skip
    return TrainConfig(**{**defaults, **overrides})


def small_input_recipe(**overrides) -> TrainConfig:
    """The default for the small-input presets (28-32 px): Adam 1e-3 with a short warm-up and cosine decay,
    He initialisation before conv10. See docs/training.md, "Training recipe", for the measurements behind it."""
    defaults = dict(optimizer="adam", lr=1e-3, init="msra", warmup_epochs=0.2, schedule="cosine")
    return TrainConfig(**{**defaults, **overrides})


def default_recipe(cfg: C.SqueezeNetConfig, **overrides) -> TrainConfig:
    """Caffe's solver for the ImageNet stems, the small-input recipe otherwise."""
    return small_input_recipe(**overrides) if cfg.stem == C.STEM_SMALL else caffe_solver(**overrides)


def update_counts(ds, tc: TrainConfig) -> tuple[int, int]:
    """(updates per epoch, updates in all) of `tc` on the dataset `ds` (a ``sqzdse.data.pipeline.Dataset``)."""
    per_update = tc.batch_size * tc.iter_size
    per_epoch = ds.steps_per_epoch("train", per_update, limit=tc.train_limit)
    if per_epoch < 1:
        raise C.ConfigError(f"batch_size x iter_size = {per_update}: larger than the training split")
    return per_epoch, max(1, math.ceil(tc.epochs * per_epoch))
