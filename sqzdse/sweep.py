"""Sweeps: a declarative TOML file becomes an Optuna study whose trials are training runs.

Stages, as in pycls: ``load_spec`` (validate the file), ``run_worker`` (any number
of processes, on any number of machines, on one storage), ``export_rows``
(collect), then ``sqzdse plot`` / ``sqzdse report`` (analyse; they never train).

Safety: every ``sweep run`` checks, under a study lock, that the file and the
study agree (or refuses before training) and enqueues the grid points the study
lacks, so a killed creator leaves nothing half-made; workers claim waiting
trials atomically (PostgreSQL row locks, SQLite serialised by BEGIN IMMEDIATE),
so every grid point runs exactly once.
Workers send heartbeats; a trial whose worker died (kill -9) goes stale, is
marked FAIL and re-enqueued, and its retry resumes from the dead worker's
checkpoint. A trial's workdir, ``runs/trials/<key>``, is keyed by everything
that decides its result (``sqzdse.recipe.run_identity``), shared by all studies:
a run finished by any trial is reused, never trained twice, and workers that
reach one key at once take turns on its lock. SIGINT/SIGTERM stop a worker
after a checkpoint; its trial is failed as "interrupted" and queued again at
once. A diverged or broken trial is recorded as FAIL with its reason; the sweep
goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
import time
import tomllib
import typing
import warnings
from typing import Any

import numpy as np

from sqzdse import __version__
from sqzdse import config as C
from sqzdse.recipe import TrainConfig, default_recipe, run_identity, run_key
from sqzdse.runtime import deferred_signals

METAPARAMETERS = ("base_e", "incr_e", "freq", "pct3x3", "sr", "bypass")
INT_PARAMS = ("base_e", "incr_e", "freq")
SAMPLERS = ("grid", "random", "tpe", "nsga2")
PRUNERS = ("none", "median", "hyperband")
# objective -> direction
OBJECTIVES = {"val_top1": "maximize", "val_top5": "maximize", "bytes": "minimize", "params": "minimize",
              "macs": "minimize", "compressed_bytes": "minimize"}  # fmt: skip
# [compress]: how a trial's compressed_bytes is measured (sqzdse.compress.compressed_size, no fine-tuning).
COMPRESS_DEFAULTS = {"bits": 6, "density": "released", "huffman": True}
TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}
DEFAULT_RUNS = "runs"
GRID_LIMIT = 10_000  # a larger grid is refused unless `sweep run --yes`: a mistyped step should not enqueue a million
# grace_period >= 2 x heartbeat_interval + HEARTBEAT_MARGIN. A live worker writes a heartbeat every interval, so the
# one a checker reads is up to an interval old plus the write's wait (SQLite serialises writers; a busy database or a
# stalled process delays one); twice the interval survives one heartbeat lost entirely, and the margin covers SQLite's
# 1 s timestamps and the delay of the next one. Shorter, and a live trial is failed and trained a second time.
HEARTBEAT_MARGIN = 5


class SpecError(ValueError):
    """An invalid sweep file; the message names the key and what is allowed."""


@dataclasses.dataclass(frozen=True)
class Dim:
    """One search-space axis: a fixed value, a categorical list, or a (log) range with an optional step.

    ``grid``: the axis of a grid sweep, whose trials are all enqueued with their values fixed.
    """

    name: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    grid: bool = False

    def values(self) -> list:
        """Every value of a list or a stepped range (a grid axis)."""
        if self.choices is not None:
            return list(self.choices)
        if self.step is None:
            raise SpecError(f"space.{self.name}: a grid needs a list or a range with a step")
        n = int(round((self.high - self.low) / self.step))
        values = [self.low + i * self.step for i in range(n + 1)]
        return [int(v) if self.name in INT_PARAMS else round(v, 10) for v in values]

    def check_values(self) -> list:
        """The values that validation builds: every value of a list or stepped range, else a range's endpoints."""
        return self.values() if self.choices is not None or self.step is not None else [self.low, self.high]

    def suggest(self, trial):
        if self.choices is not None and len(self.choices) == 1:
            return self.choices[0]
        if self.grid:
            # The value is fixed by the enqueued point; the distribution recorded with it must not depend on the
            # values the file lists: Optuna refuses a CategoricalDistribution whose choices differ from the study's
            # earlier trials', which would fail every new point of a grid that grew.
            values = self.values()
            if self.name == "bypass":
                return trial.suggest_categorical(self.name, list(C.BYPASSES))
            if all(isinstance(v, int) for v in values):
                return trial.suggest_int(self.name, min(values), max(values))
            return trial.suggest_float(self.name, min(values), max(values))
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.name in INT_PARAMS:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def as_toml(self):
        """The axis as a sweep file writes it (the study's stored spec; differences are reported in these terms)."""
        if self.choices is not None:
            return list(self.choices)
        return {k: v for k, v in (("low", self.low), ("high", self.high), ("step", self.step)) if v is not None} | (
            {"log": True} if self.log else {}
        )


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A parsed, validated sweep file."""

    name: str
    preset: str
    model: dict  # fixed metaparameter overrides (applied before the space)
    space: tuple[Dim, ...]
    train: dict  # TrainConfig fields
    sampler: str = "grid"
    objectives: tuple[str, ...] = ("val_top1",)
    pruner: str = "none"
    n_trials: int | None = None  # for adaptive samplers; a grid's size is the grid's
    seeds: tuple[int, ...] = (0,)
    max_bytes: int | None = None  # accuracy under a size budget: larger models are not trained
    heartbeat_interval: int = 10
    grace_period: int = 120
    max_retry: int = 3
    compress: dict | None = None  # bits, density, huffman: record compressed_bytes per trial (COMPRESS_DEFAULTS)
    source: str = ""

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o] for o in self.objectives]

    @property
    def seed_dim(self) -> Dim:
        return Dim("seed", choices=self.seeds, grid=self.sampler == "grid")

    def grid_size(self) -> int:
        return math.prod(len(d.values()) for d in (*self.space, self.seed_dim))

    def grid_points(self) -> list[dict]:
        """Every (metaparameters, seed) combination of a grid sweep, in file order."""
        axes = [(d.name, d.values()) for d in (*self.space, self.seed_dim)]
        return [
            dict(zip([a for a, _ in axes], combo, strict=True)) for combo in itertools.product(*(v for _, v in axes))
        ]

    def config(self, params: dict) -> C.SqueezeNetConfig:
        meta = {k: params[k] for k in METAPARAMETERS if k in params}
        return C.from_preset(self.preset, **{**self.model, **meta})


def _fail(key: str, msg: str):
    raise SpecError(f"{key}: {msg}")


def load_spec(path: str, max_points: int | None = GRID_LIMIT) -> SweepSpec:
    """Parse and validate a sweep file; every error names the key and what is allowed."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except (FileNotFoundError, IsADirectoryError):
        raise SpecError(f"{path}: no such sweep file") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML: {e}") from None
    return parse_spec(raw, source=path, max_points=max_points)


