"""Sweeps: spec validation, end to end on the embedded storage, concurrent and killed workers, PostgreSQL."""

import dataclasses
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

import pytest
from test_train import synthetic

from sqzdse import config as C
from sqzdse import sweep as S
from sqzdse.cli import main

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"

# A tiny sweep: 16x16x1 synthetic images, 16..64 expand filters, one quick epoch.
TINY_SPEC = {
    "study": {"name": "tiny", "sampler": "grid", "seeds": [0]},
    "model": {"preset": "squeezenet_small", "base_e": 16, "incr_e": 16},
    "space": {"sr": [0.25, 0.5, 0.75]},
    "train": {"dataset": "synthetic", "epochs": 1, "batch_size": 16, "init": "msra", "warmup_epochs": 0.0},
}


def spec(space=None, **study):
    raw = json.loads(json.dumps(TINY_SPEC))
    raw["study"].update(study)
    raw["space"] = space or raw["space"]
    return S.parse_spec(raw)


@pytest.fixture(scope="module")
def ds():
    return synthetic()


def completed_points(rows):
    return sorted((r["sr"], r["seed"]) for r in rows if r["state"] == "COMPLETE")


def test_three_trial_sweep_end_to_end(ds, tmp_path):
    url = f"sqlite:///{tmp_path}/tiny.db"
    s = spec()
    assert S.run_worker(s, url, runs_dir=str(tmp_path), dataset=ds, log=lambda *_: None) == 3
    rows = S.export_rows(url)
    assert completed_points(rows) == [(0.25, 0), (0.5, 0), (0.75, 0)]
    r = rows[0]
    assert r["params"] > 0 and r["bytes"] == 4 * r["params"] and r["macs"] > 0
    assert 0 <= r["val_top1"] <= 1 and 0 <= r["test_top1"] <= 1 and len(r["curve"]) == 1
    assert r["status"] == "completed" and r["version"] and r["compile_seconds"] >= 0
    assert r["workdir"] == os.path.join(str(tmp_path), "trials", r["key"]) and r["reused_from"] is None
    # Rerunning a finished sweep runs nothing and keeps every result.
    assert S.run_worker(s, url, runs_dir=str(tmp_path), dataset=ds, log=lambda *_: None) == 0
    assert completed_points(S.export_rows(url)) == completed_points(rows)
    # Export: CSV and JSON, the state and the metaparameters as columns.
    out = io.StringIO()
    S.write_rows(rows, "csv", out)
    header = out.getvalue().splitlines()[0].split(",")
    assert {"state", "sr", "pct3x3", "base_e", "bypass", "val_top1", "bytes"} <= set(header)
    assert len(out.getvalue().splitlines()) == 4
    # A new budget, same study name and runs dir, fresh storage: a new run, not "a different configuration".
    raw = json.loads(json.dumps(TINY_SPEC))
    raw["space"], raw["train"]["epochs"] = {"sr": [0.25]}, 2
    S.run_worker(S.parse_spec(raw), f"sqlite:///{tmp_path}/e2.db", runs_dir=str(tmp_path), dataset=ds, log=print)
    (row,) = S.export_rows(f"sqlite:///{tmp_path}/e2.db")
    assert row["state"] == "COMPLETE" and len(row["curve"]) == 2 and row["key"] not in {r["key"] for r in rows}


def test_trial_workdir_uses_an_older_versions_workdir_only_for_the_same_run(tmp_path):
    """Before shared workdirs a trial trained in runs/<study>/<sha1 of configuration and seed>."""
    import hashlib

    from sqzdse.train import TrainConfig

    cfg, tc = spec().config({"sr": 0.25}), TrainConfig(epochs=1, seed=3)
    new = S.trial_workdir(str(tmp_path), "tiny", cfg, tc)
    assert new == os.path.join(str(tmp_path), "trials", S.trial_key(cfg, tc))
    blob = json.dumps([C.to_dict(cfg), 3], sort_keys=True).encode()
    legacy = tmp_path / "tiny" / hashlib.sha1(blob).hexdigest()[:12]
    legacy.mkdir(parents=True)
    run = {"config": C.to_dict(cfg), "train_config": {**dataclasses.asdict(tc), "checkpoint_every": 50}}
    (legacy / "run.json").write_text(json.dumps(run))
    assert S.trial_workdir(str(tmp_path), "tiny", cfg, tc) == str(legacy)  # the same run: resumed or reused there
    assert S.trial_workdir(str(tmp_path), "tiny", cfg, dataclasses.replace(tc, epochs=2)) != str(legacy)


