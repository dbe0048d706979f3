"""``sqzdse sweep run|status|export|delete``."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys

from sqzdse.cli.common import add_output, command
from sqzdse.errors import InputError
from sqzdse.model.config import METAPARAMETERS, shown
from sqzdse.sweep.schema import FIELDS
from sqzdse.sweep.spec import GRID_LIMIT, load_spec, sweep_keys
from sqzdse.sweep.storage import DEFAULT_STORAGE, STORAGE_ENV, delete_study, redact, storage_url


def cmd_sweep_run(args) -> int:
    from sqzdse.sweep import engine as S

    spec = load_spec(args.file, max_points=None if args.yes else GRID_LIMIT)
    url = storage_url(args.storage, spec)
    if not args.storage and not os.environ.get(STORAGE_ENV) and url != DEFAULT_STORAGE:
        print(f"[{spec.name}] the study lives in {url}, its own file from sqzdse 0.1: continuing there (new studies "
              f"go to {DEFAULT_STORAGE})", file=sys.stderr)  # fmt: skip
    if args.workers < 1:
        raise InputError(f"--workers {args.workers}: must be >= 1")
    if args.max_trials is not None and args.max_trials < 0:
        raise InputError(f"--max-trials {args.max_trials}: must be >= 0")
    if args.dry_run:
        return _dry_run(spec, url)
    if args.workers > 1:
        return _spawn_workers(args, url)
    n = S.run_worker(spec, url, runs_dir=args.runs_dir, max_trials=args.max_trials, progress=not args.no_progress)
    print(f"{spec.name}: ran {n} trials here; storage {redact(url)} holds {_status(url, spec.name)}")
    return 0


def _dry_run(spec, url: str) -> int:
    """``sweep run --dry-run``: the trials, their sizes and MACs, and the time they would take; nothing runs."""
    from sqzdse.sweep import engine as S
    from sqzdse.sweep.forecast import duration, estimate_note

    trials, pace, held = S.dry_run(spec, url)
    grid = spec.sampler == "grid"
    names = list(trials[0].params) if trials else []
    todo = [t for t in trials if not t.done and not t.error]
    if grid:
        print(f"{spec.name}: a grid of {len(trials)} trials, {len(trials) - len(todo)} of them done or invalid; "
              f"storage {redact(url)} ({held} trials held)")  # fmt: skip
    else:
        print(f"{spec.name}: {spec.n_trials} trials chosen by {spec.sampler} within these corners of the space; "
              f"storage {redact(url)} ({held} trials held)")  # fmt: skip
    print("  " + "".join(f"{n:>9}" for n in names) + f"{'params':>12}{'MiB':>8}{'MMACs':>10}{'time':>14}")
    for t in trials:
        cells = "".join(f"{shown(k, v):>9}" for k, v in t.params.items())
        if t.error:
            print(f"  {cells}   invalid: {t.error}")
            continue
        when = "done" if t.done else duration(t.seconds) if t.seconds is not None else "?"
        print(f"  {cells}{t.params_count:>12,}{t.bytes / 2**20:>8.2f}{t.macs / 1e6:>10.1f}{when:>14}")
    if pace is not None and todo:
        seconds = [t.seconds for t in todo]
        total = sum(seconds) if grid else spec.n_trials * sum(seconds) / len(seconds)
        print(f"estimated time: ~{duration(total)} for {len(todo) if grid else spec.n_trials} trials on one worker; "
              + estimate_note(pace))  # fmt: skip
    elif todo:
        print("estimated time: " + estimate_note(pace))
    else:
        print("nothing to run: the study has finished every point")
    return 0


def _spawn_workers(args, url: str) -> int:
    """N worker processes on this machine, each one JAX thread pool, sharing the storage."""
    from sqzdse.runtime import worker_devices

    argv = [sys.executable, "-m", "sqzdse.cli", "sweep", "run", args.file, "--runs-dir", args.runs_dir, "--workers",
            "1", "--no-progress"]  # fmt: skip
    if args.max_trials is not None:
        argv += ["--max-trials", str(args.max_trials)]
    if args.yes:
        argv.append("--yes")
    # One disjoint set of cores (and GPUs) per worker; the storage goes by the environment, so a password in its URL
    # stays out of `ps`.
    envs = [{**os.environ, **share, STORAGE_ENV: url} for share in worker_devices(args.workers)]
    return run_pool([(argv, env) for env in envs])


def run_pool(commands: list[tuple[list[str], dict]]) -> int:
    """Run the (argv, env) commands as one pool that lives and dies together; returns the worst exit code.

    SIGINT and SIGTERM to this process (a terminal's ^C, a cluster job's SIGTERM at its time limit) reach every
    worker once, and this returns 128 + the signal after all of them have stopped (each after a checkpoint, its trial
    queued again), with one line. The workers run in their own process group, so a ^C reaches them only through
    here: a second signal would end a worker at once, without its checkpoint.
    """
    import subprocess

    procs, received, told = [], [], set()

    def tell(signum):  # each worker once
        for p in procs:
            if p.poll() is None and p.pid not in told:
                told.add(p.pid)
                p.send_signal(signum)

    def on_signal(signum, _frame):
        received.append(signum)
        tell(signum)

    handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for argv, env in commands:
            procs.append(subprocess.Popen(argv, env=env, process_group=0))
            if received:  # a signal while starting them: this one hears of it, the rest need not start
                tell(received[0])
                break
        codes = [p.wait() for p in procs]
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    if received:
        name = signal.Signals(received[0]).name
        print(f"sqzdse: {name}: passed to {len(procs)} workers; each stopped after a checkpoint and queued its trial "
              "again for the next `sqzdse sweep run`", file=sys.stderr)  # fmt: skip
        return 128 + received[0]
    return max(codes)


def cmd_sweep_submit(args) -> int:
    from sqzdse.sweep import engine as S
    from sqzdse.sweep.cluster import JobArray, submit

    # A bad file, an unreachable storage or a study made from another file fails here, once, not in every job.
    spec = load_spec(args.file, max_points=None if args.yes else GRID_LIMIT)
    url = storage_url(args.storage, spec)
    array = JobArray(jobs=args.jobs, workers=args.workers, cpus=args.cpus, gpus=args.gpus, minutes=args.time,
                     partition=args.partition, mem_gb=args.mem, parallel=args.parallel)  # fmt: skip
    if args.cluster == "slurm":
        from sqzdse.sweep.cluster import check_shared

        check_shared(url)
    S.open_study(spec, url)
    jobs = submit(args.file, url, array, cluster=args.cluster, folder=args.folder, runs_dir=args.runs_dir,
                  yes=args.yes, name=f"sqzdse-{spec.name}")  # fmt: skip
    print(f"{spec.name}: submitted {len(jobs)} {args.cluster} jobs of {args.workers} worker(s) on {redact(url)} "
          f"(job {jobs[0].job_id.split('_')[0]}; logs in {args.folder}); follow with: sqzdse sweep status "
          f"{args.file} --storage URL")  # fmt: skip
    if not args.wait:
        return 0
    failed = 0
    for job in jobs:
        try:
            job.result()
        except Exception:  # submitit re-raises the job's error with its whole log: one line per job here
            failed += 1
            said = [line for line in (job.stderr() or "").splitlines() if line.startswith("sqzdse:")]
            print(f"job {job.job_id}: failed{': ' + said[-1] if said else ''} (log: {job.paths.stderr})",
                  file=sys.stderr)  # fmt: skip
    st = _status(url, spec.name)
    print(f"{spec.name}: {len(jobs) - failed} of {len(jobs)} jobs ended cleanly; storage holds {st}")
    return 1 if failed else 0


def _status(url: str, name: str) -> str:
    from sqzdse.sweep import engine as S

    st = S.status(url, name)
    return f"{st.trials} trials ({st.states_text()})"


def keys_table(markdown: bool) -> str:
    """``sqzdse sweep keys``: the sweep file's keys (``sqzdse.sweep.spec.sweep_keys``), plain or as Markdown."""
    rows = sweep_keys()
    if markdown:
        lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        cell = lambda text: text.replace("|", "\\|")  # noqa: E731
        return "\n".join(lines + [f"| `{k}` | {t} | `{d}` | {cell(m)} |" for k, t, d, m in rows])
    wk, wt, wd = (max(len(r[i]) for r in rows) for i in range(3))
    return "\n".join(f"{k:<{wk}}  {t:<{wt}}  {d:<{wd}}  {m}" for k, t, d, m in rows)


