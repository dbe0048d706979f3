"""What a sweep will run and how long: progress lines, the measured pace, `sweep run --dry-run`, the default storage."""

import dataclasses
import datetime
import json
import math

import optuna
import pytest
from builders import TINY_SPEC, spec

from sqzdse.cli import main
from sqzdse.model.cost import summary
from sqzdse.sweep import engine as S
from sqzdse.sweep import forecast as F
from sqzdse.sweep import spec as SP
from sqzdse.sweep import storage as ST

T0 = datetime.datetime(2026, 1, 1, 12, 0, 0)
STATES = optuna.trial.TrialState


def frozen(number, state, seconds=None, system=None, **attrs):
    """A trial as the storage returns it: `seconds` from start to completion."""
    end = T0 + datetime.timedelta(seconds=seconds) if seconds is not None else None
    return optuna.trial.FrozenTrial(
        number=number, state=state, value=0.5 if state == STATES.COMPLETE else None, datetime_start=T0,
        datetime_complete=end, params={}, distributions={}, user_attrs=attrs, system_attrs=system or {},
        intermediate_values={}, trial_id=number,
    )  # fmt: skip


def test_progress_says_how_many_are_done_and_what_is_left():
    s = spec()  # a grid of 3
    assert F.progress_line(s, [], 5.0) == "[tiny] 0 of 3 trials done, 5 s elapsed here"
    trials = [frozen(0, STATES.COMPLETE, 40), frozen(1, STATES.RUNNING), frozen(2, STATES.WAITING)]
    # 2 trials left at 40 s each, one worker running: 80 s.
    line = F.progress_line(s, trials, 65.0)
    assert line == (
        "[tiny] 1 of 3 trials done (1 running), 1 min 5 s elapsed here, ~1 min 20 s left (40 s per trial, 1 at a time)"
    )
    # A worker killed on trial 1 left it FAIL and a retry (trial 3): they count once; a reused run is not a pace.
    trials = [frozen(0, STATES.COMPLETE, 40), frozen(1, STATES.FAIL), frozen(2, STATES.COMPLETE, 1, reused_from="x/0"),
              frozen(3, STATES.RUNNING, system={"retry_history": [1]})]  # fmt: skip
    assert F.progress_line(s, trials, 100.0).startswith("[tiny] 2 of 3 trials done (1 running), 1 min 40 s elapsed "
                                                        "here, ~40 s left (40 s per trial")  # fmt: skip
    assert F.progress_line(s, [frozen(i, STATES.COMPLETE, 10) for i in range(3)], 30.0).endswith("30 s elapsed here")
    assert [F.duration(x) for x in (0.4, 59, 61, 605, 7260)] == ["0 s", "59 s", "1 min 1 s", "10 min", "2 h 1 min"]


def test_the_pace_is_fitted_to_the_trials_that_trained():
    # Trials on an exact power law, images/s = 1e9 / MACs^0.5: the fit finds it and predicts any size from it.
    law = lambda macs: 1e9 / macs**0.5
    trials = [frozen(i, STATES.COMPLETE, images_per_s=law(m), macs=m, compile_seconds=c)
              for i, (m, c) in enumerate([(1e6, 10.0), (4e6, 20.0), (16e6, 30.0)])]  # fmt: skip
    # Not measured here: a reused run, a failed one. Two seeds: 40 s of compiling is 20 s per run.
    trials += [frozen(3, STATES.COMPLETE, images_per_s=1.0, macs=1e6, reused_from="a/1"),
               frozen(4, STATES.FAIL, images_per_s=1.0, macs=1e6),
               frozen(5, STATES.COMPLETE, images_per_s=law(9e6), macs=9e6, compile_seconds=40.0,
                      seed=[0, 1])]  # fmt: skip
    pace = F.measured_pace(trials, "this study")
    assert pace.trials == 4 and math.isclose(pace.exponent, 0.5) and pace.compile_seconds == 20.0  # 10, 20, 30, 20
    macs, train, evals = 25e6, 1000, 300
    assert math.isclose(pace.trial_seconds(macs, train, evals), 20.0 + (train + evals / 3) / law(macs))
    # One size: time proportional to MACs. Per-image time falling with MACs is held at exponent 0.
    (one,) = trials[:1]
    assert F.measured_pace([one], "x").exponent == 1.0
    assert math.isclose(F.measured_pace([one], "x").trial_seconds(2e6, 100, 0), 10.0 + 100 * 2 / law(1e6))
    falling = [frozen(i, STATES.COMPLETE, images_per_s=100.0 * m, macs=m) for i, m in enumerate((1.0, 2.0))]
    assert F.measured_pace(falling, "x").exponent == 0.0
    assert F.measured_pace(trials[3:5], "x") is None


