"""The pareto pruner: ε-dominance by hand, its guarantee on synthetic curves with known fronts, and its decisions
from a storage that several workers write (SQLite, PostgreSQL), inside a sweep too."""

import json
import multiprocessing

import numpy as np
import pytest
from builders import TINY_SPEC
from sweep_rows import brute_front

from sqzdse.sweep import engine as S
from sqzdse.sweep import pruning as PR
from sqzdse.sweep import spec as SP
from sqzdse.sweep import storage as ST


def test_eps_dominance_and_ranks_by_hand():
    # (accuracy points, size): smaller-or-equal and margin points better.
    assert PR.dominates((80, 1), (78, 2), margin=1) and not PR.dominates((80, 3), (70, 2), margin=1)
    assert not PR.dominates((80.5, 1), (80, 1), margin=1) and PR.dominates((80.5, 1), (80, 1), margin=0)
    assert not PR.dominates((80, 1), (80, 1), margin=0)  # equal points: neither
    points = [(90, 4), (85, 2), (84.5, 3), (70, 5), (60, 6)]
    # (84.5, 3) is within the margin of (85, 2): not ε-dominated; (70, 5) is, by three; (60, 6) by (70, 5) too.
    assert PR.eps_ranks(points, margin=1) == [0, 0, 0, 1, 2]
    assert PR.eps_ranks(points, margin=0) == [0, 0, 1, 2, 3]
    # Stopped only when ε-dominated and behind 1/eta of the rung; never below min_peers.
    assert PR.should_stop((70, 5), [(90, 4), (85, 2), (84.5, 3)], margin=1, reduction_factor=2)
    assert not PR.should_stop((84.5, 3), [(90, 4), (85, 2), (70, 5)], margin=1)
    assert not PR.should_stop((70, 5), [(90, 4), (85, 2)], margin=1, min_peers=4)
    assert not PR.should_stop((70, 5), [(90, 4), (85, 2), (10, 9), (11, 9), (12, 9)], margin=1, reduction_factor=2)
    assert PR.ParetoPruner().rungs(8) == [1, 2, 4] and PR.ParetoPruner(reduction_factor=3).rungs(10) == [1, 3, 9]
    assert PR.ParetoPruner().rungs(1) == []
    # The seed margin: 1.96 standard deviations of the difference between two runs of one design.
    assert PR.seed_margin([(80, 79), (70, 71), (60, 62), (50, 48)]) == pytest.approx(1.96 * np.sqrt(2.5))
    with pytest.raises(ValueError, match="size='compressed_bytes'"):
        PR.ParetoPruner(size="compressed_bytes")


def synthetic_curves(rng, n=60, epochs=8, delta=0.5):
    """Trials whose accuracy at each epoch is their final one less a common offset, up to ±delta: sizes, finals,
    curves (points)."""
    size = np.exp(rng.uniform(np.log(1e4), np.log(1e6), n))
    final = 70 + 4 * np.log10(size) + rng.normal(0, 3, n)
    offset = 30 * 0.6 ** np.arange(1, epochs + 1)  # what every curve still lacks at each epoch
    offset[-1] = 0
    curves = final[:, None] - offset[None, :] + rng.uniform(-delta, delta, (n, epochs))
    curves[:, -1] = final
    return size, final, curves


def replay(pruner, size, curves, order):
    """Trials one after another (each sees the rungs of those before, as asynchronous workers do): the epoch each
    stopped at (None: ran to the end)."""
    epochs, seen, stopped = curves.shape[1], {e: [] for e in range(1, curves.shape[1] + 1)}, {}
    for i in order:
        stopped[i] = None
        for e in range(1, epochs + 1):
            if pruner.stop_at(e, epochs, curves[i, e - 1], size[i], seen[e]):
                stopped[i] = e
                break
            seen[e].append((curves[i, e - 1], size[i]))
    return stopped


