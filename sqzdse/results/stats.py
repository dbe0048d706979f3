"""Uncertainty of sweep results: percentile-bootstrap 95 % intervals over seeds, and how many seeds would decide.

Every point of a sweep (a design) is trained with a few seeds; its accuracy is their mean, and the interval says
where that mean would fall for other seeds. ``bootstrap`` resamples the seeds of each group (design) on its own,
with replacement, ``RESAMPLES`` times, and takes the 2.5 and 97.5 percentiles of a statistic of the resampled
group means: the mean of one design, the difference of two, a mean over several. A comparison of designs trained
with the same seeds is paired: the per-seed differences are one group (``paired``).

pycls (Radosavovic et al. 2019) draws 2,500 resamples; here there are 10,000, enough that an interval's ends move
by less than 0.1 point from one resampling seed to another at the spreads these sweeps have
(``tests/test_stats.py`` checks it). With two or three seeds a percentile interval is narrow rather than wide
(it cannot reach beyond the seeds seen), so a verdict at that many seeds is a first answer, not a last one.
Plain NumPy.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

RESAMPLES = 10_000
LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
    """An estimate and its percentile-bootstrap interval; ``n``: the fewest seeds of any group behind it."""

    estimate: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def text(self, unit: str = "") -> str:
        """'66.9 [65.2, 68.1]' (one seed: '66.9 (one seed, no interval)')."""
        if self.n < 2:
            return f"{self.estimate:.1f}{unit} (one seed, no interval)"
        return f"{self.estimate:.1f}{unit} [{self.low:.1f}, {self.high:.1f}]"


def bootstrap(
    groups: Sequence[Sequence[float]],
    statistic: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> Interval:
    """The `statistic` of the groups' means with its bootstrap interval.

    Args:
      groups: per group (design), its values (one per seed). Each is resampled on its own.
      statistic: maps a (resamples, groups) array of group means to one value per row; None: the first
        group's mean. It is applied to the observed means for the estimate.
      level: the interval's coverage (0.95: the 2.5th to 97.5th percentile).
      seed: the resampling's seed: the same inputs give the same interval.
    """
    arrays = [np.asarray(g, dtype=float) for g in groups]
    if not arrays or any(a.ndim != 1 or a.size == 0 for a in arrays):
        raise ValueError("bootstrap: every group needs at least one value")
    if not 0 < level < 1:
        raise ValueError(f"bootstrap: level={level} must be in (0, 1)")
    stat = statistic or (lambda m: m[:, 0])
    rng = np.random.default_rng(seed)
    means = np.stack([a[rng.integers(0, a.size, size=(resamples, a.size))].mean(axis=1) for a in arrays], axis=1)
    observed = float(stat(np.array([[a.mean() for a in arrays]]))[0])
    low, high = np.quantile(stat(means), [(1 - level) / 2, (1 + level) / 2])
    return Interval(observed, float(low), float(high), min(a.size for a in arrays))


def mean(values: Sequence[float], **kw) -> Interval:
    """The mean of one design's seeds."""
    return bootstrap([values], **kw)


def difference(a: Sequence[float], b: Sequence[float], **kw) -> Interval:
    """mean(b) - mean(a) of two designs trained with independent seeds."""
    return bootstrap([a, b], lambda m: m[:, 1] - m[:, 0], **kw)


def paired(a: dict, b: dict, **kw) -> Interval:
    """mean over the seeds both have of b[seed] - a[seed]: designs compared seed by seed."""
    both = sorted(set(a) & set(b))
    if not both:
        raise ValueError("paired: the two designs share no seed")
    return bootstrap([[b[s] - a[s] for s in both]], **kw)


def seeds_to_decide(interval: Interval, threshold: float) -> int | None:
    """How many seeds per design would make the interval exclude `threshold` at the spread seen, if the estimate
    stayed where it is: the interval's half-width shrinks as 1/sqrt(seeds). None when it cannot (the estimate is
    on the threshold, or there is no spread to judge by: one seed)."""
    gap = abs(interval.estimate - threshold)
    if interval.n < 2 or gap == 0:
        return None
    if interval.half_width == 0:
        return interval.n
    return max(interval.n + 1, math.ceil(interval.n * (interval.half_width / gap) ** 2))


def edf_band(errors, at, weights=None, *, resamples: int = 2_000, level: float = LEVEL, seed: int = 0):
    """The pointwise ``level`` band of an error EDF at the errors `at`: the models are resampled with replacement
    (with their weights), F is evaluated at `at` on each resample, and the band is its percentiles there.

    Returns (low, high), arrays shaped like `at`. One model: the band is the EDF itself.
    """
    e = np.asarray(errors, dtype=float).ravel()
    w = np.ones_like(e) if weights is None else np.asarray(weights, dtype=float).ravel()
    at = np.asarray(at, dtype=float).ravel()
    if e.size == 0 or w.shape != e.shape:
        raise ValueError("edf_band: one weight per error, and at least one error")
    idx = np.random.default_rng(seed).integers(0, e.size, size=(resamples, e.size))
    f = np.zeros((resamples, at.size))
    for r, pick in enumerate(idx):  # per resample: its sorted errors, their cumulative weight below each `at`
        order = np.argsort(e[pick], kind="stable")
        cw = np.r_[0.0, np.cumsum(w[pick][order])]
        if cw[-1] > 0:
            f[r] = cw[np.searchsorted(e[pick][order], at, side="left")] / cw[-1]
    low, high = np.quantile(f, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return low, high
