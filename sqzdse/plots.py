"""Figures of a sweep's results: the paper's Figure 3a/3b and Table 3, accuracy-size frontiers, error EDFs, curves.

Plotting never trains (STYLE rule 8): everything here reads exported rows, one per Optuna trial
(``sqzdse.sweep.export_rows`` or its CSV/JSON export), and draws them. Only trials in state COMPLETE with the
chosen metric present are plotted; every figure says how many were plotted and how many skipped.

Accuracies are stored as fractions and shown in percent; model size is ``bytes`` (float32 weights) in MiB,
the unit in which the paper's "4.8MB" for SqueezeNet v1.0 is 1,248,424 x 4 / 2**20 = 4.76 (paper_numbers.json),
or, with ``size="compressed_bytes"`` (``--size compressed_bytes``), the Deep-Compression file a sweep with a
``[compress]`` table recorded per trial (sqzdse.compress).

    sqzdse plot sr sweeps.csv -o sr.png --paper      # Figure 3a, this run beside the paper's anchor points
    sqzdse plot frontier a.json sqlite:///runs/b.db -o frontier.svg
    sqzdse plot edf results.csv --by bypass --normalize -o edf.pdf

matplotlib is imported when a figure is made (Agg canvas, no pyplot state), so importing this module for
its CLI arguments stays cheap.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# The export format of sqzdse.sweep, in its column order.
FIELDS = ("study", "number", "state", "base_e", "incr_e", "freq", "pct3x3", "sr", "bypass", "seed", "params", "bytes",
          "compressed_bytes", "macs", "val_top1", "val_top5", "test_top1", "test_top5", "curve", "train_seconds",
          "compile_seconds", "status", "reason", "version")  # fmt: skip
INT_FIELDS = ("number", "base_e", "incr_e", "freq", "seed", "params", "bytes", "compressed_bytes", "macs")
FLOAT_FIELDS = ("pct3x3", "sr", "val_top1", "val_top5", "test_top1", "test_top5", "train_seconds", "compile_seconds")
METRICS = ("val_top1", "val_top5", "test_top1", "test_top5")
KINDS = ("sr", "pct3x3", "frontier", "bypass", "edf", "curves")
BY_CHOICES = ("study", "sr", "pct3x3", "base_e", "incr_e", "freq", "bypass", "seed")
METAPARAMETERS = ("base_e", "incr_e", "freq", "pct3x3", "sr", "bypass")
BYPASS_ORDER = ("none", "simple", "complex")
BYPASS_NAMES = {"none": "vanilla", "simple": "simple bypass", "complex": "complex bypass"}  # Table 3's rows
FIGURE_SUFFIXES = (".png", ".svg", ".pdf")
PAPER_PROVENANCE = ("text", "derived")  # the only paper numbers a figure may show (reference/README.md)
PAPER_LABEL = "paper (ImageNet top-5)"
MIB = 2**20
# size column -> what its MiB are of (axis labels)
SIZES = {"bytes": "float32 weights", "compressed_bytes": "the compressed file"}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_AXIS = {
    "sr": ("squeeze ratio SR = s1x1 / e", "a"),
    "pct3x3": ("pct3x3 = e3x3 / e (share of 3x3 expand filters)", "b"),
}


# --------------------------------------------------------------------------- rows


def load_rows(*sources: str | os.PathLike | Sequence, study: str | Sequence[str] | None = None) -> list[dict]:
    """Trial rows from exported files and/or Optuna storages, types restored.

    Args:
      sources: ``.csv`` or ``.json`` exports of ``sqzdse.sweep``, or storage URLs (``sqlite:///runs/x.db``,
        ``postgresql://...``, read with ``sqzdse.sweep.export_rows``); lists of them are flattened.
        Rows keep their ``study`` (a file row without one gets the file's stem).
      study: keep only rows of this study (or these studies).

    Returns:
      One dict per trial with every column of ``FIELDS`` (missing ones None; empty cells None; ints and floats
      restored, NaN as None; ``curve`` a list of floats) plus any extra columns, parsed best-effort.
    """
    flat = list(_flatten(sources))
    if not flat:
        raise ValueError("no results source given (a .csv or .json export, or a storage URL)")
    wanted = None if study is None else {study} if isinstance(study, str) else set(study)
    rows = []
    for src in flat:
        got = _read_source(src, next(iter(wanted)) if wanted and len(wanted) == 1 else None)
        if not got:
            raise ValueError(f"{src}: no trial rows")
        rows.extend(got)
    if wanted is not None:
        found = sorted({str(r["study"]) for r in rows})
        rows = [r for r in rows if r["study"] in wanted]
        if not rows:
            raise ValueError(f"no rows of study {', '.join(sorted(wanted))}; the sources hold: {', '.join(found)}")
    return rows


def _flatten(sources) -> Iterable:
    for s in sources:
        if isinstance(s, (str, os.PathLike)):
            yield s
        else:
            yield from _flatten(s)


def is_storage_url(source) -> bool:
    return isinstance(source, str) and bool(_URL.match(source))


def _read_source(src, study: str | None) -> list[dict]:
    if is_storage_url(src):
        from sqzdse.sweep import export_rows  # the only tie to the sweep engine: its results store

        return [normalize_row(r, src) for r in export_rows(src, study_name=study)]
    path = Path(src)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such results file")
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
            raise ValueError(f"{path}: expected a JSON list of row objects")
    elif path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            raw = list(csv.DictReader(f))
    else:
        raise ValueError(f"{path}: unknown results format {path.suffix!r}; expected .csv, .json or a storage URL")
    out = []
    for i, r in enumerate(raw):
        try:
            out.append(normalize_row(r, path.stem))
        except ValueError as e:
            raise ValueError(f"{path}: row {i + 1}: {e}") from None
    return out


def normalize_row(raw: Mapping, default_study: str | None = None) -> dict:
    """One exported row with its types restored (CSV cells are strings; JSON ones may already be typed)."""
    row = dict.fromkeys(FIELDS)
    for key, value in raw.items():
        if key is None:  # a CSV line with more cells than the header
            continue
        key = key.strip()
        try:
            if key in INT_FIELDS:
                row[key] = _to_int(value)
            elif key in FLOAT_FIELDS:
                row[key] = _to_float(value)
            elif key == "curve":
                row[key] = _to_curve(value)
            elif key in FIELDS:
                row[key] = None if value is None or value == "" else str(value)
            else:
                row[key] = _guess(value)
        except (TypeError, ValueError):
            raise ValueError(f"column {key!r}: cannot read {value!r}") from None
    if row["state"] is not None:
        row["state"] = row["state"].upper().removeprefix("TRIALSTATE.")
    if row["study"] is None:
        row["study"] = default_study
    return row


def _to_int(v) -> int | None:
    if v is None or v == "":
        return None
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            pass
    f = float(v)
    if not math.isfinite(f):
        return None
    if not f.is_integer():
        raise ValueError(v)
    return int(f)


def _to_float(v) -> float | None:
    if v is None or v == "":
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _to_curve(v) -> list[float] | None:
    if v is None or v == "":
        return None
    if isinstance(v, str):
        v = json.loads(v)
    return [float("nan") if x is None else float(x) for x in v]


def _guess(v):
    if not isinstance(v, str):
        return v
    if v == "":
        return None
    for parse in (int, float):
        try:
            return parse(v)
        except ValueError:
            pass
    return v


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def completed(rows: Sequence[dict], metric: str = "val_top1") -> tuple[list[dict], Counter]:
    """(rows in state COMPLETE with `metric` present, why the others were skipped: state or 'no <metric>')."""
    check_metric(metric)
    kept, skipped = [], Counter()
    for r in rows:
        if r.get("state") != "COMPLETE":
            skipped[r.get("state") or "no state"] += 1
        elif r.get(metric) is None or not math.isfinite(r[metric]):
            skipped[f"no {metric}"] += 1
        else:
            kept.append(r)
    return kept, skipped


def require_completed(rows: Sequence[dict], metric: str, what: str = "") -> tuple[list[dict], Counter]:
    """``completed``, or a ValueError that says why nothing is left (states, first failure reasons)."""
    if not rows:
        raise ValueError("no trial rows to plot")
    kept, skipped = completed(rows, metric)
    if not kept:
        why = ", ".join(f"{n} {s}" for s, n in skipped.most_common())
        reasons = sorted({r["reason"] for r in rows if r.get("reason")})[:3]
        more = f"; reasons: {' | '.join(reasons)}" if reasons else ""
        raise ValueError(f"no completed trials with {metric}{what} among {len(rows)} rows ({why}){more}")
    return kept, skipped


def check_size(size: str) -> None:
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")


def size_mib(row: dict, size: str = "bytes") -> float | None:
    """Model size in MiB: of float32 weights (``bytes``; 4 x ``params`` where an export lacks bytes), or of the
    compressed file (``compressed_bytes``; None where the sweep did not compress)."""
    check_size(size)
    b = row.get(size)
    if b is None and size == "bytes" and row.get("params") is not None:
        b = 4 * row["params"]
    return None if b is None else b / MIB


def count_note(n_plotted: int, skipped: Counter) -> str:
    """'12 trials plotted; 3 skipped (2 PRUNED, 1 FAIL)'."""
    n_skipped = sum(n for n in skipped.values() if n > 0)
    why = ", ".join(f"{n} {s}" for s, n in skipped.most_common() if n > 0)
    s = "" if n_plotted == 1 else "s"
    return f"{n_plotted} trial{s} plotted; {n_skipped} skipped" + (f" ({why})" if why else "")


def _short(v) -> str:
    """0.25 -> '.25', 1.0 -> '1' (the frontier's labels must stay short)."""
    s = f"{v:g}"
    return s[1:] if s.startswith("0.") else s


def trial_label(row: dict) -> str:
    """A trial's metaparameters in one short line, e.g. 'SR=.25 3x3=.5 e=128+128/2 simple'."""
    bypass = {"none": "vanilla"}.get(row.get("bypass"), row.get("bypass") or "?")
    sr = "?" if row.get("sr") is None else _short(row["sr"])
    pct = "?" if row.get("pct3x3") is None else _short(row["pct3x3"])
    return f"SR={sr} 3x3={pct} e={row.get('base_e')}+{row.get('incr_e')}/{row.get('freq')} {bypass}"


def metric_label(metric: str) -> str:
    split, k = metric.split("_")
    return f"{'validation' if split == 'val' else split} top-{k[3:]} accuracy (%)"


# --------------------------------------------------------------------------- analysis


def pareto_front(points) -> list[int]:
    """Indices of the non-dominated points for maximise accuracy / minimise size, ordered by size.

    Args:
      points: (n, 2) array-like of (accuracy, size) pairs. A point is dominated when another is at least as
        accurate and at most as large, and strictly better in one of the two. Points equal on both count as
        the same design outcome reached twice (e.g. two seeds): neither dominates the other, so all copies are
        kept. Non-finite points are never on the front.
    """
    p = np.asarray(points, dtype=float).reshape(-1, 2)
    ok = np.flatnonzero(np.isfinite(p).all(axis=1))
    # Sweep by size ascending; within one size, the most accurate first.
    order = ok[np.lexsort((-p[ok, 0], p[ok, 1]))]
    front, best_smaller = [], -np.inf  # best accuracy among strictly smaller sizes
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and p[order[j], 1] == p[order[i], 1]:
            j += 1
        top = p[order[i], 0]
        if top > best_smaller:
            front.extend(int(k) for k in order[i:j] if p[k, 0] == top)
            best_smaller = top
        i = j
    return front


def edf(errors, weights=None) -> tuple[np.ndarray, np.ndarray]:
    """The error EDF of Radosavovic et al. 2019 (eq. 1): F(e) = sum_i w_i 1[e_i < e], weights 1/n by default.

    Returns:
      (x, y): the distinct errors, ascending, and y[k] = share of models with error <= x[k], i.e. the value of
      F on (x[k], x[k+1]]. Drawn as a step plot with ``where="post"`` starting at (x[0], 0). Models of weight 0
      (see ``size_weights``) are left out of x.
    """
    e = np.asarray(errors, dtype=float).ravel()
    w = np.full(e.shape, 1.0) if weights is None else np.asarray(weights, dtype=float).ravel()
    _check_edf_args(e, w)
    keep = w > 0
    e, w = e[keep], w[keep] / w.sum()
    order = np.argsort(e, kind="stable")
    e, cw = e[order], np.cumsum(w[order])
    x = np.unique(e)
    y = cw[np.searchsorted(e, x, side="right") - 1]
    y[-1] = 1.0  # no round-off short of 1
    return x, y


def edf_at(errors, at, weights=None) -> np.ndarray:
    """F(e) at the given errors: the (weighted) share of models with error strictly below each value of `at`."""
    e = np.asarray(errors, dtype=float).ravel()
    w = np.full(e.shape, 1.0) if weights is None else np.asarray(weights, dtype=float).ravel()
    _check_edf_args(e, w)
    at = np.asarray(at, dtype=float)
    return (w[None, :] * (e[None, :] < at.reshape(-1, 1))).sum(axis=1).reshape(at.shape) / w.sum()


def _check_edf_args(e: np.ndarray, w: np.ndarray) -> None:
    if e.size == 0:
        raise ValueError("edf: no errors given")
    if w.shape != e.shape:
        raise ValueError(f"edf: {w.size} weights for {e.size} errors")
    if not (np.isfinite(e).all() and np.isfinite(w).all()) or (w < 0).any() or w.sum() <= 0:
        raise ValueError("edf: errors and weights must be finite, weights >= 0 and not all 0")


def size_weights(sizes, groups, bins: int = 10) -> np.ndarray:
    """Per-model weights that give every group (design space) the same distribution of model size.

    Radosavovic et al. 2019, Sec. 3 "normalized comparisons": bin the complexity range into k bins and give each
    of the m_j models of bin j the weight 1/(k m_j), so that each space's weighted complexity distribution is
    uniform over the bins. Here: `bins` equal-width bins of log(size) spanning all groups together (shared
    edges); only the bins that every group occupies are used (a model in another bin gets weight 0, otherwise
    the spaces' size distributions would still differ); each model of a used bin gets 1/(models of its group in
    that bin); weights are then normalised to sum to 1 within each group, i.e. 1/(k' m_j) with k' used bins.

    Raises:
      ValueError: when no bin holds models of every group (e.g. ``by="sr"``, whose groups differ in size by
        construction).
    """
    s = np.asarray(sizes, dtype=float).ravel()
    g = np.asarray(groups, dtype=object).ravel()
    if s.shape != g.shape or s.size == 0:
        raise ValueError("size_weights: need one group per size, and at least one model")
    if not (np.isfinite(s).all() and (s > 0).all()):
        raise ValueError("size_weights: sizes must be finite and > 0")
    if bins < 1:
        raise ValueError(f"size_weights: bins={bins}: need >= 1")
    logs = np.log(s)
    lo, hi = logs.min(), logs.max()
    b = np.zeros(s.size, dtype=int) if hi == lo else np.minimum((bins * (logs - lo) / (hi - lo)).astype(int), bins - 1)
    names = list(dict.fromkeys(g.tolist()))
    masks = {name: g == name for name in names}
    shared = set.intersection(*(set(b[m].tolist()) for m in masks.values()))
    if not shared:
        raise ValueError(
            f"normalize: the groups {', '.join(map(str, names))} share no model-size bin (of {bins} log-size bins), "
            "so their size distributions cannot be equalised; compare them without --normalize"
        )
    w = np.zeros(s.size)
    for m in masks.values():
        for j in shared:
            in_bin = m & (b == j)
            w[in_bin] = 1.0 / in_bin.sum()
        w[m] /= w[m].sum()
    return w


# --------------------------------------------------------------------------- paper numbers


def paper_numbers_path(reference: str | os.PathLike | None = None) -> Path:
    """paper_numbers.json: `reference` (the file or its folder), else the bundled reference data."""
    if reference is None:
        from sqzdse import reference as R

        return R.path("paper_numbers.json")
    p = Path(reference)
    if p.is_dir():
        p = p / "paper_numbers.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: paper_numbers.json not found")
    return p


def paper_fig3(panel: str, reference: str | os.PathLike | None = None) -> dict:
    """The paper's Figure 3 numbers that may be drawn: only those tagged ``text`` or ``derived``.

    Returns:
      {"top5": [(x, top-5 %, note)], "size": [(x, MiB)]} for panel "a" (x = SR, pct3x3 = 0.5) or "b"
      (x = pct3x3, SR = 0.5): the anchor points quoted in the running text (``fig3_anchor_points_text``, numeric
      top-5 only) and the model sizes computed from the metaparameter formulas (``fig3_model_sizes_derived``).
    """
    pn = json.loads(paper_numbers_path(reference).read_text())
    key = "sr" if panel == "a" else "pct3x3"
    top5 = [
        (float(a["SR" if panel == "a" else "pct3x3"]), float(a["top5"]), a.get("note", ""))
        for a in pn["fig3_anchor_points_text"]
        if a.get("panel") == panel and a.get("prov") in PAPER_PROVENANCE and isinstance(a.get("top5"), int | float)
    ]
    sizes = pn["fig3_model_sizes_derived"]  # computed from the prototxt / formulas: provenance "derived"
    sweep = sizes["SR_sweep_pct0.5" if key == "sr" else "pct_sweep_SR0.5"]
    size = sorted((float(x), float(v["MiB"])) for x, v in sweep.items())
    return {"top5": sorted(top5), "size": size}


# --------------------------------------------------------------------------- figures


def _figure(width: float = 7.0, height: float = 4.5, **kw) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained", **kw)
    FigureCanvasAgg(fig)
    return fig


def _titles(fig: Figure, ax, title: str, note: str, width: int = 110) -> None:
    """Title over the figure; the counts and caveats as a grey subtitle, wrapped to the figure's width."""
    import textwrap

    fig.suptitle(title, fontsize=11)
    lines = [w for line in note.splitlines() for w in textwrap.wrap(line, width)]
    ax.set_title("\n".join(lines), fontsize=8.5, color="0.35")


def _filter(rows: Sequence[dict], where: Mapping | None) -> list[dict]:
    if not where:
        return list(rows)
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def _varying(rows: Sequence[dict], fixed: Sequence[str]) -> list[str]:
    return [k for k in METAPARAMETERS if k not in fixed and len({r.get(k) for r in rows}) > 1]


def _study_names(rows: Sequence[dict]) -> str:
    names = list(dict.fromkeys(str(r.get("study")) for r in rows))
    return ", ".join(names[:4]) + (f" (+{len(names) - 4} more)" if len(names) > 4 else "")


def _sweep_points(rows: Sequence[dict], param: str, metric: str, size: str = "bytes"):
    """Per value of `param`: (x, accuracies % per seed, mean size MiB)."""
    groups = defaultdict(list)
    for r in rows:
        groups[r[param]].append(r)
    out = []
    for x in sorted(groups):
        acc = np.array([100.0 * r[metric] for r in groups[x]])
        sizes = [size_mib(r, size) for r in groups[x] if size_mib(r, size) is not None]
        out.append((x, acc, float(np.mean(sizes)) if sizes else float("nan")))
    return out


def plot_sweep(
    rows: Sequence[dict],
    param: str,
    metric: str = "val_top1",
    paper: bool = False,
    reference: str | os.PathLike | None = None,
    where: Mapping | None = None,
    size: str = "bytes",
) -> Figure:
    """Accuracy (mean over trials, bars = min..max) and model size against one metaparameter (``sr`` or ``pct3x3``).

    Args:
      where: keep only rows with these values (e.g. ``{"pct3x3": 0.5}`` to hold the other axis fixed, as the
        paper does); metaparameters that still vary are named in the subtitle.
      paper: add a panel below with the paper's ImageNet numbers (``paper_fig3``), on axes of their own.
      size: ``bytes`` (float32 weights) or ``compressed_bytes`` (``SIZES``) on the right axis.
    """
    check_size(size)
    if param not in _AXIS:
        raise ValueError(f"plot_sweep: param={param!r}; choose one of {', '.join(_AXIS)}")
    xlabel, panel = _AXIS[param]
    picked = _filter(rows, where)
    if rows and not picked:
        raise ValueError(f"no rows with {where}")
    kept, skipped = require_completed(picked, metric, f" for {where}" if where else "")
    no_x = [r for r in kept if r.get(param) is None]
    if no_x:
        skipped[f"no {param}"] += len(no_x)
        kept = [r for r in kept if r.get(param) is not None]
        if not kept:
            raise ValueError(f"no completed trials with a value of {param}")
    pts = _sweep_points(kept, param, metric, size)
    xs = np.array([p[0] for p in pts], dtype=float)
    means = np.array([p[1].mean() for p in pts])
    lo = means - np.array([p[1].min() for p in pts])
    hi = np.array([p[1].max() for p in pts]) - means
    sizes = np.array([p[2] for p in pts])
    seeds = sorted({len(p[1]) for p in pts})

    fig = _figure(8.0, 7.2 if paper else 4.8)
    if paper:
        ax, axp = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    else:
        ax = fig.add_subplot()
    c_acc, c_size = "C0", "C1"
    ax.errorbar(
        xs,
        means,
        yerr=[lo, hi],
        fmt="o-",
        color=c_acc,
        capsize=4,
        lw=1.6,
        ms=6,
        label=f"this run: {metric}, mean over trials, bars min to max",
        gid="accuracy",
    )
    ax.set_ylabel(metric_label(metric), color=c_acc)
    ax.tick_params(axis="y", colors=c_acc)
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(
        xs, sizes, "s--", color=c_size, ms=5, lw=1.2, label="this run: mean model size (MiB, right axis)", gid="size"
    )
    ax2.set_ylabel(f"model size (MiB of {SIZES[size]})", color=c_size)
    ax2.tick_params(axis="y", colors=c_size)
    ax2.set_ylim(bottom=0, top=max(sizes[np.isfinite(sizes)], default=1.0) * 1.15)
    ax.set_xticks(xs, [_short(x) for x in xs])
    ax.set_xlabel(xlabel)
    per_point = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]} to {seeds[-1]}"
    note = count_note(len(kept), skipped) + f"; trials per point: {per_point}"
    vary = _varying(kept, (param, "seed"))
    fixed = {k: kept[0].get(k) for k in METAPARAMETERS if k != param and k not in vary}
    if fixed:
        note += "\nfixed: " + ", ".join(f"{k}={v}" for k, v in fixed.items())
    if vary:
        note += f"\nnot held fixed, so each point mixes designs: {', '.join(vary)}"
    name = "squeeze ratio" if param == "sr" else param
    title = f"Accuracy and model size vs {name} (cf. Iandola et al. 2016, Fig. 3{panel}): {_study_names(kept)}"
    _titles(fig, ax, title, note, width=100)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    if paper:
        handles += _paper_panel(axp, panel, reference, xlabel)
        ax.set_xlabel("")
        axp.set_xticks(sorted(set(xs) | {x for x, _ in paper_fig3(panel, reference)["size"]}))
        axp.set_xticklabels([_short(x) for x in axp.get_xticks()], fontsize=8)
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


