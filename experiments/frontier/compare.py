"""The frontier study's front against the grid's, as Markdown (experiments/frontier/comparison.md).

    python3 experiments/frontier/compare.py experiments/frontier/trials.csv experiments/tabular/table.csv

Both on validation top-1 (%) against log10 float32 bytes, with the replays' fixed reference point
(benchmarks/search_efficiency.py, ``Table.reference_point``); the grid is the tabular benchmark's seed 0, trained
at the same budget per trial. Compute is counted in trainings (a pruned or reused trial counts for the epochs it
trained) and, so that both sides are charged on one machine, in the seconds the grid's runs of the same designs took.
"""

import math
import sys

from sqzdse.results.analysis import hypervolume, pareto_front
from sqzdse.results.rows import load_rows
from sqzdse.sweep.tabular import Table


def main(study_source: str, table_source: str) -> None:
    grid = Table.from_rows(load_rows(table_source, study="tabular"), seeds=[0])
    ref = grid.reference_point()
    runs = {e.design: e for e in grid.entries.values()}
    rows = [r for r in load_rows(study_source, study="frontier") if r.get("state") == "COMPLETE"]
    trained = [r for r in rows if not r.get("reused_from")]
    epochs = grid.epochs

    def point(acc, size):
        return acc, math.log10(size)

    grid_pts = [point(e.final, e.bytes) for e in runs.values()]
    grid_hv = hypervolume(grid_pts, ref)
    study_pts = [point(100 * r["val_top1"], r["bytes"]) for r in rows]
    study_hv = hypervolume(study_pts, ref)
    designs = {tuple(r[a] for a in grid.axes) for r in rows}
    study_trainings = sum(len(r.get("curve") or []) for r in trained) / epochs
    charged = sum(runs[tuple(r[a] for a in grid.axes)].seconds * len(r.get("curve") or []) / epochs for r in trained)
    grid_seconds = sum(e.seconds for e in runs.values())
    front = [list(runs)[i] for i in pareto_front([(e.final, e.bytes) for e in runs.values()])]
    found = [d for d in front if d in designs]

    print(f"# The frontier study against the grid ({study_source}, {table_source} seed 0)\n")
    print(f"- study: {len(rows)} completed trials, {len(designs)} distinct designs, {len(trained)} trained here "
          f"({study_trainings:.1f} full trainings); the grid: {len(runs)} designs, {len(runs)} trainings")
    print(f"- hypervolume (reference {ref[0]:.2f} %, {ref[1]:.3f} log10 bytes): study {study_hv:.2f}, grid "
          f"{grid_hv:.2f}: the study reaches {100 * study_hv / grid_hv:.1f} % of the grid's")
    print(f"- compute: {study_trainings:.1f} of the grid's {len(runs)} trainings "
          f"({100 * study_trainings / len(runs):.0f} %); charged the grid's seconds for the same designs "
          f"{charged / 3600:.2f} of {grid_seconds / 3600:.2f} core-hours ({100 * charged / grid_seconds:.0f} %)")
    print(f"- the grid's Pareto front has {len(front)} designs; the study trained {len(found)} of them")
    print("\n| sr | pct3x3 | bypass | bytes | grid val top-1 % | on the grid's front | study val top-1 % |")
    print("|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: r["bytes"]):
        d = tuple(r[a] for a in grid.axes)
        print(f"| {r['sr']} | {r['pct3x3']} | {r['bypass']} | {r['bytes']:,} | {runs[d].final:.1f} | "
              f"{'yes' if d in front else ''} | {100 * r['val_top1']:.1f} |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
