"""What a sweep will run, and how long it will take: ``sqzdse sweep run --dry-run`` and the workers' progress lines.

Both estimate from trials measured on this machine and storage, never from a constant: a model's training time
per image grows with its MACs (``Pace``: a power law fitted to the trials that ran), and each trial also compiles.
Nothing here trains or compiles. No JAX.
"""

from __future__ import annotations

import dataclasses
import math
import statistics

from sqzdse.model import config as C
from sqzdse.sweep.spec import SweepSpec, point_key, train_config
from sqzdse.train.recipe import update_counts

FINISHED = ("COMPLETE", "PRUNED", "FAIL")


@dataclasses.dataclass(frozen=True)
class Pace:
    """Training seconds per image as ``scale * MACs ** exponent``, and compile seconds per run, fitted to `trials`
    measured runs (``measured_pace``)."""

    scale: float
    exponent: float
    compile_seconds: float
    trials: int
    source: str  # which trials: "this study" or "other studies on <dataset>"

    def trial_seconds(self, macs: int, train_images: int, eval_images: int) -> float:
        """A trial's time: its compile, its training and its evaluation (a forward pass: ~1/3 of a training step)."""
        return self.compile_seconds + self.scale * macs**self.exponent * (train_images + eval_images / 3)


def measured_pace(trials, source: str) -> Pace | None:
    """The pace of the trials that trained here (COMPLETE, not a reused run, with images/s and MACs); None if none.

    Small models use a machine less well than large ones (per-update overheads), so seconds per image grow slower
    than MACs: with trials of two or more sizes the exponent is the least-squares slope of log(s per image) on
    log(MACs), held to [0, 1]; with one size it is 1 (time proportional to MACs). The scale is the median over the
    trials under that exponent, the compile time the median per run.
    """
    measured = [t for t in trials if t.state.name == "COMPLETE" and not t.user_attrs.get("reused_from")
                and (t.user_attrs.get("images_per_s") or 0) > 0 and t.user_attrs.get("macs")]  # fmt: skip
    if not measured:
        return None
    macs = [float(t.user_attrs["macs"]) for t in measured]
    per_image = [1.0 / t.user_attrs["images_per_s"] for t in measured]
    exponent = 1.0
    if len(set(macs)) > 1:
        x, y = [math.log(m) for m in macs], [math.log(p) for p in per_image]
        mx, my = statistics.fmean(x), statistics.fmean(y)
        slope = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sum((a - mx) ** 2 for a in x)
        exponent = min(max(slope, 0.0), 1.0)
    scale = statistics.median(p / m**exponent for p, m in zip(per_image, macs, strict=True))
    runs = lambda t: len(t.user_attrs["seed"]) if isinstance(t.user_attrs.get("seed"), list) else 1  # seeds
    compiles = [(t.user_attrs.get("compile_seconds") or 0.0) / runs(t) for t in measured]  # per run
    return Pace(scale, exponent, statistics.median(compiles), len(measured), source)


# --------------------------------------------------------------------------- progress


def retried_numbers(trials) -> set[int]:
    """Trials that were retried as a new trial (a killed or interrupted worker's): they count once, as their retry."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", ())}


def progress_line(spec: SweepSpec, trials, elapsed: float) -> str:
    """``[name] 3 of 8 trials done (1 running), 12 min elapsed here, ~20 min left``: where a sweep stands.

    What is left is the trials not finished, at the mean time of the trials this study trained so far, shared by the
    workers running now; before any trial finished it is not estimated.
    """
    retried = retried_numbers(trials)
    counted = [t for t in trials if t.number not in retried]
    total = spec.grid_size() if spec.sampler == "grid" else max(spec.n_trials or 0, len(counted))
    done = sum(t.state.name in FINISHED for t in counted)
    running = sum(t.state.name == "RUNNING" for t in counted)
    timed = [(t.datetime_complete - t.datetime_start).total_seconds() for t in counted
             if t.state.name == "COMPLETE" and not t.user_attrs.get("reused_from") and t.datetime_start
             and t.datetime_complete]  # fmt: skip
    line = f"[{spec.name}] {done} of {total} trials done"
    line += f" ({running} running)" if running else ""
    line += f", {duration(elapsed)} elapsed here"
    if done < total and timed:
        mean = statistics.fmean(timed)
        left = (total - done) * mean / max(running, 1)
        line += f", ~{duration(left)} left ({duration(mean)} per trial, {max(running, 1)} at a time)"
    return line


def duration(seconds: float) -> str:
    """42 s, 3 min 5 s, 2 h 10 min."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s < 600 else f"{round(s / 60)} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


