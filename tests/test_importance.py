"""Metaparameter importances on rows whose answer is known: accuracy that depends on SR alone."""

import itertools
import json

import numpy as np
import pytest
import scipy.stats
from sweep_rows import make_row, write_csv

from sqzdse.cli import main
from sqzdse.results import importance as I
from sqzdse.results.rows import normalize_row


def grid_rows():
    """SR x pct3x3 x bypass, two seeds: accuracy rises with SR by 8 points, pct3x3 and bypass change nothing but
    noise of 0.1 point."""
    noise = np.random.default_rng(0).normal(0, 0.1, size=64)
    out = []
    for i, (sr, pct, bypass, seed) in enumerate(itertools.product((0.125, 0.25, 0.5, 1.0), (0.25, 0.5, 0.75, 0.99),
                                                                  ("none", "simple"), (0, 1))):  # fmt: skip
        acc = 60.0 + 8.0 * sr + noise[i % 64]
        out.append(normalize_row(make_row("grid", i, sr=sr, pct=pct, bypass=bypass, seed=seed, acc=acc / 100)))
    return out


def test_both_evaluators_find_the_one_metaparameter_that_matters():
    imp = I.importances(grid_rows())
    assert list(imp.ped_anova)[0] == "sr" and set(imp.fanova) == {"sr", "pct3x3", "bypass"}
    assert imp.ped_anova["sr"] > 0.8 and imp.fanova["sr"] > 0.8
    assert sum(imp.ped_anova.values()) == pytest.approx(1.0) and sum(imp.fanova.values()) == pytest.approx(1.0)
    assert imp.trials == 64 and "rank agreement (Spearman)" in imp.text()


def test_spearman_equals_scipys():
    rng = np.random.default_rng(3)
    for _ in range(5):
        a, b = rng.normal(size=6), rng.normal(size=6)
        assert I.spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic)
    ties = [0.5, 0.2, 0.2, 0.1]
    assert I.spearman(ties, [4, 3, 2, 1]) == pytest.approx(scipy.stats.spearmanr(ties, [4, 3, 2, 1]).statistic)
    assert I.spearman([0.9, 0.1], [0.8, 0.2]) is None


def test_too_few_trials_or_nothing_varied_are_refused(tmp_path, capsys):
    rows = grid_rows()
    with pytest.raises(ValueError, match="at least 8 are needed"):
        I.importances(rows[:5])
    fixed = [r for r in rows if r["sr"] == 0.5 and r["pct3x3"] == 0.5 and r["bypass"] == "none"]
    with pytest.raises(ValueError, match="vary no metaparameter"):
        I.importances(fixed)
    write_csv(tmp_path / "g.csv", rows)
    assert main(["importance", str(tmp_path / "g.csv"), "--json", "-o", str(tmp_path / "imp.png")]) == 0
    assert json.loads(capsys.readouterr().out)["trials"] == 64 and (tmp_path / "imp.png").stat().st_size > 0
    assert main(["importance", str(tmp_path / "g.csv"), "-o", str(tmp_path / "imp.txt")]) == 2
