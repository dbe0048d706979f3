"""Runs of one network in one process: the first traces and compiles its steps, the later ones reuse them.

Trains the test suite's 16x16 model (``tests/test_train.py``'s ``tiny()``: squeezenet_small, base_e=incr_e=16,
sr=0.25, 4 classes) for one epoch of 192 synthetic images, ``--runs`` times with seeds 0, 1, ..., in one process
and without a persistent compilation cache, and prints one JSON line per run: its wall seconds and the seconds
JAX spent tracing, lowering and compiling in it. Then seed 0 once more in a workdir, with a checkpoint every 5 of
its 10 updates; the last checkpoint and the summary are deleted, as if the run had been killed after update 5, and
the same run resumes from its checkpoint (``"run": "resumed"``).

    python benchmarks/rerun_compile.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np

from sqzdse.data import pipeline as D
from sqzdse.model import config as C
from sqzdse.train import loop as T


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    cfg = C.squeezenet_small(base_e=16, incr_e=16, sr=0.25, input_shape=(16, 16, 1), num_classes=4)
    rng = np.random.default_rng(0)
    split = lambda n: (rng.integers(0, 255, (n, 16, 16, 1)).astype(np.uint8), rng.integers(0, 4, n))  # noqa: E731
    ds = D.from_arrays("synthetic", split(192), split(64), num_classes=4, val_size=32, flip=False)

    def timed(run, tc, workdir=None):
        with T.compile_timer() as compiled:
            t = time.perf_counter()
            result = T.train_and_evaluate(cfg, tc, workdir, dataset=ds, progress=False)
            wall = time.perf_counter() - t
        print(json.dumps({"run": run, "seconds": round(wall, 2), "compile_seconds": round(compiled[0], 2)}))
        return result

    for seed in range(args.runs):
        timed(seed, T.TrainConfig(batch_size=16, epochs=1, warmup_epochs=0, init="msra", seed=seed))
    with tempfile.TemporaryDirectory() as workdir:
        tc = T.TrainConfig(batch_size=16, epochs=1, warmup_epochs=0, init="msra", checkpoint_every=5)
        T.train_and_evaluate(cfg, tc, workdir, dataset=ds, progress=False)
        shutil.rmtree(os.path.join(workdir, "checkpoints", "10"))
        os.remove(os.path.join(workdir, "summary.json"))
        assert timed("resumed", tc, workdir).resumed_at == 5


if __name__ == "__main__":
    main()