# What a sweep file's values must be: the fields' types (an int passes for a float).
MODEL_TYPES = typing.get_type_hints(C.SqueezeNetConfig)
TRAIN_TYPES = typing.get_type_hints(TrainConfig)
TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _check_type(key: str, value, hint) -> None:
    kinds = [t for t in (typing.get_args(hint) or (hint,)) if t is not type(None)]
    for t in kinds:
        if isinstance(value, bool) != (t is bool):
            continue
        if isinstance(value, t) or (t is float and isinstance(value, int)):
            return
    _fail(key, f"{value!r} is not {' or '.join(TYPE_NAMES.get(t, t.__name__) for t in kinds)}")


def parse_spec(raw: dict, source: str = "", max_points: int | None = GRID_LIMIT) -> SweepSpec:
    """Validate a sweep file's tables; every value of every axis is built before any training.

    ``max_points``: a larger grid is refused (``sqzdse sweep run --yes`` passes None).
    """
    allowed = {"study", "model", "space", "train", "compress"}
    for key in raw:
        if key not in allowed:
            _fail(key, f"unknown section; allowed: {', '.join(sorted(allowed))}")
        if not isinstance(raw[key], dict):
            _fail(key, f"{raw[key]!r}: a table ([{key}])")
    study = dict(raw.get("study", {}))
    name = study.pop("name", None)
    if not isinstance(name, str) or not name:
        _fail("study.name", "required, a non-empty string")
    kw: dict[str, Any] = {}
    for key, kind in (("sampler", SAMPLERS), ("pruner", PRUNERS)):
        if key in study:
            if study[key] not in kind:
                _fail(f"study.{key}", f"{study[key]!r} is not one of {', '.join(kind)}")
            kw[key] = study.pop(key)
    if "objectives" in study:
        objs = study.pop("objectives")
        if not isinstance(objs, list) or not objs or any(not isinstance(o, str) or o not in OBJECTIVES for o in objs):
            _fail("study.objectives", f"{objs!r}: a non-empty list of {', '.join(OBJECTIVES)}")
        kw["objectives"] = tuple(objs)
    if "seeds" in study:
        seeds = study.pop("seeds")
        if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
            seeds = list(range(seeds))
        if not isinstance(seeds, list) or not seeds or not all(type(s) is int for s in seeds):
            _fail("study.seeds", f"{seeds!r}: a number of seeds (>= 1) or a list of integer seeds")
        kw["seeds"] = tuple(_distinct("study.seeds", seeds))
    for key in ("n_trials", "max_bytes", "heartbeat_interval", "grace_period", "max_retry"):
        if key in study:
            v = study.pop(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "max_retry" else 1):
                _fail(f"study.{key}", f"{v!r}: a positive integer")
            kw[key] = v
    for key in study:
        _fail(f"study.{key}", "unknown key; allowed: name, sampler, objectives, pruner, n_trials, seeds, max_bytes, "
              "heartbeat_interval, grace_period, max_retry")  # fmt: skip

    model = dict(raw.get("model", {}))
    preset = model.pop("preset", "squeezenet_small")
    if not isinstance(preset, str) or preset not in C.PRESETS:
        _fail("model.preset", f"{preset!r} is not one of {', '.join(C.PRESETS)}")
    model_fields = {f.name for f in dataclasses.fields(C.SqueezeNetConfig)} - {"stem", "pool_after", "input_shape"}
    for key, value in model.items():
        if key not in model_fields:
            _fail(f"model.{key}", f"unknown; allowed: preset, {', '.join(sorted(model_fields))}")
        _check_type(f"model.{key}", value, MODEL_TYPES[key])

    sampler = kw.get("sampler", "grid")
    space = []
    for key, value in raw.get("space", {}).items():
        if key not in METAPARAMETERS:
            _fail(f"space.{key}", f"unknown metaparameter; allowed: {', '.join(METAPARAMETERS)}")
        space.append(dataclasses.replace(_dim(key, value), grid=sampler == "grid"))

    train = dict(raw.get("train", {}))
    for key, value in train.items():
        if key not in TRAIN_KEYS or key == "seed":
            _fail(f"train.{key}", f"unknown; allowed: {', '.join(sorted(TRAIN_KEYS - {'seed'}))} (seeds go in [study])")
        _check_type(f"train.{key}", value, TRAIN_TYPES[key])
    if "compress" in raw or "compressed_bytes" in kw.get("objectives", ()):
        kw["compress"] = _compress_settings(raw.get("compress", {}))
    spec = SweepSpec(name=name, preset=preset, model=model, space=tuple(space), train=train, source=source, **kw)

    if spec.sampler == "grid":
        if any(d.choices is None and d.step is None for d in spec.space):
            _fail("study.sampler", "'grid' needs every space entry to be a value, a list or a range with a step")
        size = spec.grid_size()
        if max_points is not None and size > max_points:
            axes = " x ".join(f"{len(d.values())} {d.name}" for d in (*spec.space, spec.seed_dim))
            _fail("space", f"the grid has {size:,} points ({axes}), over the limit of {max_points:,}; check the "
                  "ranges' steps, or run it anyway with sqzdse sweep run --yes")  # fmt: skip
    elif spec.n_trials is None:
        _fail("study.n_trials", f"required with sampler {spec.sampler!r}")
    if len(spec.objectives) > 1 and spec.pruner != "none":
        _fail("study.pruner", "pruning needs a single objective")
    if spec.grace_period < 2 * spec.heartbeat_interval + HEARTBEAT_MARGIN:
        _fail("study.grace_period", f"{spec.grace_period} s must be >= 2 x study.heartbeat_interval "
              f"({spec.heartbeat_interval} s) + {HEARTBEAT_MARGIN} s = "
              f"{2 * spec.heartbeat_interval + HEARTBEAT_MARGIN} s, or live trials are declared dead and trained "
              "twice")  # fmt: skip
    _check_points(spec)
    return spec


