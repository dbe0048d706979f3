"""Plots and reports read a sweep's exported rows and show what is in them: checked against hand computations."""

import argparse
import csv
import itertools
import json
import random
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from sqzdse import plots as P
from sqzdse import report as R

SRS = (0.125, 0.25, 0.5, 1.0)
PCTS = (0.25, 0.5, 0.75)
BYPASSES = ("none", "simple", "complex")


def _params(sr, pct, bypass="none"):
    # Any size that grows with SR and pct3x3 will do; complex bypass adds weights as in the paper's Table 3.
    return int(400_000 * (1 + 4 * sr) * (1 + pct) + (150_000 if bypass == "complex" else 0))


def _row(study, number, sr=0.125, pct=0.5, bypass="none", seed=0, acc=0.9, state="COMPLETE", **extra):
    p = _params(sr, pct, bypass)
    done = state == "COMPLETE" and acc is not None
    curve = [round(acc - 0.1 / (t + 1), 4) for t in range(4)] if acc is not None else None
    row = dict(
        study=study,
        number=number,
        state=state,
        base_e=128,
        incr_e=128,
        freq=2,
        pct3x3=pct,
        sr=sr,
        bypass=bypass,
        seed=seed,
        params=p,
        bytes=4 * p,
        macs=100 * p,
        val_top1=acc if done else None,
        val_top5=min(1.0, acc + 0.05) if done else None,
        test_top1=acc - 0.01 if done else None,
        test_top5=None,
        curve=curve,
        train_seconds=12.5,
        compile_seconds=3.0,
        status={"COMPLETE": "completed", "PRUNED": "pruned"}.get(state, "failed"),
        reason="" if state != "FAIL" else "training loss became nan | at update 7",
        version="0.1.0",
    )
    row.update(extra)
    return row


def _acc(sr, pct, bypass, seed):
    return round(
        0.85 + 0.04 * sr + 0.02 * pct + {"none": 0, "simple": 0.01, "complex": 0.005}[bypass] + 0.003 * seed, 4
    )


@pytest.fixture(scope="module")
def rows():
    """A small sweep: SR x seeds (fig3a), pct3x3 x seeds (fig3b), bypass x seeds (table3), non-completed trials."""
    out, n = [], itertools.count()
    for sr, seed in itertools.product(SRS, range(3)):
        out.append(_row("fig3a", next(n), sr=sr, seed=seed, acc=_acc(sr, 0.5, "none", seed)))
    out.append(_row("fig3a", next(n), sr=0.25, seed=9, acc=0.8, state="PRUNED"))
    out.append(_row("fig3a", next(n), sr=0.5, seed=9, acc=None, state="FAIL"))
    out.append(_row("fig3a", next(n), sr=1.0, seed=9, acc=None, state="RUNNING"))
    n = itertools.count()
    for pct, seed in itertools.product(PCTS, range(2)):
        out.append(_row("fig3b", next(n), sr=0.5, pct=pct, seed=seed, acc=_acc(0.5, pct, "none", seed)))
    n = itertools.count()
    for b, seed in itertools.product(BYPASSES, range(3)):
        out.append(_row("table3", next(n), bypass=b, seed=seed, acc=_acc(0.125, 0.5, b, seed)))
    return [P.normalize_row(dict(r, dataset="fmnist")) for r in out]  # an extra column


def _write_csv(path, rows, drop=()):
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in drop]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    k: json.dumps(r[k]) if isinstance(r.get(k), list) else ("" if r.get(k) is None else r[k])
                    for k in keys
                }
            )
    return path


@pytest.fixture(scope="module")
def files(rows, tmp_path_factory):
    d = tmp_path_factory.mktemp("results")
    (d / "results.json").write_text(json.dumps(rows))
    return {"csv": _write_csv(d / "results.csv", rows), "json": d / "results.json", "dir": d}


def _study(rows, name):
    return [r for r in rows if r["study"] == name]


# --------------------------------------------------------------------------- loading


