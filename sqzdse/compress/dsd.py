"""Dense-Sparse-Dense training (Han et al. 2017) for any sqzdse model: three ``train_and_evaluate`` runs.

Trains dense, prunes by magnitude (``sqzdse.compress.prune``) and retrains with the mask held, then lets the pruned
weights back (from 0) and retrains at a lower learning rate.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from sqzdse.compress.prune import parse_density, prune
from sqzdse.errors import InputError
from sqzdse.model import config as C

# JAX and sqzdse.train.loop are imported where used, so that building the CLI's parser, which reads the defaults
# below, stays cheap.

# DSD defaults (Han et al. 2017): 30 % sparsity per layer in the sparse phase, the low end of the paper's
# 30-50 % for CNNs; half the epochs dense, a quarter sparse, a quarter re-dense at a tenth of the learning rate.
DSD_DENSITY = 0.7
DSD_PHASES = (0.5, 0.25, 0.25)
DSD_REDENSE_LR = 0.1
PHASE_NAMES = ("dense", "sparse", "redense")


@dataclasses.dataclass(frozen=True)
class DSDResult:
    """What ``train_dsd`` returns: the summary (as in WORKDIR/summary.json) and the phases' live state."""

    summary: dict  # the re-dense run's summary, every phase's accuracy and kernel density under "phases"
    graphdef: Any = dataclasses.field(default=None, repr=False)
    state: Any = dataclasses.field(default=None, repr=False)  # the last phase's TrainState
    mask: Any = dataclasses.field(default=None, repr=False)  # the sparse phase's; None if the dense phase failed
    sparse_params: Any = dataclasses.field(default=None, repr=False)  # the sparse phase's trained parameters


def train_dsd(
    cfg: C.SqueezeNetConfig,
    tc,
    workdir: str | None = None,
    *,
    dataset=None,
    density=DSD_DENSITY,
    phases=DSD_PHASES,
    redense_lr: float = DSD_REDENSE_LR,
    progress: bool = True,
) -> DSDResult:
    """Dense-Sparse-Dense training (Han et al. 2017) within the budget of ``tc.epochs``.

    Dense: the recipe for phases[0] x epochs. Sparse: prune every conv to `density` by magnitude (or the
    released pattern) and retrain phases[1] x epochs with the mask held (pruned weights stay exactly 0).
    Re-dense: the pruned weights come back at 0 and the whole network trains phases[2] x epochs at
    `redense_lr` x the learning rate. Each phase is a ``train_and_evaluate`` run in WORKDIR/dense, /sparse,
    /redense (so each checkpoints and resumes); the summary (also WORKDIR/summary.json) is the re-dense
    run's, with every phase's accuracy and kernel density under ``phases``.
    """
    from sqzdse.model.weights import kernels
    from sqzdse.train.loop import train_and_evaluate

    phases = tuple(float(f) for f in phases)
    if len(phases) != 3 or not all(f > 0 for f in phases):
        raise InputError(f"DSD phases={phases}: three positive fractions of --epochs (dense, sparse, re-dense)")
    parse_density(density)
    if not redense_lr > 0:
        raise InputError(f"DSD redense_lr={redense_lr}: must be > 0")
    tcs = [dataclasses.replace(tc, epochs=tc.epochs * f) for f in phases]
    tcs[2] = dataclasses.replace(tcs[2], lr=tc.lr * redense_lr)

    def sub(name):
        return os.path.join(workdir, name) if workdir else None

    results, init, sparse_mask = {}, None, None
    for name, phase_tc in zip(PHASE_NAMES, tcs, strict=True):
        if name == "sparse":
            init, _, sparse_mask = prune(cfg, init, density)
        mask = sparse_mask if name == "sparse" else None
        r = train_and_evaluate(cfg, phase_tc, sub(name), dataset=dataset, progress=progress, init_params=init,
                               mask=mask)  # fmt: skip
        results[name] = r
        if r.status != "completed":
            break
        init = r.state.params
    last = results[list(results)[-1]]

    def phase_record(r):
        ks = kernels(r.state.params)
        nonzero = sum(int(np.count_nonzero(k)) for k in ks) / sum(k.size for k in ks)
        keys = ("status", "reason", "val_top1", "val_top5", "test_top1", "test_top5", "epochs", "updates",
                "train_seconds")  # fmt: skip
        return {**{k: getattr(r, k) for k in keys}, "lr": r.train_config["lr"], "kernel_density": nonzero}

    summary = {k: v for k, v in last.summary().items() if k not in ("history", "train_config")}
    summary.update(
        epochs=tc.epochs,
        train_config=dataclasses.asdict(tc),
        dsd=dict(density=density, phases=list(phases), redense_lr=redense_lr),
        phases={name: phase_record(r) for name, r in results.items()},
        updates=sum(r.updates for r in results.values()),
        train_seconds=sum(r.train_seconds for r in results.values()),
        compile_seconds=sum(r.compile_seconds for r in results.values()),
        wall_seconds=sum(r.wall_seconds for r in results.values()),
    )
    if workdir:
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
    sparse = results.get("sparse")
    return DSDResult(summary, last.graphdef, last.state, sparse_mask, sparse.state.params if sparse else None)
