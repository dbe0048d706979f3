"""``sqzdse plot KIND``: one subcommand per figure kind, each with only its own options."""

from __future__ import annotations

import argparse

from sqzdse.cli.common import add_output, add_sources, command, sources_of
from sqzdse.results.figures import KINDS
from sqzdse.results.rows import BY_CHOICES, SIZES

# kind -> (help, the options of make_plot it takes besides metric and where)
PLOTS = {
    "sr": ("accuracy and model size vs squeeze ratio: the paper's Fig. 3a", ("paper", "size", "series")),
    "pct3x3": ("accuracy and model size vs the share of 3x3 filters: the paper's Fig. 3b", ("paper", "size", "series")),
    "frontier": ("accuracy vs model size with each study's Pareto front", ("size",)),
    "bypass": ("the three macroarchitectures of Section 6: the paper's Table 3", ("size",)),
    "edf": ("error distributions (EDFs) per study or metaparameter value", ("by", "normalize", "size")),
    "curves": ("validation accuracy per epoch, one line per completed trial", ()),
}
assert tuple(PLOTS) == KINDS, "one subcommand per sqzdse.results.figures.KINDS"


def _add_options(p: argparse.ArgumentParser, options: tuple[str, ...]) -> None:
    if "paper" in options:
        p.add_argument("--paper", action="store_true", help="add the paper's ImageNet top-5 anchor points and model "
                       "sizes (text / derived numbers only) in a panel of their own")  # fmt: skip
        p.add_argument("--reference", help="with --paper: paper_numbers.json or its folder (default: the bundled "
                       "copy, or $SQZDSE_REFERENCE)")  # fmt: skip
    if "by" in options:
        p.add_argument("--by", default="study", choices=BY_CHOICES, help="one curve per study or per value of this "
                       "metaparameter")  # fmt: skip
    if "series" in options:
        p.add_argument("--by", dest="series", choices=BY_CHOICES, help="one line per value of this key, e.g. --by "
                       "bypass (default: one line over every trial, whatever else varies)")  # fmt: skip
    if "normalize" in options:
        p.add_argument("--normalize", action="store_true", help="weight models so every curve has the same "
                       "model-size distribution (Radosavovic et al. 2019)")  # fmt: skip
        p.add_argument("--bins", type=int, default=10, help="with --normalize: log-size bins")
    if "size" in options:
        p.add_argument("--size", default="bytes", choices=tuple(SIZES), help="the cost shown: bytes (float32 "
                       "weights), compressed_bytes (the Deep-Compression file of a sweep with a [compress] table) "
                       "or latency_b1_ms / latency_b64_ms (measured by each trial on its machine; trials of "
                       "different machines are refused)")  # fmt: skip


def run_plot(args) -> int:
    """``sqzdse plot KIND``: load the rows, draw, save, print what was written."""
    from sqzdse.results.canvas import check_figure_path, save_figure
    from sqzdse.results.figures import make_plot
    from sqzdse.results.rows import load_rows

    out = check_figure_path(args.output)
    rows = load_rows(*sources_of(args), study=args.study)
    options = ("paper", "reference", "by", "normalize", "bins", "size", "series")
    opts = {k: getattr(args, k) for k in options if k in args}
    fig = make_plot(args.kind, rows, metric=args.metric, where=dict(args.where or ()), **opts)
    save_figure(fig, out)
    print(f"wrote {out}")
    return 0


def add_commands(sub) -> None:
    pl = sub.add_parser("plot", help="figures from sweep results: " + ", ".join(KINDS),
                        description="Figures from sweep results (exports or storage URLs); one subcommand per "
                        "kind. Example: sqzdse plot sr sweeps/squeeze_ratio.toml --paper -o sr.png")  # fmt: skip
    kinds = pl.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, (help_, options) in PLOTS.items():
        p = command(kinds, kind, help=help_)
        add_output(p, "figure file: .png, .svg or .pdf")
        add_sources(p, "the final accuracy that colours each curve and picks the best trial (the curves "
                    "themselves are validation top-1 per epoch, what a trial records per epoch)"
                    if kind == "curves" else "accuracy to plot")  # fmt: skip
        _add_options(p, options)
        p.set_defaults(func=run_plot)
