"""Plots and reports read a sweep's exported rows and show what is in them: checked against hand computations."""

import argparse
import json
import re
import sys
from collections import defaultdict

import numpy as np
import pytest
from sweep_rows import BYPASSES, SRS, acc_of, brute_front, params, study, write_csv

from sqzdse.cli import main
from sqzdse.cli import plot as plot_cli
from sqzdse.cli import report as report_cli
from sqzdse.results import analysis, design_plots, paper_plots, stats
from sqzdse.results import figures as P
from sqzdse.results import report as R
from sqzdse.results import rows as results


def test_unknown_metric_and_no_completed_trials_are_clear_errors(rows):
    with pytest.raises(ValueError, match="unknown metric 'top1'.*val_top1"):
        paper_plots.plot_sr(rows, metric="top1")
    failed = [r for r in rows if r["state"] != "COMPLETE"]
    for plot in (
        paper_plots.plot_sr,
        paper_plots.plot_pct3x3,
        paper_plots.plot_bypass,
        design_plots.plot_edf,
        design_plots.plot_curves,
    ):
        with pytest.raises(ValueError, match="no completed trials with val_top1 .*1 PRUNED, 1 FAIL, 1 RUNNING"):
            plot(failed)
    with pytest.raises(ValueError, match="no completed trials"):
        design_plots.plot_frontier(failed)
    with pytest.raises(ValueError, match="no completed trials with test_top5"):
        paper_plots.plot_sr(rows, metric="test_top5")  # present in no row


# --------------------------------------------------------------------------- figures


def _errorbar_xy(ax, gid):
    (c,) = [c for c in ax.containers if c.lines[0].get_gid() == gid]
    return c.lines[0].get_xdata(), c.lines[0].get_ydata(), c


def test_sr_plot_shows_per_sr_means_and_sizes(rows):
    fig = paper_plots.plot_sr(rows)  # all studies: fig3b's rows sit at SR .5, table3's at SR .125
    ax = fig.axes[0]
    x, y, c = _errorbar_xy(ax, "accuracy")
    kept = [r for r in rows if r["state"] == "COMPLETE"]
    expect = {sr: [100 * r["val_top1"] for r in kept if r["sr"] == sr] for sr in sorted({r["sr"] for r in kept})}
    assert list(x) == list(expect)
    assert list(y) == pytest.approx([np.mean(v) for v in expect.values()])
    # Error bars: the 95 % bootstrap interval of each SR's mean over its trials (sqzdse.results.stats).
    seg = c.lines[2][0].get_segments()
    # Flat lists: pytest.approx compares no nested structures (pytest >= 9.1).
    assert [y for s in seg for y in (s[0][1], s[1][1])] == pytest.approx(
        [end for v in expect.values() for end in (stats.mean(v).low, stats.mean(v).high)]
    )
    assert all(min(v) <= stats.mean(v).low < stats.mean(v).high <= max(v) for v in expect.values())
    (size,) = [ln for a in fig.axes for ln in a.lines if ln.get_gid() == "size"]
    sizes = [np.mean([r["bytes"] / 2**20 for r in kept if r["sr"] == sr]) for sr in expect]
    assert list(size.get_ydata()) == pytest.approx(sizes)
    assert "MiB" in size.axes.get_ylabel()
    assert ax.get_title().startswith("27 trials plotted; 3 skipped (1 PRUNED, 1 FAIL, 1 RUNNING)")
    assert "not held fixed" in ax.get_title()  # fig3b and table3 rows vary pct3x3 and bypass


def test_pct3x3_plot_with_a_fixed_slice(rows):
    fig = paper_plots.plot_pct3x3(rows, where={"sr": 0.5, "bypass": "none"}, metric="test_top1")
    x, y, _ = _errorbar_xy(fig.axes[0], "accuracy")
    kept = [r for r in rows if r["state"] == "COMPLETE" and r["sr"] == 0.5 and r["bypass"] == "none"]
    pcts = sorted({r["pct3x3"] for r in kept})
    assert list(x) == pcts
    assert list(y) == pytest.approx([np.mean([100 * r["test_top1"] for r in kept if r["pct3x3"] == p]) for p in pcts])
    assert "test top-1 accuracy (%)" in fig.axes[0].get_ylabel()


