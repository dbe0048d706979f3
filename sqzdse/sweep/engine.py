"""Sweeps: a declarative TOML file becomes an Optuna study whose trials are training runs.

Stages, as in pycls: ``load_spec`` (validate the file; ``sqzdse.sweep.spec``), ``run_worker`` (any number
of processes, on any number of machines, on one storage; ``sqzdse.sweep.storage`` opens and locks it),
``export_rows`` (collect), then ``sqzdse plot`` / ``sqzdse report`` (analyse; they never train).
Each trial records its val top-1 per epoch as intermediate values and each study its metric names, which is
what optuna-dashboard shows.

Safety: every ``sweep run`` checks, under a study lock, that the file and the
study agree (or refuses before training) and enqueues the grid points the study
lacks, so a killed creator leaves nothing half-made; workers claim waiting
trials atomically (PostgreSQL row locks, SQLite serialised by BEGIN IMMEDIATE),
so every grid point runs exactly once.
Workers send heartbeats; a trial whose worker died (kill -9) goes stale, is
marked FAIL and re-enqueued, and its retry resumes from the dead worker's
checkpoint. A trial's workdir, ``runs/trials/<key>``, is keyed by everything
that decides its result (``sqzdse.train.recipe.run_identity``), shared by all studies:
a run finished by any trial is reused, never trained twice, and workers that
reach one key at once take turns on its lock. SIGINT/SIGTERM stop a worker
after a checkpoint; its trial is failed as "interrupted" and queued again at
once. A diverged or broken trial is recorded as FAIL with its reason; the sweep
goes on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import secrets
import time
import warnings
from collections.abc import Sequence

import numpy as np

from sqzdse import __version__
from sqzdse.errors import InputError, SqzdseError
from sqzdse.model import config as C
from sqzdse.model.config import METAPARAMETERS
from sqzdse.runtime import deferred_signals
from sqzdse.sweep.forecast import progress_line, retried_numbers
from sqzdse.sweep.schema import FIELDS, TrialRow, budget_text
from sqzdse.sweep.spec import (
    SpecError,
    SweepSpec,
    check_agreement,
    point_key,
    spec_record,
    train_config,
)
from sqzdse.sweep.storage import (
    DEFAULT_RUNS,
    MissingStorage,
    claim_waiting,
    heartbeat,
    open_storage,
    redact,
    report,
    study_lock,
    study_names,
)
from sqzdse.train.recipe import SWEEPABLE, TrainConfig, run_identity, run_key

log = logging.getLogger(__name__)  # progress lines at INFO; `sqzdse` shows them on stderr (sqzdse.cli.show_logs)


NSGA2_POPULATION = 12  # what benchmarks/search_efficiency.py measured; Optuna's 50 would be random search for 50 trials


def sampler(name: str, seed: int | None = None, constraints_func=None):
    """The Optuna sampler a study of sampler `name` runs, in one place for the sweep engine and the replays of
    benchmarks/search_efficiency.py. Seeded per worker (``seed`` None: from the OS): workers with one seed would
    draw the same random points, each training what another already trains. TPE is multivariate, with
    ``constant_liar`` (workers sharing a storage count each other's running trials as bad, so that they do not all
    ask for the same point); a grid enqueues every trial, so nothing is sampled."""
    import optuna

    seed = secrets.randbits(31) if seed is None else seed
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constraints_func=constraints_func, multivariate=True,
                                          constant_liar=True)  # fmt: skip
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraints_func,
                                             population_size=NSGA2_POPULATION)  # fmt: skip
    return optuna.samplers.RandomSampler(seed=seed)  # random, and a grid


def _constraints(trial) -> list[float]:
    return [float(trial.user_attrs.get("over_budget", 0.0))]


def _pruner(spec: SweepSpec):
    import optuna

    return {
        "none": optuna.pruners.NopPruner(),
        "median": optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
        "hyperband": optuna.pruners.HyperbandPruner(min_resource=1),
        "pareto": optuna.pruners.NopPruner(),  # Optuna's pruners take one objective: the engine asks _should_prune
    }[spec.pruner]


def open_study(spec: SweepSpec, storage_url: str):
    """Create or load the study, check that it agrees with the file, and enqueue the grid points it lacks.

    All under the study lock, so concurrent workers neither enqueue a point twice nor see a half-made study; a run
    after a killed creator enqueues what is missing. Refuses (SpecError, before any training) a study made from a
    different file: see ``check_agreement``.
    """
    import optuna

    storage = open_storage(storage_url, spec, create=True)
    kw = dict(
        study_name=spec.name,
        storage=storage,
        sampler=sampler(spec.sampler, constraints_func=_constraints if spec.max_bytes else None),
        pruner=_pruner(spec),
    )
    with study_lock(storage, storage_url, spec.name):
        try:
            study = optuna.create_study(directions=spec.directions, **kw)
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(**kw)
        trials = study.get_trials(deepcopy=False)
        held, points = _agree(study, spec, storage_url, trials)
        if study.metric_names != list(spec.objectives):  # what optuna-dashboard calls the objectives
            _set_metric_names(study, spec.objectives)
        record = spec_record(spec)
        if study.user_attrs.get("spec") != record:
            study.set_user_attr("spec", record)
        missing = [p for p in points if point_key(p) not in held]
        for point in missing:
            study.enqueue_trial(point)
    if missing and trials:
        log.info(f"[{spec.name}] enqueued {len(missing)} grid points the study did not have")
    return study


def _agree(study, spec: SweepSpec, storage_url: str, trials) -> tuple[set, list]:
    """``check_agreement`` of the file and the study (SpecError if they differ); returns (the grid points the study
    holds, the file's grid points). What both ``open_study`` and the dry run check."""
    held = {point_key(t.system_attrs["fixed_params"]) for t in trials if "fixed_params" in t.system_attrs}
    points = spec.grid_points() if spec.sampler == "grid" else []
    check_agreement(study, spec, redact(storage_url), trials, held, {point_key(p) for p in points})
    return held, points


def _set_metric_names(study, objectives) -> None:
    import optuna

    with warnings.catch_warnings():  # "experimental" since Optuna 3.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(objectives))


# --------------------------------------------------------------------------- workers


def _budget_used(study) -> int:
    """Trials that count towards n_trials: all but the stale or interrupted ones that were retried."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    return sum(1 for t in trials if t.number not in retried)


def trial_key(cfg: C.SqueezeNetConfig, tc: TrainConfig) -> str:
    """The name of what a trial trains (``sqzdse.train.recipe.run_key``: configuration, result-changing settings,
    seed)."""
    return run_key(cfg, tc)


TRIALS_DIR = "trials"  # runs_dir/trials/<key>: one workdir per run, shared by every study


def trial_workdir(runs_dir: str, study: str, cfg: C.SqueezeNetConfig, tc: TrainConfig) -> str:
    """``runs_dir/trials/<key>``; a run that a version before shared workdirs left in ``runs_dir/<study>/<its
    key>`` (a hash of configuration and seed only) is used in place when it trains exactly this."""
    from sqzdse.train.checkpoints import read_identity

    workdir = os.path.join(runs_dir, TRIALS_DIR, trial_key(cfg, tc))
    blob = json.dumps([C.to_dict(cfg), tc.seed], sort_keys=True).encode()
    legacy = os.path.join(runs_dir, study, hashlib.sha1(blob).hexdigest()[:12])
    if not os.path.exists(workdir) and read_identity(legacy) == run_identity(cfg, tc):
        return legacy
    return workdir


@deferred_signals("after its last trial was recorded")  # SIGINT/SIGTERM: see _requeue
def run_worker(
    spec: SweepSpec,
    storage_url: str,
    *,
    runs_dir: str = DEFAULT_RUNS,
    dataset=None,
    max_trials: int | None = None,
    progress: bool = False,
) -> int:
    """Work on the study until it is done (or `max_trials` were run here); returns trials run here."""
    import jax
    import optuna
    from optuna.storages import fail_stale_trials

    from sqzdse.runtime import Interrupted, check_signals

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats, fail_stale_trials
    if not jax.config.jax_compilation_cache_dir:  # seeds, retries and resumed sweeps reuse compiles
        jax.config.update("jax_compilation_cache_dir", os.path.abspath(os.path.join(runs_dir, "jax-cache")))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    started = time.monotonic()
    if dataset is None:  # before the study: a missing dataset creates nothing
        dataset = load_dataset(spec)
    check_dataset(spec, dataset)
    study = open_study(spec, storage_url)
    done = 0
    try:
        while max_trials is None or done < max_trials:
            check_signals("between trials: nothing was running")
            fail_stale_trials(study)  # a dead worker's trial becomes FAIL + a WAITING retry
            trial = claim_waiting(study)
            if trial is None:
                if spec.sampler == "grid" or _budget_used(study) >= (spec.n_trials or 0):
                    _say_running(spec, study)
                    break
                trial = study.ask()
            log.info(progress_line(spec, study.get_trials(deepcopy=False), time.monotonic() - started))
            try:
                with heartbeat(trial):
                    state, values = _run_trial(spec, trial, dataset, runs_dir, progress)
                study.tell(trial, values, state=state)
            except Interrupted as e:
                _requeue(study, trial, e.message)
                raise Interrupted(e.signum, f"{e.message}; trial {trial.number} is queued again for the next "
                                  "`sqzdse sweep run`") from None  # fmt: skip
            except Exception as e:
                if not is_fault(e):
                    raise
                raise _fault(study, trial, e) from None
            done += 1
    except KeyError:  # Optuna's "Record does not exist": the study was deleted under this worker
        if spec.name not in study_names(open_storage(storage_url), storage_url):
            raise StudyGone(f"study {spec.name!r} was deleted from {redact(storage_url)} while this worker ran it; "
                            "stopped") from None  # fmt: skip
        raise
    log.info(progress_line(spec, study.get_trials(deepcopy=False), time.monotonic() - started))
    return done


def _say_running(spec: SweepSpec, study) -> None:
    """Name the trials other workers hold: a killed worker's is retried only once its heartbeat is stale."""
    from optuna.trial import TrialState

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if running:
        log.info(f"[{spec.name}] nothing left to claim; trial(s) {', '.join(str(t.number) for t in running)} RUNNING "
            f"elsewhere: if a worker was killed, its trial is retried by a run started after its heartbeat is "
            f"{spec.grace_period} s old (study.grace_period)")  # fmt: skip


class MachineFault(SqzdseError, RuntimeError):
    """A fault of the machine or its storage stopped a trial (I/O error, full or read-only disk, locked or
    unreachable database): the trial is queued again, never failed, and the worker stops."""

    exit_code = 75  # EX_TEMPFAIL (sysexits.h): try again later; the sweep did not finish


class StudyGone(SqzdseError, RuntimeError):
    """The study was deleted while a worker ran it."""


def is_fault(e: BaseException) -> bool:
    """Whether `e`, or an error it was raised from, is a fault of the environment rather than of the trial's
    configuration: an OSError (disk, permissions, I/O) or a database that could not be reached or written."""
    from sqlalchemy.exc import OperationalError

    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, (OSError, OperationalError)):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _fault(study, trial, e: BaseException) -> MachineFault:
    """Queue `trial` again after a fault (when the storage still takes it; else its heartbeat goes stale and the next
    run retries it) and say what happened in one line."""
    cause = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    try:
        _requeue(study, trial, f"fault of the machine: {cause}", status="fault")
        then = "it is queued again"
    except Exception:  # the storage itself is the fault
        then = "the storage did not take its retry: the next run retries it once its heartbeat is stale"
    return MachineFault(f"trial {trial.number} stopped by a fault of the machine, not of its configuration "
                        f"({cause[:300]}); {then}; fix the cause and run the sweep again")  # fmt: skip


