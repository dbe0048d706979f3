"""Figures of a sweep's results, one entry for every kind: ``make_plot`` and ``sqzdse plot``.

    sqzdse plot sr sweeps.csv -o sr.png --paper      # Figure 3a, this run beside the paper's anchor points
    sqzdse plot frontier a.json sqlite:///runs/b.db -o frontier.svg
    sqzdse plot edf results.csv --by bypass --normalize -o edf.pdf

Plotting never trains (STYLE rule 8): the figures draw exported rows (``sqzdse.results``), one per Optuna trial,
and what ``sqzdse.analysis`` computes from them. Only trials in state COMPLETE with the chosen metric present are
plotted; every figure says how many were plotted and how many skipped. Accuracies are shown in percent, model
sizes in MiB of float32 weights or, with ``--size compressed_bytes``, of the Deep-Compression file. The paper's
figures are in ``sqzdse.paper_plots``, the design-space views in ``sqzdse.design_plots``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

# Each `import x as x` is a temporary re-export: report.py reads it as plots.<name> until it imports its module.
from sqzdse.analysis import pareto_front as pareto_front
from sqzdse.canvas import check_figure_path, save_figure
from sqzdse.design_plots import plot_curves, plot_edf, plot_frontier
from sqzdse.paper_plots import plot_bypass, plot_sweep
from sqzdse.paper_plots import plot_pct3x3 as plot_pct3x3
from sqzdse.paper_plots import plot_sr as plot_sr
from sqzdse.results import BY_CHOICES, METRICS, SIZES, check_metric, check_size, load_rows
from sqzdse.results import FIELDS as FIELDS
from sqzdse.results import completed as completed
from sqzdse.results import group_by_study as group_by_study
from sqzdse.results import is_storage_url as is_storage_url
from sqzdse.results import require_completed as require_completed
from sqzdse.results import size_mib as size_mib
from sqzdse.results import trial_label as trial_label

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
) -> Figure:
    """The figure of one KIND (``KINDS``) from rows; options that do not apply to the kind are ignored, except
    ``paper``, which only ``sr`` and ``pct3x3`` can draw. `size` (``SIZES``) is the model size shown; `where`
    keeps only rows with these values (e.g. ``{"pct3x3": "0.5"}``, strings as a CLI reads them)."""
    check_metric(metric)
    check_size(size)
    if kind not in KINDS:
        raise ValueError(f"unknown plot kind {kind!r}; choose one of {', '.join(KINDS)}")
    if paper and kind not in ("sr", "pct3x3"):
        raise ValueError(f"--paper: the paper's anchor points exist for sr and pct3x3 plots only, not {kind}")
    if kind in ("sr", "pct3x3"):
        return plot_sweep(rows, kind, metric=metric, paper=paper, reference=reference, size=size, where=where)
    if kind == "frontier":
        return plot_frontier(rows, metric=metric, size=size, where=where)
    if kind == "bypass":
        return plot_bypass(rows, metric=metric, size=size, where=where)
    if kind == "edf":
        return plot_edf(rows, by=by, normalize=normalize, metric=metric, bins=bins, size=size, where=where)
    return plot_curves(rows, metric=metric, where=where)


# --------------------------------------------------------------------------- CLI glue (wired in sqzdse.cli)


def add_plot_arguments(p) -> None:
    """Flags of ``sqzdse plot KIND SOURCE... -o OUT``."""
    p.add_argument(
        "kind",
        choices=KINDS,
        help="sr / pct3x3: the paper's Fig. 3a / 3b; frontier: accuracy vs size with "
        "Pareto fronts; bypass: Table 3; edf: error distributions; curves: validation per epoch",
    )
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="results: .csv / .json exports or storage URLs "
        "(sqlite:///runs/sweep.db, postgresql://...); several are combined, rows keep their study",
    )
    p.add_argument("-o", "--out", required=True, help="figure file; .png, .svg or .pdf")
    p.add_argument("--metric", default="val_top1", choices=METRICS, help="accuracy to plot (default val_top1)")
    p.add_argument(
        "--by",
        default="study",
        choices=BY_CHOICES,
        help="edf: one curve per study (default) or per value of this metaparameter",
    )
    p.add_argument(
        "--normalize",
        action="store_true",
        help="edf: weight models so every curve has the same model-size distribution (Radosavovic et al. 2019)",
    )
    p.add_argument("--bins", type=int, default=10, help="edf --normalize: log-size bins (default 10)")
    p.add_argument(
        "--paper",
        action="store_true",
        help="sr / pct3x3: add the paper's ImageNet top-5 anchor points "
        "and model sizes (text / derived numbers only) in a panel of their own",
    )
    p.add_argument(
        "--reference",
        help="paper_numbers.json or its folder (default: the bundled copy, or $SQZDSE_REFERENCE)",
    )
    p.add_argument("--study", action="append", help="only this study (repeatable)")
    p.add_argument(
        "--size",
        default="bytes",
        choices=tuple(SIZES),
        help="model size shown: bytes (float32 weights, default) or compressed_bytes (the Deep-Compression file "
        "of a sweep with a [compress] table)",
    )


def run_plot(args) -> int:
    """``sqzdse plot``: load the rows, draw, save, print what was written."""
    check_metric(args.metric)
    out = check_figure_path(args.out)
    rows = load_rows(*args.sources, study=args.study)
    fig = make_plot(
        args.kind,
        rows,
        metric=args.metric,
        by=args.by,
        normalize=args.normalize,
        paper=args.paper,
        reference=args.reference,
        bins=args.bins,
        size=args.size,
    )
    save_figure(fig, out)
    print(f"wrote {out}")
    return 0
