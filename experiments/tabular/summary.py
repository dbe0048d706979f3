"""The tabular benchmark's facts as Markdown (experiments/tabular/summary.md): its size, cost, seed noise and front.

python3 experiments/tabular/summary.py experiments/tabular/table.csv > experiments/tabular/summary.md
"""

import math
import sys

import numpy as np

from sqzdse.errors import InputError
from sqzdse.results.rows import load_rows
from sqzdse.sweep.pruning import ParetoPruner, seed_margin
from sqzdse.sweep.tabular import Table, seed_pairs


def main(source: str, seeds=None) -> None:
    rows = load_rows(source, study="tabular")
    if seeds is None:  # the seeds every design has finished (the others still train)
        seeds = [s for s in _seeds(rows) if _complete(rows, s)]
    table = Table.from_rows(rows, seeds=seeds)
    entries = list(table.entries.values())
    finals = np.array([e.final for e in entries])
    seconds = np.array([e.seconds for e in entries])
    print(f"# The tabular benchmark ({source})\n")
    for seed in sorted(set(_seeds(rows)) - set(table.seeds)):
        done = {tuple(r[a] for a in table.axes) for r in rows if r["seed"] == seed and r["state"] == "COMPLETE"}
        print(f"- seed {seed}: {len(done)} of {len(table.designs)} designs so far (not in the table yet)")
    print(
        f"- {len(table.designs)} designs ({' x '.join(f'{len(v)} {a}' for a, v in table.values.items())}), "
        f"seeds {', '.join(map(str, table.seeds))}, {table.epochs} epochs each: {len(entries)} trainings"
    )
    print(f"- final validation top-1: {finals.min():.1f} to {finals.max():.1f} % (mean {finals.mean():.1f})")
    print(
        f"- one full training (the replay's unit): {table.unit_seconds():.0f} s on average "
        f"({seconds.min():.0f} to {seconds.max():.0f} s); all of them: {seconds.sum() / 3600:.2f} core-hours"
    )
    print("\nSeed noise: the spread of two runs of one design, by epoch (designs trained at two seeds so far)\n")
    print("| epoch | designs | RMS difference (points) | margin: 1.96 x that |")
    print("| --- | --- | --- | --- |")
    for e in ParetoPruner().rungs(table.epochs) + [table.epochs]:
        pairs = seed_pairs(rows, e)
        if len(pairs) >= 2:
            rms = math.sqrt(np.mean([(a - b) ** 2 for a, b in pairs]))
            print(f"| {e} | {len(pairs)} | {rms:.2f} | {seed_margin(pairs):.2f} |")
    print("\nThe front (seed 0's finals; max validation top-1, min bytes), smallest first\n")
    print("| SR | pct3x3 | bypass | bytes | val top-1 % | test top-1 % |")
    print("| --- | --- | --- | --- | --- | --- |")
    s0 = [table.entry(d, table.seeds[0]) for d in table.designs]
    best = -1.0
    for e in sorted(s0, key=lambda e: (e.bytes, -e.final)):
        if e.final > best:
            best = e.final
            sr, pct, bypass = e.design
            print(
                f"| {sr} | {pct} | {'vanilla' if bypass == 'none' else bypass} | {e.bytes:,} | {e.final:.1f} | "
                f"{e.test_top1:.1f} |"
            )


def _seeds(rows) -> list[int]:
    return sorted({r["seed"] for r in rows if r["seed"] is not None})  # a failed trial may have none


def _complete(rows, seed) -> bool:
    try:
        Table.from_rows(rows, seeds=[seed])
    except InputError:
        return False
    return True


if __name__ == "__main__":
    main(sys.argv[1], [int(s) for s in sys.argv[2].split(",")] if len(sys.argv) > 2 else None)
