"""benchmarks/search_efficiency.py's replay: hypervolume against an exact count, compute charged as the table says."""

import importlib.util
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from sweep_rows import table_rows

from sqzdse.results.analysis import hypervolume
from sqzdse.sweep.pruning import ParetoPruner
from sqzdse.sweep.tabular import Table

path = Path(__file__).parents[1] / "benchmarks" / "search_efficiency.py"
spec = importlib.util.spec_from_file_location("search_efficiency", path)
SE = sys.modules["search_efficiency"] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
spec.loader.exec_module(SE)


def exact_area(points, ref):
    """The dominated area by cells between every coordinate: each cell in or out."""
    xs = sorted({s for _, s in points} | {ref[1]})
    ys = sorted({a for a, _ in points} | {ref[0]})
    area = 0.0
    for (x0, x1), (y0, y1) in itertools.product(itertools.pairwise(xs), itertools.pairwise(ys)):
        if any(s <= x0 and a >= y1 for a, s in points):
            area += (x1 - x0) * (y1 - y0)
    return area


@pytest.mark.parametrize("seed", range(4))
def test_hypervolume_is_the_dominated_area(seed):
    rng = np.random.default_rng(seed)
    pts = [(float(a), float(s)) for a, s in zip(rng.uniform(60, 90, 12), rng.uniform(4, 6, 12), strict=True)]
    ref = (55.0, 6.5)
    assert hypervolume(pts, ref) == pytest.approx(exact_area(pts, ref))
    assert hypervolume([(50.0, 5.0), (80.0, 7.0)], ref) == 0.0  # beyond the reference point: nothing


def world_of(table, seed=0):
    return {d: table.entry(d, seed) for d in table.designs}


def test_the_grid_charges_every_design_once_and_ends_at_the_full_front():
    table = Table.from_rows(table_rows())
    world, ref, unit = world_of(table), table.reference_point(), table.unit_seconds()
    total = sum(e.seconds for e in world.values())
    for workers in (1, 3):
        grid = SE._OptunaStrategy("grid", 0, table, None)
        r = SE.replay(grid, world, table, workers, total, unit, ref)
        full = hypervolume([(e.final, math.log10(e.bytes)) for e in world.values()], ref)
        assert r.trials == len(table.designs) and r.stopped == 0
        assert r.trace[-1] == (pytest.approx(total / unit), pytest.approx(full))
        assert all(b[0] >= a[0] and b[1] >= a[1] for a, b in itertools.pairwise(r.trace))  # both only grow
    # Several workers finish the same compute sooner in (simulated) wall time.
    assert SE.replay(SE._OptunaStrategy("grid", 0, table, None), world, table, 3, total, unit, ref).wall_units < (
        SE.replay(SE._OptunaStrategy("grid", 0, table, None), world, table, 1, total, unit, ref).wall_units
    )


def test_a_stopped_trial_is_charged_its_epochs_and_a_repeat_only_what_it_adds():
    table = Table.from_rows(table_rows())
    world, ref, unit = world_of(table), table.reference_point(), table.unit_seconds()
    total = sum(e.seconds for e in world.values())
    pruned = SE._OptunaStrategy("grid", 0, table, ParetoPruner(margin=0.0, min_peers=2))
    r = SE.replay(pruned, world, table, 1, total, unit, ref)
    states = [t.state.name for t in pruned.study.trials]
    assert r.stopped == states.count("PRUNED") > 0
    # Each design once (a grid), each charged the epochs it ran: the stopped ones less than a full training.
    assert len(r.runs) == len(table.designs) and sum(e < table.epochs for _, e in r.runs) == r.stopped
    charged = sum(sum(world[d].epoch_seconds[:e]) for d, e in r.runs)
    assert r.units == pytest.approx(charged / unit) and r.units < total / unit
    # Random search asks for designs again: those cost nothing more, so its compute is at most the grid's.
    rnd = SE._OptunaStrategy("random", 0, table, None)
    r = SE.replay(rnd, world, table, 1, total, unit, ref)
    assert r.trials > len({d for d, _ in r.runs}) and r.units <= total / unit + 1e-9


def test_moasha_is_driven_through_its_scheduler():
    pytest.importorskip("syne_tune")  # the benchmark's outside peer: pip install -e '.[bench]'
    table = Table.from_rows(table_rows())
    world, ref, unit = world_of(table), table.reference_point(), table.unit_seconds()
    total = sum(e.seconds for e in world.values())
    r = SE.replay(SE._MOASHAStrategy(seed=0, table=table), world, table, 2, total, unit, ref)
    assert r.trials > 0 and len(r.trace) > 1 and r.trace[-1][0] <= total / unit + 1e-9
