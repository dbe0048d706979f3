"""What a sweep records of each trial, as its export writes it: the columns (``FIELDS``) and a study's budget.

Plain Python: the sweep engine writes these and ``sqzdse.results`` reads them back.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqzdse.model.config import METAPARAMETERS
from sqzdse.train.recipe import SWEEPABLE

# What tells two designs apart (the seed aside): the metaparameters and the training settings a sweep may vary.
# A sweep that varies a training setting exports it as a column of its own, after FIELDS.
DESIGN_KEYS = (*METAPARAMETERS, *SWEEPABLE)

# The export's columns, in its order (sqzdse sweep export); a row read back has every one of them.
FIELDS = ("study", "number", "state", *METAPARAMETERS, "seed", "params", "bytes", "compressed_bytes", "macs",
          "val_top1", "val_top5", "test_top1", "test_top5", "curve", "epoch_seconds", "train_seconds",
          "compile_seconds", "images_per_s", "status", "reason", "dataset", "budget", "version", "key", "workdir",
          "reused_from", "started", "finished", "duration_s")  # fmt: skip
# curve: the val top-1 after each epoch; epoch_seconds: each epoch's seconds of training (the first one's with
# compiling) and validation, the first seed's as the curve. started / finished: the trial's start and end in the
# storage (ISO 8601, UTC as Optuna records them); duration_s: the seconds between them (a reused run's are those of
# its lookup).


def budget_text(train: Mapping) -> str:
    """A study's training budget, from its spec's ``train`` table (the seed, a per-trial value, left out):
    'dataset=fashion_mnist, epochs=10, batch_size=128'; the recipe's defaults fill in what it does not name."""
    t = {k: v for k, v in train.items() if k != "seed" and v is not None}
    order = [k for k in ("dataset", "epochs") if k in t] + sorted(k for k in t if k not in ("dataset", "epochs"))
    return ", ".join(f"{k}={t[k]:g}" if isinstance(t[k], float) else f"{k}={t[k]}" for k in order) or "defaults"
