"""Search strategies replayed on the tabular benchmark: how much compute each needs to find the accuracy-size front.

    python benchmarks/search_efficiency.py                          # experiments/tabular/table.csv, 20 repetitions
    python benchmarks/search_efficiency.py --reps 5 --workers 2 -o /tmp/se.json

Nothing trains: a trial looks its design up in the table (``sqzdse.sweep.tabular``) and is charged the seconds its
epochs took when the table was made; a stopped trial only for the epochs it ran; a design suggested again costs only
the epochs not trained before (a sweep reuses a finished or checkpointed run of the same design). ``--workers``
workers run asynchronously in simulated time, as OptunaHub's ``async_opt_simulator`` does: each asks for a trial
when its last one ends, and its epochs end at the simulated times their seconds say.

Each repetition draws a world: every design gets one of the table's seeds at random (its run is the one that
repetition sees), and every strategy gets its own sampler seed. The strategies: a grid (every design once, in a
random order, enqueued as sqzdse's sweep engine enqueues a grid), Optuna's random, TPE
(multivariate, ``constant_liar``) and NSGA-II (population 12) samplers as the sweep engine makes them
(``sqzdse.sweep.engine.sampler``), each alone and with
sqzdse's ``pareto`` pruner (``sqzdse.sweep.pruning``, its margin the table's seed noise); and Syne Tune's
``MOASHA`` (random suggestions, stopped by non-dominated sorting with an ε-net, the same rungs 1, 2, 4 of 8).

Measured (JAHS-Bench-201's protocol): the hypervolume of the (validation top-1 %, log10 bytes) front of the
completed trials against the compute charged, in units of one full training (the mean over the table), up to the
grid's total; the reference point is fixed (1 point below the table's worst final accuracy, 0.05 above the log of
its largest model); normalised by the full grid's front in that world. For each strategy: mean ± standard error
over repetitions at several budgets, and the compute to reach 99 % and 100 % of the grid's final hypervolume; a
one-sided Mann-Whitney U test of each strategy against the best. Writes the JSON and draws the curves.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import heapq
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # an installed sqzdse, or one on PYTHONPATH, takes precedence

from sqzdse.results.analysis import hypervolume  # noqa: E402
from sqzdse.results.rows import load_rows  # noqa: E402
from sqzdse.sweep.engine import sampler  # noqa: E402
from sqzdse.sweep.pruning import ParetoPruner, seed_margin  # noqa: E402
from sqzdse.sweep.tabular import DEFAULT, Table, seed_pairs  # noqa: E402

SAMPLERS = ("grid", "random", "tpe", "nsga2")
STRATEGIES = (*SAMPLERS, *(f"{s}+pareto" for s in SAMPLERS), "moasha")
BUDGETS = (0.25, 1 / 3, 0.5, 0.75, 1.0)  # shares of the grid's total compute the summary is read at
# A replay stops after this many trials per design: a sampler that keeps asking for trained designs (free, as a
# sweep reuses their runs) would otherwise never spend its budget.
MAX_TRIALS = 3


# --------------------------------------------------------------------------- one replay


@dataclasses.dataclass
class Replay:
    """A strategy's run on one world: after each completed trial, (compute in units, hypervolume)."""

    trace: list
    trials: int = 0
    stopped: int = 0
    wall_units: float = 0.0
    units: float = 0.0  # compute charged in all
    runs: list = dataclasses.field(default_factory=list)  # (design, epochs it ran) per trial, as they ended


