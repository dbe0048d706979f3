"""Data-parallel training over local devices: on two forced CPU devices, the same updates as on one, to float
tolerance; Caffe's iter_size still works; a resumed run equals an uninterrupted one."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    sys.path.insert(0, sys.argv[1])
    import jax, numpy as np
    from builders import run, synthetic
    from sqzdse.model.plan import ConfigError

    assert len(jax.local_devices()) == 2
    ds = synthetic()

    def same(a, b, what):
        for x, y in zip(jax.tree.leaves(a.state.params), jax.tree.leaves(b.state.params), strict=True):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=2e-6, err_msg=what)
        assert abs(a.val_top1 - b.val_top1) <= 1 / 64 and abs(a.test_top1 - b.test_top1) <= 1 / 64, what

    one, two = run(ds), run(ds, devices=2)
    assert two.state.params["conv1"]["kernel"].sharding.is_fully_replicated
    same(one, two, "one device against two")
    same(run(ds, iter_size=2, batch_size=8), run(ds, iter_size=2, batch_size=8, devices=0), "iter_size 2")

    class Killed(Exception):
        pass

    def kill(record):
        raise Killed
    from sqzdse.train import loop as T
    from builders import tiny
    tc = T.TrainConfig(batch_size=16, epochs=2, warmup_epochs=0, init="msra", devices=2)
    work = sys.argv[2]
    try:
        T.train_and_evaluate(tiny(), tc, work, dataset=ds, progress=False, on_epoch=kill)
    except Killed:
        pass
    resumed = T.train_and_evaluate(tiny(), tc, work, dataset=ds, progress=False)
    assert resumed.resumed_at > 0
    same(resumed, two, "resumed against uninterrupted")
    for bad, message in ((dict(devices=3), "sees 2 cpu device"), (dict(devices=2, batch_size=15), "split evenly")):
        try:
            run(ds, **bad)
        except ConfigError as e:
            assert message in str(e), e
        else:
            raise AssertionError(bad)
    print("ok")
""")


@pytest.mark.slow
def test_two_devices_train_as_one(tmp_path):
    tests = str(Path(__file__).parent)
    p = subprocess.run([sys.executable, "-c", SCRIPT, tests, str(tmp_path / "run")], capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stderr[-3000:]