def _plotted_numbers(ax):
    vals = [v for ln in ax.lines for v in ln.get_ydata()]
    vals += [v for c in ax.collections if hasattr(c, "get_offsets") for v in np.asarray(c.get_offsets())[:, 1]]
    vals += [float(t.get_text()) for t in ax.texts if t.get_text().replace(".", "").isdigit()]
    return vals


@pytest.mark.parametrize("kind, panel, key", [("sr", "a", "SR_sweep_pct0.5"), ("pct3x3", "b", "pct_sweep_SR0.5")])
def test_paper_overlay_draws_only_text_and_derived_numbers(rows, paper_numbers, reference, tmp_path, kind, panel, key):
    # Add a recall-tagged anchor to a copy of the reference: it must not be drawn.
    pn = json.loads(json.dumps(paper_numbers))
    pn["fig3_anchor_points_text"].append({"panel": panel, "SR": 0.25, "pct3x3": 0.25, "top5": 99.9, "prov": "recall"})
    (tmp_path / "paper_numbers.json").write_text(json.dumps(pn))
    fig = P.make_plot(kind, rows, paper=True, reference=tmp_path)
    paper_axes = [a for a in fig.axes if any((ln.get_gid() or "").startswith("paper") for ln in a.lines)]
    assert len(paper_axes) == 2  # top-5 and size, on axes of their own
    allowed_top5 = {
        a["top5"]
        for a in paper_numbers["fig3_anchor_points_text"]
        if a["panel"] == panel and a["prov"] in ("text", "derived") and isinstance(a["top5"], float)
    }
    allowed_size = {v["MiB"] for v in paper_numbers["fig3_model_sizes_derived"][key].values()}
    drawn = [v for a in paper_axes for v in _plotted_numbers(a)]
    assert drawn and set(drawn) <= allowed_top5 | allowed_size and 99.9 not in drawn
    assert allowed_top5 <= set(drawn)  # every text anchor of the panel is shown
    (top5,) = [ln for a in paper_axes for ln in a.lines if ln.get_gid() == "paper_top5"]
    assert paper_plots.PAPER_LABEL in top5.get_label() and "paper" in top5.axes.get_ylabel()
    # This run's axes hold none of the paper's numbers.
    ours = [v for a in fig.axes if a not in paper_axes for v in _plotted_numbers(a)]
    assert not set(ours) & allowed_top5
    with pytest.raises(ValueError, match="sr and pct3x3 plots only"):
        P.make_plot("bypass", rows, paper=True, reference=tmp_path)


def test_frontier_marks_and_names_the_pareto_front(rows):
    from sqzdse.results import stats

    by_study = {s: study(rows, s) for s in ("fig3a", "fig3b", "table3")}
    fig = design_plots.plot_frontier(by_study)
    ax = fig.axes[0]
    colours = set()
    for name, group in by_study.items():
        # A design is its seeds' trials: one point at their mean, the front through the means.
        seeds = defaultdict(list)
        for r in (r for r in group if r["state"] == "COMPLETE"):
            seeds[(r["sr"], r["pct3x3"], r["bypass"])].append(r)
        kept = [sorted(t, key=lambda r: r["number"]) for t in seeds.values()]
        means = [100 * np.mean([r["val_top1"] for r in t]) for t in kept]
        front = brute_front([(m, t[0]["bytes"]) for m, t in zip(means, kept, strict=True)])
        (step,) = [ln for ln in ax.lines if ln.get_gid() == f"front:{name}"]
        colours.add(step.get_color())
        expect = sorted((kept[i][0]["bytes"] / 2**20, means[i]) for i in front)
        got = sorted(zip(step.get_xdata(), step.get_ydata(), strict=True))
        assert list(np.ravel(got)) == pytest.approx(list(np.ravel(expect)))
        # Designs with several seeds carry their mean's 95 % interval as a bar.
        (bars,) = [c for c in ax.collections if c.get_gid() == f"interval:{name}"]
        segments = sorted((float(s[0][1]), float(s[1][1])) for s in bars.get_segments())
        ci = [stats.mean([100 * r["val_top1"] for r in t]) for t in kept if len(t) > 1]
        assert len(ci) > 0 and np.ravel(segments) == pytest.approx(np.ravel(sorted((c.low, c.high) for c in ci)))
        # The key names each front point's metaparameters; the points carry its number (the design's first trial).
        keys = {t.get_gid(): t.get_text() for a in fig.axes for t in a.texts if t.get_gid()}
        for i in front:
            r = kept[i][0]
            assert results.trial_label(r) in keys[f"label:{name}:{r['number']}"]
            assert keys[f"num:{name}:{r['number']}"].isdigit()
        labelled = {g.split(":")[2] for g in keys if g.startswith(f"label:{name}:")}
        assert labelled == {str(kept[i][0]["number"]) for i in front}
    assert len(colours) == 3
    assert ax.get_xscale() == "log" and "MiB" in ax.get_xlabel()
    assert results.trial_label(dict(sr=0.25, pct3x3=0.5, base_e=128, incr_e=128, freq=2, bypass="simple")) == (
        "SR=.25 3x3=.5 e=128+128/2 simple"
    )


