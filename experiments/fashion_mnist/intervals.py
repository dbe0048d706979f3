"""The tables of experiments/README.md: each design's mean accuracy over its seeds with a 95 % bootstrap interval.

    python experiments/fashion_mnist/intervals.py [STORAGE]     # default: this experiment's storage

One Markdown table per study (squeeze_ratio by SR, pct3x3 by the 3x3 share, bypass by kind), from the completed
trials, with ``sqzdse.results.stats`` (seeds resampled within each design, 10,000 resamples, resampling seed 0).
"""

import sys
from collections import defaultdict

from sqzdse.results import stats
from sqzdse.results.rows import bypass_name, completed, load_rows

STORAGE = "sqlite:///experiments/fashion_mnist/sweeps.db"
AXES = {"squeeze_ratio": "sr", "pct3x3": "pct3x3", "bypass": "bypass"}


def table(rows, axis: str) -> str:
    groups = defaultdict(list)
    for r in rows:
        groups[r[axis]].append(r)
    order = sorted(groups, key=lambda v: ("none", "simple", "complex").index(v) if axis == "bypass" else v)
    lines = [f"| {axis} | params | seeds | val top-1 % [95 % interval] | test top-1 % [95 % interval] |",
             "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for v in order:
        g = sorted(groups[v], key=lambda r: r["seed"])
        val = stats.mean([100 * r["val_top1"] for r in g])
        test = stats.mean([100 * r["test_top1"] for r in g])
        shown = bypass_name(v) if axis == "bypass" else f"{v:g}"
        seeds = ", ".join(str(r["seed"]) for r in g)
        lines.append(f"| {shown} | {g[0]['params']:,} | {seeds} | {val.text()} | {test.text()} |")
    return "\n".join(lines)


def main(storage: str) -> None:
    for study, axis in AXES.items():
        kept, skipped = completed(load_rows(storage, study=study))
        print(f"### {study}: {len(kept)} completed trials" + (f" ({sum(skipped.values())} not)" if skipped else ""))
        print()
        print(table(kept, axis))
        print()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else STORAGE)