def test_csv_and_json_load_to_the_same_typed_rows(rows, files):
    from_csv, from_json = P.load_rows(files["csv"]), P.load_rows(files["json"])
    assert from_csv == from_json == rows
    r = from_csv[0]
    assert isinstance(r["params"], int) and isinstance(r["number"], int) and isinstance(r["sr"], float)
    assert isinstance(r["curve"], list) and all(isinstance(v, float) for v in r["curve"])
    assert r["test_top5"] is None and r["reason"] is None  # empty cells
    assert r["dataset"] == "fmnist"  # an extra column is kept, not required
    failed = next(x for x in from_csv if x["state"] == "FAIL")
    assert failed["val_top1"] is None and "nan" in failed["reason"]


def test_missing_columns_unknown_columns_and_several_sources(rows, files):
    d = files["dir"]
    _write_csv(d / "slim.csv", [dict(r, study="slim", compressed_bytes=123) for r in rows[:3]], drop=("macs", "curve"))
    got = P.load_rows([files["json"], d / "slim.csv"])
    assert len(got) == len(rows) + 3
    slim = _study(got, "slim")
    assert [r["macs"] for r in slim] == [None] * 3 and slim[0]["curve"] is None and slim[0]["compressed_bytes"] == 123
    assert {r["study"] for r in got} == {"fig3a", "fig3b", "table3", "slim"}  # rows keep their study
    assert {r["study"] for r in P.load_rows(files["csv"], d / "slim.csv", study="slim")} == {"slim"}
    # A file row without a study is named after its file.
    (d / "nostudy.json").write_text(json.dumps([{k: v for k, v in rows[0].items() if k != "study"}]))
    assert P.load_rows(d / "nostudy.json")[0]["study"] == "nostudy"


def test_storage_urls_go_through_sweep_export_rows(rows, monkeypatch):
    calls = []

    def export_rows(storage_url, study_name=None):
        calls.append((storage_url, study_name))
        return [dict(r, curve=json.dumps(r["curve"]), params=str(r["params"])) for r in rows[:2]]

    monkeypatch.setitem(sys.modules, "sqzdse.sweep", types.SimpleNamespace(export_rows=export_rows))
    got = P.load_rows("sqlite:///runs/x.db", "postgresql://u@h/db", study="fig3a")
    assert calls == [("sqlite:///runs/x.db", "fig3a"), ("postgresql://u@h/db", "fig3a")]
    assert got == rows[:2] + rows[:2]


@pytest.mark.parametrize(
    "content, message",
    [
        ("study,number,state\n", "no trial rows"),
        ("[]", "no trial rows"),
        ('{"rows": []}', "expected a JSON list"),
        ("study,number,state,params\nx,1,COMPLETE,1.5\n", "column 'params'"),
    ],
)
def test_bad_sources_are_clear_errors(tmp_path, content, message):
    path = tmp_path / ("bad.json" if content.startswith(("[", "{")) else "bad.csv")
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        P.load_rows(path)
    with pytest.raises(ValueError, match="no results source"):
        P.load_rows()
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(ValueError, match="unknown results format"):
        P.load_rows(tmp_path / "x.txt")
    with pytest.raises(FileNotFoundError, match="no such results file"):
        P.load_rows(tmp_path / "missing.csv")


def test_unknown_metric_and_no_completed_trials_are_clear_errors(rows):
    with pytest.raises(ValueError, match="unknown metric 'top1'.*val_top1"):
        P.plot_sr(rows, metric="top1")
    failed = [r for r in rows if r["state"] != "COMPLETE"]
    for plot in (P.plot_sr, P.plot_pct3x3, P.plot_bypass, P.plot_edf, P.plot_curves):
        with pytest.raises(ValueError, match="no completed trials with val_top1 .*1 PRUNED, 1 FAIL, 1 RUNNING"):
            plot(failed)
    with pytest.raises(ValueError, match="no completed trials"):
        P.plot_frontier(failed)
    with pytest.raises(ValueError, match="no completed trials with test_top5"):
        P.plot_sr(rows, metric="test_top5")  # present in no row


# --------------------------------------------------------------------------- analysis