def test_plots_against_compressed_size(rows):
    fig3a = [dict(r, compressed_bytes=r["bytes"] // 12) for r in study(rows, "fig3a")]
    fig3a[0]["compressed_bytes"] = None  # a trial the sweep did not compress
    assert results.size_of(fig3a[1], "compressed_bytes") == fig3a[1]["bytes"] // 12 / 2**20
    ax = design_plots.plot_frontier(fig3a, size="compressed_bytes").axes[0]
    (dots,) = [c for c in ax.collections if c.get_gid() == "trials:fig3a"]
    sizes = defaultdict(list)  # a design's mean over its seeds that have one
    for r in fig3a:
        if r["state"] == "COMPLETE" and r["compressed_bytes"] is not None:
            sizes[(r["sr"], r["pct3x3"], r["bypass"])].append(r["compressed_bytes"] / 2**20)
    assert sorted(dots.get_offsets()[:, 0]) == pytest.approx(sorted(np.mean(v) for v in sizes.values()))
    assert "compressed file" in ax.get_xlabel() and "1 no compressed_bytes" in ax.get_title()
    ax = P.make_plot("sr", fig3a, size="compressed_bytes").axes[1]
    (line,) = [ln for ln in ax.lines if ln.get_gid() == "size"]
    assert "compressed file" in ax.get_ylabel() and max(line.get_ydata()) < 4 * params(1.0, 0.5) / 12 / 2**20 + 1e-9
    table3 = [dict(r, compressed_bytes=100_000) for r in study(rows, "table3")]
    ticks = [t.get_text() for t in paper_plots.plot_bypass(table3, size="compressed_bytes").axes[0].get_xticklabels()]
    assert all(f"{100_000 / 2**20:.2f} MiB" in t for t in ticks)
    with pytest.raises(ValueError, match="unknown size 'kb'"):
        design_plots.plot_frontier(fig3a, size="kb")
    args = _plot_parser().parse_args(["bypass", "x.csv", "-o", "x.png", "--size", "compressed_bytes"])
    assert args.size == "compressed_bytes"


def test_bypass_plot_is_table3(rows):
    fig = paper_plots.plot_bypass(study(rows, "table3"))
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert [t.split("\n")[0] for t in ticks] == ["vanilla", "simple", "complex"]  # one vocabulary (#15)
    for b, tick in zip(BYPASSES, ticks, strict=True):
        assert f"{params(0.125, 0.5, b) * 4 / 2**20:.2f} MiB" in tick
        x, y, _ = _errorbar_xy(ax, f"mean:{b}")
        assert y[0] == pytest.approx(np.mean([100 * acc_of(0.125, 0.5, b, s) for s in range(3)]))
        (dots,) = [c for c in ax.collections if c.get_gid() == f"seeds:{b}"]
        assert sorted(dots.get_offsets()[:, 1]) == pytest.approx([100 * acc_of(0.125, 0.5, b, s) for s in range(3)])


def test_edf_plot_curves_per_group(rows):
    fig = design_plots.plot_edf(rows, by="bypass")
    ax = fig.axes[0]
    kept = [r for r in rows if r["state"] == "COMPLETE"]
    for b in BYPASSES:
        (ln,) = [ln for ln in ax.lines if ln.get_gid() == f"edf:{results.bypass_name(b)}"]
        x, y = analysis.edf([100 * (1 - r["val_top1"]) for r in kept if r["bypass"] == b])
        assert list(ln.get_xdata()[1:-1]) == pytest.approx(x) and list(ln.get_ydata()[1:-1]) == pytest.approx(y)
    assert "error (%)" in ax.get_xlabel()
    # Normalised: fig3a and fig3b overlap in size, so their curves can be equalised.
    two = [r for r in rows if r["study"] in ("fig3a", "fig3b")]
    fig = design_plots.plot_edf(two, normalize=True, bins=3)
    assert "size-normalised" in fig.axes[0].get_ylabel() and len(fig.axes[0].lines) == 2
    with pytest.raises(ValueError, match="share no model-size bin"):
        design_plots.plot_edf(study(rows, "fig3a"), by="sr", normalize=True)


def test_curves_plot_one_line_per_design_with_its_seeds_band(rows):
    fig = design_plots.plot_curves(rows)
    ax = fig.axes[0]
    lines = {ln.get_gid(): ln for ln in ax.lines if (ln.get_gid() or "").startswith("curve:")}
    seeds = defaultdict(list)
    for r in (r for r in rows if r["state"] == "COMPLETE"):
        seeds[(r["study"], r["sr"], r["pct3x3"], r["bypass"])].append(r)
    assert len(lines) == len(seeds)
    bands = {c.get_gid(): c for c in ax.collections if (c.get_gid() or "").startswith("band:")}
    several = [sorted(t, key=lambda r: r["number"]) for t in seeds.values() if len(t) > 1]
    assert several and len(bands) == len(several)
    for trials in several:  # the mean curve, and a band that holds it, within the seeds' range
        first = f"{trials[0]['study']}:{trials[0]['number']}"
        c = 100 * np.array([r["curve"] for r in trials])
        line = lines[f"curve:{first}"]
        assert list(line.get_xdata()) == [1, 2, 3, 4] and line.get_ydata() == pytest.approx(c.mean(axis=0))
        ys = bands[f"band:{first}"].get_paths()[0].vertices[:, 1]
        assert c.min() - 1e-9 <= ys.min() <= c.mean(axis=0).min() and c.mean(axis=0).max() <= ys.max() <= c.max() + 1e-9
    fig = design_plots.plot_curves(rows, include_pruned=True)
    assert sum((ln.get_gid() or "").startswith("pruned:") for ln in fig.axes[0].lines) == 1


def _plot_parser():
    p = argparse.ArgumentParser()
    plot_cli.add_commands(p.add_subparsers(dest="command"))
    return _Prefixed(p, "plot")


class _Prefixed:
    """The `sqzdse plot` parser, given argv without "plot"."""

    def __init__(self, parser, *prefix):
        self.parser, self.prefix = parser, prefix

    def parse_args(self, argv):
        return self.parser.parse_args([*self.prefix, *argv])


MAGIC = {".png": b"\x89PNG", ".svg": b"<?xml", ".pdf": b"%PDF"}


@pytest.mark.parametrize(
    "argv",
    [[kind, "-o", f"{kind}.png"] for kind in P.KINDS]
    + [["frontier", "-o", "f.svg"], ["sr", "--paper", "-o", "sr.pdf"], ["edf", "--by", "bypass", "-o", "e.svg"]],
)
def test_every_kind_and_format_through_the_cli_glue(files, tmp_path, capsys, argv):
    argv = [argv[0], str(files["csv"]), str(files["json"]), *argv[1:-1], str(tmp_path / argv[-1])]
    args = _plot_parser().parse_args(argv)
    assert plot_cli.run_plot(args) == 0
    out = tmp_path / argv[-1]
    assert out.read_bytes().startswith(MAGIC[out.suffix])
    assert capsys.readouterr().out.startswith(f"wrote {out}")


def test_cli_glue_errors(files, tmp_path):
    args = _plot_parser().parse_args(["sr", str(files["csv"]), "-o", str(tmp_path / "x.jpg")])
    with pytest.raises(ValueError, match="suffix"):
        plot_cli.run_plot(args)
    args = _plot_parser().parse_args(["edf", str(files["csv"]), "-o", str(tmp_path / "x.png"), "--study", "nope"])
    with pytest.raises(ValueError, match="no rows of study nope"):
        plot_cli.run_plot(args)
    with pytest.raises(SystemExit):
        _plot_parser().parse_args(["sr", str(files["csv"]), "-o", "x.png", "--metric", "top1"])


# --------------------------------------------------------------------------- report


def _report_parser():
    p = argparse.ArgumentParser()
    report_cli.add_commands(p.add_subparsers(dest="command"))
    return _Prefixed(p, "report")


def test_markdown_report(rows, files, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "fig3a", "sampler": "grid", "space": {"sr": list(SRS)}}))
    out = tmp_path / "rep" / "fig3a.md"
    argv = [str(files["csv"]), "-o", str(out), "--study", "fig3a", "--spec", str(spec)]
    assert report_cli.run_report(_report_parser().parse_args(argv)) == 0
    md = out.read_text()
    assert "\n- sampler: grid\n" in md and ". Trained: dataset=fmnist, 4 epochs in the curves." in md  # (#15)
    assert md.index("## Pareto") < md.index("## Figures") < md.index("## Trials") < md.index("## Spec")
    fig3a = study(rows, "fig3a")
    kept = sorted((r for r in fig3a if r["state"] == "COMPLETE"), key=lambda r: -r["val_top1"])
    # Trial table: every trial, completed ones ranked by accuracy, failures with their reason (| escaped).
    table = md[md.index("## Trials") :]
    ranked = [line.split("|")[2].strip() for line in table.splitlines() if line.startswith("| ") and "rank" not in line]
    assert ranked[: len(kept)] == [str(r["number"]) for r in kept]
    assert len(ranked) == len(fig3a) and "nan \\| at update 7" in table
    # Pareto set: the brute-force front of the designs' means over their seeds, each with its trials and label.
    pareto = md[md.index("## Pareto") : md.index("## Figures")]
    seeds = defaultdict(list)
    for r in sorted(kept, key=lambda r: r["number"]):
        seeds[(r["sr"], r["pct3x3"], r["bypass"])].append(r)
    found = list(seeds.values())
    front = brute_front([(np.mean([r["val_top1"] for r in t]), t[0]["bytes"]) for t in found])
    for i, t in enumerate(found):
        numbers = ", ".join(str(r["number"]) for r in t)
        assert (f"| fig3a | {numbers} | {results.trial_label(t[0])} |" in pareto) == (i in front)
    assert any(len(t) > 1 for t in found) and re.search(r"\| \d+\.\d \[\d+\.\d, \d+\.\d\] \|", pareto)
    images = [line[line.index("](") + 2 : -1] for line in md.splitlines() if line.startswith("![")]
    assert {"fig3a.frontier.png", "fig3a.sr.png", "fig3a.edf.png", "fig3a.curves.png"} <= set(images)
    for name in images:
        assert (out.parent / name).read_bytes().startswith(b"\x89PNG")


