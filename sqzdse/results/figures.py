"""Figures of a sweep's results, one entry for every kind: ``make_plot`` (its flags: ``sqzdse.cli.plot``).

    sqzdse plot sr sweeps.csv -o sr.png --paper      # Figure 3a, this run beside the paper's anchor points
    sqzdse plot sr sweeps.csv -o sr.png --where pct3x3=0.5  # hold the other axis fixed
    sqzdse plot frontier a.json sqlite:///runs/b.db -o frontier.svg
    sqzdse plot edf results.csv --by bypass --normalize -o edf.pdf

Plotting never trains (STYLE rule 8): the figures draw exported rows (``sqzdse.results.rows``), one per Optuna trial,
and what ``sqzdse.results.analysis`` computes from them. Only trials in state COMPLETE with the chosen metric
present are
plotted; every figure says how many were plotted and how many skipped. Accuracies are shown in percent, model
sizes in MiB of float32 weights or, with ``--size compressed_bytes``, of the Deep-Compression file. The paper's
figures are in ``sqzdse.results.paper_plots``, the design-space views in ``sqzdse.results.design_plots``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from sqzdse.errors import InputError
from sqzdse.results.design_plots import plot_curves, plot_edf, plot_frontier
from sqzdse.results.paper_plots import plot_bypass, plot_sweep
from sqzdse.results.rows import check_metric, check_size

if TYPE_CHECKING:
    from matplotlib.figure import Figure

KINDS = ("sr", "pct3x3", "frontier", "bypass", "edf", "curves")


def make_plot(
    kind: str,
    rows: Sequence[dict],
    metric: str = "val_top1",
    by: str = "study",
    normalize: bool = False,
    paper: bool = False,
    reference=None,
    bins: int = 10,
    size: str = "bytes",
    where: Mapping | None = None,
    series: str | None = None,
) -> Figure:
    """The figure of one KIND (``KINDS``) from rows; options that do not apply to the kind are ignored, except
    ``paper``, which only ``sr`` and ``pct3x3`` can draw. `size` (``SIZES``) is the model size shown; `where`
    keeps only rows with these values (e.g. ``{"pct3x3": "0.5"}``, strings as a CLI reads them); `series` draws
    an sr or pct3x3 figure as one line per value of that column."""
    check_metric(metric)
    check_size(size)
    if kind not in KINDS:
        raise InputError(f"unknown plot kind {kind!r}; choose one of {', '.join(KINDS)}")
    if paper and kind not in ("sr", "pct3x3"):
        raise InputError(f"--paper: the paper's anchor points exist for sr and pct3x3 plots only, not {kind}")
    if kind in ("sr", "pct3x3"):
        return plot_sweep(rows, kind, metric=metric, paper=paper, reference=reference, size=size, where=where,
                          series=series)  # fmt: skip
    if kind == "frontier":
        return plot_frontier(rows, metric=metric, size=size, where=where)
    if kind == "bypass":
        return plot_bypass(rows, metric=metric, size=size, where=where)
    if kind == "edf":
        return plot_edf(rows, by=by, normalize=normalize, metric=metric, bins=bins, size=size, where=where)
    return plot_curves(rows, metric=metric, where=where)