def _brute_front(points):
    p = [tuple(map(float, q)) for q in points]
    return {i for i, (a, s) in enumerate(p) if not any(a2 >= a and s2 <= s and (a2 > a or s2 < s) for a2, s2 in p)}


@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_matches_brute_force(seed):
    rng = random.Random(seed)
    # Small integer grids force ties in accuracy, in size, and exact duplicates.
    pts = [(rng.randint(0, 6), rng.randint(1, 6)) for _ in range(40)]
    front = P.pareto_front(pts)
    assert set(front) == _brute_front(pts) and len(front) == len(set(front))
    assert [pts[i][1] for i in front] == sorted(pts[i][1] for i in front)  # ordered by size


def test_pareto_front_ties_and_nonfinite():
    pts = [(0.9, 2.0), (0.9, 2.0), (0.8, 1.0), (0.9, 3.0), (0.95, 5.0), (float("nan"), 0.5), (0.7, 1.0)]
    # Both copies of (0.9, 2.0) are kept; (0.9, 3.0) is dominated by them; NaN never makes the front.
    assert P.pareto_front(pts) == [2, 0, 1, 4]
    assert P.pareto_front([]) == []


def test_edf_equals_hand_computed_shares():
    errors = [0.3, 0.1, 0.2, 0.2, 0.4]
    x, y = P.edf(errors)
    assert x.tolist() == [0.1, 0.2, 0.3, 0.4] and y.tolist() == pytest.approx([0.2, 0.6, 0.8, 1.0])
    # F(e) = share with error strictly below e (Radosavovic et al. 2019, eq. 1).
    at = [0.05, 0.1, 0.15, 0.2, 0.25, 0.4, 0.5]
    assert P.edf_at(errors, at).tolist() == pytest.approx([0, 0, 0.2, 0.2, 0.6, 0.8, 1.0])
    w = [1, 1, 2, 0, 4]  # weights normalised: 1/8 each for 0.3 and 0.1, 2/8 for one 0.2, 0 for the other, 4/8 for 0.4
    assert P.edf_at(errors, [0.15, 0.25, 0.35, 1.0], weights=w).tolist() == pytest.approx([1 / 8, 3 / 8, 4 / 8, 1])
    x, y = P.edf(errors, w)
    assert x.tolist() == [0.1, 0.2, 0.3, 0.4] and y.tolist() == pytest.approx([1 / 8, 3 / 8, 4 / 8, 1])
    with pytest.raises(ValueError, match="no errors"):
        P.edf([])


def test_size_weights_equalise_the_size_distribution():
    # Two bins in log size (1 and 2 vs 8), group "a" is 3:1 small:large, group "b" 1:2.
    sizes = [1, 1, 2, 8, 1, 8, 8]
    groups = ["a", "a", "a", "a", "b", "b", "b"]
    w = P.size_weights(sizes, groups, bins=2)
    assert w.tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 6, 1 / 2, 1 / 2, 1 / 4, 1 / 4])
    for g in "ab":  # each group: half its weight on small models, half on large
        m = np.array(groups) == g
        assert w[m].sum() == pytest.approx(1) and w[m & (np.array(sizes) < 4)].sum() == pytest.approx(0.5)
    # A bin held by one group only gets weight 0, so the other bins still match.
    w = P.size_weights([1, 8, 1, 8, 64], ["a", "a", "b", "b", "b"], bins=3)
    assert w.tolist() == pytest.approx([0.5, 0.5, 0.5, 0.5, 0])
    with pytest.raises(ValueError, match="share no model-size bin"):
        P.size_weights([1, 2, 50, 60], ["a", "a", "b", "b"], bins=4)


# --------------------------------------------------------------------------- figures


def _errorbar_xy(ax, gid):
    (c,) = [c for c in ax.containers if c.lines[0].get_gid() == gid]
    return c.lines[0].get_xdata(), c.lines[0].get_ydata(), c