@pytest.mark.parametrize("seed", range(5))
def test_it_never_stops_a_trial_of_the_final_front_and_stops_what_it_should(seed):
    rng = np.random.default_rng(seed)
    delta = 0.5
    size, final, curves = synthetic_curves(rng, delta=delta)
    pruner = PR.ParetoPruner(margin=2 * delta + 0.01)
    stopped = replay(pruner, size, curves, rng.permutation(len(size)))
    front = set(brute_front([(f, s) for f, s in zip(final, size, strict=True)]))
    assert front and not [i for i in front if stopped[i] is not None]
    # It stops what it should: a good share of the trials, each of them dominated at the end by a smaller one.
    gone = [i for i, e in stopped.items() if e is not None]
    assert len(gone) >= len(size) // 4
    for i in gone:
        assert any(size[j] <= size[i] and final[j] > final[i] for j in range(len(size)) if j != i)


def test_below_the_curves_noise_the_promise_goes():
    # At margin 0, curves that stray ±3 points from their final order cost some front trial its finish.
    lost = 0
    for s in range(5):
        rng = np.random.default_rng(100 + s)
        size, final, curves = synthetic_curves(rng, delta=3)
        stopped = replay(PR.ParetoPruner(margin=0), size, curves, rng.permutation(len(size)))
        lost += sum(stopped[i] is not None for i in brute_front([(f, z) for f, z in zip(final, size, strict=True)]))
    assert lost > 0


def _report_trials(url: str, trials: list) -> None:
    """Another worker (process): record trials' sizes and rung values in the study."""
    import optuna

    study = optuna.load_study(study_name="mo", storage=ST.open_storage(url))
    for acc, size in trials:
        t = study.ask()
        t.set_user_attr("bytes", size)
        ST.report(t, acc / 100, 1)


def check_pruning_across_workers(url: str) -> None:
    import optuna

    optuna.create_study(study_name="mo", storage=url, directions=["maximize", "minimize"])  # creates it
    peers = [(90.0, 1000), (88.0, 2000), (85.0, 500), (80.0, 3000)]
    p = multiprocessing.get_context("spawn").Process(target=_report_trials, args=(url, peers))
    p.start()
    p.join(120)
    assert p.exitcode == 0
    study = optuna.load_study(study_name="mo", storage=ST.open_storage(url))
    pruner = PR.ParetoPruner(margin=1.0)
    for acc, size, stop in ((70.0, 2500, True), (89.5, 1500, False), (95.0, 5000, False)):
        t = study.ask()
        t.set_user_attr("bytes", size)
        ST.report(t, acc / 100, 1)
        assert pruner.should_prune(study, t, epoch=1, last_epoch=8) is stop, (acc, size)
        assert not pruner.should_prune(study, t, epoch=3, last_epoch=8)  # not a rung
        study.tell(t, state=optuna.trial.TrialState.PRUNED if stop else optuna.trial.TrialState.FAIL)


def test_it_prunes_against_another_workers_trials_on_sqlite(tmp_path):
    check_pruning_across_workers(f"sqlite:///{tmp_path}/mo.db")


@pytest.mark.slow
def test_it_prunes_against_another_workers_trials_on_postgres(postgres_url):
    check_pruning_across_workers(postgres_url)


@pytest.mark.slow
def test_a_multi_objective_sweep_prunes_at_its_rungs(ds, tmp_path):
    """A sweep with pruner = "pareto": every PRUNED trial stopped at epoch 1, where the trials before it ε-dominate
    it; the others ran both epochs."""
    raw = json.loads(json.dumps(TINY_SPEC))
    raw["study"].update(objectives=["val_top1", "bytes"], pruner="pareto", prune_margin=0.0)
    raw["space"], raw["train"]["epochs"] = {"sr": [0.125, 0.25, 0.5], "pct3x3": [0.25, 0.75]}, 2
    url = f"sqlite:///{tmp_path}/p.db"
    S.run_worker(SP.parse_spec(raw), url, runs_dir=str(tmp_path), dataset=ds)
    rows = sorted(S.export_rows(url), key=lambda r: r["number"])
    assert {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"} and len(rows) == 6
    for i, r in enumerate(rows):
        if r["state"] == "COMPLETE":
            assert len(r["curve"]) == 2
            continue
        assert len(r["curve"]) == 1 and r["reason"] == "pruned after epoch 1"
        before = [(100 * q["curve"][0], q["bytes"]) for q in rows[:i]]
        assert PR.should_stop((100 * r["curve"][0], r["bytes"]), before, margin=0.0)
