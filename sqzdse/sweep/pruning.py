"""Size-aware early stopping for multi-objective sweeps (accuracy up, size down): the ``pareto`` pruner.

Optuna's pruners take one objective (``Trial.should_prune`` raises in a multi-objective study, optuna#3450), yet
here a trial's size is known before it trains and its accuracy after an epoch or two already says much. This is
multi-objective asynchronous successive halving (MO-ASHA: Schmucker et al. 2021; Salinas et al. 2021, Syne Tune's
``MOASHA``), with a margin for seed noise:

- Rungs are the epochs ``min_resource * reduction_factor**k`` before a trial's last epoch (1, 2, 4 of 8 epochs at
  the defaults).
- At a rung, the trials that reached it are ranked by non-dominated sorting under *ε-dominance*: p ε-dominates q
  when p is at most q's size and at least ``margin`` points more accurate there (``eps_ranks``). Where MO-ASHA
  ranks a rung by Pareto fronts and ε-net order, the margin here is that of two runs of one design at different
  seeds (``seed_margin``), so that a seed's luck does not count as a better design.
- A trial is stopped when it is ε-dominated at its rung *and* at least ``1 / reduction_factor`` of the rung's
  trials rank before it (successive halving's share), once ``min_peers`` trials have reached the rung. A trial that
  nothing ε-dominates is never stopped, whatever its rank.

What it guarantees: if each trial's accuracy at a rung is its final accuracy less an offset common to all trials,
up to ±δ, then with ``margin`` > 2δ a stopped trial would have ended dominated by a trial of at most its size: the
pruner never stops a trial of the final Pareto front (``tests/test_pruning.py`` checks it on synthetic curves).

The decision reads the rung values every trial recorded in the study's storage (``storage.report``: intermediate
values, which Optuna's storages keep for multi-objective trials too), so workers on one SQLite or PostgreSQL
storage prune against each other's trials. Plain Python; Optuna only through the study it is given.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

# A design known before training: the size objectives a pruner may compare (compressed sizes come after training).
SIZE_KEYS = ("bytes", "params", "macs")


def dominates(p: tuple[float, float], q: tuple[float, float], margin: float) -> bool:
    """(accuracy in points, size): p is at most q's size and at least `margin` points more accurate; with margin 0,
    also strictly better in one of the two."""
    (ap, sp), (aq, sq) = p, q
    if sp > sq or ap < aq + margin:
        return False
    return margin > 0 or sp < sq or ap > aq


def eps_ranks(points: Sequence[tuple[float, float]], margin: float) -> list[int]:
    """Each point's front under ε-dominance (0: nothing ε-dominates it; k: ε-dominated only by fronts < k)."""
    ranks, left, front = [-1] * len(points), set(range(len(points))), 0
    while left:
        now = {i for i in left if not any(dominates(points[j], points[i], margin) for j in left if j != i)}
        for i in now:
            ranks[i] = front
        left -= now
        front += 1
    return ranks


def should_stop(mine: tuple[float, float], peers: Sequence[tuple[float, float]], margin: float,
                reduction_factor: float = 2, min_peers: int = 4) -> bool:  # fmt: skip
    """Whether a trial at (accuracy in points, size) stops at a rung where `peers` (the other trials that reached
    it) stand: it is ε-dominated there and at least 1/reduction_factor of the rung's trials rank before it."""
    everyone = [*peers, mine]
    if len(everyone) < min_peers:
        return False
    ranks = eps_ranks(everyone, margin)
    if ranks[-1] == 0:
        return False
    ahead = sum(r < ranks[-1] for r in ranks)
    return ahead >= math.ceil(len(everyone) / reduction_factor)


def seed_margin(pairs: Sequence[tuple[float, float]], z: float = 1.96) -> float:
    """The margin (points) a difference of two designs must pass to beat seed noise: ``z`` standard deviations of
    the difference between two runs of one design, estimated from (seed a, seed b) accuracies of many designs (the
    difference of two independent runs has the spread of the difference of two designs' single runs)."""
    d = np.array([a - b for a, b in pairs], dtype=float)
    if d.size < 2:
        raise ValueError("seed_margin: needs two seeds of at least two designs")
    return float(z * np.sqrt(np.mean(d**2)))  # the differences' mean is 0 by symmetry of the seeds


@dataclasses.dataclass(frozen=True)
class ParetoPruner:
    """Stops a multi-objective sweep's trial at a rung where smaller trials beat it by `margin` points (see the
    module). `size`: the trial user attribute it is compared by (``SIZE_KEYS``)."""

    margin: float = 1.0
    size: str = "bytes"
    reduction_factor: float = 2
    min_resource: int = 1
    min_peers: int = 4

    def __post_init__(self):
        if self.size not in SIZE_KEYS:
            raise ValueError(f"size={self.size!r}: must be one of {', '.join(SIZE_KEYS)} (known before training)")
        if not self.margin >= 0 or not self.reduction_factor > 1 or self.min_resource < 1:
            raise ValueError("margin >= 0, reduction_factor > 1 and min_resource >= 1, please")

    def rungs(self, last_epoch: int) -> list[int]:
        """The epochs at which a trial of `last_epoch` epochs may be stopped."""
        out, r = [], float(self.min_resource)
        while r < last_epoch:
            out.append(int(round(r)))
            r *= self.reduction_factor
        return sorted(set(out))

    def stop_at(self, epoch: int, last_epoch: int, accuracy: float, size: float,
                peers: Sequence[tuple[float, float]]) -> bool:  # fmt: skip
        """The decision from plain numbers: accuracy in points; peers: (accuracy, size) at the same epoch."""
        if epoch not in self.rungs(last_epoch):
            return False
        return should_stop((accuracy, size), peers, self.margin, self.reduction_factor, self.min_peers)

    def should_prune(self, study, trial, epoch: int, last_epoch: int) -> bool:
        """The decision for an Optuna `trial` of `study` that has just recorded `epoch`'s validation top-1 as its
        intermediate value (``storage.report``): its peers are the study's other trials with a value there."""
        if epoch not in self.rungs(last_epoch):
            return False
        frozen = [t for t in study.get_trials(deepcopy=False) if epoch in t.intermediate_values]
        mine = next((t for t in frozen if t.number == trial.number), None)
        if mine is None or mine.user_attrs.get(self.size) is None:
            return False
        peers = [(100.0 * t.intermediate_values[epoch], float(t.user_attrs[self.size])) for t in frozen
                 if t.number != trial.number and t.user_attrs.get(self.size) is not None]  # fmt: skip
        return self.stop_at(epoch, last_epoch, 100.0 * mine.intermediate_values[epoch],
                            float(mine.user_attrs[self.size]), peers)  # fmt: skip
