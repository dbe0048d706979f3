"""Sweeps: spec validation, end to end on the embedded storage, concurrent and killed workers, PostgreSQL."""

import dataclasses
import datetime
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from builders import SEED_POINTS, SEEDS, TINY_SPEC, completed_points, logged, spec

from sqzdse.cli import main
from sqzdse.model import config as C
from sqzdse.sweep import engine as S
from sqzdse.sweep import spec as SP
from sqzdse.sweep import storage as ST

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


@pytest.mark.slow
def test_a_sweep_end_to_end(ds, tmp_path):
    url = f"sqlite:///{tmp_path}/tiny.db"
    s = spec({"sr": [0.25, 0.5]})
    with logged() as log:
        assert S.run_worker(s, url, runs_dir=str(tmp_path), dataset=ds) == 2
    rows = S.export_rows(url)
    # Sweep-level progress as each trial starts and at the end: done of all, elapsed, and (once one trial was timed)
    # an estimate of what is left.
    progress = [m for m in log if re.match(r"\[tiny\] \d of 2 trials done", m)]
    assert [m.split()[1] for m in progress] == ["0", "1", "2"] and "left" not in progress[0], log
    assert progress[0].startswith("[tiny] 0 of 2 trials done (1 running)")
    assert re.search(r"elapsed here, ~[\d a-z]+ left \([\d a-z]+ per trial, 1 at a time\)$", progress[1]), progress
    assert progress[-1].endswith("elapsed here")
    assert all(r["images_per_s"] > 0 for r in rows)
    assert completed_points(rows) == [(0.25, 0), (0.5, 0)]
    r = rows[0]
    assert r["params"] > 0 and r["bytes"] == 4 * r["params"] and r["macs"] > 0
    # Start, end and duration, as Optuna's trials_dataframe has them.
    start, end = (datetime.datetime.fromisoformat(r[k]) for k in ("started", "finished"))
    assert r["duration_s"] == (end - start).total_seconds() >= r["train_seconds"] > 0
    assert 0 <= r["val_top1"] <= 1 and 0 <= r["test_top1"] <= 1 and len(r["curve"]) == 1
    # The network's measured inference time on this worker, and where it was measured.
    assert r["latency_b1_ms"] > 0 and r["latency_b64_ms"] > 0 and r["latency_cpu"] and r["latency_backend"] == "cpu"
    assert r["latency_threads"] == len(os.sched_getaffinity(0))
    # Each epoch's seconds, training and validation: at least the training's (which includes compiling).
    assert len(r["epoch_seconds"]) == 1 and r["epoch_seconds"][0] >= r["train_seconds"] > 0
    assert r["status"] == "completed" and r["version"] and r["compile_seconds"] >= 0
    assert r["workdir"] == os.path.join(str(tmp_path), "trials", r["key"]) and r["reused_from"] is None
    budget = r["budget"].split(", ")  # TINY_SPEC's [train] table, less the seed
    assert {"dataset=synthetic", "epochs=1", "batch_size=16"} <= set(budget) and not any("seed" in b for b in budget)
    # Rerunning a finished sweep runs nothing and keeps every result.
    assert S.run_worker(s, url, runs_dir=str(tmp_path), dataset=ds) == 0
    assert completed_points(S.export_rows(url)) == completed_points(rows)
    # Export: CSV and JSON, the state and the metaparameters as columns.
    out = io.StringIO()
    S.write_rows(rows, "csv", out)
    header = out.getvalue().splitlines()[0].split(",")
    assert {"state", "sr", "pct3x3", "base_e", "bypass", "val_top1", "bytes"} <= set(header)
    assert len(out.getvalue().splitlines()) == 3
    # A new budget, same study name and runs dir, fresh storage: a new run, not "a different configuration".
    raw = json.loads(json.dumps(TINY_SPEC))
    raw["space"], raw["train"]["epochs"] = {"sr": [0.25]}, 2
    S.run_worker(SP.parse_spec(raw), f"sqlite:///{tmp_path}/e2.db", runs_dir=str(tmp_path), dataset=ds)
    (row,) = S.export_rows(f"sqlite:///{tmp_path}/e2.db")
    assert row["state"] == "COMPLETE" and len(row["curve"]) == 2 and row["key"] not in {r["key"] for r in rows}
    assert len(row["epoch_seconds"]) == 2 and sum(row["epoch_seconds"]) >= row["train_seconds"]


