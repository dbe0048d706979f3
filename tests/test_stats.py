"""The bootstrap intervals against values computed independently: closed forms, exact enumeration, the normal limit."""

import itertools
import math

import numpy as np
import pytest

from sqzdse.results import stats


def test_no_spread_no_width_and_two_seeds_span_them():
    assert stats.mean([66.0, 66.0, 66.0]) == stats.Interval(66.0, 66.0, 66.0, 3)
    # Two seeds a < b: a resampled mean is a (p 1/4), (a+b)/2 (1/2) or b (1/4); its 2.5 and 97.5 % points are a, b.
    assert stats.mean([64.0, 67.0]) == stats.Interval(65.5, 64.0, 67.0, 2)
    one = stats.mean([61.2])
    assert (one.low, one.high, one.n) == (61.2, 61.2, 1) and one.text() == "61.2 (one seed, no interval)"


def _exact_quantile(values, q):
    """The q-quantile of the exact bootstrap distribution of the mean: every one of the n**n resamples."""
    means = sorted(np.mean(c) for c in itertools.product(values, repeat=len(values)))
    return means[min(len(means) - 1, math.ceil(q * len(means)) - 1)]


def test_the_ends_are_those_of_the_exact_bootstrap_distribution():
    values = [63.9, 65.0, 66.6, 67.4]  # 256 equally likely resamples
    ci = stats.mean(values)
    # 10,000 resamples put the 2.5 % point between the exact 2 % and 3 % points (3 standard errors either side).
    assert _exact_quantile(values, 0.02) <= ci.low <= _exact_quantile(values, 0.03)
    assert _exact_quantile(values, 0.97) <= ci.high <= _exact_quantile(values, 0.98)
    assert ci.estimate == pytest.approx(np.mean(values))


def test_many_seeds_give_the_normal_interval():
    x = np.random.default_rng(1).normal(60.0, 2.0, size=400)
    ci = stats.mean(x)
    half = 1.959964 * x.std() / math.sqrt(len(x))  # the bootstrap's spread is the plug-in (ddof 0) one
    assert ci.low == pytest.approx(x.mean() - half, abs=0.05 * half)
    assert ci.high == pytest.approx(x.mean() + half, abs=0.05 * half)
    d = stats.difference(x[:200], x[200:] + 1.0)
    half = 1.959964 * math.sqrt(x[:200].var() / 200 + x[200:].var() / 200)
    assert d.estimate == pytest.approx(x[200:].mean() + 1.0 - x[:200].mean())
    assert d.high - d.low == pytest.approx(2 * half, rel=0.06)


def test_the_ends_are_stable_to_a_tenth_of_a_point_and_reproducible():
    seeds = [65.0, 66.6, 63.9]  # three seeds, spread ~1.4 points, as in the reproduction
    runs = [stats.mean(seeds, seed=s) for s in range(5)]
    assert max(r.low for r in runs) - min(r.low for r in runs) < 0.1
    assert max(r.high for r in runs) - min(r.high for r in runs) < 0.1
    diffs = [stats.difference(seeds, [66.1, 67.9, 65.2], seed=s) for s in range(5)]
    assert max(d.low for d in diffs) - min(d.low for d in diffs) < 0.1
    assert stats.mean(seeds, seed=3) == stats.mean(seeds, seed=3)


def test_paired_differences_use_the_shared_seeds():
    a = {0: 57.0, 1: 58.5, 2: 56.0, 3: 59.0}
    b = {0: 58.0, 1: 59.5, 2: 57.0}  # always one point more, seed 3 not trained
    assert stats.paired(a, b) == stats.Interval(1.0, 1.0, 1.0, 3)  # unpaired, the seeds' spread would blur it
    assert stats.difference(list(a.values())[:3], list(b.values())).high - 1.0 > 0.5
    with pytest.raises(ValueError, match="share no seed"):
        stats.paired({0: 1.0}, {1: 2.0})


def test_seeds_to_decide_scale_the_interval_as_one_over_root_seeds():
    ci = stats.Interval(1.0, -0.5, 2.5, 3)  # half-width 1.5 at 3 seeds, 1.0 from 0
    assert stats.seeds_to_decide(ci, 0.0) == math.ceil(3 * 1.5**2)  # 7: half-width 1.5 * sqrt(3 / 7) < 1
    assert stats.seeds_to_decide(ci, 1.0) is None  # on the threshold: no number of seeds decides it
    assert stats.seeds_to_decide(stats.Interval(1.0, 1.0, 1.0, 1), 0.0) is None  # one seed: no spread seen
    with pytest.raises(ValueError, match="at least one value"):
        stats.bootstrap([[1.0], []])


def test_the_edf_band_holds_the_edf_and_narrows_with_models():
    from sqzdse.results.analysis import edf_at

    rng = np.random.default_rng(2)
    at = np.linspace(5, 20, 31)
    few, many = rng.normal(12, 2, 10), rng.normal(12, 2, 400)
    for e in (few, many):
        low, high = stats.edf_band(e, at)
        assert np.all(low <= edf_at(e, at) + 1e-12) and np.all(edf_at(e, at) <= high + 1e-12)
    width = [np.mean(np.subtract(*stats.edf_band(e, at)[::-1])) for e in (few, many)]
    assert width[1] < width[0] / 3  # ~1/sqrt(n): 40x the models, ~6x narrower
    # At the middle of 400 models the band is the binomial one: F +- 1.96 sqrt(F (1 - F) / n).
    mid = np.median(many)
    low, high = stats.edf_band(many, [mid])
    assert high[0] - low[0] == pytest.approx(2 * 1.959964 * math.sqrt(0.25 / 400), rel=0.1)
    assert stats.edf_band([7.0], at)[0].tolist() == edf_at([7.0], at).tolist()  # one model: no spread