def plot_sr(
    rows: Sequence[dict],
    metric: str = "val_top1",
    paper: bool = False,
    reference=None,
    where: Mapping | None = None,
    size: str = "bytes",
) -> Figure:
    """The paper's Figure 3a: accuracy and model size vs squeeze ratio."""
    return plot_sweep(rows, "sr", metric=metric, paper=paper, reference=reference, where=where, size=size)


def plot_pct3x3(
    rows: Sequence[dict],
    metric: str = "val_top1",
    paper: bool = False,
    reference=None,
    where: Mapping | None = None,
    size: str = "bytes",
) -> Figure:
    """The paper's Figure 3b: accuracy and model size vs the share of 3x3 expand filters."""
    return plot_sweep(rows, "pct3x3", metric=metric, paper=paper, reference=reference, where=where, size=size)


def group_by_study(rows_by_study) -> dict[str, list[dict]]:
    """{study: rows} from a mapping (kept) or a flat list of rows (grouped by their ``study``, in order)."""
    if isinstance(rows_by_study, Mapping):
        return {str(k): list(v) for k, v in rows_by_study.items()}
    groups = defaultdict(list)
    for r in rows_by_study:
        groups[str(r.get("study"))].append(r)
    return dict(groups)


def plot_frontier(
    rows_by_study, metric: str = "val_top1", annotate: bool = True, max_labels: int = 40, size: str = "bytes"
) -> Figure:
    """Accuracy vs model size (log) of every completed trial; per study the Pareto front as a step line.

    Args:
      rows_by_study: {study: rows}, or a flat list of rows grouped by their ``study``.
      annotate: number the front points and name their metaparameters (``trial_label``) in a key beside the
        axes; labels next to the points would overlap wherever the front is dense.
      max_labels: key lines at most (the rest are counted, not named).
      size: ``bytes`` (float32 weights) or ``compressed_bytes`` (``SIZES``) on the x axis.
    """
    check_size(size)
    groups = group_by_study(rows_by_study)
    if not any(groups.values()):
        raise ValueError("no trial rows to plot")
    fig = _figure(11.5 if annotate else 7.5, 5.8)
    if annotate:
        ax, kax = fig.subplots(1, 2, width_ratios=[2.1, 1])
        kax.set_axis_off()
    else:
        ax = fig.add_subplot()
    n_kept, skipped_all, fronts = 0, Counter(), []
    for i, (name, rows) in enumerate(groups.items()):
        kept, skipped = completed(rows, metric)
        sized = [r for r in kept if size_mib(r, size) is not None]
        skipped[f"no {size}"] += len(kept) - len(sized)
        skipped_all.update(skipped)
        n_kept += len(sized)
        if not sized:
            continue
        color = f"C{i % 10}"
        x = np.array([size_mib(r, size) for r in sized])
        y = np.array([100.0 * r[metric] for r in sized])
        front = pareto_front(np.column_stack([y, x]))
        ax.scatter(
            x, y, s=22, color=color, alpha=0.45, lw=0, label=f"{name}: {len(sized)} trials", gid=f"trials:{name}"
        )
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
        fronts.append((name, color, [(sized[k], x[k], y[k]) for k in front]))
    if n_kept == 0:
        why = ", ".join(f"{n} {s}" for s, n in skipped_all.most_common() if n > 0)
        raise ValueError(f"no completed trials with {metric} and {size} ({why})")
    ax.set_xscale("log")
    ax.margins(x=0.08, y=0.1)
    _log_ticks(ax)
    ax.set_xlabel(f"model size (MiB of {SIZES[size]}, log scale)")
    ax.set_ylabel(metric_label(metric))
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    note = count_note(n_kept, skipped_all) + "; on a front: no trial of its study is both smaller and more accurate"
    _titles(fig, ax, f"Accuracy vs model size: {_study_names([{'study': s} for s in groups])}", note, width=90)
    if annotate:
        _front_key(fig, ax, kax, fronts, metric, max_labels)
    return fig


