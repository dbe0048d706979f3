"""Measured inference time of a network on this machine: what a sweep records per trial and may optimise.

Method: the network's forward pass in inference mode, in the dtype it trained in (float32 unless a trial trained
in bfloat16), compiled once per batch size (``jax.jit`` of the
split model, so no Python-side graph handling is timed), on random inputs of the network's input shape; after
``WARMUP`` untimed calls, the median wall time of ``REPEATS`` calls, each waited for (``block_until_ready``). The
machine is recorded beside it: the CPU model (``lscpu``), the XLA threads (the cores the process may use: a sweep
worker's share) and the JAX backend. Latencies of different machines are not comparable; figures refuse to mix
them (``sqzdse.results.rows.require_size``).
"""

from __future__ import annotations

import os
import statistics
import time

BATCHES = (1, 64)  # batch 1: a single request; 64: a server's batch
WARMUP, REPEATS = 3, 15


def columns(batch: int) -> str:
    return f"latency_b{batch}_ms"


def machine() -> dict:
    """Where a latency was measured: CPU model, XLA threads, JAX backend."""
    import jax

    from sqzdse.runtime import cpu_model

    return dict(latency_cpu=cpu_model(), latency_threads=len(os.sched_getaffinity(0)),
                latency_backend=jax.default_backend())  # fmt: skip


def measure(cfg, model=None, batches=BATCHES, warmup: int = WARMUP, repeats: int = REPEATS) -> dict:
    """{"latency_b1_ms": ..., "latency_b64_ms": ..., "latency_cpu": ..., "latency_threads": ...,
    "latency_backend": ...} of `cfg`'s network. model: its (graphdef, params) as training left them (a run's
    ``RunResult``), or None for fresh ones: the time does not depend on the weights' values."""
    import jax
    import numpy as np
    from flax import nnx

    if model is None:
        from sqzdse.model.network import initial_params

        model = initial_params(cfg, 0, init="msra")
    graphdef, params = model
    run = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))  # inference mode: no dropout
    out = {}
    for b in batches:
        x = jax.device_put(np.random.default_rng(0).standard_normal((b, *cfg.input_shape), dtype=np.float32))
        for _ in range(warmup):
            run(params, x).block_until_ready()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            run(params, x).block_until_ready()
            times.append(time.perf_counter() - t)
        out[columns(b)] = 1000.0 * statistics.median(times)
    return {**out, **machine()}
