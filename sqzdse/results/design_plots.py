"""Design-space views of a sweep: accuracy-size frontiers with their Pareto sets, error EDFs, validation curves.

The frontier and the EDFs (with their size normalisation) compare design spaces as Radosavovic et al. 2019 do;
what they draw is computed in ``sqzdse.results.analysis``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from sqzdse.errors import InputError
from sqzdse.results import stats
from sqzdse.results.analysis import designs, edf, pareto_front, size_weights
from sqzdse.results.canvas import log_ticks, new_figure, titles
from sqzdse.results.rows import (
    BY_CHOICES,
    check_budgets,
    check_size,
    completed,
    count_note,
    group_by_study,
    group_name,
    group_sort_key,
    metric_label,
    plotted,
    require_size,
    require_varied,
    select,
    selection_note,
    size_label,
    size_of,
    size_unit,
    study_names,
    trial_label,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_frontier(
    rows_by_study,
    metric: str = "val_top1",
    annotate: bool = True,
    max_labels: int = 40,
    size: str = "bytes",
    where: Mapping | None = None,
) -> Figure:
    """Accuracy vs model size (log) of every completed design; per study the Pareto front as a step line.

    A design trained with several seeds (the same metaparameters and training settings) is one point, its mean
    over the seeds, with its 95 % bootstrap interval as a bar; the front is drawn through the means.

    Args:
      rows_by_study: {study: rows}, or a flat list of rows grouped by their ``study``.
      annotate: number the front points and name their metaparameters (``trial_label``) in a key beside the
        axes; labels next to the points would overlap wherever the front is dense.
      max_labels: key lines at most (the rest are counted, not named).
      size: ``bytes`` (float32 weights), ``compressed_bytes`` or a measured latency (``SIZES``) on the x axis.
      where: keep only rows with these values (``sqzdse.results.rows.select``).

    Raises:
      BudgetMismatch: studies trained at different budgets (``check_budgets``).
      MissingSizeError: no completed trial has `size`.
    """
    check_size(size)
    groups = group_by_study(rows_by_study)
    if not any(groups.values()):
        raise InputError("no trial rows to plot")
    if where:
        picked = {id(r) for r in select([r for g in groups.values() for r in g], where)}
        groups = {k: [r for r in g if id(r) in picked] for k, g in groups.items()}
    done = [r for g in groups.values() for r in completed(g, metric)[0]]
    selected = selection_note(where, check_budgets(done))
    require_size(done, size)
    fig = new_figure(11.5 if annotate else 7.5, 5.8)
    if annotate:
        ax, kax = fig.subplots(1, 2, width_ratios=[2.1, 1])
        kax.set_axis_off()
    else:
        ax = fig.add_subplot()
    n_kept, skipped_all, fronts, seeded_any = 0, Counter(), [], False
    for i, (name, rows) in enumerate(groups.items()):
        kept, skipped = completed(rows, metric)
        sized = designs([r for r in kept if size_of(r, size) is not None], metric)
        n_sized = sum(len(d.trials) for d in sized)
        skipped[f"no {size}"] += len(kept) - n_sized
        skipped_all.update(skipped)
        n_kept += n_sized
        if not sized:
            continue
        color = f"C{i % 10}"
        x = np.array([d.size(size) for d in sized])
        y = np.array([d.interval.estimate for d in sized])
        front = pareto_front(np.column_stack([y, x]))
        count = f"{n_sized} trials" if n_sized == len(sized) else f"{len(sized)} designs, {n_sized} trials"
        ax.scatter(x, y, s=22, color=color, alpha=0.45, lw=0, label=f"{name}: {count}", gid=f"trials:{name}")
        seeded = [k for k, d in enumerate(sized) if d.interval.n >= 2]
        if seeded:  # a design trained with several seeds: its mean, and the interval of that mean
            seeded_any = True
            low = np.array([sized[k].interval.low for k in seeded])
            high = np.array([sized[k].interval.high for k in seeded])
            ax.errorbar(x[seeded], y[seeded], yerr=[y[seeded] - low, high - y[seeded]], fmt="none", ecolor=color,
                        alpha=0.55, lw=0.9, capsize=2, gid=f"interval:{name}")  # fmt: skip
        ax.step(
            x[front],
            y[front],
            where="post",
            color=color,
            lw=1.6,
            label=f"{name}: Pareto front ({len(front)})",
            gid=f"front:{name}",
        )
        ax.scatter(x[front], y[front], s=40, facecolor=color, edgecolor="k", lw=0.8, zorder=3)
        fronts.append((name, color, [(sized[k].first, x[k], y[k]) for k in front]))
    if n_kept == 0:
        why = ", ".join(f"{n} {s}" for s, n in skipped_all.most_common() if n > 0)
        raise InputError(f"no completed trials with {metric} and {size} ({why})")
    ax.set_xscale("log")
    ax.margins(x=0.08, y=0.1)
    log_ticks(ax)
    ax.set_xlabel(size_label(size, "log scale"))
    ax.set_ylabel(metric_label(metric))
    ax.grid(alpha=0.3, which="both")
    _legend_below(fig, ax.get_legend_handles_labels()[0], ncols=min(4, 2 * len(fronts)))
    note = count_note(n_kept, skipped_all) + "; on a front: no design of its study is both smaller and more accurate"
    if seeded_any:
        note += "; a point: a design's mean over its seeds, bars: its 95 % bootstrap interval"
    if selected:
        note += "\n" + selected
    versus = "latency" if size.startswith("latency_") else "model size"
    titles(fig, ax, f"Accuracy vs {versus}: {study_names([{'study': s} for s in groups])}", note, width=90)
    if annotate:
        _front_key(fig, ax, kax, fronts, metric, max_labels, size_unit(size))
    return fig


def _front_key(fig, ax, kax, fronts, metric: str, max_labels: int, unit: str) -> None:
    """Number the front points on `ax`; list number, metaparameters, size and accuracy on `kax`."""
    line_pt, n, lines, at = 10.5, 0, [], Counter()
    for name, color, pts in fronts:
        lines.append((f"{name}: Pareto front, smallest first", color, "bold", None))
        for row, x, y in pts:
            n += 1
            # The same design on two studies' fronts: stack the numbers, or "4" over "11" reads as "14".
            stack = at[(float(x), float(y))]
            at[(float(x), float(y))] += 1
            ax.annotate(
                str(n),
                (x, y),
                xytext=(-4, 4 + 9 * stack),
                textcoords="offset points",
                ha="right",
                va="bottom",
                fontsize=7,
                color=color,
                fontweight="bold",
                gid=f"num:{name}:{row.get('number')}",
            )
            text = f"{n:>2} {trial_label(row)}  {x:.2f} {unit} {y:.1f}%"
            lines.append((text, color, "normal", f"label:{name}:{row.get('number')}"))
    shown = lines[:max_labels]
    if len(lines) > max_labels:
        shown.append((f"... {len(lines) - max_labels} more lines not shown", "0.3", "normal", None))
    kax.set_title(f"key: n  metaparameters  size  {metric}", fontsize=8.5, loc="left", color="0.35")
    for i, (text, color, weight, gid) in enumerate(shown):
        kax.annotate(
            text,
            (0, 1),
            xycoords="axes fraction",
            xytext=(0, -i * line_pt),
            textcoords="offset points",
            va="top",
            ha="left",
            fontsize=7,
            family="monospace",
            color=color,
            fontweight=weight,
            gid=gid,
        )


def plot_edf(
    rows: Sequence[dict],
    by: str = "study",
    normalize: bool = False,
    metric: str = "val_top1",
    bins: int = 10,
    size: str = "bytes",
    where: Mapping | None = None,
) -> Figure:
    """Error EDFs (Radosavovic et al. 2019): one curve per study or per value of a metaparameter.

    Args:
      by: ``study`` or a metaparameter column (``bypass``, ``sr``, ``pct3x3``, ...).
      normalize: weight models so every curve has the same distribution of model size (``size_weights``), the
        size being ``bytes`` or ``compressed_bytes``.
      where: keep only rows with these values (``sqzdse.results.rows.select``).
    """
    check_size(size)
    if by not in BY_CHOICES:
        raise ValueError(f"plot_edf: by={by!r}; choose one of {', '.join(BY_CHOICES)}")
    kept, skipped, selected = plotted(rows, metric, where)
    if normalize:
        require_size(kept, size)
        sized = [r for r in kept if size_of(r, size) is not None]
        skipped[f"no {size}"] += len(kept) - len(sized)
        kept = sized
        if not kept:
            raise InputError(f"normalize: no completed trial has {size}")
    if by != "study":  # one study is one curve by design; one value of a metaparameter says nothing about it
        require_varied(kept, by, f"an EDF per {by}")
    groups = defaultdict(list)
    for r in kept:
        groups[r.get(by)].append(r)
    keys = sorted(groups, key=group_sort_key)
    errors = {k: np.array([100.0 * (1.0 - r[metric]) for r in groups[k]]) for k in keys}
    weights = {k: None for k in keys}
    if normalize:
        sizes = [size_of(r, size) for k in keys for r in groups[k]]
        names = [group_name(by, k) for k in keys for _ in groups[k]]
        w = size_weights(sizes, names, bins=bins)
        split = np.cumsum([len(groups[k]) for k in keys])[:-1]
        weights = dict(zip(keys, np.split(w, split), strict=True))
    fig = new_figure(7.5, 5.2)
    ax = fig.add_subplot()
    used = {k: np.ones(len(errors[k]), bool) if weights[k] is None else weights[k] > 0 for k in keys}
    lo = min(errors[k][used[k]].min() for k in keys)
    hi = max(errors[k][used[k]].max() for k in keys)
    for i, k in enumerate(keys):
        e, w = errors[k], np.full(len(errors[k]), 1.0) if weights[k] is None else weights[k]
        x, y = edf(e, w)
        name = group_name(by, k)
        label = f"{name}: {int((w > 0).sum())} | {e[w > 0].min():.1f} | {np.average(e, weights=w):.1f}"
        # (lo, 0) and (hi, 1) close the steps so every curve spans the same error range.
        ax.step(
            np.r_[lo, x, hi],
            np.r_[0.0, y, 1.0],
            where="post",
            color=f"C{i % 10}",
            lw=1.6,
            label=label,
            gid=f"edf:{name}",
        )
        grid = np.linspace(lo, hi, 200)  # the curve's 95 % band over resampled models, where it has any
        if (w > 0).sum() > 1:
            band_lo, band_hi = stats.edf_band(e[w > 0], grid, w[w > 0])
            ax.fill_between(grid, band_lo, band_hi, step="post", color=f"C{i % 10}", alpha=0.15, lw=0,
                            gid=f"band:{name}")  # fmt: skip
    split, k = metric.split("_")
    ax.set_xlabel(f"{'validation' if split == 'val' else split} top-{k[3:]} error (%)")
    ax.set_ylabel("cumulative share of models" + (" (size-normalised)" if normalize else ""))
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    # Below the axes: good spaces rise at the left, poor ones stay low at the right; no corner is free.
    _legend_below(fig, ax.get_legend_handles_labels()[0], ncols=min(3, len(keys)), title_fontsize=8,
                  title=f"by {by}: trials | error min | mean (%)")  # fmt: skip
    note = count_note(len(kept), skipped) + "; shaded: 95 % band over resampled models"
    note += f"\n{selected}" if selected else ""
    if normalize:
        note += f"\nnormalised: weights equalise the model-size distribution over {bins} shared log-size bins"
        dropped = len(kept) - sum(int((w > 0).sum()) for w in weights.values())
        if dropped:
            note += f"; {dropped} models outside bins shared by all curves get weight 0"
    title = f"Error EDF by {by}" + (" (size-normalised)" if normalize else "") + f": {study_names(kept)}"
    titles(fig, ax, title + " (cf. Radosavovic et al. 2019)", note, width=95)
    return fig


def plot_curves(
    rows: Sequence[dict], metric: str = "val_top1", include_pruned: bool = False, where: Mapping | None = None
) -> Figure:
    """Validation top-1 per epoch of each completed design, coloured by its final `metric`; the best one labelled.

    A design trained with several seeds is drawn as its seeds' mean curve with a 95 % bootstrap band, epoch by epoch
    (``Design.curve``); a design of one seed as its trial's curve.

    Args:
      include_pruned: also draw PRUNED trials' partial curves (grey, dashed), to see where pruning cut.
      where: keep only rows with these values (``sqzdse.results.rows.select``).
    """
    kept, skipped, selected = plotted(rows, metric, where)
    with_curve = [r for r in kept if r.get("curve")]
    skipped["no curve"] += len(kept) - len(with_curve)
    if not with_curve:
        raise InputError(f"none of the {len(kept)} completed trials has a validation curve")
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    found = designs(with_curve, metric)
    finals = np.array([d.interval.estimate for d in found])
    norm = Normalize(finals.min(), finals.max() if finals.max() > finals.min() else finals.min() + 1e-9)
    cmap = colormaps["viridis_r"]  # the best curves darkest, the most visible on white
    fig = new_figure(7.5, 4.8)
    ax = fig.add_subplot()
    pruned = [r for r in select(rows, where) if r.get("state") == "PRUNED" and r.get("curve")] if include_pruned else []
    for r in pruned:
        c = np.asarray(r["curve"]) * 100.0
        ax.plot(np.arange(1, len(c) + 1), c, "--", color="0.6", lw=0.8, alpha=0.7, gid=f"pruned:{r.get('number')}")
    best = int(np.argmax(finals))
    for i in np.argsort(finals):  # best drawn last, on top
        d, color = found[i], cmap(norm(finals[i]))
        c, low, high = d.curve()
        epochs, name = np.arange(1, len(c) + 1), f"{d.study}:{d.first.get('number')}"
        if d.interval.n >= 2:
            ax.fill_between(epochs, low, high, color=color, alpha=0.15, lw=0, gid=f"band:{name}")
        seeds = f", mean of {d.interval.n} seeds" if d.interval.n >= 2 else ""
        ax.plot(
            epochs,
            c,
            "-",
            marker="." if len(c) < 30 else None,
            color=color,
            lw=2.2 if i == best else 1.0,
            alpha=1.0 if i == best else 0.8,
            gid=f"curve:{name}",
            label=f"best: trial {d.first.get('number')} ({d.study}), {trial_label(d.first)}{seeds}"
            if i == best
            else None,
        )
    fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label=f"final {metric_label(metric)}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    # Whole epochs only: a 1-epoch curve is one point, and matplotlib would tick 0.95 .. 1.05 around it.
    longest = max(len(r["curve"]) for r in with_curve + pruned)
    seeded = sum(d.interval.n >= 2 for d in found)
    ax.set_xlim(0.5, longest + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    _legend_below(fig, ax.get_legend_handles_labels()[0])
    note = count_note(len(with_curve), skipped) + (f"\n{selected}" if selected else "")
    if seeded:
        note += f"; {seeded} designs with several seeds: their mean, shaded: its 95 % bootstrap band"
    if pruned:
        note += f"; dashed grey: {len(pruned)} PRUNED trials' partial curves"
    titles(fig, ax, f"Validation curves: {study_names(with_curve)}", note)
    return fig


def _legend_below(fig, handles, ncols: int = 1, **kw) -> None:
    """The legend below the axes, outside the data: inside, it hides the points or the curve ends it explains."""
    if handles:
        fig.legend(handles, [h.get_label() for h in handles], loc="outside lower center", ncols=ncols, fontsize=8, **kw)


def plot_importance(imp) -> Figure:
    """The metaparameters' importances (``sqzdse.results.importance.Importances``): PED-ANOVA and fANOVA side by
    side, most important (by PED-ANOVA) on top."""
    names = list(imp.ped_anova)
    y = np.arange(len(names))[::-1]
    fig = new_figure(6.5, 1.6 + 0.45 * len(names))
    ax = fig.add_subplot()
    ax.barh(y + 0.2, list(imp.ped_anova.values()), height=0.38, color="C0", label="PED-ANOVA", gid="ped_anova")
    ax.barh(y - 0.2, list(imp.fanova.values()), height=0.38, color="C1", label="fANOVA", gid="fanova")
    ax.set_yticks(y, names)
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"importance for {metric_label(imp.metric)} (each evaluator sums to 1)")
    ax.grid(alpha=0.3, axis="x")
    agree = "n/a" if imp.spearman is None else f"{imp.spearman:+.2f}"
    note = f"{imp.trials} completed trials; rank agreement of the two (Spearman): {agree}"
    titles(fig, ax, "Which metaparameter matters", note)
    _legend_below(fig, ax.get_legend_handles_labels()[0], ncols=2)
    return fig