def _check_points(spec: SweepSpec) -> None:
    """Fail now, not in trial 37: build the model and training configuration of every combination of the axes'
    values (a grid's every point; an adaptive sampler's list values, range endpoints and stepped values)."""
    names = [d.name for d in spec.space]
    for combo in itertools.product(*(d.check_values() for d in spec.space)):
        params = dict(zip(names, combo, strict=True))
        try:
            train_config(spec, spec.config(params), seed=spec.seeds[0])
        except C.ConfigError as e:
            where = f"space point {' '.join(f'{k}={v}' for k, v in params.items())}: " if params else ""
            raise SpecError(f"{spec.source or 'sweep'}: {where}{e}") from None


def _distinct(key: str, values: list) -> list:
    seen = []
    for v in values:
        if v in seen:
            _fail(key, f"{v!r} is listed twice (a grid point would run twice)")
        seen.append(v)
    return values


def _compress_settings(raw) -> dict:
    """[compress]: bits (2-8), density ("released" or a fraction in (0, 1]), huffman (true/false)."""
    from sqzdse.compress import check_bits, parse_density

    if not isinstance(raw, dict):
        _fail("compress", 'a table: bits = 6, density = "released" | 0.4, huffman = true')
    for key in raw:
        if key not in COMPRESS_DEFAULTS:
            _fail(f"compress.{key}", f"unknown; allowed: {', '.join(COMPRESS_DEFAULTS)}")
    out = {**COMPRESS_DEFAULTS, **raw}
    try:
        check_bits(out["bits"])
    except ValueError as e:
        _fail("compress.bits", str(e))
    try:
        parse_density(out["density"])
    except ValueError as e:
        _fail("compress.density", str(e))
    if not isinstance(out["huffman"], bool):
        _fail("compress.huffman", f"{out['huffman']!r}: true or false")
    return out


def _dim(key: str, value) -> Dim:
    hint, where = MODEL_TYPES[key], f"space.{key}"
    # A float axis holds floats (1 -> 1.0): a grid point is then the same point however the file writes it.
    norm = float if hint is float else (lambda v: v)
    if isinstance(value, list):
        if not value:
            _fail(where, "an empty list")
        for v in value:
            _check_type(where, v, hint)
        return Dim(key, choices=tuple(_distinct(where, [norm(v) for v in value])))
    if isinstance(value, dict):
        extra = set(value) - {"low", "high", "step", "log"}
        if extra or "low" not in value or "high" not in value:
            _fail(where, "a range is {low = .., high = .., step = .. (optional), log = true|false}")
        if key == "bypass":
            _fail("space.bypass", 'bypass is categorical: give a list, e.g. ["none", "simple", "complex"]')
        for k in ("low", "high", "step"):
            if k in value:
                _check_type(f"{where}.{k}", value[k], hint)
        _check_type(f"{where}.log", value.get("log", False), bool)
        low, high, step, log = norm(value["low"]), norm(value["high"]), value.get("step"), value.get("log", False)
        if not low < high:
            _fail(where, f"low ({low}) must be < high ({high})")
        if log and (low <= 0 or step is not None):
            _fail(where, "a log range needs low > 0 and no step")
        if step is not None and step <= 0:
            _fail(where, f"step ({step}) must be > 0")
        return Dim(key, low=low, high=high, step=None if step is None else norm(step), log=log)
    _check_type(where, value, hint)
    return Dim(key, choices=(norm(value),))


