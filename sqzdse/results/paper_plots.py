"""The paper's figures for a sweep: Figure 3a/3b (accuracy and size vs SR, vs pct3x3) and Table 3 (bypass).

Iandola et al. 2016; with ``paper=True`` Figure 3 adds the paper's ImageNet numbers (only those the text states or
the formulas give, ``sqzdse.results.rows.paper_fig3``) in a panel of their own, never on this run's axes.
"""

from __future__ import annotations

import functools
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from sqzdse.errors import InputError
from sqzdse.model.config import BYPASSES
from sqzdse.results import stats
from sqzdse.results.analysis import sweep_points
from sqzdse.results.canvas import new_figure, titles
from sqzdse.results.rows import (
    BY_CHOICES,
    SIZES,
    bypass_name,
    check_size,
    count_note,
    group_name,
    group_sort_key,
    metric_label,
    paper_fig3,
    plotted,
    require_size,
    require_varied,
    short_number,
    size_label,
    size_of,
    size_unit,
    study_names,
    varying,
    where_text,
)
from sqzdse.sweep.schema import DESIGN_KEYS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PAPER_LABEL = "paper (ImageNet top-5)"
_AXIS = {
    "sr": ("squeeze ratio SR = s1x1 / e", "a"),
    "pct3x3": ("pct3x3 = e3x3 / e (share of 3x3 expand filters)", "b"),
}


