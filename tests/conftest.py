"""Shared fixtures: the reference data the package ships (sqzdse/reference), a compilation cache, the synthetic
dataset with its model compiled once, a sweep's rows."""

import json
import os
import uuid
from pathlib import Path

import pytest
from sweep_rows import make_rows, write_csv

from sqzdse import reference as R
from sqzdse import runtime

# The CLI's XLA:CPU configuration (runtime.configure_cpu: the fences kept, the loop emitter, whose compiles take
# ~30 % less time), before any test starts JAX. Through XLA_FLAGS the tests' worker processes run under it too,
# the `sqzdse` commands they start as well: one compile of a network serves them all from the shared cache.
runtime.configure_cpu()

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"  # files the tests derived once from independent sources
REFERENCE = R.root()
NET = REFERENCE / "caffe" / "SqueezeNet_compressed" / "compressed_SqueezeNet.net"  # the released compressed v1.0


def pytest_collection_modifyitems(items):
    """The slow tests first (a stable sort). pytest-xdist's ``--dist load --maxschedchunk 1`` (pyproject.toml) then
    hands each worker the next test as it finishes one: the slow ones spread over the workers, and no worker is left
    with one at the end. (With the default chunks, one worker got the first 31 tests: every slow one.)"""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker more than the cores. Many tests spend much of their time waiting (for worker processes,
    heartbeats to go stale, a signal), which a further worker fills (CONTRIBUTING.md, "Test")."""
    return (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) + 1


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """Tests build the same small configurations again and again: compile each once per session."""
    import jax

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N: the workers share one cache
        root = root.parent
    cache = str(root / "jax-cache")
    os.makedirs(cache, exist_ok=True)
    # The environment reaches the worker processes the sweep tests start.
    os.environ.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return cache


@pytest.fixture(scope="session")
def ds(compilation_cache):
    """The synthetic dataset, its model (``builders.tiny``) compiled for it once for the whole suite: the
    first pytest-xdist worker to get here trains that model for an epoch under a file lock, and the others wait for
    it, then load the compiled steps from the shared cache instead of all compiling them at once."""
    import fcntl

    from builders import run, synthetic

    data = synthetic()
    with open(os.path.join(compilation_cache, "tiny.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        done = os.path.join(compilation_cache, "tiny.compiled")
        if not os.path.exists(done):
            assert run(data, epochs=1).status == "completed"
            open(done, "w").close()
    return data


@pytest.fixture(scope="session")
def reference() -> Path:
    return REFERENCE


@pytest.fixture(scope="session")
def released() -> dict:
    """The released compressed v1.0's decoded weights: {prototxt name: (OIHW, bias)}."""
    from sqzdse.compress.codec import read_weights

    return read_weights(NET)


@pytest.fixture(scope="session")
def paper_numbers() -> dict:
    return R.paper_numbers()


@pytest.fixture(scope="session")
def caffe_layers() -> dict:
    return R.load_json("caffe", "derived_layer_table.json")["versions"]


@pytest.fixture(scope="module")
def rows():
    """A small sweep: SR x seeds (fig3a), pct3x3 x seeds (fig3b), bypass x seeds (table3), non-completed trials."""
    return make_rows()


@pytest.fixture(scope="module")
def files(rows, tmp_path_factory):
    d = tmp_path_factory.mktemp("results")
    (d / "results.json").write_text(json.dumps(rows))
    return {"csv": write_csv(d / "results.csv", rows), "json": d / "results.json", "dir": d}


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> str:
    """The workdir of ``builders.tiny`` trained for a few updates on synthetic data, compiled in the run
    (test_images_per_second_leave_compilation_out): not taken from a run this process made before."""
    import jax
    from builders import synthetic, tiny

    from sqzdse.train import loop as T

    jax.clear_caches()

    workdir = str(tmp_path_factory.mktemp("run"))
    tc = T.TrainConfig(batch_size=16, epochs=0.5, warmup_epochs=0, init="msra", eval_limit=16)
    assert T.train_and_evaluate(tiny(), tc, workdir, dataset=synthetic(), progress=False).status == "completed"
    return workdir


@pytest.fixture
def postgres_url():
    """A fresh database on the PostgreSQL server .ci/run starts (SQZDSE_TEST_POSTGRES_URL)."""
    url = os.environ.get("SQZDSE_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must set SQZDSE_TEST_POSTGRES_URL (see .ci/run)")
        pytest.skip("no PostgreSQL server: run `export SQZDSE_TEST_POSTGRES_URL=$(bash .ci/postgres)`")
    import sqlalchemy

    name = f"sqzdse_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    yield url.rsplit("/", 1)[0] + "/" + name
    engine.dispose()
    with sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