def train_config(spec: SweepSpec, cfg: C.SqueezeNetConfig, seed: int):
    return default_recipe(cfg, **{**spec.train, "seed": seed})


# --------------------------------------------------------------------------- storage

STORAGE_ENV = "SQZDSE_STORAGE"


def default_storage(spec_or_name) -> str:
    """The embedded default: an SQLite file under runs/ (no server)."""
    name = spec_or_name.name if isinstance(spec_or_name, SweepSpec) else spec_or_name
    return f"sqlite:///{DEFAULT_RUNS}/{name}.db"


def storage_url(given: str | None, spec_or_name=None) -> str | None:
    """The storage to use: --storage, else $SQZDSE_STORAGE (a password stays off the command line and out of
    `ps`), else the sweep's default SQLite file (None when there is no sweep to name it)."""
    if given or os.environ.get(STORAGE_ENV):
        return given or os.environ[STORAGE_ENV]
    return default_storage(spec_or_name) if spec_or_name is not None else None


def redact(url: str) -> str:
    """The URL with its password as *** (what messages, logs and reports show)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: mask whatever sits between "user:" and "@"
        return re.sub(r"(://[^/@:]*:)[^@/]*@", r"\1***@", url)


def _scrub(text: str, url: str) -> str:
    """`text` (a library's error) with the URL and its password masked."""
    from sqlalchemy.engine import make_url

    text = text.replace(url, redact(url))
    try:
        password = make_url(url).password
    except Exception:
        password = None
    return text.replace(str(password), "***") if password else text


def open_storage(url: str, spec: SweepSpec | None = None, *, create: bool = False):
    """An Optuna storage with heartbeats (stale trials are failed and retried); one clear line for a bad URL.

    ``create``: make a missing SQLite file, its folder and the tables (only ``sweep run`` does). Readers (export,
    status, plot, report) never create: a missing SQLite file is an error naming its path.
    """
    import optuna
    from sqlalchemy.engine import make_url

    shown = redact(url)
    try:
        parsed = make_url(url)
    except Exception:
        raise StorageError(f"{shown!r} is not a storage URL (e.g. sqlite:///runs/NAME.db, "
                           "postgresql+psycopg2://USER@HOST/DB)") from None  # fmt: skip
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite and parsed.database not in (None, "", ":memory:"):
        _sqlite_file(parsed.database, shown, create)
    hb = spec.heartbeat_interval if spec else 10
    grace = spec.grace_period if spec else 120
    retry = spec.max_retry if spec else 3
    kwargs = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry_stale = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retry)
    for attempt in range(5):
        try:
            storage = _rdb_storage(
                url,
                engine_kwargs=kwargs,
                heartbeat_interval=hb,
                grace_period=grace,
                heartbeat_stale_trial_callback=retry_stale,
                skip_table_creation=not create,
            )
            break
        except Exception as e:  # sqlalchemy raises many kinds: bad driver, refused connection, bad path
            error = e
            # Workers that start together race to create the tables; the losers retry.
            if "UNIQUE constraint" not in str(e) and "already exists" not in str(e) and "locked" not in str(e):
                first = _scrub(str(error).splitlines()[0] if str(error) else "", url)
                empty = "no such table" in first or "does not exist" in first
                hint = " (not an Optuna storage: no sweep ran on it)" if empty else ""
                raise StorageError(f"cannot open the storage {shown!r}: {type(e).__name__}: {first}{hint}") from None
            time.sleep(0.5 * (attempt + 1))
    else:
        raise StorageError(f"cannot open the storage {shown!r}: {type(error).__name__}: {_scrub(str(error), url)}")
    if sqlite and create:
        _serialize_sqlite(storage)
    return storage


def _sqlite_file(path: str, shown: str, create: bool) -> None:
    """Check (reading) or make (creating) the folder of an SQLite storage; one line naming the path if impossible."""
    if os.path.isdir(path):
        raise StorageError(f"{path}: a folder, not an SQLite file (storage {shown!r})")
    if not create:
        if not os.path.isfile(path):
            raise StorageError(f"{path}: no such SQLite file (storage {shown!r}); sqzdse sweep run creates it")
        return
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        above = folder
        while not os.path.exists(above):
            above = os.path.dirname(above)
        why = f"{above} is a file, not a folder" if not os.path.isdir(above) else e.strerror
        raise StorageError(f"cannot create the SQLite storage {path} (storage {shown!r}): {why}") from None