def test_dry_run_lists_the_grid_and_estimates_from_measured_trials(ds, tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    s = spec()
    plan, pace, held = S.dry_run(s, url, dataset=ds)
    assert pace is None and held == 0 and not (tmp_path / "s.db").exists()  # nothing measured, nothing created
    assert [p.params for p in plan] == [{"sr": sr, "seed": 0} for sr in (0.25, 0.5, 0.75)]
    cfg = dataclasses.replace(s.config({"sr": 0.5}), input_shape=ds.info.image_shape, num_classes=4)
    assert (plan[1].params_count, plan[1].bytes, plan[1].macs) == tuple(summary(cfg)[k] for k in ("params", "bytes",
                                                                                                  "macs"))  # fmt: skip
    assert all(p.seconds is None and not p.done for p in plan)
    # Another study on the same dataset measured a pace; point sr=0.25 of this study finished.
    study = optuna.create_study(study_name="other", storage=url)
    study.add_trial(optuna.create_trial(value=0.5, user_attrs=dict(dataset="synthetic", images_per_s=200.0, macs=1e6,
                                                                   compile_seconds=12.0)))  # fmt: skip
    made = optuna.create_study(study_name="tiny", storage=url, direction="maximize")
    made.set_user_attr("spec", SP.spec_record(s))  # as `sweep run` of this file made it
    made.add_trial(optuna.create_trial(value=0.5, system_attrs={"fixed_params": {"sr": 0.25, "seed": 0}}))
    plan, pace, held = S.dry_run(s, url, dataset=ds)
    assert held == 1 and pace.source == "other studies on synthetic" and [p.done for p in plan] == [True, False, False]
    # 1 epoch of batches of 16 (the last partial one dropped); val and test evaluated whole (no eval_limit).
    train = ds.info.num_train // 16 * 16
    expected = 12.0 + plan[2].macs / (200.0 * 1e6) * (train + (ds.info.num_val + ds.info.num_test) / 3)
    assert math.isclose(plan[2].seconds, expected)


def test_the_dry_run_of_a_changed_file_refuses_it_as_the_run_would(ds, tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path}/c.db"
    S.open_study(spec(), url)
    raw = json.loads(json.dumps(TINY_SPEC))
    raw["train"]["epochs"] = 2  # the same study name, another budget
    changed = SP.parse_spec(raw)
    with pytest.raises(SP.SpecError) as dry:
        S.dry_run(changed, url, dataset=ds)
    with pytest.raises(SP.SpecError) as real:
        S.open_study(changed, url)
    assert str(dry.value) == str(real.value) and "train.epochs: 1 → 2" in str(dry.value)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(S, "load_dataset", lambda spec: ds)
    (tmp_path / "tiny.toml").write_text(_toml(raw))
    assert main(["sweep", "run", "tiny.toml", "--storage", url, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "made from a different sweep file; nothing was run" in err and err.count("\n") == 1, err


def test_dry_run_of_a_sampler_shows_the_corners_of_its_space(ds, tmp_path):
    raw = json.loads(json.dumps(TINY_SPEC))
    raw["study"].update(sampler="random", n_trials=5)
    raw["space"] = {"sr": {"low": 0.25, "high": 0.75}, "bypass": ["none", "simple"]}
    plan, _, _ = S.dry_run(SP.parse_spec(raw), f"sqlite:///{tmp_path}/r.db", dataset=ds)
    assert [p.params for p in plan] == [{"sr": 0.25, "bypass": "none"}, {"sr": 0.25, "bypass": "simple"},
                                        {"sr": 0.75, "bypass": "none"}, {"sr": 0.75, "bypass": "simple"}]  # fmt: skip


def test_sweep_run_dry_run_on_the_command_line(ds, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ST.STORAGE_ENV, raising=False)
    monkeypatch.setattr(S, "load_dataset", lambda spec: ds)
    (tmp_path / "tiny.toml").write_text(_toml(TINY_SPEC))
    assert main(["sweep", "run", "tiny.toml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "tiny: a grid of 3 trials, 0 of them done or invalid; storage sqlite:///runs/sqzdse.db" in out
    assert "estimated time: no estimate yet" in out and not (tmp_path / "runs").exists()
    assert [line.split()[:2] for line in out.splitlines()[2:5]] == [["0.25", "0"], ["0.5", "0"], ["0.75", "0"]]


def test_one_default_storage_holds_every_study_and_an_old_one_stays_where_it_is(tmp_path, monkeypatch, capsys, ds):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ST.STORAGE_ENV, raising=False)
    assert ST.storage_url(None, spec()) == ST.storage_url(None, "another") == "sqlite:///runs/sqzdse.db"
    assert ST.storage_url("sqlite:///x.db", spec()) == "sqlite:///x.db"
    # sqzdse 0.1 kept each study in runs/NAME.db: that file stays the study's storage, and `sweep run` says so.
    (tmp_path / "runs").mkdir()
    optuna.create_study(study_name="tiny", storage="sqlite:///runs/tiny.db", direction="maximize")
    assert ST.storage_url(None, spec()) == "sqlite:///runs/tiny.db"
    assert ST.storage_url(None, "another") == "sqlite:///runs/sqzdse.db"
    monkeypatch.setattr(S, "load_dataset", lambda spec: ds)
    (tmp_path / "tiny.toml").write_text(_toml(TINY_SPEC))
    assert main(["sweep", "run", "tiny.toml", "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "[tiny] the study lives in sqlite:///runs/tiny.db, its own file from sqzdse 0.1: continuing there" in err


def test_a_sweep_file_is_a_results_source(tmp_path, monkeypatch):
    from sqzdse.results.rows import load_rows

    url = f"sqlite:///{tmp_path}/all.db"
    monkeypatch.setenv(ST.STORAGE_ENV, url)
    for name in ("tiny", "other"):
        optuna.create_study(study_name=name, storage=url).add_trial(
            optuna.create_trial(value=0.5, user_attrs=dict(sr=0.5, val_top1=0.5, bytes=100))
        )
    (tmp_path / "tiny.toml").write_text(_toml(TINY_SPEC))
    (row,) = load_rows(str(tmp_path / "tiny.toml"))  # the file's study only, not the storage's other one
    assert row["study"] == "tiny" and row["val_top1"] == 0.5
    # The report of the sweep file shows the spec stored on its study, as the report of the storage does.
    optuna.load_study(study_name="tiny", storage=url).set_user_attr("spec", SP.spec_record(spec()))
    for source in (str(tmp_path / "tiny.toml"), url):
        out = tmp_path / "r.md"
        assert main(["report", source, "--study", "tiny", "-o", str(out)]) == 0
        text = out.read_text()
        assert "No spec given" not in text and "- space: sr in 0.25, 0.5, 0.75" in text, source


def _toml(raw: dict) -> str:
    def value(v):
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()

    return "".join(f"[{section}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in table.items()) for section, table in
                   raw.items())  # fmt: skip