def test_diverged_trial_is_a_recorded_failure_and_the_sweep_goes_on(ds, tmp_path):
    raw = json.loads(json.dumps(TINY_SPEC))
    raw["space"] = {"sr": [0.25, 0.5]}
    raw["train"].update(optimizer="sgd", lr=1e8, schedule="constant")
    url = f"sqlite:///{tmp_path}/div.db"
    S.run_worker(S.parse_spec(raw), url, runs_dir=str(tmp_path), dataset=ds, log=lambda *_: None)
    rows = S.export_rows(url)
    assert [r["state"] for r in rows] == ["FAIL", "FAIL"]
    assert all(r["status"] == "diverged" and "loss became" in r["reason"] for r in rows)


WORKER = """
import sys, time
sys.path.insert(0, {tests!r})
from test_train import synthetic
from test_sweep import spec
from sqzdse import config as C
from sqzdse import sweep as S

class Slow:
    def __init__(self, ds):
        self.ds, self.info, self.steps_per_epoch = ds, ds.info, ds.steps_per_epoch
    def batches(self, *a, **k):
        for b in self.ds.batches(*a, **k):
            time.sleep({delay})
            yield b

S.run_worker(spec(heartbeat_interval=1, grace_period=7, **{study!r}), {url!r}, runs_dir={runs!r},
             dataset=Slow(synthetic()))
"""