def cmd_sweep_keys(args) -> int:
    print(keys_table(args.markdown))
    return 0


def cmd_sweep_status(args) -> int:
    from sqzdse.sweep import engine as S

    url, study = _storage_of(args)
    if args.top < 0:
        raise InputError(f"--top {args.top}: must be >= 0")
    st = S.status(url, study, top=args.top)
    if args.json:
        print(json.dumps(dataclasses.asdict(st), indent=1))
        return 0
    print(f"study {st.study} in {redact(url)}: {st.trials} trials ({st.states_text()})")

    def line(r) -> str:
        objs = " ".join(f"{o}={r[o]:.4f}" if isinstance(r[o], float) else f"{o}={r[o]:,}" for o in st.objectives)
        meta = " ".join(f"{k}={shown(k, r[k])}" for k in METAPARAMETERS)
        test = f"test_top1 {r['test_top1']:.4f}, {r['bytes']:,} bytes"
        return f"  trial {r['number']}: {objs} ({test}) | {meta} seed={r['seed']}"

    goal = ", ".join(f"{o} ({d})" for o, d in zip(st.objectives, st.directions, strict=True))
    if len(st.objectives) > 1:
        print(f"Pareto set of {goal}: {len(st.pareto)} trials")
        for r in st.pareto:
            print(line(r))
    elif st.best:
        print(f"best by {goal}:\n{line(st.best)}")
    if st.top:
        print(f"top {len(st.top)} by {goal.split(',')[0]}:")
        for r in st.top:
            print(line(r))
    return 0


