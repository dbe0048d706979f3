"""GFLOP/s of the matrix products a SqueezeNet conv runs in ``sqzdse.model.ops``, float32 against bfloat16 operands.

For each (cout, K, P) -- output channels, kh*kw*cin, H*W*batch -- it times the forward product
``W^T @ cols`` (NN), the weight gradient ``cols @ g^T`` (NT, contracting P) and the input
gradient ``W @ g`` (NN), accumulated in float32 as ``ops._matmul`` does, after
``runtime.configure_cpu``. The shapes are squeezenet_small's at 28x28x1, batch 128.

    python benchmarks/gemm_rates.py [--threads 2] [--repeats 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

SHAPES = [  # (cout, K, P): conv1, fire2 squeeze, fire3 expand3x3, fire4 expand3x3, fire4 squeeze, fire6/7, fire8, fire9
    (64, 9, 100352),
    (16, 64, 25088),
    (64, 144, 25088),
    (128, 288, 25088),
    (32, 256, 25088),
    (192, 432, 6272),
    (64, 384, 6272),
    (256, 576, 2048),
]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args(argv)
    from sqzdse import runtime

    runtime.configure_cpu(args.threads)
    import jax
    import jax.numpy as jnp

    from sqzdse.model.ops import _matmul

    def ms(f, *a):
        f(*a).block_until_ready()
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            f(*a).block_until_ready()
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e3

    products = {
        "forward": (lambda w, x: _matmul(w, x, (1, 0)), lambda c, k, p: ((c, k), (k, p))),
        "weight_grad": (lambda x, g: _matmul(x, g, (1, 1)), lambda c, k, p: ((k, p), (c, p))),
        "input_grad": (lambda w, g: _matmul(w, g, (1, 0)), lambda c, k, p: ((k, c), (c, p))),
    }
    for cout, k, p_ in SHAPES:
        row = dict(cout=cout, K=k, P=p_)
        for name, (f, shapes) in products.items():
            for dtype in ("float32", "bfloat16"):
                a, b = (jnp.ones(s, dtype) for s in shapes(cout, k, p_))
                t = ms(jax.jit(f), a, b)
                row[f"{name}_{dtype}"] = dict(ms=round(t, 2), gflops=round(2 * cout * k * p_ / t / 1e6))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
