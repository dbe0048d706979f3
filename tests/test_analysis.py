"""Pareto sets, EDFs and the size normalisation, against brute force and hand computations."""

import random

import numpy as np
import pytest
from sweep_rows import brute_front

from sqzdse.results import analysis


@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_matches_brute_force(seed):
    rng = random.Random(seed)
    # Small integer grids force ties in accuracy, in size, and exact duplicates.
    pts = [(rng.randint(0, 6), rng.randint(1, 6)) for _ in range(40)]
    front = analysis.pareto_front(pts)
    assert set(front) == brute_front(pts) and len(front) == len(set(front))
    assert [pts[i][1] for i in front] == sorted(pts[i][1] for i in front)  # ordered by size


def test_pareto_front_ties_and_nonfinite():
    pts = [(0.9, 2.0), (0.9, 2.0), (0.8, 1.0), (0.9, 3.0), (0.95, 5.0), (float("nan"), 0.5), (0.7, 1.0)]
    # Both copies of (0.9, 2.0) are kept; (0.9, 3.0) is dominated by them; NaN never makes the front.
    assert analysis.pareto_front(pts) == [2, 0, 1, 4]
    assert analysis.pareto_front([]) == []


def test_edf_equals_hand_computed_shares():
    errors = [0.3, 0.1, 0.2, 0.2, 0.4]
    x, y = analysis.edf(errors)
    assert x.tolist() == [0.1, 0.2, 0.3, 0.4] and y.tolist() == pytest.approx([0.2, 0.6, 0.8, 1.0])
    # F(e) = share with error strictly below e (Radosavovic et al. 2019, eq. 1).
    at = [0.05, 0.1, 0.15, 0.2, 0.25, 0.4, 0.5]
    assert analysis.edf_at(errors, at).tolist() == pytest.approx([0, 0, 0.2, 0.2, 0.6, 0.8, 1.0])
    w = [1, 1, 2, 0, 4]  # weights normalised: 1/8 each for 0.3 and 0.1, 2/8 for one 0.2, 0 for the other, 4/8 for 0.4
    assert analysis.edf_at(errors, [0.15, 0.25, 0.35, 1.0], weights=w).tolist() == pytest.approx(
        [1 / 8, 3 / 8, 4 / 8, 1]
    )
    x, y = analysis.edf(errors, w)
    assert x.tolist() == [0.1, 0.2, 0.3, 0.4] and y.tolist() == pytest.approx([1 / 8, 3 / 8, 4 / 8, 1])
    with pytest.raises(ValueError, match="no errors"):
        analysis.edf([])


def test_size_weights_equalise_the_size_distribution():
    # Two bins in log size (1 and 2 vs 8), group "a" is 3:1 small:large, group "b" 1:2.
    sizes = [1, 1, 2, 8, 1, 8, 8]
    groups = ["a", "a", "a", "a", "b", "b", "b"]
    w = analysis.size_weights(sizes, groups, bins=2)
    assert w.tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 6, 1 / 2, 1 / 2, 1 / 4, 1 / 4])
    for g in "ab":  # each group: half its weight on small models, half on large
        m = np.array(groups) == g
        assert w[m].sum() == pytest.approx(1) and w[m & (np.array(sizes) < 4)].sum() == pytest.approx(0.5)
    # A bin held by one group only gets weight 0, so the other bins still match.
    w = analysis.size_weights([1, 8, 1, 8, 64], ["a", "a", "b", "b", "b"], bins=3)
    assert w.tolist() == pytest.approx([0.5, 0.5, 0.5, 0.5, 0])
    with pytest.raises(ValueError, match="share no model-size bin"):
        analysis.size_weights([1, 2, 50, 60], ["a", "a", "b", "b"], bins=4)