def _front_key(fig, ax, kax, fronts, metric: str, max_labels: int) -> None:
    """Number the front points on `ax`; list number, metaparameters, size and accuracy on `kax`."""
    line_pt, n, lines = 10.5, 0, []
    for name, color, pts in fronts:
        lines.append((f"{name}: Pareto front, smallest first", color, "bold", None))
        for row, x, y in pts:
            n += 1
            ax.annotate(
                str(n),
                (x, y),
                xytext=(-4, 4),
                textcoords="offset points",
                ha="right",
                va="bottom",
                fontsize=7,
                color=color,
                fontweight="bold",
                gid=f"num:{name}:{row.get('number')}",
            )
            text = f"{n:>2} {trial_label(row)}  {x:.2f} MiB {y:.1f}%"
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


def _log_ticks(ax) -> None:
    """Plain-number labels on a log axis; within three decades the 2 and 5 ticks are labelled too."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = ax.get_xlim()
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    if hi / lo <= 1000:
        ax.xaxis.set_minor_locator(LogLocator(subs=(2, 5)))
        ax.xaxis.set_minor_formatter(plain)
    else:
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=8)


def plot_bypass(
    rows: Sequence[dict], metric: str = "val_top1", where: Mapping | None = None, size: str = "bytes"
) -> Figure:
    """The paper's Table 3 as a picture: vanilla / simple / complex bypass, per-seed points, mean and min-max."""
    check_size(size)
    rows = _filter(rows, where)
    kept, skipped = require_completed(rows, metric)
    groups = {b: [r for r in kept if r.get("bypass") == b] for b in BYPASS_ORDER}
    other = sorted({str(r.get("bypass")) for r in kept} - set(BYPASS_ORDER))
    for b in other:
        groups[b] = [r for r in kept if str(r.get("bypass")) == b]
    groups = {b: g for b, g in groups.items() if g}
    fig = _figure(6.5, 4.6)
    ax = fig.add_subplot()
    ticks = []
    for i, (b, g) in enumerate(groups.items()):
        g = sorted(g, key=lambda r: (r.get("seed") is None, r.get("seed") or 0, r.get("number") or 0))
        acc = np.array([100.0 * r[metric] for r in g])
        jitter = np.linspace(-0.15, 0.15, len(acc)) if len(acc) > 1 else np.zeros(1)
        ax.scatter(i + 0.12 + jitter * 0.6, acc, s=20, color=f"C{i}", alpha=0.6, lw=0, gid=f"seeds:{b}")
        m = acc.mean()
        ax.errorbar(
            [i - 0.12],
            [m],
            yerr=[[m - acc.min()], [acc.max() - m]],
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
        sizes = sorted({round(s, 2) for s in (size_mib(r, size) for r in g) if s is not None})
        size_text = (
            "size ?"
            if not sizes
            else f"{sizes[0]:.2f} MiB"
            if len(sizes) == 1
            else f"{sizes[0]:.2f}-{sizes[-1]:.2f} MiB"
        )
        ticks.append(f"{BYPASS_NAMES.get(b, b)}\n{size_text}\n{len(acc)} trial{'s' if len(acc) != 1 else ''}")
    ax.set_xticks(range(len(groups)), ticks)
    ax.set_xlim(-0.7, len(groups) - 0.3)
    ax.set_ylabel(metric_label(metric))
    ax.set_xlabel(f"macroarchitecture (Section 6); model size of {SIZES[size]}")
    ax.grid(alpha=0.3, axis="y")
    note = count_note(len(kept), skipped) + "; diamond: mean, bars: min-max, dots: one trial each"
    vary = _varying(kept, ("bypass", "seed"))
    if vary:
        note += f"\nnot held fixed: {', '.join(vary)}"
    _titles(fig, ax, f"Bypass connections (cf. Iandola et al. 2016, Table 3): {_study_names(kept)}", note)
    return fig


def plot_edf(
    rows: Sequence[dict],
    by: str = "study",
    normalize: bool = False,
    metric: str = "val_top1",
    bins: int = 10,
    size: str = "bytes",
) -> Figure:
    """Error EDFs (Radosavovic et al. 2019): one curve per study or per value of a metaparameter.

    Args:
      by: ``study`` or a metaparameter column (``bypass``, ``sr``, ``pct3x3``, ...).
      normalize: weight models so every curve has the same distribution of model size (``size_weights``), the
        size being ``bytes`` or ``compressed_bytes``.
    """
    check_size(size)
    if by not in BY_CHOICES:
        raise ValueError(f"plot_edf: by={by!r}; choose one of {', '.join(BY_CHOICES)}")
    kept, skipped = require_completed(rows, metric)
    if normalize:
        sized = [r for r in kept if size_mib(r, size) is not None]
        skipped[f"no {size}"] += len(kept) - len(sized)
        kept = sized
        if not kept:
            raise ValueError(f"normalize: no completed trial has {size}")
    groups = defaultdict(list)
    for r in kept:
        groups[r.get(by)].append(r)
    keys = sorted(groups, key=_sort_key)
    errors = {k: np.array([100.0 * (1.0 - r[metric]) for r in groups[k]]) for k in keys}
    weights = {k: None for k in keys}
    if normalize:
        sizes = [size_mib(r, size) for k in keys for r in groups[k]]
        names = [_group_name(by, k) for k in keys for _ in groups[k]]
        w = size_weights(sizes, names, bins=bins)
        split = np.cumsum([len(groups[k]) for k in keys])[:-1]
        weights = dict(zip(keys, np.split(w, split), strict=True))
    fig = _figure(7.5, 5.2)
    ax = fig.add_subplot()
    used = {k: np.ones(len(errors[k]), bool) if weights[k] is None else weights[k] > 0 for k in keys}
    lo = min(errors[k][used[k]].min() for k in keys)
    hi = max(errors[k][used[k]].max() for k in keys)
    for i, k in enumerate(keys):
        e, w = errors[k], np.full(len(errors[k]), 1.0) if weights[k] is None else weights[k]
        x, y = edf(e, w)
        name = _group_name(by, k)
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
    split, k = metric.split("_")
    ax.set_xlabel(f"{'validation' if split == 'val' else split} top-{k[3:]} error (%)")
    ax.set_ylabel("cumulative share of models" + (" (size-normalised)" if normalize else ""))
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    # Below the axes: good spaces rise at the left, poor ones stay low at the right; no corner is free.
    fig.legend(loc="outside lower center", ncols=min(3, len(keys)), fontsize=8, title_fontsize=8,
               title=f"by {by}: trials | error min | mean (%)")  # fmt: skip
    note = count_note(len(kept), skipped)
    if normalize:
        note += f"\nnormalised: weights equalise the model-size distribution over {bins} shared log-size bins"
        dropped = len(kept) - sum(int((w > 0).sum()) for w in weights.values())
        if dropped:
            note += f"; {dropped} models outside bins shared by all curves get weight 0"
    title = f"Error EDF by {by}" + (" (size-normalised)" if normalize else "") + f": {_study_names(kept)}"
    _titles(fig, ax, title + " (cf. Radosavovic et al. 2019)", note, width=95)
    return fig


def _sort_key(k):
    if k is None:
        return (2, 0, "")
    if k in BYPASS_ORDER:
        return (0, BYPASS_ORDER.index(k), "")
    return (1, k, "") if isinstance(k, int | float) else (1, 0, str(k))


def _group_name(by: str, k) -> str:
    if by == "study":
        return str(k)
    if by == "bypass":
        return BYPASS_NAMES.get(k, str(k))
    return f"{by}={_short(k) if isinstance(k, float) else k}"


def plot_curves(rows: Sequence[dict], metric: str = "val_top1", include_pruned: bool = False) -> Figure:
    """Per-trial validation top-1 per epoch, coloured by the trial's final `metric`; the best trial labelled.

    Args:
      include_pruned: also draw PRUNED trials' partial curves (grey, dashed), to see where pruning cut.
    """
    kept, skipped = require_completed(rows, metric)
    with_curve = [r for r in kept if r.get("curve")]
    skipped["no curve"] += len(kept) - len(with_curve)
    if not with_curve:
        raise ValueError(f"none of the {len(kept)} completed trials has a validation curve")
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    finals = np.array([100.0 * r[metric] for r in with_curve])
    norm = Normalize(finals.min(), finals.max() if finals.max() > finals.min() else finals.min() + 1e-9)
    cmap = colormaps["viridis_r"]  # the best curves darkest, the most visible on white
    fig = _figure(7.5, 4.8)
    ax = fig.add_subplot()
    pruned = [r for r in rows if r.get("state") == "PRUNED" and r.get("curve")] if include_pruned else []
    for r in pruned:
        c = np.asarray(r["curve"]) * 100.0
        ax.plot(np.arange(1, len(c) + 1), c, "--", color="0.6", lw=0.8, alpha=0.7, gid=f"pruned:{r.get('number')}")
    best = int(np.argmax(finals))
    for i in np.argsort(finals):  # best drawn last, on top
        r = with_curve[i]
        c = np.asarray(r["curve"]) * 100.0
        ax.plot(
            np.arange(1, len(c) + 1),
            c,
            "-",
            marker="." if len(c) < 30 else None,
            color=cmap(norm(finals[i])),
            lw=2.2 if i == best else 1.0,
            alpha=1.0 if i == best else 0.8,
            gid=f"curve:{r.get('number')}",
            label=f"best: trial {r.get('number')} ({r.get('study')}), {trial_label(r)}" if i == best else None,
        )
    fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label=f"final {metric_label(metric)}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    note = count_note(len(with_curve), skipped)
    if pruned:
        note += f"; dashed grey: {len(pruned)} PRUNED trials' partial curves"
    _titles(fig, ax, f"Validation curves: {_study_names(with_curve)}", note)
    return fig


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
) -> Figure:
    """The figure of one KIND (``KINDS``) from rows; options that do not apply to the kind are ignored, except
    ``paper``, which only ``sr`` and ``pct3x3`` can draw. `size` (``SIZES``) is the model size shown."""
    check_metric(metric)
    check_size(size)
    if kind not in KINDS:
        raise ValueError(f"unknown plot kind {kind!r}; choose one of {', '.join(KINDS)}")
    if paper and kind not in ("sr", "pct3x3"):
        raise ValueError(f"--paper: the paper's anchor points exist for sr and pct3x3 plots only, not {kind}")
    if kind in ("sr", "pct3x3"):
        return plot_sweep(rows, kind, metric=metric, paper=paper, reference=reference, size=size)
    if kind == "frontier":
        return plot_frontier(rows, metric=metric, size=size)
    if kind == "bypass":
        return plot_bypass(rows, metric=metric, size=size)
    if kind == "edf":
        return plot_edf(rows, by=by, normalize=normalize, metric=metric, bins=bins, size=size)
    return plot_curves(rows, metric=metric)


def check_figure_path(out: str | os.PathLike) -> Path:
    path = Path(out)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(f"{path}: the figure's format comes from its suffix; use one of {', '.join(FIGURE_SUFFIXES)}")
    return path


def save_figure(fig: Figure, out: str | os.PathLike, dpi: int = 150) -> Path:
    """Write `fig` as PNG, SVG or PDF, by the suffix of `out` (folders created)."""
    path = check_figure_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, metadata={"Date": None} if path.suffix.lower() in (".svg", ".pdf") else None)
    return path


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
