"""Interleaved A/B of JAX training-step variants: versions of the package, XLA flags or dtypes.

Each variant is one worker process of ``train_throughput.py`` (``--worker jax``); the rounds
alternate their order, as the main benchmark does, so that a shared machine's drift hits all
variants alike. A variant is ``LABEL`` or ``LABEL:KEY=VALUE,...`` with keys

  src    a checkout whose ``sqzdse`` package (and benchmark worker) to run instead of the
         installed one (e.g. ``git worktree add /tmp/old HEAD~1`` and ``src=/tmp/old``)
  xla    extra ``XLA_FLAGS`` (``configure_cpu`` never overrides a flag given there)
  dtype  ``float32`` or ``bfloat16``

    python benchmarks/ab_variants.py --inputs 28x28x1 --rounds 8 \\
        old:src=/tmp/old,dtype=bfloat16 new:dtype=bfloat16

prints one JSON line per variant: training images/s (median over all timed steps, spread of the
per-round medians) and first-step compile seconds (measured with no other worker running).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_throughput import Proc, summarize  # noqa: E402

# Imports sqzdse from $SQZDSE_AB_SRC when set: put that directory ahead of the installed package
# (an editable install's finder would otherwise win over sys.path), then run the benchmark's worker.
LAUNCH = """
import os, runpy, sys
src = os.environ.get("SQZDSE_AB_SRC")
if src:
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, src)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def parse_variant(spec: str) -> tuple[str, dict]:
    label, _, rest = spec.partition(":")
    opts = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
    unknown = set(opts) - {"src", "xla", "dtype"}
    if unknown or not label:
        raise SystemExit(f"ab_variants: bad variant {spec!r} (LABEL or LABEL:src=DIR,xla=FLAGS,dtype=D)")
    return label, opts


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("variants", nargs="+", help="LABEL[:src=DIR,xla=FLAGS,dtype=float32|bfloat16]")
    p.add_argument("--inputs", default="28x28x1", help="HxWxC (default 28x28x1)")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant per round")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    bench = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_throughput.py")
    workers = []
    for label, opts in map(parse_variant, args.variants):  # one at a time: compile times on an idle machine
        env, worker = dict(os.environ), bench
        if "src" in opts:
            env["SQZDSE_AB_SRC"] = os.path.abspath(opts["src"])
            own = os.path.join(opts["src"], "benchmarks", "train_throughput.py")
            worker = own if os.path.exists(own) else bench  # that checkout's worker fits its package
        if "xla" in opts:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + opts["xla"]).strip()
        cmd = [sys.executable, "-c", LAUNCH, worker, "--inputs", args.inputs, "--batch", str(args.batch)]
        cmd += ["--threads", str(args.threads), "--dtype", opts.get("dtype", "float32"), "--worker", "jax"]
        proc = Proc(label, cmd, env=env)
        workers.append((label, opts, proc, proc.ask(), []))
    for r in range(args.rounds):
        for _, _, proc, _, times in workers if r % 2 == 0 else workers[::-1]:
            times.append(proc.ask(f"train {args.steps}")["times"])
    for label, opts, proc, info, times in workers:
        proc.ask("quit")
        proc.p.wait()
        row = dict(variant=label, **opts, train=summarize(times, args.batch), compile_s=round(info["compile_s"], 2))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