def check_dataset(spec: SweepSpec, dataset) -> None:
    """The file's training settings fit the loaded dataset (a batch no larger than the training split, a validation
    split to rank trials by), or SpecError naming the key, before any study or trial is made."""
    from sqzdse.train.recipe import update_counts

    if dataset.info.num_val < 1:
        raise SpecError(f"train.val_size: the validation split of {dataset.info.name} is empty; trials are ranked by "
                        "validation accuracy")  # fmt: skip
    first = {d.name: d.check_values()[0] for d in spec.space}
    try:
        update_counts(dataset, train_config(spec, spec.config(first), spec.seeds[0], first))
    except C.ConfigError as e:
        raise SpecError(f"train: {e} ({dataset.info.name}: {dataset.info.num_train:,} training images)") from None


def load_dataset(spec: SweepSpec):
    """The sweep's dataset (``sqzdse.data.pipeline.load``; prepared on first use)."""
    from sqzdse.data import pipeline as D

    try:
        return D.load(spec.train.get("dataset", "fashion_mnist"), val_size=spec.train.get("val_size"))
    except InputError as e:  # an unknown name, a val_size the data cannot give: the file's [train] table
        raise SpecError(f"train: {e}") from None


def dry_run(spec: SweepSpec, storage_url: str, dataset=None) -> tuple[list, object, int]:
    """What ``sweep run`` would train, without training or creating anything: (``forecast.plan``, the ``Pace`` it
    was estimated at or None, the trials the study holds); the SpecError the run would raise for a file that
    differs from its study. The pace is this study's, else that of the storage's
    other studies on the same dataset; a storage that does not exist yet holds nothing."""
    from sqzdse.sweep.forecast import measured_pace, plan

    dataset = dataset if dataset is not None else load_dataset(spec)
    try:
        studies = _studies(storage_url, None)
    except MissingStorage:
        studies = []
    study = next((s for s in studies if s.study_name == spec.name), None)
    held = study.get_trials(deepcopy=False) if study is not None else []
    if study is not None:  # a file the run would refuse: the dry run says so, in the same words
        _agree(study, spec, storage_url, held)
    pace = measured_pace(held, "this study")
    if pace is None:
        same = [t for s in studies if s.study_name != spec.name for t in s.get_trials(deepcopy=False)
                if t.user_attrs.get("dataset") == dataset.info.name]  # fmt: skip
        pace = measured_pace(same, f"other studies on {dataset.info.name}")
    return plan(spec, dataset, held, pace), pace, len(held)


