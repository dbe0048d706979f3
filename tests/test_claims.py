"""The paper's claims tested on rows whose answers are known by construction: holds, contradicted, cannot tell."""

import json

import pytest
from sweep_rows import make_row, write_csv

from sqzdse.cli import main
from sqzdse.results import stats
from sqzdse.results.claims import check_claims
from sqzdse.results.rows import normalize_row


def rows_of(study, axis, accs, **fixed):
    """One row per (axis value, seed) with the given accuracies in points: {value: [seed 0, seed 1, ...]}."""
    out = []
    for value, by_seed in accs.items():
        for seed, acc in enumerate(by_seed):
            kw = {"sr": "sr", "pct3x3": "pct", "bypass": "bypass"}
            out.append(make_row(study, len(out), seed=seed, acc=acc / 100, **{kw[axis]: value}, **fixed))
    return [normalize_row(r) for r in out]


def by_key(rows):
    return {c.key: c for c in check_claims(rows)}


def test_accuracy_that_rises_then_flattens_holds_both_sr_claims():
    sr = rows_of("sr", "sr", {0.125: [55.0, 56.0, 54.5], 0.5: [62.0, 63.0, 61.0], 0.75: [66.4, 66.6, 66.5],
                              1.0: [66.2, 66.8, 66.6]})  # fmt: skip
    c = by_key(sr)
    rise, flat = c["sr_rises"], c["sr_saturates"]
    assert rise.statistic == "mean(SR .75) - mean(SR .125)" and rise.verdict == "holds"
    same = stats.difference([55.0, 56.0, 54.5], [66.4, 66.6, 66.5])  # the same resampling
    assert (rise.interval.low, rise.interval.high) == pytest.approx((same.low, same.high), abs=1e-9)
    assert rise.interval.estimate == pytest.approx(66.5 - 55.166667, abs=1e-5)
    assert flat.statistic == "mean(SR 1) - mean(SR .75)" and flat.verdict == "holds" and flat.interval.high < 0.5
    assert "pct3x3=0.5, bypass=vanilla" in flat.held and set(c) == {"sr_rises", "sr_saturates"}


def test_a_large_gain_past_the_knee_contradicts_saturation_and_noise_cannot_tell():
    c = by_key(rows_of("sr", "sr", {0.125: [55.0, 56.0], 0.75: [60.0, 61.0], 1.0: [66.0, 67.0]}))
    assert c["sr_saturates"].verdict == "contradicted" and c["sr_saturates"].interval.low > 0.5
    noisy = by_key(rows_of("sr", "sr", {0.125: [55.0, 60.0, 57.0], 0.75: [59.0, 55.0, 61.0]}))["sr_rises"]
    assert noisy.verdict == "cannot tell" and noisy.interval.low < 0 < noisy.interval.high
    assert noisy.seeds_needed == stats.seeds_to_decide(noisy.interval, 0.0) > 3
    assert f"~{noisy.seeds_needed} would decide it at this spread" in noisy.text()
    one = by_key(rows_of("sr", "sr", {0.125: [55.0], 1.0: [66.0]}))["sr_rises"]  # one seed: no spread, no verdict
    assert one.verdict == "cannot tell" and one.seeds_needed is None and "one seed, no interval" in one.text()


def test_the_3x3_share_against_the_larger_shares():
    flat = rows_of("pct", "pct3x3", {0.25: [60.0, 61.0], 0.5: [63.0, 63.2], 0.75: [63.1, 63.3], 0.99: [63.0, 63.4]},
                   sr=0.5)  # fmt: skip
    (claim,) = check_claims(flat)
    assert claim.key == "pct3x3_saturates" and claim.verdict == "holds"
    assert claim.statistic == "mean over pct3x3 .75, .99 - mean(pct3x3 .5)" and claim.interval.high < 0.5
    assert claim.interval.estimate == pytest.approx((63.2 + 63.2) / 2 - 63.1)
    rising = rows_of("pct", "pct3x3", {0.5: [60.0, 60.5], 0.75: [63.0, 63.4]}, sr=0.5)
    assert check_claims(rising)[0].verdict == "contradicted"
    assert check_claims(rows_of("pct", "pct3x3", {0.25: [60.0], 0.5: [61.0]})) == []  # no share above 0.5


def test_bypass_claims_are_paired_by_seed():
    # Seeds differ a lot (one point per seed), bypass adds exactly 1.0 (simple) and 0.5 (complex) to each.
    base = [57.0, 60.0, 54.0, 58.0, 56.0]
    rows = rows_of("b", "bypass", {"none": base, "simple": [a + 1.0 for a in base], "complex": [a + 0.5 for a in base]})
    c = by_key(rows)
    simple = c["simple_beats_vanilla"].interval
    assert (simple.estimate, simple.low, simple.high, simple.n) == pytest.approx((1.0, 1.0, 1.0, 5))
    assert c["simple_beats_vanilla"].verdict == "holds" and c["simple_beats_vanilla"].note == "the same parameter count"
    assert c["complex_beats_vanilla"].verdict == "holds" and c["simple_beats_complex"].verdict == "holds"
    assert "150,000 parameters added: +0.33 pt per 100,000" in c["complex_beats_vanilla"].note
    unpaired = stats.difference(base, [a + 1.0 for a in base])
    assert unpaired.low < 0 < unpaired.high  # what an unpaired comparison would have said: cannot tell


def test_claims_on_the_command_line(tmp_path, capsys):
    rows = rows_of("b", "bypass", {"none": [57.0, 60.0, 54.0], "simple": [58.0, 61.0, 55.0]})
    write_csv(tmp_path / "b.csv", rows)
    assert main(["claims", str(tmp_path / "b.csv")]) == 0
    out = capsys.readouterr().out
    assert "simple bypass beats vanilla at equal size (Table 3): mean over seeds of simple - vanilla = 1.0 pt" in out
    assert ": holds" in out and "95% percentile-bootstrap intervals over seeds, 10,000 resamples" in out
    assert main(["claims", str(tmp_path / "b.csv"), "--json"]) == 0
    (claim,) = json.loads(capsys.readouterr().out)
    assert claim["key"] == "simple_beats_vanilla" and claim["interval"]["n"] == 3