def _serialize_sqlite(storage) -> None:
    """Every transaction on this SQLite storage starts with BEGIN IMMEDIATE: it takes the database's write lock first.

    Optuna's storage reads a trial, then updates it: a claim (WAITING -> RUNNING, in ``set_trial_state_values``),
    failing a stale trial, finishing one. On PostgreSQL the read is SELECT ... FOR UPDATE, a row lock, so exactly one
    worker wins. SQLite has no row locks, and Python's sqlite3 opens a transaction only at the first write, so two
    workers both read WAITING and both claim (optuna/optuna#4002; here 68 double claims of 200 trials by 8
    processes). Under BEGIN IMMEDIATE the read and the update are one serialised transaction: one claim succeeds and
    ``set_trial_state_values`` returns False to the others. Optuna's maintainers recommend JournalStorage instead of
    SQLite for many processes on one machine; it has no heartbeats, which detect killed workers here, so SQLite stays
    the embedded default and is made safe: this is SQLAlchemy's documented pysqlite recipe ("Serializable isolation").
    It needs the engine RDBStorage built (``storage.engine``, not a parameter Optuna offers) and runs only on the
    writer's storage (``sweep run``); readers keep plain transactions.
    """
    from sqlalchemy import event

    event.listen(storage.engine, "connect", lambda dbapi_conn, _: setattr(dbapi_conn, "isolation_level", None))
    event.listen(storage.engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
    storage.engine.dispose()  # the connections RDBStorage opened predate the listeners


def _rdb_storage(url, **kwargs):
    import optuna

    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 4.9; they are what we rely on
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, **kwargs)


class StorageError(RuntimeError):
    """The storage URL is malformed or unreachable."""


@contextlib.contextmanager
def _study_lock(storage, url: str, name: str):
    """One `sweep run` at a time creates, checks and fills the study `name` (on any number of machines).

    SQLite: an exclusive flock on ``FILE.db.lock`` beside the database (SQLite storages serve one machine).
    PostgreSQL: a session advisory lock on a connection of its own. Both are released when their holder exits or
    is killed, so a creator killed mid-enqueue blocks nobody: the next run enqueues what is missing.
    """
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):  # one process sees an in-memory database
            yield
            return
        import fcntl

        with open(parsed.database + ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield
        return
    if backend != "postgresql":
        raise StorageError(f"sweep run needs an sqlite or postgresql storage, not {backend!r} ({redact(url)}): "
                           "its workers lock the study while they enqueue its grid")  # fmt: skip
    import sqlalchemy

    key = int.from_bytes(hashlib.sha1(f"sqzdse study {name}".encode()).digest()[:8], "big", signed=True)
    with storage.engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


def _sampler(spec: SweepSpec, seed: int = 0):
    import optuna

    constraints = _constraints if spec.max_bytes else None
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constraints_func=constraints, multivariate=True)
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraints)
    return optuna.samplers.RandomSampler(seed=seed)  # grid: every trial is enqueued, nothing is sampled


def _constraints(trial) -> list[float]:
    return [float(trial.user_attrs.get("over_budget", 0.0))]


def _pruner(spec: SweepSpec):
    import optuna

    return {
        "none": optuna.pruners.NopPruner(),
        "median": optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
        "hyperband": optuna.pruners.HyperbandPruner(min_resource=1),
    }[spec.pruner]


def open_study(spec: SweepSpec, storage_url: str, log=print):
    """Create or load the study, check that it agrees with the file, and enqueue the grid points it lacks.

    All under the study lock, so concurrent workers neither enqueue a point twice nor see a half-made study; a run
    after a killed creator enqueues what is missing. Refuses (SpecError, before any training) a study made from a
    different file: see ``_check_agreement``.
    """
    import optuna

    storage = open_storage(storage_url, spec, create=True)
    kw = dict(study_name=spec.name, storage=storage, sampler=_sampler(spec), pruner=_pruner(spec))
    with _study_lock(storage, storage_url, spec.name):
        try:
            study = optuna.create_study(directions=spec.directions, **kw)
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(**kw)
        trials = study.get_trials(deepcopy=False)
        held = {_point_key(t.system_attrs["fixed_params"]) for t in trials if "fixed_params" in t.system_attrs}
        points = spec.grid_points() if spec.sampler == "grid" else []
        _check_agreement(study, spec, storage_url, trials, held, {_point_key(p) for p in points})
        record = _spec_record(spec)
        if study.user_attrs.get("spec") != record:
            study.set_user_attr("spec", record)
        missing = [p for p in points if _point_key(p) not in held]
        for point in missing:
            study.enqueue_trial(point)
    if missing and trials:
        log(f"[{spec.name}] enqueued {len(missing)} grid points the study did not have")
    return study


def _point_key(point: dict) -> tuple:
    return tuple(sorted(point.items()))


# Changing these in the file of a running study is allowed: they decide when a dead worker is detected, how often a
# trial is retried and how many trials an adaptive sampler runs, never what a trial computes.
RESULT_NEUTRAL = ("study.heartbeat_interval", "study.grace_period", "study.max_retry", "study.n_trials")


