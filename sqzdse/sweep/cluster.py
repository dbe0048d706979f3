"""Sweep workers as a cluster job array, through submitit (``sqzdse sweep submit``).

Each job of the array runs ``sqzdse sweep run FILE --workers W`` on the node SLURM gives it, all of them on one
storage: the sweep engine already shares a study's work among any number of workers (a grid point runs once, a dead
worker's trial is retried), so a job array is just more workers. Inside a job, ``--workers`` splits the job's cores
or GPUs as on any machine (``sqzdse.runtime.worker_devices`` reads the CUDA_VISIBLE_DEVICES SLURM sets). At the job's
time limit SLURM sends SIGTERM to every process of the job: each worker checkpoints and queues its trial again, so
the next job (or ``sqzdse sweep submit`` again) resumes it.

submitit's ``local`` cluster runs the same jobs as processes on this machine (what the tests drive); ``slurm`` needs
``sbatch`` and a storage every node reaches (PostgreSQL, not a SQLite file). The storage URL is written into each
job's pickle under the submitit folder: give a PostgreSQL password by ``~/.pgpass`` (libpq reads it), not in the URL.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys

from sqzdse.errors import InputError
from sqzdse.sweep.storage import STORAGE_ENV, redact

CLUSTERS = ("slurm", "local")


@dataclasses.dataclass(frozen=True)
class JobArray:
    """How the jobs are asked for; the ``slurm_*`` fields mean nothing to the local cluster."""

    jobs: int
    workers: int = 1  # sweep workers per job (each its own cores or GPU of the job's)
    cpus: int | None = None  # cores per job
    gpus: int = 0  # GPUs per job
    minutes: int = 24 * 60  # time limit per job
    partition: str | None = None
    mem_gb: float | None = None
    parallel: int | None = None  # at most this many jobs of the array at once (SLURM's %N)

    def __post_init__(self):
        if self.jobs < 1 or self.workers < 1:
            raise InputError(f"--jobs {self.jobs} --workers {self.workers}: each must be >= 1")


class SweepJob:
    """One job: the sweep worker command on the node it landed on, with that node's environment (its
    CUDA_VISIBLE_DEVICES, PATH) and the storage passed by the environment (a password stays out of ``ps``).

    Raises when the workers fail, so that submitit records the job as failed. At the job's time limit or on
    preemption submitit calls :meth:`checkpoint`: the workers are stopped by SIGTERM (each checkpoints and queues
    its trial again) and the job asks to be requeued, so that the array goes on where it stopped.
    """

    def __init__(self, argv: list[str], storage: str):
        self.argv, self.storage = argv, storage
        self._proc = None

    def __getstate__(self):  # the running process stays behind when submitit pickles the job to requeue it
        return {"argv": self.argv, "storage": self.storage}

    def __setstate__(self, state):
        self.__init__(state["argv"], state["storage"])

    def __call__(self) -> int:
        env = {**os.environ, STORAGE_ENV: self.storage}
        self._proc = subprocess.Popen([sys.executable, "-m", "sqzdse.cli", *self.argv], env=env)
        code = self._proc.wait()
        if code != 0:
            raise RuntimeError(f"sqzdse {' '.join(self.argv)} exited with {code}")
        return code

    def checkpoint(self):
        from submitit.helpers import DelayedSubmission

        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            self._proc.wait()
        return DelayedSubmission(SweepJob(self.argv, self.storage))


def check_shared(storage: str) -> None:
    """A SLURM array's storage must be a server every node reaches: SQLite on a shared file system loses locks."""
    if storage.startswith("sqlite"):
        raise InputError(f"--storage {redact(storage)}: a job array runs on many nodes, and SQLite on a shared file "
                         "system loses locks; give a PostgreSQL URL (postgresql+psycopg2://USER@HOST/DB)")  # fmt: skip


def submit(file: str, storage: str, array: JobArray, *, cluster: str = "slurm", folder: str = "runs/submitit",
           runs_dir: str = "runs", yes: bool = False, name: str = "sqzdse"):  # fmt: skip
    """Submit ``array.jobs`` jobs of sweep workers for ``file`` on ``storage``; returns submitit's jobs."""
    if cluster not in CLUSTERS:
        raise InputError(f"--cluster {cluster!r}: one of {', '.join(CLUSTERS)}")
    if cluster == "slurm":
        check_shared(storage)
    try:
        import submitit  # deferred: only this command needs it
    except ImportError:
        raise InputError("sqzdse sweep submit needs submitit: pip install 'sqzdse[cluster]'") from None

    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params = {"name": name, "timeout_min": array.minutes, "gpus_per_node": array.gpus, "tasks_per_node": 1,
              "nodes": 1}  # fmt: skip
    if array.cpus is not None:
        params["cpus_per_task"] = array.cpus
    if array.mem_gb is not None:
        params["mem_gb"] = array.mem_gb
    if cluster == "slurm":
        params["slurm_signal_delay_s"] = 120  # SIGUSR2 2 min before the limit; SIGTERM then reaches every worker
        if array.partition:
            params["slurm_partition"] = array.partition
        if array.parallel:
            params["slurm_array_parallelism"] = array.parallel
    executor.update_parameters(**params)
    argv = ["sweep", "run", file, "--runs-dir", runs_dir, "--workers", str(array.workers), "--no-progress"]
    if yes:
        argv.append("--yes")
    with executor.batch():  # one array job (sbatch --array) on SLURM
        jobs = [executor.submit(SweepJob(argv, storage)) for _ in range(array.jobs)]
    return jobs