def test_html_report_is_self_contained(rows, tmp_path):
    out = R.write_report(rows, tmp_path / "all.html", spec={"name": "<all>"})
    page = out.read_text()
    assert page.count('src="data:image/png;base64,') >= 5 and 'src="http' not in page
    assert list(tmp_path.iterdir()) == [out]  # nothing beside it
    assert "&lt;all&gt;" in page and "<th>study</th>" in page and "Pareto set" in page
    for r in rows:
        if r["state"] == "COMPLETE":
            assert f"<td>{100 * r['val_top1']:.2f}</td>" in page


def test_report_errors(rows, tmp_path):
    with pytest.raises(ValueError, match=r"\.md .* or \.html"):
        R.write_report(rows, tmp_path / "r.txt")
    with pytest.raises(ValueError, match="no trial rows"):
        R.write_report([], tmp_path / "r.md")
    with pytest.raises(ValueError, match="unknown metric"):
        R.write_report(rows, tmp_path / "r.md", metric="acc")
    with pytest.raises(ValueError, match="no completed trials.*training loss became nan"):
        R.write_report([r for r in rows if r["state"] != "COMPLETE"], tmp_path / "r.md")


def test_plotting_imports_no_training_code():
    # STYLE rule 8: plotting never trains. Importing the modules (as the CLI does) loads neither JAX nor pyplot.
    import subprocess

    code = (
        "import sys, sqzdse.results.figures, sqzdse.results.report; "
        "print(sorted(m for m in sys.modules if m.startswith(PREFIXES)))"
    )
    code = code.replace("PREFIXES", "('sqzdse', 'jax', 'flax', 'matplotlib')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # The results stage and what it reads: the design's names and the export's columns, nothing that trains.
    results = ("analysis", "canvas", "claims", "design_plots", "figures", "paper_plots", "report", "rows", "stats")
    expect = ["sqzdse", "sqzdse.errors", "sqzdse.model", "sqzdse.model.config", "sqzdse.model.plan", "sqzdse.results"]
    expect += [f"sqzdse.results.{m}" for m in results] + ["sqzdse.sweep", "sqzdse.sweep.schema"]
    expect += ["sqzdse.train", "sqzdse.train.recipe"]  # the training settings' names and defaults: plain Python
    assert out.strip() == str(sorted(expect))


# --------------------------------------------------------------------------- figures that cannot mislead (#15)


@pytest.mark.parametrize("kind", P.KINDS)
def test_legends_sit_outside_every_data_area(rows, kind):
    fig = P.make_plot(kind, rows, by="bypass")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [*fig.legends, *(a.get_legend() for a in fig.axes if a.get_legend())]
    data_axes = [a for a in fig.axes if a.axison and (a.lines or a.collections)]
    assert data_axes
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for a in data_axes:
            assert not box.overlaps(a.get_window_extent(renderer)), f"{kind}: legend over {a.get_ylabel()!r}"
    assert kind == "bypass" or legends  # Table 3 names its groups on the axis


def test_one_epoch_curves_tick_whole_epochs(rows):
    one = [dict(r, curve=r["curve"][:1]) if r["curve"] else r for r in rows]
    fig = design_plots.plot_curves(one)
    ax = fig.axes[0]
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks == [1.0]
    ticks = [t for t in design_plots.plot_curves(rows).axes[0].get_xticks() if 0.5 <= t <= 4.5]
    assert ticks == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("kind", P.KINDS)
def test_different_budgets_are_refused_by_every_kind(rows, kind):
    one = {"bypass": "table3", "pct3x3": "fig3b"}.get(kind, "fig3a")  # a study that varies what `kind` draws
    mixed = [dict(r, budget="dataset=fmnist, epochs=1" if r["study"] == one else "dataset=fmnist, epochs=4")
             for r in rows]  # fmt: skip
    with pytest.raises(results.BudgetMismatch, match=rf"{one} \(dataset=fmnist, epochs=1\)"):
        P.make_plot(kind, mixed, by="seed")
    # One budget selected: drawn, and the note says which.
    fig = P.make_plot(kind, mixed, by="seed", where={"study": one})
    assert "trained: dataset=fmnist, epochs=1" in fig.axes[0].get_title()


@pytest.mark.parametrize("kind", P.KINDS)
def test_where_holds_values_fixed_in_every_kind(rows, kind):
    if kind in ("bypass", "pct3x3"):  # the axis itself held fixed: one category or point, refused
        with pytest.raises(results.ResultsError, match=f"all .* trials of .* have {kind}=.*would show one"):
            P.make_plot(kind, rows, by="seed", where={"bypass": "vanilla", "pct3x3": "0.5"})
        return
    fig = P.make_plot(kind, rows, by="seed", where={"bypass": "vanilla", "pct3x3": "0.5"})
    title = fig.axes[0].get_title()
    assert "selected: bypass=vanilla, pct3x3=0.5" in title
    n = sum(r["state"] == "COMPLETE" and r["bypass"] == "none" and r["pct3x3"] == 0.5 for r in rows)
    assert title.startswith(f"{n} trials plotted") or kind == "bypass" and f"{n} trials plotted" in title
    with pytest.raises(results.ResultsError, match="no rows with pct3x3=0.3"):
        P.make_plot(kind, rows, where={"pct3x3": "0.3"})


@pytest.mark.parametrize("kind", ["sr", "pct3x3", "frontier", "bypass"])
def test_a_size_no_row_has_is_an_error_not_an_empty_axis(rows, kind):
    plain = [dict(r, compressed_bytes=None) for r in rows]
    with pytest.raises(results.MissingSizeError, match="none of the 27 trials .* has compressed_bytes"):
        P.make_plot(kind, plain, size="compressed_bytes")
    with pytest.raises(results.MissingSizeError):
        design_plots.plot_edf(plain, normalize=True, size="compressed_bytes")


def test_report_leads_with_results_in_one_vocabulary(rows, tmp_path):
    spec = {"name": "<all>", "model": {"bypass": "none"}, "space": {"sr": {"low": 0.125, "high": 1.0, "step": 0.125}},
            "train": {"dataset": "fmnist", "epochs": 4, "seed": 0}, "seeds": [0, 1]}  # fmt: skip
    page = R.write_report(rows, tmp_path / "r.html", spec=spec).read_text()
    # Results first; the spec last, folded, one short line per table.
    assert page.index("Pareto set") < page.index("<figure>") < page.index("Trials (") < page.index("<details>")
    assert "<th>model</th><td>bypass=vanilla</td>" in page and "<td>sr in [0.125, 1] step 0.125</td>" in page
    assert "<td>dataset=fmnist, epochs=4</td>" in page and "<td>0, 1</td>" in page
    # One column for how a trial ended; bypass as vanilla / simple / complex, never the config's "none".
    assert "<th>outcome</th>" in page and "<th>state</th>" not in page and "<th>status</th>" not in page
    assert "<td>failed: diverged</td>" in page or "<td>failed</td>" in page
    assert "<td>none</td>" not in page and "<td>vanilla</td>" in page
    assert "Best by val_top1: trial" in page
    assert R.outcome({"state": "COMPLETE", "status": "completed"}) == "complete"
    assert R.outcome({"state": "FAIL", "status": "diverged"}) == "failed: diverged"
    assert R.outcome({"state": "RUNNING", "status": None}) == "running"


def test_report_where_and_mixed_budgets(rows, tmp_path):
    md = R.write_report(rows, tmp_path / "r.md", where={"study": "table3", "bypass": "vanilla"}).read_text()
    assert "Selected: study=table3, bypass=vanilla." in md
    trials = md[md.index("## Trials") :]
    assert "| simple |" not in trials and "| vanilla |" in trials
    mixed = [dict(r, budget="epochs=1" if r["study"] == "table3" else "epochs=4") for r in rows]
    with pytest.raises(results.BudgetMismatch, match=r"fig3a, fig3b \(epochs=4\); table3 \(epochs=1\)"):
        R.write_report(mixed, tmp_path / "m.md")  # one ranking, one Pareto set: of one budget
    assert "Trained: epochs=1." in R.write_report(mixed, tmp_path / "m.md", where={"study": "table3"}).read_text()


def test_a_figure_of_an_axis_the_data_holds_fixed_is_refused(rows, files, tmp_path, capsys):
    fig3a = [r for r in rows if r["study"] == "fig3a"]  # SR varies; pct3x3 and bypass are held fixed
    for kind, opts, column in (("pct3x3", {}, "pct3x3=0.5"), ("edf", {"by": "pct3x3"}, "pct3x3=0.5"),
                               ("bypass", {}, "bypass=vanilla")):  # fmt: skip
        with pytest.raises(results.ResultsError, match=f"all 12 trials of fig3a have {column}, so it would show one"):
            P.make_plot(kind, fig3a, **opts)
    P.make_plot("edf", fig3a, by="study")  # one study is one curve by design
    assert main(["plot", "pct3x3", str(files["csv"]), "--study", "fig3a", "-o", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err
    assert "give a study that varies pct3x3" in err and err.count("\n") == 1 and not (tmp_path / "p.png").exists()


def test_a_storage_is_given_as_to_sweep_status_or_as_a_source(rows, tmp_path, monkeypatch, capsys):
    import sqzdse.results.rows as R

    calls = []
    monkeypatch.setattr(R, "load_rows", lambda *s, study=None: calls.append(s) or rows)
    url = "sqlite:///runs/x.db"
    for argv in (["plot", "bypass", "--storage", url], ["plot", "bypass", url]):
        assert main([*argv, "--study", "table3", "-o", str(tmp_path / "b.png")]) == 0
    assert calls == [(url,), (url,)]
    assert main(["plot", "bypass", "-o", str(tmp_path / "b.png")]) == 2
    assert "no results given" in capsys.readouterr().err


def test_trials_near_chance_are_said_to_be(rows, tmp_path):
    from sweep_rows import make_row

    from sqzdse.results.rows import normalize_row

    # Six trials at 10.6-16.6 % on a 10-class dataset (chance 10 %): drawn, with a note in figure and report.
    accs = (0.106, 0.12, 0.166, 0.11, 0.13, 0.15)
    srs = (0.125, 0.25, 0.5) * 2
    low = [normalize_row(make_row("weak", i, sr=srs[i], acc=a, dataset="fashion_mnist")) for i, a in enumerate(accs)]
    fig = P.make_plot("sr", low)
    assert "every trial is below twice chance (10 % for fashion_mnist's 10 classes)" in fig.axes[0].get_title()
    R.write_report(low, tmp_path / "weak.md")
    assert "Note: every trial is below twice chance" in (tmp_path / "weak.md").read_text()
    learned = [dict(r, val_top1=0.85) for r in low]
    assert "chance" not in P.make_plot("sr", learned).axes[0].get_title()
    assert "chance" not in P.make_plot("sr", rows).axes[0].get_title()  # a dataset sqzdse does not know: no note


def test_a_sweep_figure_draws_one_line_per_value_of_by(rows, tmp_path):
    table3 = [r for r in rows if r["study"] == "table3"]
    sr_by_bypass = [dict(r, sr=sr, number=i) for i, (r, sr) in enumerate((r, sr) for r in table3 for sr in SRS)]
    fig = paper_plots.plot_sr(sr_by_bypass, series="bypass")
    ax = fig.axes[0]
    for b in BYPASSES:
        x, y, _ = _errorbar_xy(ax, f"accuracy:{b}")
        assert list(x) == list(SRS)
        acc = [[100 * r["val_top1"] for r in sr_by_bypass if r["bypass"] == b and r["sr"] == s] for s in SRS]
        expect = [np.mean(a) for a in acc]
        assert list(y) == pytest.approx(expect)
    assert "not held fixed" not in ax.get_title()  # bypass is the lines, not a mix inside each point
    assert "mixes designs: bypass" in paper_plots.plot_sr(sr_by_bypass).axes[0].get_title()
    with pytest.raises(results.ResultsError, match="one line per pct3x3: all .* have pct3x3=0.5"):
        paper_plots.plot_sr(sr_by_bypass, series="pct3x3")
    write_csv(tmp_path / "x.csv", sr_by_bypass)
    assert main(["plot", "sr", str(tmp_path / "x.csv"), "--by", "bypass", "-o", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 0


def test_latency_is_an_axis_and_machines_are_not_mixed(rows):
    fig3a = [dict(r, latency_b1_ms=r["params"] / 1e6, latency_cpu="CPU A", latency_threads=1, latency_backend="cpu")
             for r in study(rows, "fig3a")]  # fmt: skip
    ax = design_plots.plot_frontier(fig3a, size="latency_b1_ms").axes[0]
    (step,) = [ln for ln in ax.lines if ln.get_gid() == "front:fig3a"]
    assert min(step.get_xdata()) == pytest.approx(min(r["params"] for r in fig3a if r["state"] == "COMPLETE") / 1e6)
    assert "ms per image at batch 1" in ax.get_xlabel() and "latency" in fig3a_title(ax)
    other = [dict(r, latency_cpu="CPU B") if r["seed"] == 1 else r for r in fig3a]
    with pytest.raises(ValueError, match="measured on 2 machines .*CPU A, 1 threads, cpu; CPU B"):
        design_plots.plot_frontier(other, size="latency_b1_ms")
    design_plots.plot_frontier(other)  # bytes compare across machines


def fig3a_title(ax):
    return ax.figure.texts[0].get_text() if ax.figure.texts else ax.get_title()