def _check_agreement(study, spec: SweepSpec, url: str, trials, held: set, wanted: set) -> None:
    """The file and the study agree, or nothing runs: a grid may only grow (its stored points all in the file's
    grid); every other difference is refused, naming the keys (study -> file) and the way out."""
    stored = study.user_attrs.get("spec")
    where = f"study {spec.name!r} in {redact(url)}"
    way_out = f"give the file a new [study] name, or delete the study: sqzdse sweep delete {spec.source or 'FILE'}"
    if stored is None:
        directions = [d.name.lower() for d in study.directions]
        if trials or directions != spec.directions:
            raise SpecError(f"{where} was not made from a sweep file ({len(trials)} trials, directions "
                            f"{', '.join(directions)}); nothing was run; {way_out}")  # fmt: skip
        return
    old, new = _file_view(stored), _file_view(_spec_record(spec))
    grid_grew = spec.sampler == "grid" and stored.get("sampler") == "grid" and held <= wanted
    diffs = [
        f"{k}: {_show(old.get(k, UNSET))} → {_show(new.get(k, UNSET))}"
        for k in sorted(old.keys() | new.keys())
        if old.get(k, UNSET) != new.get(k, UNSET)
        and k not in RESULT_NEUTRAL
        and not (grid_grew and (k.startswith("space.") or k == "study.seeds"))
    ]
    gone = sorted(held - wanted) if spec.sampler == "grid" else []
    if gone:
        shown = "; ".join(" ".join(f"{k}={v}" for k, v in p) for p in gone[:3]) + ("; ..." if gone[3:] else "")
        diffs.append(f"{len(gone)} of its grid points are not in the file's grid ({shown})")
    if diffs:
        raise SpecError(f"{where} was made from a different sweep file; nothing was run. Study → file: "
                        f"{'; '.join(diffs)}. To run this file, {way_out}")  # fmt: skip


UNSET = "(unset)"


def _show(value) -> str:
    return value if value is UNSET else json.dumps(value)


def _file_view(record: dict) -> dict:
    """A stored spec as the sweep file's dotted keys (study.sampler, model.base_e, space.sr, train.epochs, ...)."""
    view = {"sqzdse.format": record.get("format", 1)}
    for key, value in record.items():
        if key in ("model", "train", "compress", "space"):
            view.update({f"{key}.{k}": v for k, v in (value or {}).items()})
        elif key == "preset":
            view["model.preset"] = value
        elif key not in ("name", "source", "format"):
            view[f"study.{key}"] = value
    return view


# Bumped when a stored study can no longer be continued by this code (2: grid trials record ranges, not categories).
SPEC_FORMAT = 2


def _spec_record(spec: SweepSpec) -> dict:
    d = dataclasses.asdict(spec)
    d["space"] = {x.name: x.as_toml() for x in spec.space}
    d["format"] = SPEC_FORMAT
    return json.loads(json.dumps(d, default=list))


def study_names(storage, url: str, must_hold: str | None = None) -> list[str]:
    """The storage's study names; SpecError naming them if `must_hold` is not among them."""
    import optuna

    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if must_hold is not None and must_hold not in names:
        raise SpecError(f"study {must_hold!r} not in {redact(url)}; it holds: {', '.join(names) or 'none'}")
    return names


def delete_study(storage_url: str, name: str, confirm=lambda n_trials: True) -> int | None:
    """Remove a study and its trials, if ``confirm(its number of trials)``; returns that number, None if refused."""
    import optuna

    storage = open_storage(storage_url)
    study_names(storage, storage_url, must_hold=name)
    n = len(optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False))
    if not confirm(n):
        return None
    optuna.delete_study(study_name=name, storage=storage)
    return n


# --------------------------------------------------------------------------- workers


def _claim_waiting(study):
    """Take a WAITING (enqueued or retried) trial, or None. Exactly one worker gets each: PostgreSQL locks the row
    (SELECT ... FOR UPDATE), SQLite the whole database (``_serialize_sqlite``); the losers try the next one."""
    import optuna

    # Study._pop_waiting_trial_id is the claim Study.ask makes; no public API claims only: ask() samples a new trial
    # when none is waiting, and a grid worker must stop then.
    trial_id = study._pop_waiting_trial_id()
    return None if trial_id is None else optuna.Trial(study, trial_id)