_COMPILED_FOR: list = []  # the configuration whose compiled steps this process holds


def _hold_compiled(cfg: C.SqueezeNetConfig) -> None:
    """Free JAX's in-memory caches unless they hold `cfg`'s network: memory stays flat over a long sweep (the
    persistent cache keeps the compiles), and the seeds of one network, consecutive in a grid, reuse its steps
    without tracing or loading them again."""
    import jax

    if _COMPILED_FOR != [cfg]:
        jax.clear_caches()
        _COMPILED_FOR[:] = [cfg]


def _run_trial(spec: SweepSpec, trial, dataset, runs_dir: str, progress: bool):
    """Train one trial: suggest its point, train each seed, record the result. Returns (TrialState, objective values
    or None); never raises for a bad trial, only for a fault of the machine."""
    import optuna
    from optuna.trial import TrialState

    try:
        cfg, seeds, point = _suggest(spec, trial, dataset)
    except (C.ConfigError, ValueError) as e:
        return _record_failure(trial, "invalid", str(e))
    _hold_compiled(cfg)
    cost = _record_point(spec, trial, cfg, seeds, dataset, point)
    if spec.max_bytes and cost["bytes"] > spec.max_bytes:
        trial.set_user_attr("over_budget", float(cost["bytes"] - spec.max_bytes))
        trial.set_user_attr("status", "pruned")
        trial.set_user_attr("reason", f"{cost['bytes']} bytes > max_bytes {spec.max_bytes}: not trained")
        return TrialState.PRUNED, None
    trial.set_user_attr("over_budget", 0.0)
    try:  # a swept training setting the dataset cannot take (a batch larger than its split): this trial's fault
        runs = [(seed, train_config(spec, cfg, seed, point)) for seed in seeds]
    except C.ConfigError as e:
        return _record_failure(trial, "invalid", str(e))
    runs = [(seed, tc, trial_workdir(runs_dir, spec.name, cfg, tc)) for seed, tc in runs]
    one = (lambda xs: xs[0]) if len(runs) == 1 else list  # one seed: plain values, as "seed" is
    trial.set_user_attr("key", one([trial_key(cfg, tc) for _, tc, _ in runs]))
    trial.set_user_attr("workdir", one([workdir for _, _, workdir in runs]))
    results, reused, reported = [], [], {}
    try:
        for seed, tc, workdir in runs:
            r, by = _train_seed(spec, trial, cfg, tc, workdir, dataset, progress, first=seed == seeds[0],
                                pruned=spec.pruner != "none" and len(seeds) == 1, reported=reported)  # fmt: skip
            reused.append(by)
            if by:
                trial.set_user_attr("reused_from", one(reused))
            results.append(r)
            if r["status"] != "completed":
                return _record_failure(trial, r["status"], r["reason"], r)
    except optuna.TrialPruned as e:
        trial.set_user_attr("status", "pruned")
        trial.set_user_attr("reason", str(e))
        trial.set_user_attr("curve", [reported[k] for k in sorted(reported)])  # the epochs it ran
        return TrialState.PRUNED, None
    except Exception as e:  # a broken trial is a recorded failure, never a dead sweep; a broken machine is neither
        if is_fault(e):
            raise
        return _record_failure(trial, "failed", f"{type(e).__name__}: {e}")
    return TrialState.COMPLETE, _record_result(spec, trial, results, cost)


