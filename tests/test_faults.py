"""Faults of the machine are retried, never failed; a deleted study, an in-memory storage and a signalled worker pool
each end in one line; nothing is left RUNNING without a live worker."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import optuna
import pytest
from builders import SEEDS, TINY_SPEC, completed_points, logged, spec

from sqzdse.cli import main
from sqzdse.cli.sweep import run_pool
from sqzdse.sweep import engine as S
from sqzdse.sweep import spec as SP
from sqzdse.sweep import storage as ST


class FullDisk:
    """The same data, until the first batch of the first training run: then the disk is full (ENOSPC)."""

    def __init__(self, ds):
        self.ds, self.info, self.steps_per_epoch, self.failed = ds, ds.info, ds.steps_per_epoch, False

    def batches(self, *a, **k):
        if k.get("train") and not self.failed:
            self.failed = True
            raise OSError(28, "No space left on device")
        return self.ds.batches(*a, **k)


def test_a_fault_of_the_machine_requeues_the_trial_and_the_next_run_trains_it(ds, tmp_path):
    url, runs = f"sqlite:///{tmp_path}/fault.db", str(tmp_path / "runs")
    s = spec(**SEEDS)
    with pytest.raises(S.MachineFault) as e:
        S.run_worker(s, url, runs_dir=runs, dataset=FullDisk(ds))
    msg = str(e.value)
    assert e.value.exit_code == 75 and "\n" not in msg
    assert "trial 0 stopped by a fault of the machine" in msg and "No space left on device" in msg, msg
    assert "it is queued again" in msg
    rows = S.export_rows(url, "tiny")
    assert sorted(r["state"] for r in rows) == ["FAIL", "WAITING", "WAITING", "WAITING"]  # nothing failed for good
    (failed,) = [r for r in rows if r["state"] == "FAIL"]
    assert failed["status"] == "fault" and "retried as a new trial" in failed["reason"]
    # The disk is fixed: the next run trains every point, the retried one included, and fails nothing more.
    assert S.run_worker(s, url, runs_dir=runs, dataset=ds) == 3
    rows = S.export_rows(url, "tiny")
    assert completed_points(rows) == [(0.25, 0), (0.25, 1), (0.25, 2)]
    assert [r["state"] for r in rows].count("FAIL") == 1
    assert all(r["reason"] is None for r in rows if r["state"] == "COMPLETE")  # not the failed attempt's reason


def test_the_fault_test_tells_machine_from_configuration():
    import sqlalchemy.exc

    try:
        try:
            raise OSError(30, "Read-only file system")
        except OSError as inner:
            raise ValueError("orbax could not save") from inner
    except ValueError as wrapped:
        assert S.is_fault(wrapped)
    locked = sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("database is locked"))
    assert S.is_fault(locked)
    assert not S.is_fault(ValueError("sr=7: must be in (0, 1]")) and not S.is_fault(FloatingPointError("nan"))


def test_the_heartbeat_outlives_a_locked_storage():
    """Optuna's heartbeat thread dies at its first failed write; ours keeps beating, so a trial whose storage is
    locked for a while is not declared dead once the storage answers again."""

    class Storage:
        calls, fails = 0, 3

        def get_heartbeat_interval(self):
            return 0.02

        def record_heartbeat(self, trial_id):
            Storage.calls += 1
            if Storage.calls <= Storage.fails:
                raise optuna.exceptions.StorageInternalError("database is locked")

    class Trial:
        storage, _trial_id = Storage(), 7

    with ST.heartbeat(Trial()):
        deadline = time.time() + 10
        while Storage.calls < Storage.fails + 3 and time.time() < deadline:
            time.sleep(0.01)
    assert Storage.calls >= Storage.fails + 3  # beats after the three failures
    assert not [t for t in threading.enumerate() if t.name.startswith("sqzdse-heartbeat")]  # stopped on exit


def _running_study(url):
    storage = ST.open_storage(url, create=True)
    study = optuna.create_study(study_name="live", storage=storage)
    with pytest.warns(UserWarning, match="Heartbeat of storage"):  # Optuna's: ask/tell is what workers use here
        trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    return study, trial


def test_delete_refuses_a_study_with_live_running_trials(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/del.db"
    study, trial = _running_study(url)
    assert main(["sweep", "delete", "--storage", url, "--study", "live", "--yes"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("sqzdse: error: study 'live' has 1 trial(s) RUNNING (number 0): stop their workers first "
                   "(SIGINT or SIGTERM queues their trials again), then delete")  # fmt: skip
    study.tell(trial, 0.5)
    assert main(["sweep", "delete", "--storage", url, "--study", "live", "--yes"]) == 0


class DeletesTheStudy:
    """The same data; its first training batch deletes the study, as `sweep delete` from another shell would."""

    def __init__(self, ds, url):
        self.ds, self.url, self.info, self.steps_per_epoch = ds, url, ds.info, ds.steps_per_epoch

    def batches(self, *a, **k):
        if k.get("train") and "tiny" in ST.study_names(ST.open_storage(self.url), self.url):
            optuna.delete_study(study_name="tiny", storage=self.url)
        return self.ds.batches(*a, **k)


def test_a_worker_whose_study_was_deleted_stops_in_one_line(ds, tmp_path):
    url = f"sqlite:///{tmp_path}/gone.db"
    with pytest.raises(S.StudyGone, match=r"^study 'tiny' was deleted from sqlite:///.*gone.db while this worker "
                       r"ran it; stopped$"):  # fmt: skip
        S.run_worker(spec(**SEEDS), url, runs_dir=str(tmp_path / "runs"), dataset=DeletesTheStudy(ds, url))


def test_a_dataset_typo_or_a_batch_larger_than_the_data_creates_no_study(ds, tmp_path):
    url = f"sqlite:///{tmp_path}/none.db"
    typo = _with_train(dataset="fashon_mnist")
    with pytest.raises(SP.SpecError, match="^train: unknown dataset 'fashon_mnist'; known: "):
        S.run_worker(typo, url, runs_dir=str(tmp_path))
    huge = _with_train(batch_size=100_000)
    with pytest.raises(SP.SpecError, match=r"^train: batch_size x iter_size = 100000: larger than the training split"):
        S.run_worker(huge, url, runs_dir=str(tmp_path), dataset=ds)
    assert not os.path.exists(f"{tmp_path}/none.db")  # neither made a storage, let alone a study


def _with_train(**changes):
    """TINY_SPEC with these [train] values."""
    return SP.parse_spec({**TINY_SPEC, "train": {**TINY_SPEC["train"], **changes}})


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_storage_is_refused_in_one_line(url, tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text('[study]\nname = "s"\n[space]\nsr = [0.25]\n')
    assert main(["sweep", "run", str(path), "--storage", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is an in-memory database, gone when the process ends" in err, err


def test_max_trials_must_not_be_negative(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text('[study]\nname = "s"\n[space]\nsr = [0.25]\n')
    assert main(["sweep", "run", str(path), "--max-trials", "-3", "--storage", f"sqlite:///{tmp_path}/s.db"]) == 2
    assert capsys.readouterr().err.strip() == "sqzdse: error: --max-trials -3: must be >= 0"


@pytest.mark.parametrize(
    "storage, cause",
    [
        ("sqlite:///{tmp}/junk.db", "DatabaseError: file is not a database"),
        ("postgresql+psycopg2://u:p@127.0.0.1:1/db", "Connection refused"),
    ],
)
def test_a_reader_on_a_broken_storage_names_the_cause(storage, cause, tmp_path, capsys):
    (tmp_path / "junk.db").write_text("not a database\n")
    assert main(["sweep", "status", "--storage", storage.format(tmp=tmp_path)]) == 2
    err = capsys.readouterr().err
    assert cause in err and "exceeding max length" not in err and err.count("\n") == 1, err
    assert "u:***@127.0.0.1" in err if "postgresql" in storage else True  # the password, not every "p", is masked


# A worker that stops as sqzdse's do: on SIGINT/SIGTERM it "checkpoints" (writes a file) and exits 128 + signal.
POOL_WORKER = textwrap.dedent("""
    import os, signal, sys, time
    def stop(signum, _):
        open(os.environ["MARK"], "a").write(f"{signal.Signals(signum).name}\\n")
        sys.exit(128 + signum)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    open(os.environ["MARK"] + ".started", "w").close()
    time.sleep(120)
    """)  # fmt: skip
POOL = textwrap.dedent("""
    import os, sys
    from sqzdse.cli.sweep import run_pool
    marks = sys.argv[1:]
    sys.exit(run_pool([([sys.executable, "-c", {worker!r}], {{**os.environ, "MARK": m}}) for m in marks]))
    """)  # fmt: skip


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_worker_pool_reaches_every_worker_once(signum, tmp_path):
    marks = [str(tmp_path / f"w{i}") for i in range(2)]
    script = POOL.format(worker=POOL_WORKER)
    p = subprocess.Popen([sys.executable, "-c", script, *marks], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not all(os.path.exists(m + ".started") for m in marks) and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(signum)
    _, err = p.communicate(timeout=60)
    name = signal.Signals(signum).name
    assert p.returncode == 128 + signum, err
    assert err.strip() == (f"sqzdse: {name}: passed to 2 workers; each stopped after a checkpoint and queued its "
                           "trial again for the next `sqzdse sweep run`")  # fmt: skip
    assert [open(m).read() for m in marks] == [f"{name}\n"] * 2  # each heard it once, and no orphan trains on


def test_a_pool_without_signals_returns_the_worst_exit_code():
    ok, bad = [sys.executable, "-c", "pass"], [sys.executable, "-c", "raise SystemExit(75)"]
    assert run_pool([(ok, dict(os.environ)), (bad, dict(os.environ))]) == 75


def test_a_worker_with_nothing_to_claim_names_the_trials_running_elsewhere(ds, tmp_path):
    url, s = f"sqlite:///{tmp_path}/held.db", spec(space={"sr": [0.25]})
    study = S.open_study(s, url)
    held = ST.claim_waiting(study)  # another worker's trial, its heartbeat fresh: not stale yet
    held.storage.record_heartbeat(held._trial_id)
    with logged() as log:
        assert S.run_worker(s, url, runs_dir=str(tmp_path), dataset=ds) == 0
    assert any("nothing left to claim; trial(s) 0 RUNNING elsewhere" in m and "120 s old" in m for m in log), log


def test_max_trials_zero_reaches_every_worker(tmp_path, monkeypatch):
    from sqzdse.cli import sweep as CS

    path, pools = tmp_path / "s.toml", []
    path.write_text('[study]\nname = "s"\n[space]\nsr = [0.25]\n')
    monkeypatch.setattr(CS, "run_pool", lambda commands: pools.append(commands) or 0)
    assert main(["sweep", "run", str(path), "--workers", "2", "--max-trials", "0"]) == 0
    (commands,) = pools
    assert len(commands) == 2 and all(argv[-3:] == ["--no-progress", "--max-trials", "0"] for argv, _ in commands)