def worker(url, runs, delay=0.0, study=None):
    code = WORKER.format(tests=str(Path(__file__).parent), url=url, runs=str(runs), delay=delay, study=study or {})
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def check_concurrent_workers(url, runs, workers=6, seeds=6):
    """`workers` processes start together on one grid of `seeds` points (one model: one compile each): every point
    COMPLETE once, nothing failed."""
    procs = [worker(url, runs, study={"seeds": seeds, "space": {"sr": [0.5]}}) for _ in range(workers)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    rows = S.export_rows(url, "tiny")
    assert completed_points(rows) == [(0.5, s) for s in range(seeds)], rows
    assert len(rows) == seeds  # no FAIL, no second claim


def check_killed_worker(url, runs, ds):
    p = worker(url, runs, delay=0.3)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if any(r["state"] == "RUNNING" for r in _rows(url)):
            break
        time.sleep(0.2)
    time.sleep(2.0)  # mid-trial: compiling or training
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL
    assert any(r["state"] == "RUNNING" for r in S.export_rows(url, "tiny"))
    time.sleep(8)  # grace_period: the dead worker's heartbeat goes stale
    S.run_worker(spec(heartbeat_interval=1, grace_period=7), url, runs_dir=str(runs), dataset=ds, log=lambda *_: None)
    rows = S.export_rows(url, "tiny")
    assert completed_points(rows) == [(0.25, 0), (0.5, 0), (0.75, 0)]  # nothing lost, nothing twice
    failed = [r for r in rows if r["state"] == "FAIL"]
    assert len(failed) == 1 and "worker died" in failed[0]["reason"]
    assert not [r for r in rows if r["state"] in ("RUNNING", "WAITING")]


SIGNALLED_WORKER = """
import sys
sys.path.insert(0, {tests!r})
from test_train import Slow, synthetic
from test_sweep import spec
from sqzdse import data as D, sweep as S
from sqzdse.cli import main

D.load = lambda *a, **k: Slow(synthetic(), 0.5)
S.load_spec = lambda path, **_: spec(heartbeat_interval=1, grace_period=60)
sys.exit(main(["sweep", "run", "tiny.toml", "--storage", {url!r}, "--runs-dir", {runs!r}, "--no-progress"]))
"""


def test_interrupted_worker_requeues_its_trial_and_a_run_is_trained_once(ds, tmp_path):
    """SIGTERM of a worker mid-trial: one line, exit 143, its trial FAIL "interrupted" plus a waiting retry.
    Meanwhile a worker of another study reached the same run: it waited for the lock, resumed the checkpoint and
    finished it; an immediate rerun of the first study takes that result over (no grace period) and completes."""
    url, runs = f"sqlite:///{tmp_path}/sig.db", tmp_path / "runs"
    script = SIGNALLED_WORKER.format(tests=str(Path(__file__).parent), url=url, runs=str(runs))
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, running = time.time() + 180, []
    while not running and p.poll() is None and time.time() < deadline:
        running = [r for r in _rows(url) if r["state"] == "RUNNING" and r["workdir"]]
        running = [r for r in running if Path(r["workdir"], "lock").is_file()
                   and Path(r["workdir"], "lock").read_text().strip() == str(p.pid)]  # fmt: skip
        time.sleep(0.2)
    assert running, p.poll()
    (first,) = running
    log = []

    def stop_when_waiting():  # SIGTERM once the other worker waits for the lock
        while time.time() < deadline and not any("is busy" in m for m in log):
            time.sleep(0.1)
        p.send_signal(signal.SIGTERM)

    threading.Thread(target=stop_when_waiting, daemon=True).start()
    raw = json.loads(json.dumps(TINY_SPEC))
    raw["study"]["name"], raw["space"] = "other", {"sr": [first["sr"]]}
    assert S.run_worker(S.parse_spec(raw), url, runs_dir=str(runs), dataset=ds, log=log.append) == 1
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143 and "Traceback" not in err, err
    end = f"; trial {first['number']} is queued again for the next `sqzdse sweep run`"
    assert re.fullmatch(r"sqzdse: SIGTERM at update \d+ of 10: checkpoint saved in .*" + re.escape(end),
                        err.splitlines()[-1]), err  # fmt: skip
    assert any(f"is busy: process {p.pid}" in m for m in log), log
    (other,) = S.export_rows(url, "other")
    assert other["state"] == "COMPLETE" and other["workdir"] == first["workdir"] and other["reused_from"] is None
    summary = json.loads(Path(first["workdir"], "summary.json").read_text())
    assert summary["resumed_at"] > 0 and summary["origin"] == {"study": "other", "trial": 0}  # resumed, not redone
    states = sorted(r["state"] for r in S.export_rows(url, "tiny"))
    assert states == ["FAIL", "WAITING", "WAITING", "WAITING"]
    S.run_worker(spec(heartbeat_interval=1, grace_period=60), url, runs_dir=str(runs), dataset=ds, log=print)
    rows = S.export_rows(url, "tiny")
    assert completed_points(rows) == [(0.25, 0), (0.5, 0), (0.75, 0)]
    (failed,) = [r for r in rows if r["state"] == "FAIL"]
    assert failed["status"] == "interrupted" and "SIGTERM at update" in failed["reason"]
    (retry,) = [r for r in rows if r["state"] == "COMPLETE" and r["sr"] == first["sr"]]
    assert retry["reused_from"] == "other/0" and retry["key"] == other["key"] and retry["val_top1"] == other["val_top1"]


def test_status_shows_the_pareto_set_and_the_top_n(tmp_path, capsys):
    import optuna

    url = f"sqlite:///{tmp_path}/mo.db"
    study = optuna.create_study(study_name="mo", storage=url, directions=["maximize", "minimize"])
    study.set_user_attr("spec", {"objectives": ["val_top1", "bytes"]})
    dist = optuna.distributions.FloatDistribution(0.1, 1.0)
    for sr, acc, size in [(0.25, 0.7, 100), (0.5, 0.8, 200), (0.75, 0.75, 300), (1.0, 0.9, 400)]:
        attrs = dict(val_top1=acc, bytes=size, test_top1=acc, seed=0, status="completed")
        study.add_trial(optuna.create_trial(values=[acc, size], params={"sr": sr}, distributions={"sr": dist},
                                            user_attrs=attrs))  # fmt: skip
    st = S.status(url, "mo", top=2)
    assert [r["number"] for r in st["pareto"]] == [3, 1, 0]  # trial 2 is beaten by trial 1 on both
    assert [r["number"] for r in st["top"]] == [3, 1] and st["best"]["number"] == 3
    assert main(["sweep", "status", "--storage", url, "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "Pareto set of val_top1 (maximize), bytes (minimize): 3 trials" in out
    assert "trial 1: val_top1=0.8000 bytes=200" in out and "top 2 by val_top1 (maximize):" in out
    assert main(["sweep", "status", "--storage", url, "--top", "-1"]) == 2


def _rows(url):
    try:
        return S.export_rows(url, "tiny")
    except (S.SpecError, S.StorageError):  # the worker has not created the storage or the study yet
        return []


def test_six_concurrent_workers_cover_the_grid_once(tmp_path):
    check_concurrent_workers(f"sqlite:///{tmp_path}/grid.db", tmp_path)


def test_killed_worker_is_detected_and_its_trial_retried(ds, tmp_path):
    check_killed_worker(f"sqlite:///{tmp_path}/kill.db", tmp_path, ds)


def _claimer(url, names, barrier, out):
    """One racing worker: claim waiting trials (and finish each at once) until none is left."""
    import optuna

    try:
        storage = S.open_storage(url, create=True)
        studies = [optuna.load_study(study_name=name, storage=storage) for name in names]
        barrier.wait()  # all start together
        got = []
        for study in studies:
            while (trial := S._claim_waiting(study)) is not None:
                got.append(trial._trial_id)
                study.tell(trial, [0.0])
        out.put(got)
    except Exception as e:  # reported, not a hang
        out.put(f"{type(e).__name__}: {e}")


RACE = dict(processes=8, trials=100, rounds=1)  # ~10 s here, the machine shared; unserialised SQLite: ~30 doubles


def check_claim_race(url, processes, trials, rounds):
    """`processes` workers claim `rounds` x `trials` waiting trials at once: each trial exactly once."""
    import multiprocessing

    names = [f"race{i}" for i in range(rounds)]
    for name in names:
        raw = {**TINY_SPEC, "study": {"name": name, "seeds": trials}, "space": {"sr": [0.5]}}
        S.open_study(S.parse_spec(raw), url, log=lambda *_: None)  # a grid of `trials` seeds
    ctx = multiprocessing.get_context("fork")  # forked: no second import of JAX per racer
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(url, names, barrier, out)) for _ in range(processes)]
    with warnings.catch_warnings():  # JAX's fork warning: the racers run Optuna and SQL only, never JAX
        warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
        for p in procs:
            p.start()
    claims = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    assert all(isinstance(c, list) for c in claims), claims
    ids = [i for c in claims for i in c]
    assert len(ids) - len(set(ids)) == 0, "double claims"
    assert len(set(ids)) == rounds * trials
    assert sum(1 for c in claims if c) > 1  # a race, not one process taking everything


def test_claims_are_atomic_on_sqlite(tmp_path):
    check_claim_race(f"sqlite:///{tmp_path}/race.db", **RACE)


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


def test_postgres_concurrent_workers(postgres_url, tmp_path):
    check_concurrent_workers(postgres_url, tmp_path)


def test_postgres_claims_are_atomic(postgres_url):
    check_claim_race(postgres_url, **RACE)


def test_postgres_killed_worker(postgres_url, tmp_path, ds):
    check_killed_worker(postgres_url, tmp_path, ds)


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"study": {"sampler": "bayes"}}, "study.sampler: 'bayes' is not one of grid, random, tpe, nsga2"),
        ({"space": {"sq": [0.5]}}, "space.sq: unknown metaparameter"),
        ({"space": {"sr": {"low": 1.0, "high": 0.5}}}, "space.sr: low (1.0) must be < high (0.5)"),
        ({"space": {"pct3x3": [1.5]}}, "pct3x3=1.5: must be in [0, 1]"),
        ({"train": {"lr": -1}}, "lr=-1: must be > 0"),
        ({"train": {"optimiser": "sgd"}}, "train.optimiser: unknown"),
        ({"study": {"sampler": "tpe"}}, "study.n_trials: required with sampler 'tpe'"),
        ({"study": {"objectives": ["accuracy"]}}, "study.objectives"),
        ({"model": {"preset": "alexnet"}}, "model.preset: 'alexnet' is not one of"),
        # Every value of every axis, and every type, before any training:
        ({"space": {"pct3x3": [0.5, 1.5]}}, "space point sr=0.25 pct3x3=1.5: pct3x3=1.5: must be in [0, 1]"),
        ({"space": {"sr": ["half"]}}, "space.sr: 'half' is not a number"),
        ({"space": {"base_e": [16, 24.5]}}, "space.base_e: 24.5 is not an integer"),
        ({"space": {"sr": [0.5, 0.5]}}, "space.sr: 0.5 is listed twice"),
        ({"train": {"epochs": "one"}}, "train.epochs: 'one' is not a number"),
        ({"train": {"train_limit": "many"}}, "train.train_limit: 'many' is not an integer"),
        ({"model": {"dropout": "none"}}, "model.dropout: 'none' is not a number"),
        (
            {"study": {"sampler": "random", "n_trials": 2}, "space": {"sr": {"low": 0.001, "high": 0.5}}},
            "space point sr=0.001: sr=0.001: fire2 gets",
        ),  # a range's endpoints  # fmt: skip
        (
            {"space": {"sr": {"low": 0.0001, "high": 1.0, "step": 0.00005}}},
            "space: the grid has 19,999 points (19999 sr x 1 seed), over the limit of 10,000",
        ),
        (
            {"study": {"grace_period": 3}},
            "study.grace_period: 3 s must be >= 2 x study.heartbeat_interval (10 s) + 5 s = 25 s",
        ),
        ({"study": {"heartbeat_interval": 60}}, "study.grace_period: 120 s must be >= 2 x study.heartbeat_interval"),
    ],
)
def test_invalid_sweep_file_names_the_key(patch, message):
    raw = json.loads(json.dumps(TINY_SPEC))
    for section, values in patch.items():
        raw[section].update(values)
    if "sq" in patch.get("space", {}):
        del raw["space"]["sr"]
    with pytest.raises(S.SpecError) as e:
        S.parse_spec(raw)
    assert message in str(e.value)