def plot_sweep(
    rows: Sequence[dict],
    param: str,
    metric: str = "val_top1",
    paper: bool = False,
    reference: str | os.PathLike | None = None,
    where: Mapping | None = None,
    size: str = "bytes",
    series: str | None = None,
) -> Figure:
    """Accuracy (mean over trials, bars: its 95 % bootstrap interval) and model size against ``sr`` or ``pct3x3``.

    Args:
      where: keep only rows with these values (e.g. ``{"pct3x3": 0.5}`` to hold the other axis fixed, as the
        paper does); metaparameters that still vary are named in the subtitle.
      paper: add a panel below with the paper's ImageNet numbers (``paper_fig3``), on axes of their own.
      size: ``bytes`` (float32 weights) or ``compressed_bytes`` (``SIZES``) on the right axis.
      series: one line per value of this column (a metaparameter, a swept training setting, ``study``); None:
        one line over every trial, whatever else varies (the subtitle names it).
    """
    check_size(size)
    if param not in _AXIS:
        raise ValueError(f"plot_sweep: param={param!r}; choose one of {', '.join(_AXIS)}")
    xlabel, panel = _AXIS[param]
    kept, skipped, selected = plotted(rows, metric, where)
    require_size(kept, size)
    no_x = [r for r in kept if r.get(param) is None]
    if no_x:
        skipped[f"no {param}"] += len(no_x)
        kept = [r for r in kept if r.get(param) is not None]
        if not kept:
            raise InputError(f"no completed trials with a value of {param}")
    require_varied(kept, param, f"a figure against {param}")
    if series is not None:
        if series not in BY_CHOICES or series == param:
            raise InputError(f"by={series!r}: one of {', '.join(k for k in BY_CHOICES if k != param)}")
        require_varied(kept, series, f"one line per {series}")
    groups = defaultdict(list)
    for r in kept:
        groups[r.get(series) if series else None].append(r)

    fig = new_figure(8.0, 7.2 if paper else 4.8)
    if paper:
        ax, axp = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    else:
        ax = fig.add_subplot()
    ax2 = ax.twinx()
    xs_all, all_sizes, seeds = set(), [], set()
    for i, key in enumerate(sorted(groups, key=group_sort_key)):
        pts = sweep_points(groups[key], param, metric, size)
        xs = np.array([p[0] for p in pts], dtype=float)
        intervals = [stats.mean(p[1]) for p in pts]  # over each point's trials (its seeds)
        means = np.array([ci.estimate for ci in intervals])
        lo = means - np.array([ci.low for ci in intervals])
        hi = np.array([ci.high for ci in intervals]) - means
        sizes = np.array([p[2] for p in pts])
        seeds |= {len(p[1]) for p in pts}
        xs_all |= set(xs)
        all_sizes += list(sizes[np.isfinite(sizes)])
        if series is None:
            c_acc, c_size = "C0", "C1"
            acc_label = f"this run: {metric}, mean over trials, bars: its 95 % bootstrap interval"
            right = f"this run: mean {SIZES[size][0]} ({size_unit(size)}, right axis)"
        else:  # one colour per line: accuracy solid, its size dashed
            c_acc = c_size = f"C{i % 10}"
            acc_label = f"{group_name(series, key)}: {metric} (bars: 95 % interval)"
            right = f"{group_name(series, key)}: {SIZES[size][0]} ({size_unit(size)}, right axis)"
        ax.errorbar(xs, means, yerr=[lo, hi], fmt="o-", color=c_acc, capsize=4, lw=1.6, ms=6, label=acc_label,
                    gid="accuracy" if series is None else f"accuracy:{key}")  # fmt: skip
        ax2.plot(xs, sizes, "s--", color=c_size, ms=5, lw=1.2, alpha=1.0 if series is None else 0.55,
                 label=right, gid="size" if series is None else f"size:{key}")  # fmt: skip
    xs = np.array(sorted(xs_all))
    seeds = sorted(seeds)
    ax.set_ylabel(metric_label(metric), color="C0" if series is None else "k")
    ax.tick_params(axis="y", colors="C0" if series is None else "k")
    ax.grid(alpha=0.3)
    ax2.set_ylabel(size_label(size), color="C1" if series is None else "k")
    ax2.tick_params(axis="y", colors="C1" if series is None else "k")
    ax2.set_ylim(bottom=0, top=max(all_sizes, default=1.0) * 1.15)
    ax.set_xticks(xs, [short_number(x) for x in xs])
    ax.set_xlabel(xlabel)
    per_point = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]} to {seeds[-1]}"
    note = count_note(len(kept), skipped) + f"; trials per point: {per_point}"
    if selected:
        note += "\n" + selected
    vary = varying(kept, (param, "seed", series or param))
    shown = {param, series, *vary, *(where or {})}  # what the axes, the lines, the note or the selection name
    fixed = {k: kept[0][k] for k in DESIGN_KEYS if k not in shown and kept[0].get(k) is not None}
    if fixed:
        note += "\nfixed: " + where_text(fixed)
    if vary:
        note += f"\nnot held fixed, so each point mixes designs: {', '.join(vary)}"
    name = "squeeze ratio" if param == "sr" else param
    title = f"Accuracy and model size vs {name} (cf. Iandola et al. 2016, Fig. 3{panel}): {study_names(kept)}"
    titles(fig, ax, title, note, width=100)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    if paper:
        handles += _paper_panel(axp, panel, reference, xlabel)
        ax.set_xlabel("")
        axp.set_xticks(sorted(set(xs) | {x for x, _ in paper_fig3(panel, reference)["size"]}))
        axp.set_xticklabels([short_number(x) for x in axp.get_xticks()], fontsize=8)
    # Below the axes: inside, a legend would hide the points it explains.
    fig.legend(handles, [h.get_label() for h in handles], loc="outside lower center", ncols=2, fontsize=8)
    return fig


def _paper_panel(axp, panel: str, reference, xlabel: str) -> list:
    """The paper's ImageNet numbers for Figure 3`panel`, on their own axes so they are never read as this run's."""
    nums = paper_fig3(panel, reference)
    c_paper, c_psize = "k", "0.55"
    axp.set_facecolor("#f6f3ea")
    if nums["top5"]:
        px, py, _ = zip(*nums["top5"], strict=True)
        axp.plot(
            px,
            py,
            "*",
            color=c_paper,
            ms=13,
            ls="none",
            label=f"{PAPER_LABEL}: values quoted in the text",
            gid="paper_top5",
        )
        for x, y in zip(px, py, strict=True):
            axp.annotate(f"{y:.1f}", (x, y), xytext=(8, -3), textcoords="offset points", fontsize=8, color=c_paper)
        axp.set_ylim(min(py) - 3, max(py) + 3)
    axp.set_ylabel("paper: ImageNet top-5 (%)")
    axp.grid(alpha=0.3)
    axs = axp.twinx()
    sx, sy = zip(*nums["size"], strict=True)
    axs.plot(
        sx,
        sy,
        "d:",
        color=c_psize,
        ms=5,
        label="paper: model size (MiB, right axis), derived",
        gid="paper_size",
    )
    axs.set_ylabel("paper model size (MiB)", color=c_psize)
    axs.tick_params(axis="y", colors=c_psize)
    axs.set_ylim(bottom=0, top=max(sy) * 1.15)
    axp.set_title(
        f"{PAPER_LABEL}: Iandola et al. 2016, Fig. 3{panel}, ImageNet -- not this run. Only the points quoted in "
        "the text;\nthe figure's other points exist only as an image.",
        fontsize=8.5,
        color="0.25",
    )
    axp.set_xlabel(xlabel)
    return axp.get_legend_handles_labels()[0] + axs.get_legend_handles_labels()[0]


