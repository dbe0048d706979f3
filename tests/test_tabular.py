"""The tabular benchmark: read from trial rows, refused when incomplete, an objective Optuna samplers run against."""

import pytest
from sweep_rows import make_row, table_rows

from sqzdse.errors import InputError
from sqzdse.sweep import tabular as TB


def test_a_table_from_rows_and_its_lookups():
    rows = table_rows()
    table = TB.Table.from_rows(rows + [make_row("tabular", 99, state="FAIL", acc=None)])
    assert table.values == {"sr": [0.25, 0.5], "pct3x3": [0.25, 0.75], "bypass": ["complex", "none"]}
    assert len(table.designs) == 8 and table.seeds == [0, 1] and table.epochs == 4
    e = table.entry((0.5, 0.75, "complex"), 1)
    (row,) = [r for r in rows if (r["sr"], r["pct3x3"], r["bypass"], r["seed"]) == (0.5, 0.75, "complex", 1)]
    assert list(e.curve) == pytest.approx([100 * v for v in row["curve"]]) and e.final == e.curve[-1]
    assert e.seconds == 6.5 and e.bytes == row["bytes"] and e.test_top1 == pytest.approx(100 * row["test_top1"])
    assert table.unit_seconds() == pytest.approx(6.375)  # the mean of 6.25 and 6.5
    pairs = table.seed_pairs(4)
    assert len(pairs) == 8 and all(b - a == pytest.approx(0.5) for a, b in pairs)
    # From rows while the second seed trains: the designs that have both.
    assert sorted(TB.seed_pairs(rows, 4)) == sorted(pairs)
    partial = TB.seed_pairs([r for r in rows if r["number"] != 1], 4)  # one design lacks seed 1
    assert len(partial) == 7 and set(partial) < set(pairs)


def test_an_incomplete_table_is_refused():
    rows = table_rows()
    with pytest.raises(
        InputError, match=r"lacks 1 of its 16 trials \(\{'sr': 0.25, 'pct3x3': 0.25, 'bypass': 'none'\}"
    ):
        TB.Table.from_rows([r for r in rows if r["number"] != 0])
    with pytest.raises(InputError, match="different numbers of epochs"):
        TB.Table.from_rows([dict(r, curve=r["curve"][:2]) if r["number"] == 3 else r for r in rows])
    with pytest.raises(InputError, match="not a tabular benchmark"):
        TB.Table.from_rows([dict(r, epoch_seconds=None) for r in rows])
    with pytest.raises(InputError, match="one seed"):
        TB.Table.from_rows(table_rows(seeds=(0,))).seed_pairs(1)
    # A table of the seeds that are complete, while the others train.
    assert TB.Table.from_rows([r for r in rows if r["number"] != 1], seeds=[0]).seeds == [0]


def test_optuna_samplers_run_against_the_table():
    import optuna

    table = TB.Table.from_rows(table_rows())
    grid = {a: table.values[a] for a in table.axes}
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.GridSampler(grid, seed=0))
    study.optimize(table.objective(seed=1), n_trials=8)
    assert len({tuple(t.params[a] for a in table.axes) for t in study.trials}) == 8  # the grid, each design once
    best = max(study.trials, key=lambda t: t.values[0])
    assert (best.params["sr"], best.params["pct3x3"], best.params["bypass"]) == (0.5, 0.75, "complex")
    assert best.values == [pytest.approx(table.entry((0.5, 0.75, "complex"), 1).final), best.user_attrs["bytes"]]
    front = {tuple(t.params[a] for a in table.axes) for t in study.best_trials}
    # (0.25, 0.75, vanilla) is larger and less accurate than (0.5, 0.25, vanilla): off the front.
    assert (0.25, 0.25, "none") in front and (0.25, 0.75, "none") not in front