def test_trial_workdir_uses_an_older_versions_workdir_only_for_the_same_run(tmp_path):
    """Before shared workdirs a trial trained in runs/<study>/<sha1 of configuration and seed>."""
    import hashlib

    from sqzdse.train.loop import TrainConfig

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
    S.run_worker(SP.parse_spec(raw), url, runs_dir=str(tmp_path), dataset=ds)
    rows = S.export_rows(url)
    assert [r["state"] for r in rows] == ["FAIL", "FAIL"]
    assert all(r["status"] == "diverged" and "loss became" in r["reason"] for r in rows)


WORKER = """
import sys, time
sys.path.insert(0, {tests!r})
from builders import TINY_SPEC, spec, synthetic
from sqzdse.model import config as C
from sqzdse.sweep import spec as SP
from sqzdse.sweep import storage as ST
from sqzdse.sweep import engine as S

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


def check_concurrent_workers(url, runs, workers=6, seeds=3):
    """`workers` processes start together on one grid of `seeds` points (one model): every point COMPLETE once,
    nothing failed. Two workers race for each point, and those that find none left exit without training. The
    callers take the `ds` fixture, which has compiled that model (``builders.tiny``), so that the workers load it
    from the compilation cache instead of all compiling it at once."""
    procs = [worker(url, runs, study={"seeds": list(range(seeds)), "space": {"sr": [0.25]}}) for _ in range(workers)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    rows = S.export_rows(url, "tiny")
    assert completed_points(rows) == [(0.25, s) for s in range(seeds)], rows
    assert len(rows) == seeds  # no FAIL, no second claim


def check_killed_worker(url, runs, ds):
    p = worker(url, runs, delay=0.3, study=SEEDS)
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
    S.run_worker(spec(**SEEDS, heartbeat_interval=1, grace_period=7), url, runs_dir=str(runs), dataset=ds)  # fmt: skip
    rows = S.export_rows(url, "tiny")
    assert completed_points(rows) == SEED_POINTS  # nothing lost, nothing twice
    failed = [r for r in rows if r["state"] == "FAIL"]
    assert len(failed) == 1 and "worker died" in failed[0]["reason"]
    assert not [r for r in rows if r["state"] in ("RUNNING", "WAITING")]


SIGNALLED_WORKER = """
import sys
sys.path.insert(0, {tests!r})
from builders import SEEDS, Slow, spec, synthetic
from sqzdse.data import pipeline as D
from sqzdse.cli import main, sweep as CS