def _storage_of(args) -> tuple[str, str | None]:
    """The storage (--storage > $SQZDSE_STORAGE > the FILE's default, else the default) and study (--study > the
    FILE's) to read."""
    if args.file:
        spec = load_spec(args.file, max_points=None)  # only its name and storage are needed: no grid limit
        return storage_url(args.storage, spec), args.study or spec.name
    return storage_url(args.storage), args.study


def cmd_sweep_delete(args) -> int:
    url, study = _storage_of(args)
    if not study:
        raise InputError("sweep delete: name the study: a sweep FILE or --study NAME")

    def confirm(n_trials: int) -> bool:
        what = f"study {study!r} ({n_trials} trials) from {redact(url)}"
        if args.yes:
            return True
        if not sys.stdin.isatty():
            raise InputError(f"sweep delete: no terminal to confirm on; pass --yes to delete {what}")
        try:
            return input(f"delete {what}? This cannot be undone [y/N] ").strip().lower() in ("y", "yes")
        except EOFError:
            return False

    n = delete_study(url, study, confirm)
    print(f"deleted {study!r} ({n} trials) from {redact(url)}" if n is not None else "nothing deleted")
    return 0 if n is not None else 1


def cmd_sweep_export(args) -> int:
    from sqzdse.sweep import engine as S

    fmt = export_format(args.format, args.output)
    url, study = _storage_of(args)
    study = S.resolve_study(url, study)
    rows = S.export_rows(url, study)
    what, columns = "trials", FIELDS
    if args.summary:
        from sqzdse.results.analysis import design_summary

        rows = design_summary(rows)
        if not rows:
            raise InputError(f"study {study!r}: no completed trials to summarise")
        what, columns = "designs", list(rows[0])
    if args.output:
        with open(args.output, "w", newline="") as f:
            S.write_rows(rows, fmt, f, columns)
        print(f"wrote {len(rows)} {what} to {args.output}", file=sys.stderr)
    else:
        S.write_rows(rows, fmt, sys.stdout, columns)
    return 0


def export_format(fmt: str | None, output: str | None) -> str:
    """--format if given, else the output file's suffix (.csv, .json); standard output gets CSV."""
    if fmt:
        return fmt
    suffix = os.path.splitext(output)[1].lower() if output else ".csv"
    if suffix not in (".csv", ".json"):
        raise InputError(f"-o {output}: cannot tell the format from {suffix or 'no suffix'!r}; name the file "
                         ".csv or .json, or give --format csv|json")  # fmt: skip
    return suffix[1:]


