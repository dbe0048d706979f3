"""sqzdse sweep submit: sweep workers as a job array through submitit, driven by its local executor as SLURM would
run them (sqzdse.sweep.cluster)."""

import pickle
import subprocess
import sys

import pytest
from builders import fashion_files, points_of

from sqzdse.cli import main
from sqzdse.sweep.cluster import SweepJob

pytest.importorskip("submitit")

SWEEP = """[study]
name = "tiny"
sampler = "grid"
seeds = [0]
[model]
preset = "squeezenet_small"
base_e = 16
incr_e = 16
[space]
sr = [0.25, 0.5, 0.75]
[train]
dataset = "fashion_mnist"
epochs = 1
batch_size = 16
val_size = 10
"""


@pytest.fixture
def fashion(tmp_path, monkeypatch):
    """A tiny Fashion-MNIST prepared where every job looks (SQZDSE_DATA_DIR, which the jobs inherit)."""
    from sqzdse.data import pipeline as D

    fashion_files(tmp_path / "debian")
    D.prepare_debian_fashion_mnist(str(tmp_path / "tfds"), debian_dir=str(tmp_path / "debian"))
    monkeypatch.setenv("SQZDSE_DATA_DIR", str(tmp_path / "tfds"))


@pytest.mark.slow
def test_a_local_job_array_runs_every_point_once(fashion, tmp_path, capsys):
    path, url = tmp_path / "tiny.toml", f"sqlite:///{tmp_path}/s.db"
    path.write_text(SWEEP)
    argv = ["sweep", "submit", str(path), "--storage", url, "--jobs", "2", "--cluster", "local", "--wait",
            "--folder", str(tmp_path / "jobs"), "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "submitted 2 local jobs of 1 worker(s)" in out and "2 of 2 jobs ended cleanly" in out, out
    assert "3 trials (3 complete)" in out, out
    assert points_of(url) == [(0.25, 0), (0.5, 0), (0.75, 0)]  # each point once, shared by the two jobs


def test_slurm_refuses_a_sqlite_storage_before_submitting(tmp_path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(SWEEP)
    folder = tmp_path / "jobs"
    argv = ["sweep", "submit", str(path), "--storage", f"sqlite:///{tmp_path}/s.db", "--jobs", "2", "--folder",
            str(folder)]  # fmt: skip
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SQLite on a shared file system" in err[0] and "PostgreSQL" in err[0], err
    assert not folder.exists()


def test_a_changed_sweep_file_is_refused_at_submit_not_in_every_job(tmp_path, capsys):
    path, url, folder = tmp_path / "tiny.toml", f"sqlite:///{tmp_path}/s.db", tmp_path / "jobs"
    path.write_text(SWEEP)
    assert main(["sweep", "run", str(path), "--storage", url, "--dry-run"]) == 0
    from sqzdse.sweep import engine as S
    from sqzdse.sweep.spec import load_spec

    S.open_study(load_spec(str(path)), url)  # the study exists, made from this file
    path.write_text(SWEEP.replace("epochs = 1", "epochs = 2"))
    capsys.readouterr()
    argv = ["sweep", "submit", str(path), "--storage", url, "--jobs", "2", "--cluster", "local", "--folder",
            str(folder)]  # fmt: skip
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "train.epochs" in err, err
    assert not folder.exists()


def test_a_job_at_its_time_limit_stops_its_workers_and_asks_to_be_requeued():
    job = SweepJob(["sweep", "run", "x.toml"], "sqlite:///x.db")
    code = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(43)); print(1, flush=True); "
    job._proc = subprocess.Popen([sys.executable, "-c", code + "time.sleep(60)"], stdout=subprocess.PIPE)
    job._proc.stdout.readline()  # its handler is installed
    again = job.checkpoint()
    assert job._proc.returncode == 43  # stopped by SIGTERM, as a sweep worker checkpoints and queues its trial
    assert isinstance(again.function, SweepJob) and (again.function.argv, again.function.storage) == (
        job.argv,
        job.storage,
    )
    copy = pickle.loads(pickle.dumps(job))  # what submitit writes to requeue: no process in it
    assert copy._proc is None and copy.argv == job.argv


@pytest.mark.slow
def test_a_failing_job_is_one_line_with_its_log(tmp_path, monkeypatch, capsys):
    path, url = tmp_path / "tiny.toml", f"sqlite:///{tmp_path}/s.db"
    path.write_text(SWEEP)
    (tmp_path / "tfds").write_text("not a folder")  # the jobs' dataset cannot be read
    monkeypatch.setenv("SQZDSE_DATA_DIR", str(tmp_path / "tfds"))
    argv = ["sweep", "submit", str(path), "--storage", url, "--jobs", "1", "--cluster", "local", "--wait",
            "--folder", str(tmp_path / "jobs"), "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    assert main(argv) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("job ")]
    assert len(err) == 1 and "failed: sqzdse: error:" in err[0] and "_log.err" in err[0], err


def test_an_empty_job_array_is_refused_before_the_study_exists(tmp_path, capsys):
    path, url = tmp_path / "tiny.toml", f"sqlite:///{tmp_path}/s.db"
    path.write_text(SWEEP)
    argv = ["sweep", "submit", str(path), "--storage", url, "--jobs", "0", "--cluster", "local", "--folder",
            str(tmp_path / "jobs")]  # fmt: skip
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--jobs 0" in err[0], err
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "jobs").exists()
