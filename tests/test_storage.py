"""Storages: atomic trial claims (SQLite and PostgreSQL), the study lock, readers that never create, clear errors."""

import io
import subprocess
import sys
import time
import warnings

import pytest
from builders import TINY_SPEC, points_of, spec

from sqzdse.cli import main
from sqzdse.sweep import engine as S
from sqzdse.sweep import spec as SP
from sqzdse.sweep import storage as ST


def _claimer(url, names, barrier, out):
    """One racing worker: claim waiting trials (and finish each at once) until none is left."""
    import optuna

    try:
        storage = ST.open_storage(url, create=True)
        studies = [optuna.load_study(study_name=name, storage=storage) for name in names]
        barrier.wait()  # all start together
        got = []
        for study in studies:
            while (trial := ST.claim_waiting(study)) is not None:
                got.append((study.study_name, trial.number))
                study.tell(trial, [0.0])
        out.put(got)
    except Exception as e:  # reported, not a hang
        out.put(f"{type(e).__name__}: {e}")


RACE = dict(processes=8, trials=100, rounds=1)  # ~10 s here, the machine shared; unserialised SQLite: ~30 doubles


def check_claim_race(url, processes, trials, rounds):
    """`processes` workers claim `rounds` x `trials` waiting trials at once: each trial exactly once."""
    import multiprocessing

    names = [f"race{i}" for i in range(rounds)]
    for name in names:
        raw = {**TINY_SPEC, "study": {"name": name, "seeds": trials}, "space": {"sr": [0.5]}}
        S.open_study(SP.parse_spec(raw), url)  # a grid of `trials` seeds
    ctx = multiprocessing.get_context("fork")  # forked: no second import of JAX per racer
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(url, names, barrier, out)) for _ in range(processes)]
    with warnings.catch_warnings():  # JAX's fork warning: the racers run Optuna and SQL only, never JAX
        warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
        for p in procs:
            p.start()
    claims = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    assert all(isinstance(c, list) for c in claims), claims
    ids = [i for c in claims for i in c]
    assert len(ids) - len(set(ids)) == 0, "double claims"
    assert len(set(ids)) == rounds * trials
    assert sum(1 for c in claims if c) > 1  # a race, not one process taking everything


def test_claims_are_atomic_on_sqlite(tmp_path):
    check_claim_race(f"sqlite:///{tmp_path}/race.db", **RACE)


def test_postgres_claims_are_atomic(postgres_url):
    check_claim_race(postgres_url, **RACE)


def test_a_creator_killed_mid_enqueue_leaves_nothing_half_made(tmp_path, monkeypatch):
    import optuna

    url = f"sqlite:///{tmp_path}/half.db"
    enqueue, calls = optuna.Study.enqueue_trial, []

    def dies_after_one(self, *a, **k):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt  # killed with one of three points enqueued
        return enqueue(self, *a, **k)

    monkeypatch.setattr(optuna.Study, "enqueue_trial", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        S.open_study(spec(), url)
    monkeypatch.setattr(optuna.Study, "enqueue_trial", enqueue)
    t = time.time()
    S.open_study(spec(), url)  # the next run: no wait, the missing points enqueued once
    assert time.time() - t < 10 and points_of(url) == [(0.25, 0), (0.5, 0), (0.75, 0)]


def test_sweep_delete_asks_first(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path}/del.db"
    S.open_study(spec(), url)
    argv = ["sweep", "delete", "--storage", url, "--study", "tiny"]
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no terminal, no --yes: refused
    assert main(argv) == 2
    assert "no terminal to confirm on; pass --yes to delete study 'tiny' (3 trials)" in capsys.readouterr().err
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(argv) == 1 and len(points_of(url)) == 3
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert main(argv) == 0 and "deleted 'tiny' (3 trials)" in capsys.readouterr().out
    assert main([*argv, "--yes"]) == 2 and "study 'tiny' not in" in capsys.readouterr().err
    S.open_study(spec(), url)
    assert main(["sweep", "delete", "--storage", url, "--study", "tiny", "--yes"]) == 0


def test_readers_never_create_a_storage(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/typo.db"
    for argv in (["sweep", "export", "--storage", url], ["sweep", "status", "--storage", url, "--study", "x"],
                 ["plot", "sr", url, "-o", str(tmp_path / "p.png")], ["report", url, "-o", str(tmp_path / "r.md")],
                 ["sweep", "delete", "--storage", url, "--study", "x", "--yes"]):  # fmt: skip
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"{tmp_path}/typo.db: no such SQLite file" in err and "Traceback" not in err, err
    assert not list(tmp_path.iterdir())


def test_storage_path_through_a_file_is_one_line(tmp_path, capsys):
    sweep = tmp_path / "s.toml"
    sweep.write_text('[study]\nname = "w"\n[space]\nsr = [0.125]\n')
    (tmp_path / "afile").write_text("")
    assert main(["sweep", "run", str(sweep), "--storage", f"sqlite:///{tmp_path}/afile/x.db"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}/afile is a file, not a folder" in err and "Traceback" not in err


def test_storage_from_the_environment_and_passwords_masked(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ST.STORAGE_ENV, f"sqlite:///{tmp_path}/env.db")
    assert main(["sweep", "export"]) == 2  # $SQZDSE_STORAGE is used...
    assert f"{tmp_path}/env.db: no such SQLite file" in capsys.readouterr().err
    assert main(["sweep", "export", "--storage", f"sqlite:///{tmp_path}/flag.db"]) == 2  # ... --storage first
    assert f"{tmp_path}/flag.db: no such SQLite file" in capsys.readouterr().err
    for url in ("postgresql+psycopg2://u:Hunter2secret@127.0.0.1:9/none", "postgresql://u:Hunter2secret@h:port/x"):
        monkeypatch.setenv(ST.STORAGE_ENV, url)
        assert main(["sweep", "export"]) == 2
        err = capsys.readouterr().err
        assert "Hunter2secret" not in err and "u:***@" in err and "Traceback" not in err, err


def test_unreachable_storage_is_a_clear_error(capsys):
    t = time.time()
    code = main(["sweep", "export", "--storage", "postgresql+psycopg2://u:p@127.0.0.1:9/none", "--format", "csv"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot open the storage" in err and "Traceback" not in err
    assert time.time() - t < 30
    assert main(["sweep", "export", "--storage", "nosuchdb://x"]) == 2


NO_JAX = """
import sys
import sqzdse.sweep.engine
from sqzdse.cli import main
code = main(["plot", "sr", {url!r}, "-o", {out!r}])
print(code, sorted({{m.split(".")[0] for m in sys.modules}} & {{"jax", "jaxlib", "flax", "optax"}}))
"""


def test_sweep_and_plotting_a_storage_never_import_jax(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path}/p.db"
    study = S.open_study(spec(), url)
    dist = optuna.distributions.FloatDistribution(0.1, 1.0)
    for sr, acc in [(0.25, 0.7), (0.5, 0.8), (0.75, 0.75)]:
        attrs = dict(sr=sr, val_top1=acc, test_top1=acc, bytes=1000, params=250, seed=0, status="completed")
        study.add_trial(optuna.create_trial(values=[acc], params={"sr": sr}, distributions={"sr": dist},
                                            user_attrs=attrs))  # fmt: skip
    code = NO_JAX.format(url=url, out=str(tmp_path / "sr.png"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split("\n")[-2] == "0 []", out.stdout + out.stderr
    assert (tmp_path / "sr.png").is_file()
