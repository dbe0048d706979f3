"""Memory and compile cost across a long sweep: N tiny trials in one worker, peak RSS after each.

A sweep worker trains trial after trial in one process; this checks that memory stays
flat (sqzdse.sweep.engine clears JAX's in-memory caches when the network changes) and that repeated
shapes do not compile again (the next seed of a network: its compiled steps are still in memory;
later: the persistent compilation cache). Prints one JSON object per trial, then a summary.
Run:  python benchmarks/sweep_memory.py --trials 32
"""

import argparse
import json
import resource
import sys
import tempfile
import time

import numpy as np

from sqzdse.data import pipeline as D
from sqzdse.sweep import engine as S
from sqzdse.sweep.spec import parse_spec


def synthetic(n=256, hw=16, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 255, (n, hw, hw, 1)).astype(np.uint8)
    y = rng.integers(0, classes, n)
    return D.from_arrays("synthetic", (x, y), (x[:64], y[:64]), num_classes=classes, val_size=32)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=32)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="sqzdse-mem-")
    # Four distinct shapes, seeds over them: later trials repeat shapes (cache hits).
    seeds = list(range(args.trials // 4))
    spec = parse_spec({
        "study": {"name": "mem", "sampler": "grid", "seeds": seeds},
        "model": {"preset": "squeezenet_small", "base_e": 16, "incr_e": 16},
        "space": {"sr": [0.25, 0.5, 0.75, 1.0]},
        "train": {"dataset": "synthetic", "epochs": 1, "batch_size": 32},
    })  # fmt: skip
    url = f"sqlite:///{work}/mem.db"
    ds = synthetic()
    rows = []
    t0 = time.perf_counter()
    for i in range(args.trials):
        S.run_worker(spec, url, runs_dir=work, dataset=ds, max_trials=1)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        last = max((r for r in S.export_rows(url, "mem") if r["state"] == "COMPLETE"), key=lambda r: r["number"])
        rows.append(
            dict(
                trial=i,
                sr=last["sr"],
                seed=last["seed"],
                peak_rss_mib=round(rss, 1),
                compile_s=round(last["compile_seconds"], 2),
                wall_s=round(time.perf_counter() - t0, 1),
            )
        )
        print(json.dumps(rows[-1]), flush=True)
    half = len(rows) // 2
    print(json.dumps({
        "trials": len(rows),
        "peak_rss_mib_after_first_quarter": rows[len(rows) // 4 - 1]["peak_rss_mib"],
        "peak_rss_mib_at_end": rows[-1]["peak_rss_mib"],
        "compile_s_first_4": [r["compile_s"] for r in rows[:4]],
        "compile_s_median_second_half": float(np.median([r["compile_s"] for r in rows[half:]])),
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