D.load = lambda *a, **k: Slow(synthetic(), 0.5)
CS.load_spec = lambda path, **_: spec(**SEEDS, heartbeat_interval=1, grace_period=60)
sys.exit(main(["sweep", "run", "tiny.toml", "--storage", {url!r}, "--runs-dir", {runs!r}, "--no-progress"]))
"""


@pytest.mark.slow
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
    assert running, (p.poll(), p.stderr.read() if p.poll() is not None else "")
    (first,) = running

    def stop_when_waiting():  # SIGTERM once the other worker waits for the lock
        while time.time() < deadline and not any("is busy" in m for m in log):
            time.sleep(0.1)
        p.send_signal(signal.SIGTERM)

    raw = json.loads(json.dumps(TINY_SPEC))
    raw["study"]["name"], raw["study"]["seeds"], raw["space"] = "other", [first["seed"]], {"sr": [first["sr"]]}
    with logged() as log:
        threading.Thread(target=stop_when_waiting, daemon=True).start()
        assert S.run_worker(SP.parse_spec(raw), url, runs_dir=str(runs), dataset=ds) == 1
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
    S.run_worker(spec(**SEEDS, heartbeat_interval=1, grace_period=60), url, runs_dir=str(runs), dataset=ds)
    rows = S.export_rows(url, "tiny")
    assert completed_points(rows) == SEED_POINTS
    (failed,) = [r for r in rows if r["state"] == "FAIL"]
    assert failed["status"] == "interrupted" and "SIGTERM at update" in failed["reason"]
    (retry,) = [r for r in rows if r["state"] == "COMPLETE" and r["seed"] == first["seed"]]
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
    assert [r["number"] for r in st.pareto] == [3, 1, 0]  # trial 2 is beaten by trial 1 on both
    assert [r["number"] for r in st.top] == [3, 1] and st.best["number"] == 3
    assert main(["sweep", "status", "--storage", url, "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "Pareto set of val_top1 (maximize), bytes (minimize): 3 trials" in out
    assert "trial 1: val_top1=0.8000 bytes=200" in out and "top 2 by val_top1 (maximize):" in out
    assert main(["sweep", "status", "--storage", url, "--top", "-1"]) == 2


def _rows(url):
    try:
        return S.export_rows(url, "tiny")
    except (SP.SpecError, ST.StorageError):  # the worker has not created the storage or the study yet
        return []


@pytest.mark.slow
def test_six_concurrent_workers_cover_the_grid_once(ds, tmp_path):
    check_concurrent_workers(f"sqlite:///{tmp_path}/grid.db", tmp_path)


@pytest.mark.slow
def test_killed_worker_is_detected_and_its_trial_retried(ds, tmp_path):
    check_killed_worker(f"sqlite:///{tmp_path}/kill.db", tmp_path, ds)


@pytest.mark.slow
def test_postgres_concurrent_workers(postgres_url, ds, tmp_path):
    check_concurrent_workers(postgres_url, tmp_path)


@pytest.mark.slow
def test_postgres_killed_worker(postgres_url, tmp_path, ds):
    check_killed_worker(postgres_url, tmp_path, ds)


def test_compressed_bytes_objective(ds, tmp_path):
    """A trial records the size of its trained weights Deep-Compressed ([compress], no fine-tuning)."""
    raw = json.loads(json.dumps(TINY_SPEC))
    raw["study"]["objectives"] = ["val_top1", "compressed_bytes"]
    raw["space"] = {"sr": [0.25]}
    raw["compress"] = {"bits": 4}
    s = SP.parse_spec(raw)
    assert s.compress == {"bits": 4, "density": "released", "huffman": True}
    assert s.directions == ["maximize", "minimize"]
    url = f"sqlite:///{tmp_path}/c.db"
    assert S.run_worker(s, url, runs_dir=str(tmp_path), dataset=ds) == 1
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
    assert SP.parse_spec(raw).compress == SP.COMPRESS_DEFAULTS and spec().compress is None
    # A measured latency is an objective too.
    raw["study"].update(name="fast", objectives=["val_top1", "latency_b1_ms"])
    assert S.run_worker(SP.parse_spec(raw), url, runs_dir=str(tmp_path), dataset=ds) == 1
    (trial,) = optuna.load_study(study_name="fast", storage=url).trials
    assert trial.values == [trial.user_attrs["val_top1"], trial.user_attrs["latency_b1_ms"]] and trial.values[1] > 0


def test_the_dashboard_sees_metric_names_learning_curves_and_attributes(ds, tmp_path):
    """What optuna-dashboard reads from the storage: the objectives' names, each trial's intermediate values (val
    top-1 per epoch, with no pruner; a multi-objective study too) and its attributes; a reused run's curve too."""
    import optuna

    url = f"sqlite:///{tmp_path}/dash.db"
    raw = json.loads(json.dumps(TINY_SPEC))
    raw["study"]["objectives"], raw["space"], raw["train"]["epochs"] = ["val_top1", "bytes"], {"sr": [0.5]}, 2
    assert S.run_worker(SP.parse_spec(raw), url, runs_dir=str(tmp_path), dataset=ds) == 1
    raw["study"]["name"], raw["study"]["objectives"] = "again", ["val_top1"]  # the same run: reused
    assert S.run_worker(SP.parse_spec(raw), url, runs_dir=str(tmp_path), dataset=ds) == 1
    storage = ST.open_storage(url)
    (first,) = optuna.load_study(study_name="tiny", storage=storage).trials
    study = optuna.load_study(study_name="again", storage=storage)
    (reused,) = study.trials
    assert optuna.load_study(study_name="tiny", storage=storage).metric_names == ["val_top1", "bytes"]
    assert study.metric_names == ["val_top1"]
    curve = first.user_attrs["curve"]
    assert len(curve) == 2 and first.intermediate_values == {1: curve[0], 2: curve[1]}
    assert reused.user_attrs["reused_from"] == "tiny/0" and reused.intermediate_values == first.intermediate_values
    assert {"sr", "bytes", "val_top1", "test_top1", "status", "key", "workdir"} <= set(first.user_attrs)
    # optuna-dashboard itself (its JSON API, as the browser reads it): both studies of the one storage, the
    # objectives by name, the learning curve, the attributes.
    studies = {s["study_name"]: s["study_id"] for s in dashboard(url, "/api/studies")["study_summaries"]}
    assert set(studies) == {"tiny", "again"}
    detail = dashboard(url, f"/api/studies/{studies['tiny']}")
    assert detail["objective_names"] == ["val_top1", "bytes"] and detail["has_intermediate_values"]
    (shown,) = detail["trials"]
    assert shown["intermediate_values"] == [{"step": 1, "value": curve[0]}, {"step": 2, "value": curve[1]}]
    assert {a["key"]: a["value"] for a in shown["user_attrs"]}["workdir"] == first.user_attrs["workdir"]
    # A study an older sqzdse made (no metric names) gets them from the next `sweep run`.
    old = optuna.create_study(study_name="old", storage=storage, directions=["maximize"])
    raw["study"]["name"] = "old"
    old.set_user_attr("spec", SP.spec_record(SP.parse_spec(raw)))
    assert old.metric_names is None
    S.open_study(SP.parse_spec(raw), url)
    assert optuna.load_study(study_name="old", storage=storage).metric_names == ["val_top1"]


