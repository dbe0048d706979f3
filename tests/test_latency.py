"""A network's measured inference time: per batch size, with the machine it was measured on."""

import os

from builders import tiny

from sqzdse.deploy import latency


def test_latency_is_measured_per_batch_with_its_machine():
    cfg = tiny()
    got = latency.measure(cfg, batches=(1, 8), warmup=1, repeats=3)
    assert set(got) == {"latency_b1_ms", "latency_b8_ms", "latency_cpu", "latency_threads", "latency_backend"}
    assert all(0 < got[k] < 60_000 for k in ("latency_b1_ms", "latency_b8_ms"))  # no timing claims: benchmarks do
    assert got["latency_threads"] == len(os.sched_getaffinity(0)) and got["latency_backend"] == "cpu"
    assert got["latency_cpu"] and got["latency_cpu"] == latency.machine()["latency_cpu"]