def test_sr_plot_shows_per_sr_means_and_sizes(rows):
    fig = P.plot_sr(rows)  # all studies: fig3b's rows sit at SR .5, table3's at SR .125
    ax = fig.axes[0]
    x, y, c = _errorbar_xy(ax, "accuracy")
    kept = [r for r in rows if r["state"] == "COMPLETE"]
    expect = {sr: [100 * r["val_top1"] for r in kept if r["sr"] == sr] for sr in sorted({r["sr"] for r in kept})}
    assert list(x) == list(expect)
    assert list(y) == pytest.approx([np.mean(v) for v in expect.values()])
    # Error bars span min..max of the trials at each SR.
    seg = c.lines[2][0].get_segments()
    assert [(s[0][1], s[1][1]) for s in seg] == pytest.approx([(min(v), max(v)) for v in expect.values()])
    (size,) = [ln for a in fig.axes for ln in a.lines if ln.get_gid() == "size"]
    sizes = [np.mean([r["bytes"] / 2**20 for r in kept if r["sr"] == sr]) for sr in expect]
    assert list(size.get_ydata()) == pytest.approx(sizes)
    assert "MiB" in size.axes.get_ylabel()
    assert ax.get_title().startswith("27 trials plotted; 3 skipped (1 PRUNED, 1 FAIL, 1 RUNNING)")
    assert "not held fixed" in ax.get_title()  # fig3b and table3 rows vary pct3x3 and bypass


def test_pct3x3_plot_with_a_fixed_slice(rows):
    fig = P.plot_pct3x3(rows, where={"sr": 0.5, "bypass": "none"}, metric="test_top1")
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
    assert P.PAPER_LABEL in top5.get_label() and "paper" in top5.axes.get_ylabel()
    # This run's axes hold none of the paper's numbers.
    ours = [v for a in fig.axes if a not in paper_axes for v in _plotted_numbers(a)]
    assert not set(ours) & allowed_top5
    with pytest.raises(ValueError, match="sr and pct3x3 plots only"):
        P.make_plot("bypass", rows, paper=True, reference=tmp_path)


def test_paper_numbers_default_location(reference, monkeypatch):
    monkeypatch.delenv("SQZDSE_REFERENCE", raising=False)
    assert P.paper_numbers_path() == Path(P.__file__).parent / "reference" / "paper_numbers.json"  # the package's
    monkeypatch.setenv("SQZDSE_REFERENCE", str(reference))
    assert P.paper_numbers_path() == reference / "paper_numbers.json"
    monkeypatch.setenv("SQZDSE_REFERENCE", str(reference / "nowhere"))
    with pytest.raises(FileNotFoundError, match="SQZDSE_REFERENCE"):
        P.paper_numbers_path()


def test_frontier_marks_and_names_the_pareto_front(rows):
    by_study = {s: _study(rows, s) for s in ("fig3a", "fig3b", "table3")}
    fig = P.plot_frontier(by_study)
    ax = fig.axes[0]
    colours = set()
    for name, group in by_study.items():
        kept = [r for r in group if r["state"] == "COMPLETE"]
        front = _brute_front([(r["val_top1"], r["bytes"]) for r in kept])
        (step,) = [ln for ln in ax.lines if ln.get_gid() == f"front:{name}"]
        colours.add(step.get_color())
        expect = sorted((r["bytes"] / 2**20, 100 * r["val_top1"]) for i, r in enumerate(kept) if i in front)
        assert sorted(zip(step.get_xdata(), step.get_ydata(), strict=True)) == pytest.approx(expect)
        # The key names each front point's metaparameters; the points carry its number.
        keys = {t.get_gid(): t.get_text() for a in fig.axes for t in a.texts if t.get_gid()}
        for i in front:
            r = kept[i]
            assert P.trial_label(r) in keys[f"label:{name}:{r['number']}"]
            assert keys[f"num:{name}:{r['number']}"].isdigit()
        labelled = {g.split(":")[2] for g in keys if g.startswith(f"label:{name}:")}
        assert labelled == {str(kept[i]["number"]) for i in front}
    assert len(colours) == 3
    assert ax.get_xscale() == "log" and "MiB" in ax.get_xlabel()
    assert P.trial_label(dict(sr=0.25, pct3x3=0.5, base_e=128, incr_e=128, freq=2, bypass="simple")) == (
        "SR=.25 3x3=.5 e=128+128/2 simple"
    )


