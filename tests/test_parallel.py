"""Data-parallel training over local devices and over processes: on two forced CPU devices (or two processes of one
each), the same updates as on one, to float tolerance; Caffe's iter_size still works; a resumed run equals an
uninterrupted one."""

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


# One run over two processes (jax.distributed, one forced CPU device each, as two hosts would be): process 0 holds
# the workdir; killed after its first epoch and started again, the two resume from process 0's checkpoint.
PROCESS = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    sys.path.insert(0, sys.argv[1])
    import jax, numpy as np
    from sqzdse.runtime import join_processes
    join_processes(sys.argv[2], 2, int(sys.argv[3]))
    from builders import synthetic, tiny
    from sqzdse.train import loop as T

    assert jax.process_count() == 2 and len(jax.devices()) == 2 and len(jax.local_devices()) == 1
    tc = T.TrainConfig(batch_size=16, epochs=2, warmup_epochs=0, init="msra", devices=0)

    class Killed(Exception):
        pass

    def kill(record):
        raise Killed
    work, out = sys.argv[4], sys.argv[5]
    if sys.argv[6] == "kill":
        try:
            T.train_and_evaluate(tiny(), tc, work, dataset=synthetic(), progress=False, on_epoch=kill)
        except Killed:
            pass
    r = T.train_and_evaluate(tiny(), tc, work, dataset=synthetic(), progress=False)
    leaves = [np.asarray(x) for x in jax.tree.leaves(r.state.params)]
    np.savez(out, *leaves, val=r.val_top1, test=r.test_top1, resumed=r.resumed_at)
    print("ok")
""")

ONE = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    sys.path.insert(0, sys.argv[1])
    import jax, numpy as np
    from builders import synthetic, tiny
    from sqzdse.train import loop as T

    tc = T.TrainConfig(batch_size=16, epochs=2, warmup_epochs=0, init="msra", devices=2)
    r = T.train_and_evaluate(tiny(), tc, None, dataset=synthetic(), progress=False)
    np.savez(sys.argv[2], *[np.asarray(x) for x in jax.tree.leaves(r.state.params)], val=r.val_top1,
             test=r.test_top1, resumed=0)
    print("ok")
""")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_as_two_devices_of_one_and_resume_from_process_0(tmp_path):
    import numpy as np

    how = "kill"

    tests, work = str(Path(__file__).parent), tmp_path / "run"
    coordinator = f"localhost:{_free_port()}"
    procs = [subprocess.Popen([sys.executable, "-c", PROCESS, tests, coordinator, str(i), str(work),
                               str(tmp_path / f"p{i}.npz"), how], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-3000:] for _, err in outs]
    one = subprocess.run([sys.executable, "-c", ONE, tests, str(tmp_path / "one.npz")], capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    ref, p0, p1 = (np.load(tmp_path / f"{n}.npz") for n in ("one", "p0", "p1"))
    for key in ref.files:
        if key.startswith("arr_"):
            np.testing.assert_allclose(p0[key], ref[key], rtol=2e-4, atol=2e-6)
            np.testing.assert_array_equal(p0[key], p1[key])  # both processes hold the same replicated state
    assert abs(float(p0["val"]) - float(ref["val"])) <= 1 / 64 and float(p0["val"]) == float(p1["val"])
    assert (work / "summary.json").is_file() and (work / "checkpoints").is_dir()  # process 0's
    assert int(p0["resumed"]) > 0 and int(p1["resumed"]) == int(p0["resumed"])


@pytest.mark.parametrize("processes, pid", [(2, 2), (0, 0), (2, -1)])
def test_an_impossible_process_count_or_index_is_one_line(processes, pid):
    from sqzdse.errors import InputError
    from sqzdse.runtime import join_processes

    with pytest.raises(InputError, match="--process"):
        join_processes("localhost:1", processes, pid)