def _budget_used(study) -> int:
    """Trials that count towards n_trials: all but the stale or interrupted ones that were retried."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}  # trial numbers
    return sum(1 for t in trials if t.number not in retried)


def trial_key(cfg: C.SqueezeNetConfig, tc: TrainConfig) -> str:
    """The name of what a trial trains (``sqzdse.recipe.run_key``: configuration, result-changing settings, seed)."""
    return run_key(cfg, tc)


TRIALS_DIR = "trials"  # runs_dir/trials/<key>: one workdir per run, shared by every study


def trial_workdir(runs_dir: str, study: str, cfg: C.SqueezeNetConfig, tc: TrainConfig) -> str:
    """``runs_dir/trials/<key>``; a run that a version before shared workdirs left in ``runs_dir/<study>/<its
    key>`` (a hash of configuration and seed only) is used in place when it trains exactly this."""
    from sqzdse.checkpoints import read_identity

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
    log=print,
) -> int:
    """Work on the study until it is done (or `max_trials` were run here); returns trials run here."""
    import jax
    import optuna
    from optuna.storages import fail_stale_trials
    from optuna.storages._heartbeat import get_heartbeat_thread

    from sqzdse import data as D
    from sqzdse.runtime import Interrupted, check_signals

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats, fail_stale_trials
    if not jax.config.jax_compilation_cache_dir:  # seeds, retries and resumed sweeps reuse compiles
        jax.config.update("jax_compilation_cache_dir", os.path.abspath(os.path.join(runs_dir, "jax-cache")))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    study = open_study(spec, storage_url, log=log)
    if dataset is None:
        dataset = D.load(spec.train.get("dataset", "fashion_mnist"), val_size=spec.train.get("val_size"))
    done = 0
    while max_trials is None or done < max_trials:
        check_signals("between trials: nothing was running")
        fail_stale_trials(study)  # a dead worker's trial becomes FAIL + a WAITING retry
        trial = _claim_waiting(study)
        if trial is None:
            if spec.sampler == "grid" or _budget_used(study) >= (spec.n_trials or 0):
                break
            trial = study.ask()
        try:
            with get_heartbeat_thread(trial._trial_id, study._storage):
                state, values = _run_trial(spec, trial, dataset, runs_dir, progress, log)
        except Interrupted as e:
            _requeue(study, trial, e.message)
            raise Interrupted(e.signum, f"{e.message}; trial {trial.number} is queued again for the next "
                              "`sqzdse sweep run`") from None  # fmt: skip
        study.tell(trial, values, state=state)
        done += 1
        jax.clear_caches()  # keep memory flat over a long sweep; the persistent cache keeps compiles
    return done


def _run_trial(spec: SweepSpec, trial, dataset, runs_dir: str, progress: bool, log):
    """Train one trial; returns (TrialState, objective values or None). Never raises for a bad trial."""
    import optuna
    from optuna.trial import TrialState

    from sqzdse.cost import summary
    from sqzdse.train import train_and_evaluate

    try:
        params = {d.name: d.suggest(trial) for d in spec.space}
        seeds = [spec.seed_dim.suggest(trial)] if spec.sampler == "grid" else list(spec.seeds)
        cfg = spec.config(params)
        cfg = dataclasses.replace(
            cfg, input_shape=tuple(dataset.info.image_shape), num_classes=dataset.info.num_classes
        )
    except (C.ConfigError, ValueError) as e:
        return _record_failure(trial, "invalid", str(e), log)
    cost = summary(cfg)
    meta = {k: getattr(cfg, k) for k in METAPARAMETERS}
    for k, v in {**meta, "params": cost["params"], "bytes": cost["bytes"], "macs": cost["macs"],
                 "seed": seeds[0] if len(seeds) == 1 else seeds, "version": __version__,
                 "dataset": dataset.info.name}.items():  # fmt: skip
        trial.set_user_attr(k, v)
    if spec.max_bytes and cost["bytes"] > spec.max_bytes:
        trial.set_user_attr("over_budget", float(cost["bytes"] - spec.max_bytes))
        trial.set_user_attr("status", "pruned")
        trial.set_user_attr("reason", f"{cost['bytes']} bytes > max_bytes {spec.max_bytes}: not trained")
        return TrialState.PRUNED, None
    trial.set_user_attr("over_budget", 0.0)
    label = " ".join(f"{k}={v}" for k, v in meta.items())
    runs = [(seed, train_config(spec, cfg, seed)) for seed in seeds]
    runs = [(seed, tc, trial_workdir(runs_dir, spec.name, cfg, tc)) for seed, tc in runs]
    one = (lambda xs: xs[0]) if len(runs) == 1 else list  # one seed: plain values, as "seed" is
    trial.set_user_attr("key", one([trial_key(cfg, tc) for _, tc, _ in runs]))
    trial.set_user_attr("workdir", one([workdir for _, _, workdir in runs]))
    results, reused = [], []
    try:
        for seed, tc, workdir in runs:
            log(f"[{spec.name}] trial {trial.number}: {label} seed={seed} in {workdir}")

            def on_epoch(record, _seed=seed):
                if spec.pruner != "none" and len(seeds) == 1:
                    trial.report(record["val_top1"], record["epoch"])
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"pruned after epoch {record['epoch']}")

            def on_busy(msg):
                log(f"[{spec.name}] trial {trial.number}: {msg} (the same run, for another trial); waiting")

            result = train_and_evaluate(cfg, tc, workdir, dataset=dataset, on_epoch=on_epoch, progress=progress,
                                        on_busy=on_busy, origin=dict(study=spec.name, trial=trial.number))  # fmt: skip
            r = result.summary()
            reused.append(_origin(r) if result.reused else None)
            if reused[-1]:
                trial.set_user_attr("reused_from", one(reused))
                log(f"[{spec.name}] trial {trial.number}: finished before by {reused[-1]}: not trained again")
            if spec.compress and r["status"] == "completed":
                from sqzdse.compress import compressed_size

                r["compressed_bytes"] = compressed_size(cfg, result.state.params, **spec.compress)
            results.append(r)
            if r["status"] != "completed":
                return _record_failure(trial, r["status"], r["reason"], log, r)
    except optuna.TrialPruned as e:
        trial.set_user_attr("status", "pruned")
        trial.set_user_attr("reason", str(e))
        return TrialState.PRUNED, None
    except Exception as e:  # a broken trial is a recorded failure, never a dead sweep
        return _record_failure(trial, "failed", f"{type(e).__name__}: {e}", log)
    agg = {k: float(np.mean([r[k] for r in results])) for k in ("val_top1", "val_top5", "test_top1", "test_top5")}
    if spec.compress:  # seeds compress to slightly different sizes: their mean
        agg["compressed_bytes"] = int(round(np.mean([r["compressed_bytes"] for r in results])))
    for k, v in agg.items():
        trial.set_user_attr(k, v)
    trial.set_user_attr("curve", [h["val_top1"] for h in results[0]["history"]])
    trial.set_user_attr("train_seconds", sum(r["train_seconds"] for r in results))
    trial.set_user_attr("compile_seconds", sum(r["compile_seconds"] for r in results))
    trial.set_user_attr("status", "completed")
    values = [agg.get(o, cost.get(o)) for o in spec.objectives]
    log(f"[{spec.name}] trial {trial.number}: val_top1={agg['val_top1']:.4f} test_top1={agg['test_top1']:.4f}")
    return TrialState.COMPLETE, values


def _origin(summary: dict) -> str:
    """Who trained a reused run: "study/trial number" from its summary, or that no sweep did."""
    o = summary.get("origin") or {}
    return f"{o['study']}/{o['trial']}" if "study" in o and "trial" in o else "a run outside any sweep"


def _requeue(study, trial, reason: str) -> None:
    """An interrupted trial: FAIL with status "interrupted", and at once a WAITING copy (same parameters) that the
    next worker resumes from the checkpoint. The copy is made as Optuna's stale-trial retry makes it (system attrs
    ``failed_trial``, ``retry_history``), so budgets count the pair as one trial."""
    import optuna
    from optuna.trial import TrialState

    trial.set_user_attr("status", "interrupted")
    trial.set_user_attr("reason", f"{reason}; retried as a new trial")
    study.tell(trial, state=TrialState.FAIL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)
    retry(study, study._storage.get_trial(trial._trial_id))


def _record_failure(trial, status: str, reason: str, log, result: dict | None = None):
    from optuna.trial import TrialState

    trial.set_user_attr("status", status)
    trial.set_user_attr("reason", reason)
    if result:
        trial.set_user_attr("curve", [h["val_top1"] for h in result.get("history", [])])
    log(f"trial {trial.number} {status}: {reason}")
    return TrialState.FAIL, None


# --------------------------------------------------------------------------- collect


ROW_KEYS = ("study", "number", "state", *METAPARAMETERS, "seed", "params", "bytes", "compressed_bytes", "macs",
            "val_top1", "val_top5", "test_top1", "test_top5", "curve", "train_seconds", "compile_seconds", "status",
            "reason", "dataset", "version", "key", "workdir", "reused_from")  # fmt: skip


def export_rows(storage_url: str, study_name: str | None = None) -> list[dict]:
    """One row per trial (all studies when `study_name` is None): state, metaparameters and results."""
    return [row for study in _studies(storage_url, study_name) for row in _rows(study)]


def _studies(storage_url: str, study_name: str | None) -> list:
    """The storage's studies (Optuna Study objects), or the one named: a clear error when it is not there."""
    import optuna

    storage = open_storage(storage_url)
    names = study_names(storage, storage_url, must_hold=study_name)
    names = names if study_name is None else [study_name]
    return [optuna.load_study(study_name=name, storage=storage) for name in names]