def _suggest(spec: SweepSpec, trial, dataset) -> tuple[C.SqueezeNetConfig, list[int], dict]:
    """The trial's network (its metaparameters, fitted to the dataset's images and classes), seeds and point (every
    swept value, training settings included)."""
    point = {d.name: d.suggest(trial) for d in spec.space}
    seeds = [spec.seed_dim.suggest(trial)] if spec.sampler == "grid" else list(spec.seeds)
    cfg = dataclasses.replace(spec.config(point), input_shape=tuple(dataset.info.image_shape),
                              num_classes=dataset.info.num_classes)  # fmt: skip
    return cfg, seeds, point


def _record_point(spec: SweepSpec, trial, cfg: C.SqueezeNetConfig, seeds: list[int], dataset, point: dict) -> dict:
    """The trial's metaparameters, swept training settings and costs as user attributes (known before it trains);
    returns the costs."""
    from sqzdse.model.cost import summary

    cost = summary(cfg)
    meta = {**{k: getattr(cfg, k) for k in METAPARAMETERS}, **{k: v for k, v in point.items() if k in SWEEPABLE}}
    for k, v in {**meta, "params": cost["params"], "bytes": cost["bytes"], "macs": cost["macs"],
                 "seed": seeds[0] if len(seeds) == 1 else seeds, "version": __version__,
                 "dataset": dataset.info.name}.items():  # fmt: skip
        trial.set_user_attr(k, v)
    return cost