def dashboard(url: str, path: str) -> dict:
    """GET `path` of optuna-dashboard's app on the storage `url`, in process (WSGI, no server)."""
    import optuna_dashboard

    status = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "wsgi.input": io.BytesIO(),
               "wsgi.errors": sys.stderr, "SERVER_NAME": "localhost", "SERVER_PORT": "80", "wsgi.url_scheme": "http",
               "SERVER_PROTOCOL": "HTTP/1.1"}  # fmt: skip
    body = b"".join(optuna_dashboard.wsgi(url)(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status == ["200 OK"], (status, body[:200])
    return json.loads(body)


@pytest.mark.slow
def test_a_sweep_over_the_learning_rate(ds, tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/lr.db"
    s = spec({"lr": [0.001, 0.02]})
    assert S.run_worker(s, url, runs_dir=str(tmp_path), dataset=ds) == 2
    rows = S.export_rows(url)
    assert sorted(r["lr"] for r in rows) == [0.001, 0.02] and len({r["key"] for r in rows}) == 2
    for r in rows:  # each run trained at its own rate
        assert json.loads(Path(r["workdir"], "run.json").read_text())["train_config"]["lr"] == r["lr"]
    out = io.StringIO()
    S.write_rows(rows, "csv", out)
    assert out.getvalue().splitlines()[0].endswith(",lr")  # the swept setting: a column after the export's own
    from sqzdse.cli import main

    assert main(["plot", "edf", url, "--by", "lr", "-o", str(tmp_path / "edf.png")]) == 0
    assert main(["plot", "frontier", url, "--where", "lr=0.02", "-o", str(tmp_path / "f.png")]) == 0


def test_workers_of_an_adaptive_study_draw_different_points(tmp_path):
    """Each worker seeds its own sampler: with one seed, two workers of a random or TPE study would draw the same
    points, each training what the other already trains."""
    url = f"sqlite:///{tmp_path}/s.db"
    for name in ("random", "tpe"):
        s = spec(space={"sr": {"low": 0.125, "high": 1.0}}, sampler=name, n_trials=4, name=name)
        draws = []
        for _ in range(2):  # two workers opening the study
            study = S.open_study(s, url)
            draws.append([s.space[0].suggest(study.ask()) for _ in range(3)])
        assert draws[0] != draws[1], name