# The paper's Figure 3a (accuracy and model size vs squeeze ratio) and 3b (vs the share of 3x3 expand filters);
# every option of plot_sweep but `param`, by keyword.
plot_sr = functools.partial(plot_sweep, param="sr")
plot_pct3x3 = functools.partial(plot_sweep, param="pct3x3")


def plot_bypass(
    rows: Sequence[dict], metric: str = "val_top1", where: Mapping | None = None, size: str = "bytes"
) -> Figure:
    """The paper's Table 3 as a picture: vanilla / simple / complex bypass, per-seed points, mean and 95 % interval."""
    check_size(size)
    kept, skipped, selected = plotted(rows, metric, where)
    require_size(kept, size)
    require_varied(kept, "bypass", "a comparison of bypass kinds")
    groups = {b: [r for r in kept if r.get("bypass") == b] for b in BYPASSES}
    other = sorted({str(r.get("bypass")) for r in kept} - set(BYPASSES))
    for b in other:
        groups[b] = [r for r in kept if str(r.get("bypass")) == b]
    groups = {b: g for b, g in groups.items() if g}
    fig = new_figure(6.5, 4.6)
    ax = fig.add_subplot()
    ticks = []
    for i, (b, g) in enumerate(groups.items()):
        g = sorted(g, key=lambda r: (r.get("seed") is None, r.get("seed") or 0, r.get("number") or 0))
        acc = np.array([100.0 * r[metric] for r in g])
        jitter = np.linspace(-0.15, 0.15, len(acc)) if len(acc) > 1 else np.zeros(1)
        ax.scatter(i + 0.12 + jitter * 0.6, acc, s=20, color=f"C{i}", alpha=0.6, lw=0, gid=f"seeds:{b}")
        ci = stats.mean(acc)
        m = ci.estimate
        ax.errorbar(
            [i - 0.12],
            [m],
            yerr=[[m - ci.low], [ci.high - m]],
            fmt="D",
            color=f"C{i}",
            ms=8,
            capsize=5,
            lw=1.6,
            gid=f"mean:{b}",
        )
        ax.annotate(
            f"{m:.1f}%",
            (i - 0.12, m),
            xytext=(-8, 0),
            textcoords="offset points",
            ha="right",
            va="center",
            fontsize=8,
            color=f"C{i}",
        )
        sizes = sorted({round(s, 2) for s in (size_of(r, size) for r in g) if s is not None})
        size_text = (
            "size ?"
            if not sizes
            else f"{sizes[0]:.2f} {size_unit(size)}"
            if len(sizes) == 1
            else f"{sizes[0]:.2f}-{sizes[-1]:.2f} {size_unit(size)}"
        )
        ticks.append(f"{bypass_name(b)}\n{size_text}\n{len(acc)} trial{'s' if len(acc) != 1 else ''}")
    ax.set_xticks(range(len(groups)), ticks)
    ax.set_xlim(-0.7, len(groups) - 0.3)
    ax.set_ylabel(metric_label(metric))
    ax.set_xlabel(f"bypass (the macroarchitecture of Section 6); {size_label(size)}")
    ax.grid(alpha=0.3, axis="y")
    note = count_note(len(kept), skipped) + "; diamond: mean, bars: its 95 % bootstrap interval, dots: one trial each"
    if selected:
        note += "\n" + selected
    vary = varying(kept, ("bypass", "seed"))
    if vary:
        note += f"\nnot held fixed: {', '.join(vary)}"
    titles(fig, ax, f"Bypass connections (cf. Iandola et al. 2016, Table 3): {study_names(kept)}", note)
    return fig