def _train_seed(spec: SweepSpec, trial, cfg, tc, workdir: str, dataset, progress: bool, *, first: bool,
                pruned: bool, reported: dict) -> tuple[dict, str | None]:  # fmt: skip
    """Train (or reuse) one seed's run; returns (its summary, who trained it before or None). The first seed's
    epochs are the trial's learning curve; with `pruned`, the pruner may stop it after an epoch."""
    import optuna

    from sqzdse.train.loop import train_and_evaluate

    label = " ".join(f"{k}={C.shown(k, getattr(cfg, k))}" for k in METAPARAMETERS)
    label += "".join(f" {k}={getattr(tc, k)}" for k in SWEEPABLE if k in spec.swept())
    log.info(f"[{spec.name}] trial {trial.number}: {label} seed={tc.seed} in {workdir}")

    def on_epoch(record):
        if first:  # the learning curve, whatever the pruner: the first seed's, as the "curve" attribute
            _report_curve(trial, [record], reported)
        if pruned and _should_prune(spec, trial, record["epoch"], math.ceil(tc.epochs)):
            raise optuna.TrialPruned(f"pruned after epoch {record['epoch']}")

    def on_busy(msg):
        log.info(f"[{spec.name}] trial {trial.number}: {msg} (the same run, for another trial); waiting")

    result = train_and_evaluate(cfg, tc, workdir, dataset=dataset, on_epoch=on_epoch, progress=progress,
                                on_busy=on_busy, origin=dict(study=spec.name, trial=trial.number))  # fmt: skip
    r = result.summary()
    if first:  # a reused or resumed run: the epochs trained before this process
        _report_curve(trial, r.get("history", []), reported)
    by = _origin(r) if result.reused else None
    if by:
        log.info(f"[{spec.name}] trial {trial.number}: finished before by {by}: not trained again")
    if first and r["status"] == "completed":  # the first seed's network, timed on this worker's cores
        from sqzdse.deploy import latency

        r.update(latency.measure(cfg, (result.graphdef, result.state.params)))
    if spec.compress and r["status"] == "completed":
        from sqzdse.compress.pipeline import compressed_size

        r["compressed_bytes"] = compressed_size(cfg, result.state.params, **spec.compress)
    return r, by


def _should_prune(spec: SweepSpec, trial, epoch: int, last_epoch: int) -> bool:
    """Optuna's pruner of a single-objective study, or the pareto pruner (``sqzdse.sweep.pruning``) of a
    multi-objective one, which reads every trial's value at this epoch from the storage."""
    if spec.pruner != "pareto":
        return trial.should_prune()
    from sqzdse.sweep.pruning import ParetoPruner

    pruner = ParetoPruner(margin=spec.prune_margin, size=spec.size_objective())
    return pruner.should_prune(trial.study, trial, epoch, last_epoch)