def test_compressed_bytes_objective(ds, tmp_path):
    """A trial records the size of its trained weights Deep-Compressed ([compress], no fine-tuning)."""
    raw = json.loads(json.dumps(TINY_SPEC))
    raw["study"]["objectives"] = ["val_top1", "compressed_bytes"]
    raw["space"] = {"sr": [0.25]}
    raw["compress"] = {"bits": 4}
    s = S.parse_spec(raw)
    assert s.compress == {"bits": 4, "density": "released", "huffman": True}
    assert s.directions == ["maximize", "minimize"]
    url = f"sqlite:///{tmp_path}/c.db"
    assert S.run_worker(s, url, runs_dir=str(tmp_path), dataset=ds, log=lambda *_: None) == 1
    (row,) = S.export_rows(url)
    assert row["state"] == "COMPLETE" and 0 < row["compressed_bytes"] < row["bytes"] / 4
    import optuna

    (trial,) = optuna.load_study(study_name="tiny", storage=url).trials
    assert trial.values == [row["val_top1"], row["compressed_bytes"]]
    out = io.StringIO()
    S.write_rows([row], "csv", out)
    assert "compressed_bytes" in out.getvalue().splitlines()[0].split(",")
    # The objective alone brings the default settings; no [compress] and no objective: nothing is compressed.
    del raw["compress"]
    assert S.parse_spec(raw).compress == S.COMPRESS_DEFAULTS and spec().compress is None


