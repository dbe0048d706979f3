"""``sqzdse plot KIND``: one subcommand per figure kind, each with only its own options."""

from __future__ import annotations

import argparse

from sqzdse.cli.common import add_output, command
from sqzdse.model.config import METAPARAMETERS
from sqzdse.results.figures import KINDS
from sqzdse.results.rows import BY_CHOICES, METRICS, SIZES

# kind -> (help, the options of make_plot it takes besides metric and where)
PLOTS = {
    "sr": ("accuracy and model size vs squeeze ratio: the paper's Fig. 3a", ("paper", "size")),
    "pct3x3": ("accuracy and model size vs the share of 3x3 filters: the paper's Fig. 3b", ("paper", "size")),
    "frontier": ("accuracy vs model size with each study's Pareto front", ("size",)),
    "bypass": ("the three macroarchitectures of Section 6: the paper's Table 3", ("size",)),
    "edf": ("error distributions (EDFs) per study or metaparameter value", ("by", "normalize", "size")),
    "curves": ("validation accuracy per epoch, one line per completed trial", ()),
}
assert tuple(PLOTS) == KINDS, "one subcommand per sqzdse.results.figures.KINDS"
WHERE_KEYS = (*METAPARAMETERS, "seed")


def where_item(text: str) -> tuple[str, object]:
    """KEY=VALUE of --where; numbers become numbers, so 0.5 matches a row's 0.5."""
    key, sep, value = text.partition("=")
    if not sep or key not in WHERE_KEYS:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE with KEY one of {', '.join(WHERE_KEYS)}")
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, value


def _add_options(p: argparse.ArgumentParser, options: tuple[str, ...]) -> None:
    if "paper" in options:
        p.add_argument("--paper", action="store_true", help="add the paper's ImageNet top-5 anchor points and model "
                       "sizes (text / derived numbers only) in a panel of their own")  # fmt: skip
        p.add_argument("--reference", help="with --paper: paper_numbers.json or its folder (default: the bundled "
                       "copy, or $SQZDSE_REFERENCE)")  # fmt: skip
    if "by" in options:
        p.add_argument("--by", default="study", choices=BY_CHOICES, help="one curve per study or per value of this "
                       "metaparameter")  # fmt: skip
    if "normalize" in options:
        p.add_argument("--normalize", action="store_true", help="weight models so every curve has the same "
                       "model-size distribution (Radosavovic et al. 2019)")  # fmt: skip
        p.add_argument("--bins", type=int, default=10, help="with --normalize: log-size bins")
    if "size" in options:
        p.add_argument("--size", default="bytes", choices=tuple(SIZES), help="model size shown: bytes (float32 "
                       "weights) or compressed_bytes (the Deep-Compression file of a sweep with a [compress] "
                       "table)")  # fmt: skip


def run_plot(args) -> int:
    """``sqzdse plot KIND``: load the rows, draw, save, print what was written."""
    from sqzdse.results.canvas import check_figure_path, save_figure
    from sqzdse.results.figures import make_plot
    from sqzdse.results.rows import load_rows

    out = check_figure_path(args.output)
    rows = load_rows(*args.sources, study=args.study)
    opts = {k: getattr(args, k) for k in ("paper", "reference", "by", "normalize", "bins", "size") if k in args}
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
        p.add_argument("sources", nargs="+", metavar="SOURCE", help="results: sweep files (sweeps/smoke.toml: its "
                       "study, in its storage), .csv / .json exports or storage URLs (sqlite:///runs/sqzdse.db, "
                       "postgresql://...); several are combined, rows keep their study")  # fmt: skip
        add_output(p, "figure file: .png, .svg or .pdf")
        metric_help = ("the final accuracy that colours each curve and picks the best trial (the curves "
                       "themselves are validation top-1 per epoch, what a trial records per epoch)"
                       if kind == "curves" else "accuracy to plot")  # fmt: skip
        p.add_argument("--metric", default="val_top1", choices=METRICS, help=metric_help)
        p.add_argument("--study", action="append", help="only this study (repeatable)")
        p.add_argument("--where", action="append", type=where_item, metavar="KEY=VALUE", help="only rows with this "
                       "value, e.g. --where pct3x3=0.5 to hold an axis fixed (repeatable)")  # fmt: skip
        _add_options(p, options)
        p.set_defaults(func=run_plot)