def _record_result(spec: SweepSpec, trial, results: list[dict], cost: dict) -> list[float]:
    """The seeds' mean results, learning curve and times as user attributes; returns the objective values."""
    agg = {k: float(np.mean([r[k] for r in results])) for k in ("val_top1", "val_top5", "test_top1", "test_top5")}
    if spec.compress:  # seeds compress to slightly different sizes: their mean
        agg["compressed_bytes"] = int(round(np.mean([r["compressed_bytes"] for r in results])))
    agg.update({k: v for k, v in results[0].items() if k.startswith("latency_")})  # the first seed's, as the curve
    for k, v in agg.items():
        trial.set_user_attr(k, v)
    _record_curve(trial, results[0])
    trial.set_user_attr("train_seconds", sum(r["train_seconds"] for r in results))
    trial.set_user_attr("compile_seconds", sum(r["compile_seconds"] for r in results))
    rates = [h["images_per_s"] for r in results for h in r["history"] if h.get("images_per_s")]
    if rates:  # training throughput, compilation left out: what sqzdse.sweep.forecast estimates trial times from
        trial.set_user_attr("images_per_s", float(np.mean(rates)))
    trial.set_user_attr("status", "completed")
    if trial.user_attrs.get("reason"):  # a retry carries its failed attempt's attributes: not this one's
        trial.set_user_attr("reason", None)
    log.info(f"[{spec.name}] trial {trial.number}: val_top1={agg['val_top1']:.4f} test_top1={agg['test_top1']:.4f}")
    return [agg.get(o, cost.get(o)) for o in spec.objectives]


def _record_curve(trial, result: dict) -> None:
    """A run's learning curve and each epoch's seconds as user attributes: its training (the first epoch's with
    compiling) and validation, what an epoch of this trial cost (what a replay of the sweep charges)."""
    history = result.get("history", [])
    trial.set_user_attr("curve", [h["val_top1"] for h in history])
    trial.set_user_attr("epoch_seconds", [h["seconds"] + h.get("eval_seconds", 0.0) for h in history])


def _report_curve(trial, history: list[dict], reported: dict) -> None:
    """Each epoch's val_top1 as the trial's intermediate value at step = epoch, once per epoch (`reported`: epoch ->
    value, what was reported so far)."""
    for h in history:
        if h["epoch"] not in reported and h.get("val_top1") is not None:
            report(trial, h["val_top1"], h["epoch"])
            reported[h["epoch"]] = h["val_top1"]


def _origin(summary: dict) -> str:
    """Who trained a reused run: "study/trial number" from its summary, or that no sweep did."""
    o = summary.get("origin") or {}
    return f"{o['study']}/{o['trial']}" if "study" in o and "trial" in o else "a run outside any sweep"


def _requeue(study, trial, reason: str, status: str = "interrupted") -> None:
    """An interrupted trial: FAIL with status "interrupted", and at once a WAITING copy (same parameters) that the
    next worker resumes from the checkpoint. The copy is made as Optuna's stale-trial retry makes it (system attrs
    ``failed_trial``, ``retry_history``), so budgets count the pair as one trial."""
    import optuna
    from optuna.trial import TrialState

    trial.set_user_attr("status", status)
    trial.set_user_attr("reason", f"{reason}; retried as a new trial")
    study.tell(trial, state=TrialState.FAIL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)
    (frozen,) = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number == trial.number]
    retry(study, frozen)


def _record_failure(trial, status: str, reason: str, result: dict | None = None):
    from optuna.trial import TrialState

    trial.set_user_attr("status", status)
    trial.set_user_attr("reason", reason)
    if result:
        _record_curve(trial, result)
    log.info(f"trial {trial.number} {status}: {reason}")
    return TrialState.FAIL, None


# --------------------------------------------------------------------------- collect


def export_rows(storage_url: str, study_name: str | None = None) -> list[TrialRow]:
    """One row per trial (all studies when `study_name` is None): state, metaparameters and results."""
    return [row for study in _studies(storage_url, study_name) for row in _rows(study)]


