"""What a sweep records of each trial, as its export writes it: the columns (``FIELDS``) and a study's budget.

Plain Python: the sweep engine writes these and ``sqzdse.results`` reads them back.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Required, TypedDict

from sqzdse.model.config import METAPARAMETERS, SqueezeNetConfig
from sqzdse.train.recipe import SWEEPABLE, TrainConfig

# What tells two designs apart (the seed aside): the metaparameters and the training settings a sweep may vary.
DESIGN_KEYS = (*METAPARAMETERS, *SWEEPABLE)

_META = typing.get_type_hints(SqueezeNetConfig)
_TRAIN = typing.get_type_hints(TrainConfig)

# One trial as the export writes it (sqzdse sweep export) and sqzdse.results.load_rows reads it back from a storage,
# a CSV or a JSON file: its keys are the export's columns, in order, each of the type given (None where a trial
# lacks it). The metaparameters and training settings take their types from SqueezeNetConfig and TrainConfig; a
# training setting the sweep varies is a key (a column after the others) only then.
#   curve: the val top-1 after each epoch; epoch_seconds: each epoch's seconds of training (the first one's with
#   compiling) and validation, the first seed's as the curve; seed: a list when an adaptive sampler's trial trains
#   several; started / finished: the trial's start and end in the storage (ISO 8601, UTC as Optuna records them);
#   duration_s: the seconds between them (a reused run's are those of its lookup); latency_*: the first seed's
#   network's inference time on the machine that trained it, and that machine (sqzdse.deploy.latency).
TrialRow = TypedDict("TrialRow", {
    "study": Required[str], "number": Required[int], "state": Required[str],
    **{k: Required[_META[k] | None] for k in METAPARAMETERS},
    **{k: Required[t | None] for k, t in dict(
        seed=int | list[int], params=int, bytes=int, compressed_bytes=int, macs=int, val_top1=float, val_top5=float,
        test_top1=float, test_top5=float, curve=list[float], epoch_seconds=list[float], train_seconds=float,
        compile_seconds=float, images_per_s=float, latency_b1_ms=float, latency_b64_ms=float, latency_cpu=str,
        latency_threads=int, latency_backend=str, status=str, reason=str, dataset=str, budget=str, version=str,
        key=str, workdir=str, reused_from=str, started=str, finished=str, duration_s=float).items()},
    **{k: _TRAIN[k] | None for k in SWEEPABLE},
}, total=False)  # fmt: skip
TYPES = typing.get_type_hints(TrialRow)  # key -> its type, Required[] taken off

# The export's columns, in its order; a row read back has every one of them.
FIELDS = tuple(k for k in TYPES if k in TrialRow.__required_keys__)


def budget_text(train: Mapping) -> str:
    """A study's training budget, from its spec's ``train`` table (the seed, a per-trial value, left out):
    'dataset=fashion_mnist, epochs=10, batch_size=128'; the recipe's defaults fill in what it does not name."""
    t = {k: v for k, v in train.items() if k != "seed" and v is not None}
    order = [k for k in ("dataset", "epochs") if k in t] + sorted(k for k in t if k not in ("dataset", "epochs"))
    return ", ".join(f"{k}={t[k]:g}" if isinstance(t[k], float) else f"{k}={t[k]}" for k in order) or "defaults"
