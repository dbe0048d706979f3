"""Comparing designs from their rows: Pareto sets, error EDFs and their size normalisation, per-value summaries.

Pure numpy on plain numbers and rows (``sqzdse.results.rows``); the figures (``sqzdse.results.paper_plots``,
``sqzdse.results.design_plots``) draw what these return. EDFs and the size normalisation follow Radosavovic et al.
2019 ("On Network Design Spaces for Visual Recognition").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from sqzdse.results.rows import size_mib


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
        sizes = [size_mib(r, size) for r in groups[x] if size_mib(r, size) is not None]
        out.append((x, acc, float(np.mean(sizes)) if sizes else float("nan")))
    return out