class _OptunaStrategy:
    def __init__(self, name: str, seed: int, table: Table, pruner: ParetoPruner | None):
        import optuna

        self.table, self.pruner = table, pruner
        self.study = optuna.create_study(directions=["maximize", "minimize"],
                                         sampler=sampler(name, seed))  # fmt: skip
        self.grid, self.asked = name == "grid", 0
        if self.grid:  # every design once, in an order of its own per repetition
            order = np.random.default_rng(seed).permutation(len(table.designs))
            for i in order:
                self.study.enqueue_trial(dict(zip(table.axes, table.designs[i], strict=True)))

    def ask(self):
        if self.grid and self.asked >= len(self.table.designs):
            return None  # the grid has run every design
        self.asked += 1
        trial = self.study.ask()
        return trial, self.table.suggest(trial)

    def result(self, handle, epoch: int, acc: float, size: float, peers) -> bool:
        """Whether the trial stops after `epoch` (the pruner's decision; never at the last epoch)."""
        return self.pruner is not None and self.pruner.stop_at(epoch, self.table.epochs, acc, size, peers)

    def done(self, handle, acc: float | None, size: float) -> None:
        import optuna

        if acc is None:
            self.study.tell(handle, state=optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(handle, [acc, size])


class _MOASHAStrategy:
    """Syne Tune's MOASHA, driven through its scheduler interface (suggest, on_trial_result, on_trial_complete)."""

    def __init__(self, seed: int, table: Table):
        from syne_tune.config_space import choice
        from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

        self.table, self.n = table, 0
        space = {a: choice(table.values[a]) for a in table.axes}
        self.scheduler = MOASHA(space, metrics=["error", "log_bytes"], do_minimize=True, time_attr="epoch",
                                max_t=table.epochs, grace_period=1, reduction_factor=2, random_seed=seed)  # fmt: skip

    def ask(self):
        from syne_tune.backend.trial_status import Trial

        config = self.scheduler.suggest().config
        trial = Trial(trial_id=self.n, config=config, creation_time=datetime.datetime.now())
        self.n += 1
        self.scheduler.on_trial_add(trial)
        return trial, tuple(config[a] for a in self.table.axes)

    def result(self, trial, epoch: int, acc: float, size: float, peers) -> bool:
        from syne_tune.optimizer.scheduler import SchedulerDecision

        report = {"epoch": epoch, "error": 100.0 - acc, "log_bytes": math.log10(size)}
        if epoch >= self.table.epochs:
            self.scheduler.on_trial_complete(trial, report)
            return False
        return self.scheduler.on_trial_result(trial, report) == SchedulerDecision.STOP

    def done(self, trial, acc, size) -> None:
        pass


def replay(strategy, world: dict, table: Table, workers: int, budget_s: float, unit_s: float, ref) -> Replay:
    """Run `strategy` against `world` (design -> Entry) with `workers` asynchronous workers until `budget_s` of
    compute is charged (or the strategy stops asking)."""
    epochs = table.epochs
    trained: dict = {}  # design -> epochs trained so far (a design asked again reuses them)
    peers = {e: [] for e in range(1, epochs + 1)}  # epoch -> (accuracy, bytes) of every trial that reached it
    finals: dict = {}  # design -> (final accuracy, log10 bytes) of the completed ones
    out, compute, now, events, seq = Replay(trace=[(0.0, 0.0)]), 0.0, 0.0, [], 0

    def start(worker: int, at: float) -> None:
        nonlocal seq
        if compute >= budget_s or out.trials >= MAX_TRIALS * len(table.designs):
            return
        asked = strategy.ask()
        if asked is None:
            return
        handle, design = asked
        out.trials += 1
        seq += 1
        heapq.heappush(events, (at + _cost(design, 1), seq, worker, handle, design, 1))

    def _cost(design, epoch) -> float:
        return world[design].epoch_seconds[epoch - 1] if epoch > trained.get(design, 0) else 0.0

    for w in range(workers):
        start(w, 0.0)
    while events and compute < budget_s:
        now, _, worker, handle, design, epoch = heapq.heappop(events)
        e = world[design]
        compute += _cost(design, epoch)
        trained[design] = max(trained.get(design, 0), epoch)
        acc = e.curve[epoch - 1]
        stop = strategy.result(handle, epoch, acc, float(e.bytes), peers[epoch])
        peers[epoch].append((acc, float(e.bytes)))
        if epoch < epochs and not stop:
            seq += 1
            heapq.heappush(events, (now + _cost(design, epoch + 1), seq, worker, handle, design, epoch + 1))
            continue
        out.runs.append((design, epoch))
        if stop:
            out.stopped += 1
            strategy.done(handle, None, float(e.bytes))
        else:
            strategy.done(handle, acc, float(e.bytes))
            finals[design] = (acc, math.log10(e.bytes))
            out.trace.append((compute / unit_s, hypervolume(finals.values(), ref)))
        start(worker, now)
    out.wall_units, out.units = now / unit_s, compute / unit_s
    return out


# --------------------------------------------------------------------------- the protocol


def hv_at(trace, units: float) -> float:
    """The hypervolume a trace had reached when `units` of compute were charged."""
    got = [h for c, h in trace if c <= units + 1e-12]
    return got[-1] if got else 0.0


def units_to_reach(trace, target: float) -> float:
    """The compute at which a trace first reached `target` hypervolume (inf: never)."""
    return next((c for c, h in trace if h >= target - 1e-9), math.inf)


def run(table: Table, reps: int, workers: int, strategies, margin: float) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    unit = table.unit_seconds()
    ref = table.reference_point()
    grid_units = sum(np.mean([table.entry(d, s).seconds for s in table.seeds]) for d in table.designs) / unit
    per = {s: [] for s in strategies}
    for rep in range(reps):
        rng = np.random.default_rng(rep)
        world = {d: table.entry(d, int(rng.choice(table.seeds))) for d in table.designs}
        full = hypervolume([(e.final, math.log10(e.bytes)) for e in world.values()], ref)
        budget_s = sum(e.seconds for e in world.values())
        for name in strategies:
            t0 = time.perf_counter()
            if name == "moasha":
                strategy = _MOASHAStrategy(seed=rep, table=table)
            else:
                base, _, prune = name.partition("+")
                pruner = ParetoPruner(margin=margin) if prune else None
                strategy = _OptunaStrategy(base, rep, table, pruner)
            r = replay(strategy, world, table, workers, budget_s, unit, ref)
            trace = [(c, h / full) for c, h in r.trace]
            per[name].append(dict(trace=trace, trials=r.trials, stopped=r.stopped, wall_units=r.wall_units,
                                  units=r.units, seconds=time.perf_counter() - t0))  # fmt: skip
        print(f"repetition {rep + 1}/{reps} done", file=sys.stderr)
    return summarise(per, grid_units, unit, ref, margin)


def summarise(per: dict, grid_units: float, unit: float, ref, margin: float) -> dict:
    from scipy.stats import mannwhitneyu

    def mse(xs):
        xs = np.asarray(xs, dtype=float)
        finite = xs[np.isfinite(xs)]
        se = float(finite.std(ddof=1) / math.sqrt(finite.size)) if finite.size > 1 else None
        return dict(mean=float(finite.mean()) if finite.size else None, se=se, reached=int(finite.size), n=xs.size)

    out = {}
    for name, runs in per.items():
        at = {f"{b:.3g}": mse([hv_at(r["trace"], b * grid_units) for r in runs]) for b in BUDGETS}
        reach = {str(t): [units_to_reach(r["trace"], t) / grid_units for r in runs] for t in (0.99, 1.0)}
        out[name] = dict(
            hv_at_share_of_grid=at,
            share_of_grid_to_reach={t: mse(v) for t, v in reach.items()},
            _reach=reach,
            trials=mse([r["trials"] for r in runs]),
            stopped=mse([r["stopped"] for r in runs]),
            wall_units=mse([r["wall_units"] for r in runs]),
            curve=_mean_curve([r["trace"] for r in runs], grid_units),
        )
    best = min(out, key=lambda n: (np.nanmean(np.where(np.isinf(out[n]["_reach"]["1.0"]), 2.0,
                                                       out[n]["_reach"]["1.0"])), n))  # fmt: skip
    for name in out:
        a = np.nan_to_num(np.array(out[best]["_reach"]["1.0"]), posinf=2.0)
        b = np.nan_to_num(np.array(out[name]["_reach"]["1.0"]), posinf=2.0)
        out[name]["mann_whitney_vs_best"] = (None if name == best else
                                            float(mannwhitneyu(a, b, alternative="less").pvalue))  # fmt: skip
    for name in out:
        del out[name]["_reach"]
    return dict(best=best, grid_units=grid_units, unit_seconds=unit, reference=list(ref), margin=margin,
                strategies=out)  # fmt: skip


def _mean_curve(traces, grid_units: float, points: int = 61) -> dict:
    xs = np.linspace(0, grid_units, points)
    hv = np.array([[hv_at(t, x) for x in xs] for t in traces])
    se = hv.std(axis=0, ddof=1) / math.sqrt(len(traces)) if len(traces) > 1 else np.zeros(points)
    return dict(units=xs.round(4).tolist(), mean=hv.mean(axis=0).round(5).tolist(), se=se.round(5).tolist())


def draw(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for i, (name, s) in enumerate(result["strategies"].items()):
        c = s["curve"]
        x = np.array(c["units"]) / result["grid_units"]
        m, se = np.array(c["mean"]), np.array(c["se"])
        style = "--" if "+pareto" in name else ":" if name == "moasha" else "-"
        ax.plot(x, m, style, color=f"C{i % 4 if name != 'moasha' else 4}", label=name, lw=1.6)
        ax.fill_between(x, m - se, m + se, color=f"C{i % 4 if name != 'moasha' else 4}", alpha=0.15, lw=0)
    ax.set_xlabel("compute charged (share of the full grid's)")
    ax.set_ylabel("hypervolume (share of the full grid's front)")
    ax.set_ylim(0.5, 1.005)
    ax.grid(alpha=0.3)
    ax.legend(ncols=3, fontsize=8, loc="lower right")
    ax.set_title(f"Search on the tabular benchmark: mean ± s.e. over {result['reps']} repetitions, "
                 f"{result['workers']} workers", fontsize=10)  # fmt: skip
    fig.savefig(path, dpi=130)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", default=str(ROOT / DEFAULT), help="the table's export or storage URL")
    p.add_argument("--reps", type=int, default=20, help="repetitions (worlds and sampler seeds; default 20)")
    p.add_argument("--workers", type=int, default=4, help="asynchronous workers simulated (default 4)")
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated subset")
    p.add_argument(
        "--seeds",
        type=lambda v: [int(x) for x in v.split(",")],
        help="comma-separated seeds the worlds draw from (default: all the table has)",
    )
    p.add_argument("--margin", type=float, help="the pareto pruner's margin (default: the table's seed noise)")
    p.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "results" / "search_efficiency.json"))
    p.add_argument("--figure", default=str(ROOT / "benchmarks" / "results" / "search_efficiency.png"))
    args = p.parse_args(argv)
    rows = load_rows(args.table, study="tabular")
    table = Table.from_rows(rows, seeds=args.seeds)
    rungs = ParetoPruner().rungs(table.epochs)
    margins = {e: seed_margin(seed_pairs(rows, e)) for e in rungs}  # every design trained at two seeds so far
    margin = args.margin if args.margin is not None else max(margins.values())
    strategies = [s for s in args.strategies.split(",") if s]
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad:
        p.error(f"unknown strategies {bad}; known: {', '.join(STRATEGIES)}")
    t0 = time.perf_counter()
    result = run(table, args.reps, args.workers, strategies, margin)
    result.update(reps=args.reps, workers=args.workers, seed_margin_by_rung=margins, table=args.table,
                  margin_pairs=len(seed_pairs(rows, rungs[-1])),
                  designs=len(table.designs), seeds=table.seeds, epochs=table.epochs,
                  date=datetime.date.today().isoformat(), python=platform.python_version(),
                  seconds=round(time.perf_counter() - t0, 1))  # fmt: skip
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    draw(result, Path(args.figure))
    brief = {n: dict(reach_100=s["share_of_grid_to_reach"]["1.0"], hv_third=s["hv_at_share_of_grid"]["0.333"],
                     p=s["mann_whitney_vs_best"]) for n, s in result["strategies"].items()}  # fmt: skip
    print(json.dumps(dict(best=result["best"], margin=margin, strategies=brief), indent=1))


if __name__ == "__main__":
    main()