def test_plots_against_compressed_size(rows):
    fig3a = [dict(r, compressed_bytes=r["bytes"] // 12) for r in _study(rows, "fig3a")]
    fig3a[0]["compressed_bytes"] = None  # a trial the sweep did not compress
    assert P.size_mib(fig3a[1], "compressed_bytes") == fig3a[1]["bytes"] // 12 / 2**20
    ax = P.plot_frontier(fig3a, size="compressed_bytes").axes[0]
    (dots,) = [c for c in ax.collections if c.get_gid() == "trials:fig3a"]
    kept = [r for r in fig3a if r["state"] == "COMPLETE" and r["compressed_bytes"] is not None]
    assert sorted(dots.get_offsets()[:, 0]) == pytest.approx(sorted(r["compressed_bytes"] / 2**20 for r in kept))
    assert "compressed file" in ax.get_xlabel() and "1 no compressed_bytes" in ax.get_title()
    ax = P.make_plot("sr", fig3a, size="compressed_bytes").axes[1]
    (line,) = [ln for ln in ax.lines if ln.get_gid() == "size"]
    assert "compressed file" in ax.get_ylabel() and max(line.get_ydata()) < 4 * _params(1.0, 0.5) / 12 / 2**20 + 1e-9
    table3 = [dict(r, compressed_bytes=100_000) for r in _study(rows, "table3")]
    ticks = [t.get_text() for t in P.plot_bypass(table3, size="compressed_bytes").axes[0].get_xticklabels()]
    assert all(f"{100_000 / 2**20:.2f} MiB" in t for t in ticks)
    with pytest.raises(ValueError, match="unknown size 'kb'"):
        P.plot_frontier(fig3a, size="kb")
    args = _plot_parser().parse_args(["bypass", "x.csv", "-o", "x.png", "--size", "compressed_bytes"])
    assert args.size == "compressed_bytes"


def test_bypass_plot_is_table3(rows):
    fig = P.plot_bypass(_study(rows, "table3"))
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert [t.split("\n")[0] for t in ticks] == ["vanilla", "simple bypass", "complex bypass"]
    for b, tick in zip(BYPASSES, ticks, strict=True):
        assert f"{_params(0.125, 0.5, b) * 4 / 2**20:.2f} MiB" in tick
        x, y, _ = _errorbar_xy(ax, f"mean:{b}")
        assert y[0] == pytest.approx(np.mean([100 * _acc(0.125, 0.5, b, s) for s in range(3)]))
        (dots,) = [c for c in ax.collections if c.get_gid() == f"seeds:{b}"]
        assert sorted(dots.get_offsets()[:, 1]) == pytest.approx([100 * _acc(0.125, 0.5, b, s) for s in range(3)])


def test_edf_plot_curves_per_group(rows):
    fig = P.plot_edf(rows, by="bypass")
    ax = fig.axes[0]
    kept = [r for r in rows if r["state"] == "COMPLETE"]
    for b in BYPASSES:
        (ln,) = [ln for ln in ax.lines if ln.get_gid() == f"edf:{P.BYPASS_NAMES[b]}"]
        x, y = P.edf([100 * (1 - r["val_top1"]) for r in kept if r["bypass"] == b])
        assert list(ln.get_xdata()[1:-1]) == pytest.approx(x) and list(ln.get_ydata()[1:-1]) == pytest.approx(y)
    assert "error (%)" in ax.get_xlabel()
    # Normalised: fig3a and fig3b overlap in size, so their curves can be equalised.
    two = [r for r in rows if r["study"] in ("fig3a", "fig3b")]
    fig = P.plot_edf(two, normalize=True, bins=3)
    assert "size-normalised" in fig.axes[0].get_ylabel() and len(fig.axes[0].lines) == 2
    with pytest.raises(ValueError, match="share no model-size bin"):
        P.plot_edf(_study(rows, "fig3a"), by="sr", normalize=True)


def test_curves_plot_one_line_per_completed_trial(rows):
    fig = P.plot_curves(rows)
    lines = [ln for ln in fig.axes[0].lines if (ln.get_gid() or "").startswith("curve:")]
    kept = [r for r in rows if r["state"] == "COMPLETE"]
    assert len(lines) == len(kept)
    assert list(lines[0].get_xdata()) == [1, 2, 3, 4]
    fig = P.plot_curves(rows, include_pruned=True)
    assert sum((ln.get_gid() or "").startswith("pruned:") for ln in fig.axes[0].lines) == 1


def _plot_parser():
    p = argparse.ArgumentParser()
    P.add_plot_arguments(p)
    return p


MAGIC = {".png": b"\x89PNG", ".svg": b"<?xml", ".pdf": b"%PDF"}


@pytest.mark.parametrize(
    "argv",
    [[kind, "-o", f"{kind}.png"] for kind in P.KINDS]
    + [["frontier", "-o", "f.svg"], ["sr", "--paper", "-o", "sr.pdf"], ["edf", "--by", "bypass", "-o", "e.svg"]],
)
def test_every_kind_and_format_through_the_cli_glue(files, tmp_path, capsys, argv):
    argv = [argv[0], str(files["csv"]), str(files["json"]), *argv[1:-1], str(tmp_path / argv[-1])]
    args = _plot_parser().parse_args(argv)
    assert P.run_plot(args) == 0
    out = tmp_path / argv[-1]
    assert out.read_bytes().startswith(MAGIC[out.suffix])
    assert capsys.readouterr().out.startswith(f"wrote {out}")


def test_cli_glue_errors(files, tmp_path):
    args = _plot_parser().parse_args(["sr", str(files["csv"]), "-o", str(tmp_path / "x.jpg")])
    with pytest.raises(ValueError, match="suffix"):
        P.run_plot(args)
    args = _plot_parser().parse_args(["edf", str(files["csv"]), "-o", str(tmp_path / "x.png"), "--study", "nope"])
    with pytest.raises(ValueError, match="no rows of study nope"):
        P.run_plot(args)
    with pytest.raises(SystemExit):
        _plot_parser().parse_args(["sr", str(files["csv"]), "-o", "x.png", "--metric", "top1"])


# --------------------------------------------------------------------------- report


def _report_parser():
    p = argparse.ArgumentParser()
    R.add_report_arguments(p)
    return p


def test_markdown_report(rows, files, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "fig3a", "sampler": "grid", "space": {"sr": list(SRS)}}))
    out = tmp_path / "rep" / "fig3a.md"
    argv = [str(files["csv"]), "-o", str(out), "--study", "fig3a", "--spec", str(spec)]
    assert R.run_report(_report_parser().parse_args(argv)) == 0
    md = out.read_text()
    assert '"sampler": "grid"' in md
    fig3a = _study(rows, "fig3a")
    kept = sorted((r for r in fig3a if r["state"] == "COMPLETE"), key=lambda r: -r["val_top1"])
    # Trial table: every trial, completed ones ranked by accuracy, failures with their reason (| escaped).
    table = md[md.index("## Trials") :]
    ranked = [line.split("|")[2].strip() for line in table.splitlines() if line.startswith("| ") and "rank" not in line]
    assert ranked[: len(kept)] == [str(r["number"]) for r in kept]
    assert len(ranked) == len(fig3a) and "nan \\| at update 7" in table
    # Pareto set: the brute-force front's trials, each with its label.
    pareto = md[md.index("## Pareto") : md.index("## Figures")]
    front = _brute_front([(r["val_top1"], r["bytes"]) for r in kept])
    for i, r in enumerate(kept):
        assert (f"| fig3a | {r['number']} | {P.trial_label(r)} |" in pareto) == (i in front)
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

    code = "import sys, sqzdse.plots, sqzdse.report; print(sorted(m for m in sys.modules if m.startswith(PREFIXES)))"
    code = code.replace("PREFIXES", "('sqzdse', 'jax', 'flax', 'matplotlib')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['sqzdse', 'sqzdse.plots', 'sqzdse.report']"