def add_commands(sub) -> None:
    what = "Optuna sweeps over the design space: run, submit, status, export, delete"
    sw = sub.add_parser("sweep", help=what, description=what + ".")
    sws = sw.add_subparsers(dest="sweep_command", required=True)
    run = command(
        sws,
        "run",
        help="work on a sweep until it is done (start as many as you like, on any machines, on one storage)",
        description="Run the trials of a sweep file (sweeps/*.toml). Workers on one --storage share the work: a grid "
        "runs each point once; a killed worker's trial is retried (resuming its checkpoint); rerunning a finished "
        "or interrupted sweep continues it. Default storage: sqlite:///runs/sqzdse.db, one file for every study (no "
        "server; one optuna-dashboard shows them all). Many machines: "
        "--storage postgresql+psycopg2://USER:PASS@HOST/DB on every machine.",
    )
    run.add_argument("file", help="sweep file (TOML), e.g. sweeps/smoke.toml")
    run.add_argument("--storage", help=f"Optuna storage URL (default: ${STORAGE_ENV}, else sqlite:///runs/sqzdse.db)")
    run.add_argument("--runs-dir", default="runs", help="trial workdirs and the JAX compilation cache")
    run.add_argument("--max-trials", type=int, help="stop this worker after N trials")
    run.add_argument("--workers", type=int, default=1, help="worker processes on this machine, each pinned to its "
                     "own share of the cores (1: one process using them all)")  # fmt: skip
    run.add_argument("--no-progress", action="store_true", help="no per-trial progress bar")
    run.add_argument("--dry-run", action="store_true", help="list the trials, their sizes and MACs and an estimated "
                     "time (from trials measured on the storage); train nothing, create nothing")  # fmt: skip
    run.add_argument("--yes", action="store_true", help=f"run a grid of more than {GRID_LIMIT:,} points")
    run.set_defaults(func=cmd_sweep_run)
    sub_ = command(
        sws,
        "submit",
        help="run a sweep's workers as a cluster job array (SLURM through submitit; 'local' on this machine)",
        description="Submit --jobs jobs, each running `sqzdse sweep run FILE --workers W` on its node, all on one "
        "--storage (PostgreSQL for SLURM: every node must reach it). A job at its time limit or preempted stops its "
        "workers after a checkpoint and is requeued; trials of a job that died are retried by the others. Needs "
        "submitit (pip install 'sqzdse[cluster]'). docs/sweeps.md#a-cluster.",
    )
    sub_.add_argument("file", help="sweep file (TOML)")
    sub_.add_argument("--storage", help=f"Optuna storage URL (default: ${STORAGE_ENV}, else the file's default)")
    sub_.add_argument("--jobs", type=int, required=True, help="jobs in the array")
    sub_.add_argument("--workers", type=int, default=1, help="sweep workers per job, each on its own share of the "
                      "job's cores or GPUs (default 1)")  # fmt: skip
    sub_.add_argument("--cpus", type=int, help="cores per job (SLURM --cpus-per-task)")
    sub_.add_argument("--gpus", type=int, default=0, help="GPUs per job (SLURM --gpus-per-node; default 0)")
    sub_.add_argument("--time", type=int, default=24 * 60, help="time limit per job in minutes (default 1440)")
    sub_.add_argument("--partition", help="SLURM partition")
    sub_.add_argument("--mem", type=float, help="memory per job in GB")
    sub_.add_argument("--parallel", type=int, help="at most this many jobs at once (SLURM --array=...%%N)")
    sub_.add_argument("--cluster", choices=("slurm", "local"), default="slurm",
                      help="slurm (sbatch), or local: the same jobs as processes here (default slurm)")  # fmt: skip
    sub_.add_argument("--folder", default="runs/submitit", help="submitit's job scripts and logs")
    sub_.add_argument("--runs-dir", default="runs", help="trial workdirs (on a file system every node shares)")
    sub_.add_argument("--wait", action="store_true", help="wait for every job and report how each ended")
    sub_.add_argument("--yes", action="store_true", help=f"run a grid of more than {GRID_LIMIT:,} points")
    sub_.set_defaults(func=cmd_sweep_submit)
    for name, func, helptext in (("status", cmd_sweep_status, "progress of a sweep: trials per state, the best"),
                                 ("export", cmd_sweep_export, "one row per trial as CSV or JSON"),
                                 ("delete", cmd_sweep_delete, "remove a study and all its trials from the storage, "
                                  "after a confirmation")):  # fmt: skip
        where = (f". Give a sweep FILE or --storage URL (default ${STORAGE_ENV}, else {DEFAULT_STORAGE}); a missing "
                 "storage is an error")  # fmt: skip
        q = command(sws, name, help=helptext, description=helptext + where + ", never created.")
        q.add_argument("file", nargs="?", help="sweep file (its default storage and study)")
        q.add_argument("--storage", help=f"Optuna storage URL (default: ${STORAGE_ENV}, else {DEFAULT_STORAGE})")
        q.add_argument("--study", help="study name (optional when the storage holds one)")
        if name == "export":
            q.add_argument("--format", choices=("csv", "json"),
                           help="default: the suffix of -o (.csv or .json); CSV on standard output")  # fmt: skip
            q.add_argument("--summary", action="store_true", help="one row per design instead: its seeds, trials, "
                           "sizes, and the mean of val_top1 and test_top1 over its seeds with the 95 %% bootstrap "
                           "interval (_low, _high; empty for one seed), best first")  # fmt: skip
            add_output(q, "write here instead of standard output", required=False)
        elif name == "status":
            q.add_argument("--json", action="store_true", help="print JSON")
            q.add_argument("--top", type=int, default=0, help="also list the N best trials by the first objective")
        else:
            q.add_argument("--yes", action="store_true", help="delete without asking")
        q.set_defaults(func=func)
    keys = command(sws, "keys", help="every key a sweep file takes, with its type, default and meaning")
    keys.add_argument("--markdown", action="store_true", help="as a Markdown table (docs/sweeps.md has it)")
    keys.set_defaults(func=cmd_sweep_keys)
