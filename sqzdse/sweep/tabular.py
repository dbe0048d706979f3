"""A tabular benchmark of the design space: every design of a grid trained ahead, looked up instead of trained.

NAS-Bench-201 and JAHS-Bench-201 did this for their spaces. ``experiments/tabular/`` holds one for SqueezeNet's
(``space.toml``: SR x pct3x3 x bypass, two seeds, each trial's validation curve and its measured seconds per
epoch); ``Table.load`` reads it from its export or its storage, and

- ``Table.objective()`` is an objective function Optuna samplers run against (``study.optimize``): a trial
  suggests the table's axes and gets the design's final validation top-1 and its bytes, at once;
- ``Table.entry`` gives the whole record (curve, seconds per epoch, test top-1, sizes), which a replay of a
  search uses to charge a trial the seconds of the epochs it ran (``benchmarks/search_efficiency.py``).

Plain Python: Optuna only through the trials it is handed.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Sequence

import numpy as np

from sqzdse.errors import InputError

AXES = ("sr", "pct3x3", "bypass")  # what the shipped table varies (space.toml)
DEFAULT = os.path.join("experiments", "tabular", "table.csv")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One design trained at one seed: its validation top-1 after each epoch (points), each epoch's seconds
    (training, the first with compiling, and validation), its test top-1 (points) and sizes."""

    design: tuple  # the values of the table's axes, in their order
    seed: int
    curve: tuple[float, ...]
    epoch_seconds: tuple[float, ...]
    test_top1: float
    params: int
    bytes: int
    macs: int

    @property
    def final(self) -> float:
        return self.curve[-1]

    @property
    def seconds(self) -> float:
        """What training it in full cost."""
        return float(sum(self.epoch_seconds))


@dataclasses.dataclass(frozen=True)
class Table:
    """Every (design, seed) of a study trained in full, with the axes it varies."""

    axes: tuple[str, ...]
    values: dict  # axis -> its values, sorted
    entries: dict  # (design, seed) -> Entry

    @classmethod
    def from_rows(cls, rows: Sequence[dict], axes: Sequence[str] = AXES, seeds: Sequence[int] | None = None) -> Table:
        """From trial rows (``sqzdse.results.rows.load_rows``): the completed ones with a curve and its seconds (of
        `seeds` only, when given); every design of the axes' product must be there at the same seeds and epochs, or
        the table is refused."""
        entries = {}
        for r in rows:
            if r.get("state") != "COMPLETE" or not r.get("curve") or not r.get("epoch_seconds"):
                continue
            if seeds is not None and r.get("seed") not in seeds:
                continue
            design = tuple(r[a] for a in axes)
            entries[(design, int(r["seed"]))] = Entry(
                design, int(r["seed"]), tuple(100.0 * v for v in r["curve"]), tuple(r["epoch_seconds"]),
                100.0 * r["test_top1"], int(r["params"]), int(r["bytes"]), int(r["macs"]))  # fmt: skip
        if not entries:
            raise InputError("no completed trials with a curve and its epoch_seconds: not a tabular benchmark")
        values = {a: sorted({d[i] for d, _ in entries}, key=str if a == "bypass" else float)
                  for i, a in enumerate(axes)}  # fmt: skip
        seeds = sorted({s for _, s in entries})
        designs = list(itertools.product(*(values[a] for a in axes)))
        missing = [(d, s) for d in designs for s in seeds if (d, s) not in entries]
        if missing:
            shown = ", ".join(f"{dict(zip(axes, d, strict=True))} seed {s}" for d, s in missing[:3])
            raise InputError(f"the table lacks {len(missing)} of its {len(designs) * len(seeds)} trials ({shown}"
                             f"{', ...' if missing[3:] else ''}): finish its sweep first")  # fmt: skip
        if len({len(e.curve) for e in entries.values()}) != 1:
            raise InputError("the table's trials ran different numbers of epochs: not one budget")
        return cls(tuple(axes), values, entries)

    @classmethod
    def load(cls, source: str = DEFAULT, study: str = "tabular", seeds: Sequence[int] | None = None) -> Table:
        """From an export (CSV or JSON) or a storage URL of the table's sweep."""
        from sqzdse.results.rows import load_rows

        return cls.from_rows(load_rows(source, study=study), seeds=seeds)

    @property
    def designs(self) -> list[tuple]:
        return sorted({d for d, _ in self.entries}, key=lambda d: tuple(map(str, d)))

    @property
    def seeds(self) -> list[int]:
        return sorted({s for _, s in self.entries})

    @property
    def epochs(self) -> int:
        return len(next(iter(self.entries.values())).curve)

    def entry(self, design: tuple, seed: int) -> Entry:
        return self.entries[(tuple(design), seed)]

    def unit_seconds(self) -> float:
        """One full training, the compute unit of a replay: the mean over the table's entries."""
        return float(np.mean([e.seconds for e in self.entries.values()]))

    def reference_point(self) -> tuple[float, float]:
        """The fixed reference point of a replay's hypervolume, (accuracy %, log10 bytes): 1 point below the table's
        worst final accuracy, 0.05 above the log of its largest model."""
        entries = self.entries.values()
        return min(e.final for e in entries) - 1.0, math.log10(max(e.bytes for e in entries)) + 0.05

    def suggest(self, trial) -> tuple:
        """The design an Optuna trial picks: one categorical parameter per axis."""
        return tuple(trial.suggest_categorical(a, self.values[a]) for a in self.axes)

    def objective(self, seed: int | None = None):
        """f(trial) -> (final validation top-1 in points, bytes): the table as an objective function for Optuna
        (directions maximize, minimize). seed: the seed whose run is looked up; None: the trial's number
        picks one of the table's seeds, alternately."""

        def f(trial):
            e = self.entry(self.suggest(trial), self.seeds[trial.number % len(self.seeds)] if seed is None else seed)
            trial.set_user_attr("bytes", e.bytes)
            return e.final, float(e.bytes)

        return f

    def seed_pairs(self, epoch: int) -> list[tuple[float, float]]:
        """(seed a, seed b) validation top-1 at `epoch` of every design, for the first two seeds: the seed noise a
        pruner's margin is sized by (``sqzdse.sweep.pruning.seed_margin``)."""
        if len(self.seeds) < 2:
            raise InputError("the table has one seed: its noise cannot be told")
        a, b = self.seeds[:2]
        return [(self.entry(d, a).curve[epoch - 1], self.entry(d, b).curve[epoch - 1]) for d in self.designs]


def seed_pairs(rows: Sequence[dict], epoch: int, axes: Sequence[str] = AXES) -> list[tuple[float, float]]:
    """``Table.seed_pairs`` of trial rows whose designs are not all trained at two seeds yet: the designs that are
    (their two lowest seeds)."""
    by = {}
    for r in rows:
        if r.get("state") == "COMPLETE" and r.get("curve") and len(r["curve"]) >= epoch:
            by.setdefault(tuple(r[a] for a in axes), {})[int(r["seed"])] = 100.0 * r["curve"][epoch - 1]
    return [(runs[a], runs[b]) for runs in by.values() if len(runs) >= 2 for a, b in [sorted(runs)[:2]]]