def _studies(storage_url: str, study_name: str | None) -> list:
    """The storage's studies (Optuna Study objects), or the one named: a clear error when it is not there."""
    import optuna

    storage = open_storage(storage_url)
    names = study_names(storage, storage_url, must_hold=study_name)
    names = names if study_name is None else [study_name]
    return [optuna.load_study(study_name=name, storage=storage) for name in names]


def _rows(study) -> list[TrialRow]:
    train = (study.user_attrs.get("spec") or {}).get("train")
    budget = budget_text(train) if isinstance(train, dict) else None  # what results.check_budgets compares
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {k: t.user_attrs.get(k, t.params.get(k)) for k in FIELDS}
        row.update({k: t.user_attrs.get(k, t.params.get(k)) for k in SWEEPABLE if k in t.params})
        row.update(study=study.study_name, number=t.number, state=t.state.name, budget=budget, **_times(t))
        if row["status"] is None and t.state.name == "FAIL":
            row["status"], row["reason"] = "failed", "worker died (stale heartbeat); retried as a new trial"
        rows.append(row)
    return rows


def _times(t) -> dict:
    """A trial's start, end (ISO 8601) and duration in seconds, as far as the storage has them."""
    start, end = t.datetime_start, t.datetime_complete
    return dict(started=start.isoformat() if start else None, finished=end.isoformat() if end else None,
                duration_s=(end - start).total_seconds() if start and end else None)  # fmt: skip


def resolve_study(storage_url: str, study_name: str | None) -> str:
    """The study to act on: the given one, or the storage's only study."""
    names = study_names(open_storage(storage_url), storage_url)
    if study_name:
        return study_name
    if len(names) != 1:
        raise SpecError(f"--study: the storage holds {len(names)} studies ({', '.join(names) or 'none'}); name one")
    return names[0]


@dataclasses.dataclass(frozen=True)
class StudyStatus:
    """Progress of a study (``sqzdse sweep status``); each trial is an export row (``sqzdse.sweep.schema.FIELDS``).

    best: the best trial by the (first) objective; pareto: ``study.best_trials``, the trials no other trial beats
    on every objective (with max_bytes, only trials within it); top: the N best by the first objective.
    """

    study: str
    trials: int  # how many the study holds, in any state
    states: dict[str, int]  # Optuna state name -> trials
    objectives: list[str]
    directions: list[str]  # "maximize" / "minimize", one per objective
    best: TrialRow | None
    pareto: list[TrialRow]
    top: list[TrialRow]

    def states_text(self) -> str:
        """'3 complete, 1 fail', or 'no trials'."""
        return ", ".join(f"{n} {s.lower()}" for s, n in sorted(self.states.items())) or "no trials"


def status(storage_url: str, study_name: str | None = None, top: int = 0) -> StudyStatus:
    """Progress of a study: trials per state, its objectives, the best trial(s) and the `top` N."""
    import optuna

    (study,) = _studies(storage_url, resolve_study(storage_url, study_name))
    rows = {r["number"]: r for r in _rows(study)}
    states: dict[str, int] = {}
    for r in rows.values():
        states[r["state"]] = states.get(r["state"], 0) + 1
    objectives = (study.user_attrs.get("spec") or {}).get("objectives") or ["val_top1"]
    first_max = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE

    def ranked(trials) -> list[dict]:  # best first by the first objective
        return [rows[t.number] for t in sorted(trials, key=lambda t: t.values[0], reverse=first_max)]

    pareto = ranked(study.best_trials)
    done = ranked(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    return StudyStatus(
        study=study.study_name, trials=len(rows), states=states, objectives=objectives,
        directions=[d.name.lower() for d in study.directions], best=pareto[0] if pareto else None,
        pareto=pareto, top=done[:top],
    )  # fmt: skip


def write_rows(rows: list[TrialRow] | list[dict], fmt: str, out, columns: Sequence[str] = FIELDS) -> None:
    """CSV (lists as JSON strings) or JSON to a file object; CSV's columns: `columns`, then any other key."""
    if fmt == "json":
        json.dump(rows, out, indent=1)
        out.write("\n")
        return
    import csv

    extra = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in columns]  # swept training settings
    w = csv.DictWriter(out, fieldnames=[*columns, *extra])
    w.writeheader()
    for r in rows:
        w.writerow({k: json.dumps(v) if isinstance(v, list) else ("" if v is None else v) for k, v in r.items()})
