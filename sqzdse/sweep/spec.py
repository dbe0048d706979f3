"""The sweep file: a declarative TOML file parsed and validated into a ``SweepSpec``, before any training.

``load_spec`` / ``parse_spec`` check every key, type and value (every grid point's model and training
configuration is built); ``SweepSpec.grid_points`` lists a grid's trials; ``check_agreement`` compares a file
with the spec a study was made from (``spec_record``), so a study only ever runs one file (a grid may grow).
No Optuna, no JAX: ``suggest`` receives its trial.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import tomllib
import typing
from typing import Any

from sqzdse.errors import SqzdseError
from sqzdse.model import config as C
from sqzdse.model.config import METAPARAMETERS
from sqzdse.sweep.schema import DESIGN_KEYS
from sqzdse.train.recipe import CHOICES, SWEEPABLE, TRAIN_HELP, TrainConfig, default_recipe, small_input_recipe

INT_PARAMS = ("base_e", "incr_e", "freq", "batch_size", "iter_size")  # the integer axes of [space]
SAMPLERS = ("grid", "random", "tpe", "nsga2")
# A file that names no sampler: a grid, unless it has several objectives. Then TPE, which needed the least compute
# to reach the full grid's front of the tabular benchmark (benchmarks/README.md#search-efficiency).
MULTI_OBJECTIVE_SAMPLER = "tpe"
PRUNERS = ("none", "median", "hyperband", "pareto")  # pareto: multi-objective (sqzdse.sweep.pruning)
# objective -> direction
OBJECTIVES = {"val_top1": "maximize", "val_top5": "maximize", "bytes": "minimize", "params": "minimize",
              "macs": "minimize", "compressed_bytes": "minimize", "latency_b1_ms": "minimize",
              "latency_b64_ms": "minimize"}  # fmt: skip  # fmt: skip
# [compress]: how a trial's compressed_bytes is measured (sqzdse.compress.pipeline.compressed_size, no fine-tuning).
COMPRESS_DEFAULTS = {"bits": 6, "density": "released", "huffman": True}
TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}
GRID_LIMIT = 10_000  # a larger grid is refused unless `sweep run --yes`: a mistyped step should not enqueue a million
HARD_LIMIT = 1_000_000  # refused even with --yes: its trials would not fit in memory, let alone in a storage
# grace_period >= 2 x heartbeat_interval + HEARTBEAT_MARGIN. A live worker writes a heartbeat every interval, so the
# one a checker reads is up to an interval old plus the write's wait (SQLite serialises writers; a busy database or a
# stalled process delays one); twice the interval survives one heartbeat lost entirely, and the margin covers SQLite's
# 1 s timestamps and the delay of the next one. Shorter, and a live trial is failed and trained a second time.
HEARTBEAT_MARGIN = 5


class SpecError(SqzdseError, ValueError):
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

    def count(self) -> int:
        """How many values ``values`` lists, without listing them."""
        if self.choices is not None:
            return len(self.choices)
        if self.step is None:
            raise SpecError(f"space.{self.name}: a grid needs a list or a range with a step")
        return int(round((self.high - self.low) / self.step)) + 1

    def values(self) -> list:
        """Every value of a list or a stepped range (a grid axis)."""
        if self.choices is not None:
            return list(self.choices)
        values = [self.low + i * self.step for i in range(self.count())]
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
            if self.name in CATEGORIES:  # every word the axis may take: the same distribution however the grid grows
                return trial.suggest_categorical(self.name, list(CATEGORIES[self.name]))
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
    prune_margin: float = 1.0  # points of accuracy by which smaller trials must beat one at a rung (pareto)
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

    def size_objective(self) -> str | None:
        """The size objective the pareto pruner compares trials by: the first known before training, with an
        accuracy objective beside it; None without both."""
        sizes = [o for o in self.objectives if o in ("bytes", "params", "macs")]
        return sizes[0] if sizes and any(o.startswith("val_") for o in self.objectives) else None

    @property
    def seed_dim(self) -> Dim:
        return Dim("seed", choices=self.seeds, grid=self.sampler == "grid")

    def grid_size(self) -> int:
        return math.prod(d.count() for d in (*self.space, self.seed_dim))

    def grid_points(self) -> list[dict]:
        """Every (metaparameters, seed) combination of a grid sweep, in file order."""
        axes = [(d.name, d.values()) for d in (*self.space, self.seed_dim)]
        return [
            dict(zip([a for a, _ in axes], combo, strict=True)) for combo in itertools.product(*(v for _, v in axes))
        ]

    def swept(self) -> set[str]:
        """The names of the axes of [space]."""
        return {d.name for d in self.space}

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
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 text (byte {e.start}); a sweep file is TOML, which is UTF-8") from None
    return parse_spec(raw, source=path, max_points=max_points)


# What a sweep file's values must be: the fields' types (an int passes for a float).
MODEL_TYPES = typing.get_type_hints(C.SqueezeNetConfig)
TRAIN_TYPES = typing.get_type_hints(TrainConfig)
TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
CATEGORIES = {"bypass": C.BYPASSES, **CHOICES}  # the word-valued axes of [space] and every word each may take
# [model] keys: the configuration's fields but those a preset and the dataset decide
MODEL_KEYS = tuple(f.name for f in dataclasses.fields(C.SqueezeNetConfig) if f.name not in ("stem", "pool_after",
                                                                                            "input_shape"))  # fmt: skip


def _check_type(key: str, value, hint) -> None:
    kinds = [t for t in (typing.get_args(hint) or (hint,)) if t is not type(None)]
    for t in kinds:
        if isinstance(value, bool) != (t is bool):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            _fail(key, f"{value!r}: must be a finite number")
        if isinstance(value, t) or (t is float and isinstance(value, int)):
            return
    _fail(key, f"{value!r} is not {' or '.join(TYPE_NAMES.get(t, t.__name__) for t in kinds)}")


STUDY_KEYS = {  # [study] key -> what it means; types and defaults are SweepSpec's
    "name": "the study's name in its storage (required)",
    "sampler": f"how trials are chosen: {', '.join(SAMPLERS)} (unset: grid; with several objectives "
    f"{MULTI_OBJECTIVE_SAMPLER}, which then needs n_trials)",
    "objectives": f"what is optimised, in order: {', '.join(OBJECTIVES)}",
    "pruner": f"early stopping of single-seed trials: {', '.join(PRUNERS)} (pareto: accuracy and a size objective; "
    "the others: one objective)",
    "prune_margin": "pareto: accuracy points by which trials of at most a trial's size must beat it at an epoch to "
    "stop it (about two runs' seed spread)",
    "n_trials": "trials an adaptive sampler runs (a grid runs its points)",
    "seeds": "a number of seeds or a list of them; a grid axis: every point trained with each",
    "max_bytes": "trials larger than this (float32 bytes) are recorded as pruned, not trained",
    "heartbeat_interval": "seconds between a running trial's heartbeats",
    "grace_period": "seconds after its last heartbeat that a trial counts as its worker's death, and is retried",
    "max_retry": "how often a dead worker's trial is retried",
}


def sweep_keys() -> list[tuple[str, str, str, str]]:
    """Every key a sweep file takes, as (key, type, default, meaning), from the code that parses it."""
    spec_fields = {f.name: f for f in dataclasses.fields(SweepSpec)}
    hints = typing.get_type_hints(SweepSpec)
    out = []
    for key, meaning in STUDY_KEYS.items():
        f = spec_fields[key]
        default = "(required)" if f.default is dataclasses.MISSING else _shown_default(f.default)
        out.append((f"study.{key}", _type_name(hints[key]), default, meaning))
    small = C.squeezenet_small()
    presets = ", ".join(C.PRESETS)
    out.append(("model.preset", "string", '"squeezenet_small"', f"the configuration to start from: {presets}"))
    for key in MODEL_KEYS:
        out.append((f"model.{key}", _type_name(MODEL_TYPES[key]), _shown_default(getattr(small, key)),
                    "held fixed for every trial (unset: squeezenet_small's value)"))  # fmt: skip
    for key in DESIGN_KEYS:
        words = ", ".join("none (= vanilla)" if w == "none" and key == "bypass" else w for w in CATEGORIES.get(key, ()))
        swept = f"a list of {words}" if key in CATEGORIES else "a value, a list, or {low, high, step | log = true}"
        hint = (MODEL_TYPES if key in METAPARAMETERS else TRAIN_TYPES)[key]
        held = "(held)" if key in METAPARAMETERS else "([train])"
        out.append((f"space.{key}", _type_name(hint), held, f"swept: {swept}"))
    recipe = small_input_recipe()
    for key in sorted(TRAIN_KEYS - {"seed"}):  # defaults: the small-input recipe; an ImageNet stem gets Caffe's
        out.append((f"train.{key}", _type_name(TRAIN_TYPES[key]), _shown_default(getattr(recipe, key)),
                    TRAIN_HELP[key]))  # fmt: skip
    compress = {"bits": "bits per shared weight (2-8)", "density": '"released" (v1.0\'s per-layer densities) or '
                "the fraction of weights kept", "huffman": "Huffman-code the file"}  # fmt: skip
    for key, value in COMPRESS_DEFAULTS.items():
        kind = "string or number" if key == "density" else _type_name(type(value))
        out.append((f"compress.{key}", kind, _shown_default(value), compress[key]))
    return out


def _type_name(hint) -> str:
    plain = {int: "integer", float: "number", str: "string", bool: "boolean"}
    if typing.get_origin(hint) is tuple:
        return "list"
    names = [plain.get(t, getattr(t, "__name__", str(t))) for t in typing.get_args(hint) or (hint,)]
    return " or ".join(n for n in names if n != "NoneType")


def _shown_default(value) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, tuple):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return json.dumps(value) if not isinstance(value, C.Stem) else repr(value)


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
        if isinstance(seeds, int) and not isinstance(seeds, bool) and 1 <= seeds <= HARD_LIMIT:
            seeds = list(range(seeds))
        if not isinstance(seeds, list) or not seeds or not all(type(s) is int and s >= 0 for s in seeds):
            _fail("study.seeds", f"{seeds!r}: a number of seeds (1 to {HARD_LIMIT:,}) or a list of integer "
                  "seeds >= 0")  # fmt: skip
        kw["seeds"] = tuple(_distinct("study.seeds", seeds))
    if "prune_margin" in study:
        v = study.pop("prune_margin")
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < 100:
            _fail("study.prune_margin", f"{v!r}: accuracy points, a number in [0, 100)")
        kw["prune_margin"] = float(v)
    for key in ("n_trials", "max_bytes", "heartbeat_interval", "grace_period", "max_retry"):
        if key in study:
            v = study.pop(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "max_retry" else 1):
                _fail(f"study.{key}", f"{v!r}: a positive integer")
            kw[key] = v
    for key in study:
        _fail(f"study.{key}", f"unknown key; allowed: {', '.join(STUDY_KEYS)}")

    model = dict(raw.get("model", {}))
    preset = model.pop("preset", "squeezenet_small")
    if not isinstance(preset, str) or preset not in C.PRESETS:
        _fail("model.preset", f"{preset!r} is not one of {', '.join(C.PRESETS)}")
    for key, value in model.items():
        if key not in MODEL_KEYS:
            _fail(f"model.{key}", f"unknown; allowed: preset, {', '.join(sorted(MODEL_KEYS))}")
        _check_type(f"model.{key}", value, MODEL_TYPES[key])
    if "bypass" in model:  # "vanilla" is "none": one point, one study, however the file spells it
        model["bypass"] = C.canonical_bypass(model["bypass"])

    defaulted = "sampler" not in kw and len(kw.get("objectives", ())) > 1
    if defaulted:
        kw["sampler"] = MULTI_OBJECTIVE_SAMPLER
    sampler = kw.get("sampler", "grid")
    space = []
    for key, value in raw.get("space", {}).items():
        if key not in DESIGN_KEYS:
            _fail(f"space.{key}", f"unknown; allowed: the metaparameters {', '.join(METAPARAMETERS)} and the "
                  f"training settings {', '.join(SWEEPABLE)}")  # fmt: skip
        if key in raw.get("train", {}):
            _fail(f"space.{key}", f"also set in [train] ({key} = {raw['train'][key]!r}): give it in one place")
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
        axes = " x ".join(f"{d.count():,} {d.name}" for d in (*spec.space, spec.seed_dim))
        if size > HARD_LIMIT:
            _fail("space", f"the grid has {size:,} points ({axes}), over the limit of {HARD_LIMIT:,} even with --yes")
        if max_points is not None and size > max_points:
            _fail("space", f"the grid has {size:,} points ({axes}), over the limit of {max_points:,}; check the "
                  "ranges' steps, or run it anyway with sqzdse sweep run --yes")  # fmt: skip
    elif spec.n_trials is None:
        default = ' (the default for several objectives; sampler = "grid" trains every point)' if defaulted else ""
        _fail("study.n_trials", f"required with sampler {spec.sampler!r}{default}")
    if spec.pruner == "pareto" and spec.size_objective() is None:
        _fail("study.pruner", "'pareto' needs objectives with an accuracy and a size known before training "
              "(bytes, params or macs), e.g. [\"val_top1\", \"bytes\"]")  # fmt: skip
    if len(spec.objectives) > 1 and spec.pruner not in ("none", "pareto"):
        _fail("study.pruner", f"{spec.pruner!r} needs a single objective; a multi-objective study takes 'pareto'")
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
            train_config(spec, spec.config(params), spec.seeds[0], params)
        except C.ConfigError as e:
            where = f"space point {' '.join(f'{k}={v}' for k, v in params.items())}: " if params else ""
            raise SpecError(f"{spec.source or 'sweep'}: {where}{e}") from None


def _distinct(key: str, values: list) -> list:
    seen = set()
    for v in values:
        if v in seen:
            _fail(key, f"{v!r} is listed twice (a grid point would run twice)")
        seen.add(v)
    return values


def _compress_settings(raw) -> dict:
    """[compress]: bits (2-8), density ("released" or a fraction in (0, 1]), huffman (true/false)."""
    from sqzdse.compress.codec import check_bits
    from sqzdse.compress.prune import parse_density

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
    hint, where = (MODEL_TYPES if key in METAPARAMETERS else TRAIN_TYPES)[key], f"space.{key}"
    # A float axis holds floats (1 -> 1.0): a grid point is then the same point however the file writes it.
    norm = float if hint is float else C.canonical_bypass if key == "bypass" else (lambda v: v)
    if isinstance(value, list):
        if not value:
            _fail(where, "an empty list")
        for v in value:
            _check_type(where, v, hint)
            if key in CATEGORIES and norm(v) not in CATEGORIES[key]:
                _fail(where, f"{v!r} is not one of {', '.join(CATEGORIES[key])}")
        return Dim(key, choices=tuple(_distinct(where, [norm(v) for v in value])))
    if isinstance(value, dict):
        extra = set(value) - {"low", "high", "step", "log"}
        if extra or "low" not in value or "high" not in value:
            _fail(where, "a range is {low = .., high = .., step = .. (optional), log = true|false}")
        if key in CATEGORIES:
            _fail(where, f"{key} is categorical: give a list of {', '.join(CATEGORIES[key])}")
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
        if step is not None:
            n = (high - low) / step
            if abs(n - round(n)) > 1e-6 * max(1.0, n):  # the last value would pass `high`
                _fail(where, f"step ({step}) does not divide high - low ({high - low:g}); choose a step that does, "
                      f"e.g. {(high - low) / max(1, math.floor(n)):g}")  # fmt: skip
        return Dim(key, low=low, high=high, step=None if step is None else norm(step), log=log)
    _check_type(where, value, hint)
    return Dim(key, choices=(norm(value),))


def train_config(spec: SweepSpec, cfg: C.SqueezeNetConfig, seed: int, point: dict | None = None):
    """The TrainConfig of one run: the recipe of `cfg`'s stem, the file's [train], the point's swept training
    settings (``SWEEPABLE`` keys of `point`) and the seed."""
    swept = {k: v for k, v in (point or {}).items() if k in SWEEPABLE}
    return default_recipe(cfg, **{**spec.train, **swept, "seed": seed})


def point_key(point: dict) -> tuple:
    return tuple(sorted(point.items()))


# Changing these in the file of a running study is allowed: they decide when a dead worker is detected, how often a
# trial is retried and how many trials an adaptive sampler runs, never what a trial computes.
RESULT_NEUTRAL = ("study.heartbeat_interval", "study.grace_period", "study.max_retry", "study.n_trials")


def check_agreement(study, spec: SweepSpec, shown_url: str, trials, held: set, wanted: set) -> None:
    """The file and the study agree, or nothing runs: a grid may only grow (its stored points all in the file's
    grid); every other difference is refused, naming the keys (study -> file) and the way out.

    ``study``: the Optuna study; ``shown_url``: its storage as messages show it (``sqzdse.sweep.storage.redact``).
    """
    stored = study.user_attrs.get("spec")
    where = f"study {spec.name!r} in {shown_url}"
    way_out = f"give the file a new [study] name, or delete the study: sqzdse sweep delete {spec.source or 'FILE'}"
    if stored is None:
        directions = [d.name.lower() for d in study.directions]
        if trials or directions != spec.directions:
            raise SpecError(f"{where} was not made from a sweep file ({len(trials)} trials, directions "
                            f"{', '.join(directions)}); nothing was run; {way_out}")  # fmt: skip
        return
    old, new = _file_view(stored), _file_view(spec_record(spec))
    grid_grew = spec.sampler == "grid" and stored.get("sampler") == "grid" and held <= wanted
    diffs = [
        f"{k}: {_show(old.get(k, UNSET))} → {_show(new.get(k, UNSET))}"
        for k in sorted(old.keys() | new.keys())
        if old.get(k, UNSET) != new.get(k, UNSET)
        and k not in RESULT_NEUTRAL
        and not (
            k not in old and new[k] == _study_defaults().get(k, UNSET)
        )  # a key newer than the study, at its default
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


def _study_defaults() -> dict:
    """{"study.KEY": default} of SweepSpec's [study] fields: what a study stored before the key existed ran with."""
    return {f"study.{f.name}": f.default for f in dataclasses.fields(SweepSpec) if f.default is not dataclasses.MISSING}


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


def spec_record(spec: SweepSpec) -> dict:
    d = dataclasses.asdict(spec)
    d["space"] = {x.name: x.as_toml() for x in spec.space}
    d["format"] = SPEC_FORMAT
    return json.loads(json.dumps(d, default=list))
