"""Comparing designs from their rows: Pareto sets, error EDFs and their size normalisation, per-value summaries.

Pure numpy on plain numbers and rows (``sqzdse.results.rows``); the figures (``sqzdse.results.paper_plots``,
``sqzdse.results.design_plots``) draw what these return. EDFs and the size normalisation follow Radosavovic et al.
2019 ("On Network Design Spaces for Visual Recognition").
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from sqzdse.results import stats
from sqzdse.results.rows import TrialRow, size_of
from sqzdse.sweep.schema import DESIGN_KEYS


def pareto_front(points) -> list[int]:
    """Indices of the non-dominated points for maximise accuracy / minimise size, ordered by size.

    Args:
      points: (n, 2) array-like of (accuracy, size) pairs. A point is dominated when another is at least as
        accurate and at most as large, and strictly better in one of the two. Points equal on both count as
        the same design outcome reached twice (e.g. two seeds): neither dominates the other, so all copies are
        kept. Non-finite points are never on the front.
    """
    p = np.asarray(points, dtype=float).reshape(-1, 2)
    ok = np.flatnonzero(np.isfinite(p).all(axis=1))
    # Sweep by size ascending; within one size, the most accurate first.
    order = ok[np.lexsort((-p[ok, 0], p[ok, 1]))]
    front, best_smaller = [], -np.inf  # best accuracy among strictly smaller sizes
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and p[order[j], 1] == p[order[i], 1]:
            j += 1
        top = p[order[i], 0]
        if top > best_smaller:
            front.extend(int(k) for k in order[i:j] if p[k, 0] == top)
            best_smaller = top
        i = j
    return front


def hypervolume(points, ref: tuple[float, float]) -> float:
    """The area that (accuracy, size) points dominate (accuracy maximised, size minimised) up to `ref` = (accuracy,
    size): the hypervolume of their front. Sizes as given (the replays and the frontier study pass log10 bytes)."""
    pts = sorted((s, a) for a, s in points if a > ref[0] and s < ref[1])
    area, best = 0.0, ref[0]
    front = []
    for s, a in pts:  # size ascending: a point counts where it beats every smaller one
        if a > best:
            front.append((s, a))
            best = a
    prev = ref[0]
    for s, a in front:
        area += (a - prev) * (ref[1] - s)
        prev = a
    return area


def edf(errors, weights=None) -> tuple[np.ndarray, np.ndarray]:
    """The error EDF of Radosavovic et al. 2019 (eq. 1): F(e) = sum_i w_i 1[e_i < e], weights 1/n by default.

    Returns:
      (x, y): the distinct errors, ascending, and y[k] = share of models with error <= x[k], i.e. the value of
      F on (x[k], x[k+1]]. Drawn as a step plot with ``where="post"`` starting at (x[0], 0). Models of weight 0
      (see ``size_weights``) are left out of x.
    """
    e = np.asarray(errors, dtype=float).ravel()
    w = np.full(e.shape, 1.0) if weights is None else np.asarray(weights, dtype=float).ravel()
    _check_edf_args(e, w)
    keep = w > 0
    e, w = e[keep], w[keep] / w.sum()
    order = np.argsort(e, kind="stable")
    e, cw = e[order], np.cumsum(w[order])
    x = np.unique(e)
    y = cw[np.searchsorted(e, x, side="right") - 1]
    y[-1] = 1.0  # no round-off short of 1
    return x, y


def edf_at(errors, at, weights=None) -> np.ndarray:
    """F(e) at the given errors: the (weighted) share of models with error strictly below each value of `at`."""
    e = np.asarray(errors, dtype=float).ravel()
    w = np.full(e.shape, 1.0) if weights is None else np.asarray(weights, dtype=float).ravel()
    _check_edf_args(e, w)
    at = np.asarray(at, dtype=float)
    return (w[None, :] * (e[None, :] < at.reshape(-1, 1))).sum(axis=1).reshape(at.shape) / w.sum()


def _check_edf_args(e: np.ndarray, w: np.ndarray) -> None:
    if e.size == 0:
        raise ValueError("edf: no errors given")
    if w.shape != e.shape:
        raise ValueError(f"edf: {w.size} weights for {e.size} errors")
    if not (np.isfinite(e).all() and np.isfinite(w).all()) or (w < 0).any() or w.sum() <= 0:
        raise ValueError("edf: errors and weights must be finite, weights >= 0 and not all 0")


def size_weights(sizes, groups, bins: int = 10) -> np.ndarray:
    """Per-model weights that give every group (design space) the same distribution of model size.

    Radosavovic et al. 2019, Sec. 3 "normalized comparisons": bin the complexity range into k bins and give each
    of the m_j models of bin j the weight 1/(k m_j), so that each space's weighted complexity distribution is
    uniform over the bins. Here: `bins` equal-width bins of log(size) spanning all groups together (shared
    edges); only the bins that every group occupies are used (a model in another bin gets weight 0, otherwise
    the spaces' size distributions would still differ); each model of a used bin gets 1/(models of its group in
    that bin); weights are then normalised to sum to 1 within each group, i.e. 1/(k' m_j) with k' used bins.

    Raises:
      ValueError: when no bin holds models of every group (e.g. ``by="sr"``, whose groups differ in size by
        construction).
    """
    s = np.asarray(sizes, dtype=float).ravel()
    g = np.asarray(groups, dtype=object).ravel()
    if s.shape != g.shape or s.size == 0:
        raise ValueError("size_weights: need one group per size, and at least one model")
    if not (np.isfinite(s).all() and (s > 0).all()):
        raise ValueError("size_weights: sizes must be finite and > 0")
    if bins < 1:
        raise ValueError(f"size_weights: bins={bins}: need >= 1")
    logs = np.log(s)
    lo, hi = logs.min(), logs.max()
    b = np.zeros(s.size, dtype=int) if hi == lo else np.minimum((bins * (logs - lo) / (hi - lo)).astype(int), bins - 1)
    names = list(dict.fromkeys(g.tolist()))
    masks = {name: g == name for name in names}
    shared = set.intersection(*(set(b[m].tolist()) for m in masks.values()))
    if not shared:
        raise ValueError(
            f"normalize: the groups {', '.join(map(str, names))} share no model-size bin (of {bins} log-size bins), "
            "so their size distributions cannot be equalised; compare them without --normalize"
        )
    w = np.zeros(s.size)
    for m in masks.values():
        for j in shared:
            in_bin = m & (b == j)
            w[in_bin] = 1.0 / in_bin.sum()
        w[m] /= w[m].sum()
    return w


def sweep_points(rows: Sequence[dict], param: str, metric: str, size: str = "bytes"):
    """Per value of `param`: (x, accuracies % per seed, mean size MiB)."""
    groups = defaultdict(list)
    for r in rows:
        groups[r[param]].append(r)
    out = []
    for x in sorted(groups):
        acc = np.array([100.0 * r[metric] for r in groups[x]])
        sizes = [size_of(r, size) for r in groups[x] if size_of(r, size) is not None]
        out.append((x, acc, float(np.mean(sizes)) if sizes else float("nan")))
    return out


@dataclasses.dataclass(frozen=True)
class Design:
    """One design of a study (its metaparameters and swept training settings) over the trials that trained it, one
    per seed: the mean of `metric` in points with its 95 % bootstrap interval over those seeds."""

    study: str
    values: dict  # design key -> value, as the rows have them
    trials: tuple[TrialRow, ...]
    interval: stats.Interval

    @property
    def first(self) -> TrialRow:
        """Its first trial (by number): what labels and keys name the design by."""
        return self.trials[0]

    def size(self, size: str = "bytes") -> float | None:
        """Its mean size in MiB (``size_of``; seeds of one design have the same, compressed files may differ)."""
        sizes = [s for s in (size_of(r, size) for r in self.trials) if s is not None]
        return float(np.mean(sizes)) if sizes else None

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(mean, low, high) of its seeds' validation curves in points, epoch by epoch, over the epochs all of them
        have (one seed: the curve itself, as its own band); None when no trial has a curve."""
        curves = [np.asarray(r["curve"], dtype=float) * 100.0 for r in self.trials if r.get("curve")]
        if not curves:
            return None
        c = np.stack([x[: min(len(x) for x in curves)] for x in curves])
        if len(c) == 1:
            return c[0], c[0], c[0]
        band = [stats.mean(c[:, e]) for e in range(c.shape[1])]
        return (c.mean(axis=0), np.array([b.low for b in band]), np.array([b.high for b in band]))


def designs(rows: Sequence[TrialRow], metric: str) -> list[Design]:
    """The designs of completed `rows` (with `metric`), one per study and design values, in order of first trial;
    each one's seeds are its trials (a trial that trained several seeds counts as one)."""
    groups = defaultdict(list)
    for r in rows:
        if r.get("state") == "COMPLETE" and r.get(metric) is not None:
            groups[(r.get("study"), tuple((k, r.get(k)) for k in DESIGN_KEYS if r.get(k) is not None))].append(r)
    out = []
    for (study, values), trials in groups.items():
        trials = sorted(trials, key=lambda r: (r.get("number") is None, r.get("number")))
        out.append(Design(study, dict(values), tuple(trials), stats.mean([100.0 * r[metric] for r in trials])))
    return out


SUMMARY_METRICS = ("val_top1", "test_top1")


def design_summary(rows: Sequence[TrialRow], metric: str = "val_top1") -> list[dict]:
    """One row per design of the completed `rows` (``designs``, grouped by `metric`'s trials): study, design values,
    its seeds and trials, sizes, and for each of ``SUMMARY_METRICS`` the mean over its seeds with the low and high
    ends of its 95 % bootstrap interval (fractions, as the trial rows; None for a design of one seed), best first by
    `metric` — what ``sqzdse sweep export --summary`` writes."""
    out = []
    for d in designs(rows, metric):
        row = {"study": d.study, **d.values, "seeds": [r.get("seed") for r in d.trials],
               "trials": [r.get("number") for r in d.trials], "n": len(d.trials)}  # fmt: skip
        row.update({k: d.first.get(k) for k in ("params", "bytes", "macs")})
        for m in SUMMARY_METRICS:
            values = [r[m] for r in d.trials if r.get(m) is not None]
            ci = stats.mean(values) if values else None
            row[m] = ci.estimate if ci else None
            row[f"{m}_low"], row[f"{m}_high"] = (ci.low, ci.high) if ci and ci.n >= 2 else (None, None)
        out.append(row)
    return sorted(out, key=lambda r: -r[metric] if r[metric] is not None else math.inf)