def _rows(study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {k: t.user_attrs.get(k, t.params.get(k)) for k in ROW_KEYS}
        row.update(study=study.study_name, number=t.number, state=t.state.name)
        if row["status"] is None and t.state.name == "FAIL":
            row["status"], row["reason"] = "failed", "worker died (stale heartbeat); retried as a new trial"
        rows.append(row)
    return rows


def resolve_study(storage_url: str, study_name: str | None) -> str:
    """The study to act on: the given one, or the storage's only study."""
    names = study_names(open_storage(storage_url), storage_url)
    if study_name:
        return study_name
    if len(names) != 1:
        raise SpecError(f"--study: the storage holds {len(names)} studies ({', '.join(names) or 'none'}); name one")
    return names[0]


def status(storage_url: str, study_name: str | None = None, top: int = 0) -> dict:
    """Progress of a study: trials per state, its objectives, the best trial(s) and the `top` N.

    best: the best trial by the (first) objective; pareto: ``study.best_trials``, the trials no other trial beats
    on every objective (with max_bytes, only trials within it); top: the N best by the first objective.
    """
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
    return dict(
        study=study.study_name, trials=len(rows), states=states, objectives=objectives,
        directions=[d.name.lower() for d in study.directions], best=pareto[0] if pareto else None,
        pareto=pareto, top=done[:top],
    )  # fmt: skip


def write_rows(rows: list[dict], fmt: str, out) -> None:
    """CSV (curve as a JSON string) or JSON to a file object."""
    if fmt == "json":
        json.dump(rows, out, indent=1)
        out.write("\n")
        return
    import csv

    w = csv.DictWriter(out, fieldnames=list(ROW_KEYS))
    w.writeheader()
    for r in rows:
        w.writerow({k: json.dumps(v) if isinstance(v, list) else ("" if v is None else v) for k, v in r.items()})
