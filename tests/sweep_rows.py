"""A small sweep's exported rows, built by hand, shared by test_results, test_analysis and test_plots; a small
tabular benchmark's rows (test_tabular, test_search_efficiency)."""

import csv
import itertools
import json

from sqzdse.results.rows import normalize_row

SRS = (0.125, 0.25, 0.5, 1.0)
PCTS = (0.25, 0.5, 0.75)
BYPASSES = ("none", "simple", "complex")


def params(sr, pct, bypass="none"):
    # Any size that grows with SR and pct3x3 will do; complex bypass adds weights as in the paper's Table 3.
    return int(400_000 * (1 + 4 * sr) * (1 + pct) + (150_000 if bypass == "complex" else 0))


def make_row(study, number, sr=0.125, pct=0.5, bypass="none", seed=0, acc=0.9, state="COMPLETE", **extra):
    p = params(sr, pct, bypass)
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


def acc_of(sr, pct, bypass, seed):
    return round(
        0.85 + 0.04 * sr + 0.02 * pct + {"none": 0, "simple": 0.01, "complex": 0.005}[bypass] + 0.003 * seed, 4
    )


def write_csv(path, rows, drop=()):
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


def study(rows, name):
    return [r for r in rows if r["study"] == name]


def make_rows():
    """A small sweep: SR x seeds (fig3a), pct3x3 x seeds (fig3b), bypass x seeds (table3), non-completed trials."""
    out, n = [], itertools.count()
    for sr, seed in itertools.product(SRS, range(3)):
        out.append(make_row("fig3a", next(n), sr=sr, seed=seed, acc=acc_of(sr, 0.5, "none", seed)))
    out.append(make_row("fig3a", next(n), sr=0.25, seed=9, acc=0.8, state="PRUNED"))
    out.append(make_row("fig3a", next(n), sr=0.5, seed=9, acc=None, state="FAIL"))
    out.append(make_row("fig3a", next(n), sr=1.0, seed=9, acc=None, state="RUNNING"))
    n = itertools.count()
    for pct, seed in itertools.product(PCTS, range(2)):
        out.append(make_row("fig3b", next(n), sr=0.5, pct=pct, seed=seed, acc=acc_of(0.5, pct, "none", seed)))
    n = itertools.count()
    for b, seed in itertools.product(BYPASSES, range(3)):
        out.append(make_row("table3", next(n), bypass=b, seed=seed, acc=acc_of(0.125, 0.5, b, seed)))
    return [normalize_row(dict(r, dataset="fmnist")) for r in out]  # a column no figure uses


def brute_front(points):
    p = [tuple(map(float, q)) for q in points]
    return {i for i, (a, s) in enumerate(p) if not any(a2 >= a and s2 <= s and (a2 > a or s2 < s) for a2, s2 in p)}


# A tabular benchmark of 8 designs x 2 seeds, 4 epochs: accuracy rises with SR, pct3x3, complex bypass and seed.
TABLE_SRS, TABLE_PCTS, TABLE_BYPASSES = (0.25, 0.5), (0.25, 0.75), ("none", "complex")


def table_rows(seeds=(0, 1)):
    rows, n = [], 0
    for (sr, pct, bypass), seed in itertools.product(itertools.product(TABLE_SRS, TABLE_PCTS, TABLE_BYPASSES), seeds):
        acc = 0.8 + 0.1 * sr + 0.02 * pct + (0.01 if bypass == "complex" else 0) + 0.005 * seed
        rows.append(make_row("tabular", n, sr, pct, bypass, seed, acc, epoch_seconds=[3.0, 1.0, 1.0, 1.0 + sr]))
        n += 1
    return rows