# --------------------------------------------------------------------------- dry run


@dataclasses.dataclass(frozen=True)
class PlannedTrial:
    params: dict  # the metaparameters (and, in a grid, the seed) of the trial
    error: str | None  # an impossible combination: the trial would be recorded as invalid
    params_count: int | None = None
    bytes: int | None = None
    macs: int | None = None
    seconds: float | None = None  # estimated; None without a measured pace
    done: bool = False  # the study holds this grid point finished already


def plan(spec: SweepSpec, ds, trials=(), pace: Pace | None = None) -> list[PlannedTrial]:
    """The trials the sweep runs: every grid point, or, for a sampler, the corners of its space (the extremes that
    its n_trials fall between). ds: the dataset (a ``sqzdse.data.pipeline.Dataset``: its shapes and batch counts);
    trials:
    what the study holds already (grid points finished there are marked done); pace: for the estimated seconds."""
    from sqzdse.model.cost import summary

    finished = {point_key(t.system_attrs["fixed_params"]) for t in trials
                if t.state.name == "COMPLETE" and "fixed_params" in t.system_attrs}  # fmt: skip
    points = spec.grid_points() if spec.sampler == "grid" else corners(spec)
    seeds = 1 if spec.sampler == "grid" else len(spec.seeds)  # a grid's seeds are points of their own
    out = []
    for point in points:
        try:
            cfg = dataclasses.replace(spec.config(point), input_shape=tuple(ds.info.image_shape),
                                      num_classes=ds.info.num_classes)  # fmt: skip
        except (C.ConfigError, ValueError) as e:
            out.append(PlannedTrial(point, str(e)))
            continue
        cost = summary(cfg)
        try:
            work = images(spec, cfg, ds, point)
        except C.ConfigError as e:  # a swept batch the dataset cannot take
            out.append(PlannedTrial(point, str(e)))
            continue
        seconds = None if pace is None else seeds * pace.trial_seconds(cost["macs"], *work)
        out.append(PlannedTrial(point, None, cost["params"], cost["bytes"], cost["macs"], seconds,
                                done=point_key(point) in finished))  # fmt: skip
    return out


def corners(spec: SweepSpec) -> list[dict]:
    """Every combination of each dimension's extremes (a range's ends, a list's smallest and largest number, or
    each of its words)."""
    import itertools

    ends = []
    for d in spec.space:
        values = d.check_values()
        numeric = all(isinstance(v, (int, float)) for v in values)
        ends.append(sorted({min(values), max(values)}) if numeric else list(values))
    return [dict(zip([d.name for d in spec.space], combo, strict=True)) for combo in itertools.product(*ends)]


def images(spec: SweepSpec, cfg, ds, point: dict | None = None) -> tuple[int, int]:
    """(images trained, images evaluated) by one run of `cfg` (at `point`'s swept training settings) under the
    sweep's recipe on the dataset `ds`."""
    tc = train_config(spec, cfg, spec.seeds[0], point)
    per_epoch, total = update_counts(ds, tc)
    limit = lambda n: min(n, tc.eval_limit) if tc.eval_limit else n
    epochs = math.ceil(total / per_epoch)
    return total * tc.batch_size * tc.iter_size, epochs * limit(ds.info.num_val) + limit(ds.info.num_test)


def estimate_note(pace: Pace | None) -> str:
    if pace is None:
        return ("no estimate yet: no trial of this dataset has run on this storage (run one with "
                "`sqzdse sweep run FILE --max-trials 1`, then ask again)")  # fmt: skip
    return (
        f"estimated from {pace.trials} trials of {pace.source} measured on this storage ({pace.compile_seconds:.0f} s "
        f"compiling per trial; training seconds per image grow as MACs^{pace.exponent:.2f})"
    )