@pytest.mark.parametrize(
    "table, message",
    [
        ({"bits": 9}, "compress.bits: bits=9: must be an integer from 2 to 8"),
        ({"density": 1.5}, "compress.density: density=1.5"),
        ({"huffman": "yes"}, "compress.huffman: 'yes': true or false"),
        ({"level": 3}, "compress.level: unknown; allowed: bits, density, huffman"),
    ],
)
def test_invalid_compress_table_names_the_key(table, message):
    raw = json.loads(json.dumps(TINY_SPEC))
    raw["compress"] = table
    with pytest.raises(S.SpecError) as e:
        S.parse_spec(raw)
    assert message in str(e.value)


def test_invalid_toml_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[study]\nname = \n")
    assert main(["sweep", "run", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_unreachable_storage_is_a_clear_error(capsys):
    t = time.time()
    code = main(["sweep", "export", "--storage", "postgresql+psycopg2://u:p@127.0.0.1:9/none", "--format", "csv"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot open the storage" in err and "Traceback" not in err
    assert time.time() - t < 30
    assert main(["sweep", "export", "--storage", "nosuchdb://x"]) == 2


@pytest.mark.parametrize("path", sorted(SWEEPS.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_sweeps_are_valid(path):
    s = S.load_spec(str(path))
    assert s.name == path.stem
    head = path.read_text().splitlines()[:30]
    assert any("sqzdse sweep run" in line for line in head), "the header says the command"


def quiet(*_):
    pass


def points_of(url, name="tiny"):
    import optuna

    trials = optuna.load_study(study_name=name, storage=S.open_storage(url)).trials
    return sorted((t.system_attrs["fixed_params"]["sr"], t.system_attrs["fixed_params"]["seed"]) for t in trials)


def claim_and_suggest(study, s):
    """What a worker does before training: claim a waiting trial and suggest its point (Optuna checks the
    distributions against the study's earlier trials here)."""
    trial = S._claim_waiting(study)
    point = {d.name: d.suggest(trial) for d in s.space} | {"seed": s.seed_dim.suggest(trial)}
    study.tell(trial, [0.5])
    return point


def test_a_grid_that_grew_gets_its_new_points_only(tmp_path):
    url = f"sqlite:///{tmp_path}/grow.db"
    first = spec()
    study = S.open_study(first, url, log=quiet)
    assert claim_and_suggest(study, first) == {"sr": 0.25, "seed": 0}
    logged = []
    grown = spec(space={"sr": [0.25, 0.5, 0.75, 1]}, seeds=[0, 1])  # 1: an int in a float axis is the point 1.0
    study = S.open_study(grown, url, log=logged.append)
    assert logged == ["[tiny] enqueued 5 grid points the study did not have"]
    assert points_of(url) == sorted((sr, seed) for sr in (0.25, 0.5, 0.75, 1.0) for seed in (0, 1))
    # New categories and seeds suggest fine next to the first trial's (a grid records ranges, not categories).
    assert claim_and_suggest(study, grown) == {"sr": 0.5, "seed": 0}
    S.open_study(grown, url, log=logged.append)  # idempotent: nothing more
    assert len(points_of(url)) == 8 and len(logged) == 1
    assert optuna_spec(url)["space"] == {"sr": [0.25, 0.5, 0.75, 1.0]}  # the study records the file it now follows


def optuna_spec(url, name="tiny"):
    import optuna

    return optuna.load_study(study_name=name, storage=S.open_storage(url)).user_attrs["spec"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"train": {"epochs": 2}}, "train.epochs: 1 → 2"),
        ({"model": {"base_e": 32}}, "model.base_e: 16 → 32"),
        ({"study": {"objectives": ["val_top5"]}}, 'study.objectives: ["val_top1"] → ["val_top5"]'),
        ({"study": {"sampler": "random", "n_trials": 3}}, 'study.sampler: "grid" → "random"'),
        ({"space": {"sr": [0.25, 0.5]}}, "1 of its grid points are not in the file's grid (seed=0 sr=0.75)"),
        ({"space": {"sr": [0.25, 0.5, 0.75], "pct3x3": [0.5]}}, "space.pct3x3: (unset) → [0.5]"),
        ({"compress": {"bits": 4}}, "compress.bits: (unset) → 4"),
    ],
)
def test_a_different_file_with_the_same_study_name_is_refused(tmp_path, change, message):
    url = f"sqlite:///{tmp_path}/mix.db"
    S.open_study(spec(), url, log=quiet)
    raw = json.loads(json.dumps(TINY_SPEC))
    for section, values in change.items():
        raw[section] = values if section in ("space", "compress") else {**raw[section], **values}
    with pytest.raises(S.SpecError) as e:
        S.open_study(S.parse_spec(raw, source="other.toml"), url, log=quiet)
    assert message in str(e.value), str(e.value)
    assert "nothing was run" in str(e.value) and "sqzdse sweep delete other.toml" in str(e.value)
    assert points_of(url) == [(0.25, 0), (0.5, 0), (0.75, 0)]  # nothing enqueued, nothing changed


def test_heartbeat_and_retry_settings_may_change(tmp_path):
    url = f"sqlite:///{tmp_path}/hb.db"
    S.open_study(spec(), url, log=quiet)
    S.open_study(spec(heartbeat_interval=20, grace_period=60, max_retry=1), url, log=quiet)
    assert optuna_spec(url)["grace_period"] == 60 and len(points_of(url)) == 3


def test_a_creator_killed_mid_enqueue_leaves_nothing_half_made(tmp_path, monkeypatch):
    import optuna

    url = f"sqlite:///{tmp_path}/half.db"
    enqueue, calls = optuna.Study.enqueue_trial, []

    def dies_after_one(self, *a, **k):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt  # killed with one of three points enqueued
        return enqueue(self, *a, **k)

    monkeypatch.setattr(optuna.Study, "enqueue_trial", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        S.open_study(spec(), url, log=quiet)
    monkeypatch.setattr(optuna.Study, "enqueue_trial", enqueue)
    t = time.time()
    S.open_study(spec(), url, log=quiet)  # the next run: no wait, the missing points enqueued once
    assert time.time() - t < 10 and points_of(url) == [(0.25, 0), (0.5, 0), (0.75, 0)]


def test_sweep_delete_asks_first(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path}/del.db"
    S.open_study(spec(), url, log=quiet)
    argv = ["sweep", "delete", "--storage", url, "--study", "tiny"]
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no terminal, no --yes: refused
    assert main(argv) == 2
    assert "no terminal to confirm on; pass --yes to delete study 'tiny' (3 trials)" in capsys.readouterr().err
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(argv) == 1 and len(points_of(url)) == 3
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert main(argv) == 0 and "deleted 'tiny' (3 trials)" in capsys.readouterr().out
    assert main([*argv, "--yes"]) == 2 and "study 'tiny' not in" in capsys.readouterr().err
    S.open_study(spec(), url, log=quiet)
    assert main(["sweep", "delete", "--storage", url, "--study", "tiny", "--yes"]) == 0


def test_readers_never_create_a_storage(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/typo.db"
    for argv in (["sweep", "export", "--storage", url], ["sweep", "status", "--storage", url, "--study", "x"],
                 ["plot", "sr", url, "-o", str(tmp_path / "p.png")], ["report", url, "-o", str(tmp_path / "r.md")],
                 ["sweep", "delete", "--storage", url, "--study", "x", "--yes"]):  # fmt: skip
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"{tmp_path}/typo.db: no such SQLite file" in err and "Traceback" not in err, err
    assert not list(tmp_path.iterdir())


def test_storage_path_through_a_file_is_one_line(tmp_path, capsys):
    sweep = tmp_path / "s.toml"
    sweep.write_text('[study]\nname = "w"\n[space]\nsr = [0.125]\n')
    (tmp_path / "afile").write_text("")
    assert main(["sweep", "run", str(sweep), "--storage", f"sqlite:///{tmp_path}/afile/x.db"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}/afile is a file, not a folder" in err and "Traceback" not in err


def test_storage_from_the_environment_and_passwords_masked(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(S.STORAGE_ENV, f"sqlite:///{tmp_path}/env.db")
    assert main(["sweep", "export"]) == 2  # $SQZDSE_STORAGE is used...
    assert f"{tmp_path}/env.db: no such SQLite file" in capsys.readouterr().err
    assert main(["sweep", "export", "--storage", f"sqlite:///{tmp_path}/flag.db"]) == 2  # ... --storage first
    assert f"{tmp_path}/flag.db: no such SQLite file" in capsys.readouterr().err
    for url in ("postgresql+psycopg2://u:Hunter2secret@127.0.0.1:9/none", "postgresql://u:Hunter2secret@h:port/x"):
        monkeypatch.setenv(S.STORAGE_ENV, url)
        assert main(["sweep", "export"]) == 2
        err = capsys.readouterr().err
        assert "Hunter2secret" not in err and "u:***@" in err and "Traceback" not in err, err
