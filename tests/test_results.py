"""Rows read back from exports and storages: the one column list, types restored, clear errors."""

import json
import sys
import types
from pathlib import Path

import pytest
from builders import logged
from sweep_rows import study, write_csv

from sqzdse.results import rows as results
from sqzdse.sweep import schema


def test_one_column_list_is_the_exports():
    import io

    from sqzdse.sweep import engine as sweep
    from sqzdse.sweep import spec

    # The sweep validates and exports with results' lists, not copies: the export writes exactly the columns rows
    # are read with.
    assert spec.METAPARAMETERS is sweep.METAPARAMETERS and spec.DESIGN_KEYS is results.DESIGN_KEYS is schema.DESIGN_KEYS
    out = io.StringIO()
    sweep.write_rows([], "csv", out)
    assert tuple(out.getvalue().strip().split(",")) == schema.FIELDS


def test_a_row_is_one_typed_record_whose_keys_are_the_export_columns():
    import dataclasses

    from sqzdse.model.config import METAPARAMETERS, SqueezeNetConfig
    from sqzdse.train.recipe import SWEEPABLE, TrainConfig

    # The metaparameters and training settings take their types from the configurations (and nowhere else).
    fields = {f.name: f.type for f in dataclasses.fields(SqueezeNetConfig) + dataclasses.fields(TrainConfig)}
    for key in (*METAPARAMETERS, *SWEEPABLE):
        assert schema.TYPES[key] == eval(fields[key]) | None, key
    assert schema.FIELDS == tuple(k for k in schema.TYPES if k not in SWEEPABLE)
    assert set(schema.TrialRow.__required_keys__) == set(schema.FIELDS)  # a swept setting is a key only when swept
    # Each column read as its type, a multi-seed trial's seed list too.
    raw = {"study": "s", "number": "3", "state": "complete", "seed": "[0, 1]", "epochs": "10", "lr": "0.01",
           "optimizer": "adam", "epoch_seconds": "[1.5, 2]", "bypass": "simple", "extra": "7"}  # fmt: skip
    r = results.normalize_row(raw)
    assert r["number"] == 3 and r["state"] == "COMPLETE" and r["seed"] == [0, 1] and r["epoch_seconds"] == [1.5, 2.0]
    assert r["epochs"] == 10.0 and isinstance(r["epochs"], float) and r["lr"] == 0.01 and r["optimizer"] == "adam"
    assert r["extra"] == 7 and r["bypass"] == "simple" and r["macs"] is None
    assert results.normalize_row({"seed": "2"})["seed"] == 2


def test_csv_and_json_load_to_the_same_typed_rows(rows, files):
    from_csv, from_json = results.load_rows(files["csv"]), results.load_rows(files["json"])
    assert from_csv == from_json == rows
    r = from_csv[0]
    assert isinstance(r["params"], int) and isinstance(r["number"], int) and isinstance(r["sr"], float)
    assert isinstance(r["curve"], list) and all(isinstance(v, float) for v in r["curve"])
    assert r["test_top5"] is None and r["reason"] is None  # empty cells
    assert r["dataset"] == "fmnist"
    failed = next(x for x in from_csv if x["state"] == "FAIL")
    assert failed["val_top1"] is None and "nan" in failed["reason"]


def test_missing_columns_unknown_columns_and_several_sources(rows, files):
    d = files["dir"]
    slim = [dict(r, study="slim", compressed_bytes=123, lr="0.04") for r in rows[:3]]
    write_csv(d / "slim.csv", slim, drop=("macs", "curve"))
    got = results.load_rows([files["json"], d / "slim.csv"])
    assert len(got) == len(rows) + 3
    slim = study(got, "slim")
    assert [r["macs"] for r in slim] == [None] * 3 and slim[0]["curve"] is None and slim[0]["compressed_bytes"] == 123
    assert slim[0]["lr"] == 0.04  # an extra column is kept, parsed as best it can be, not required
    assert {r["study"] for r in got} == {"fig3a", "fig3b", "table3", "slim"}  # rows keep their study
    assert {r["study"] for r in results.load_rows(files["csv"], d / "slim.csv", study="slim")} == {"slim"}
    # A file row without a study is named after its file.
    (d / "nostudy.json").write_text(json.dumps([{k: v for k, v in rows[0].items() if k != "study"}]))
    assert results.load_rows(d / "nostudy.json")[0]["study"] == "nostudy"


def test_storage_urls_go_through_sweep_export_rows(rows, monkeypatch):
    calls = []

    def export_rows(storage_url, study_name=None):
        calls.append((storage_url, study_name))
        return [dict(r, curve=json.dumps(r["curve"]), params=str(r["params"])) for r in rows[:2]]

    monkeypatch.setitem(sys.modules, "sqzdse.sweep.engine", types.SimpleNamespace(export_rows=export_rows))
    got = results.load_rows("sqlite:///runs/x.db", "postgresql://u@h/db", study="fig3a")
    assert calls == [("sqlite:///runs/x.db", "fig3a"), ("postgresql://u@h/db", "fig3a")]
    assert got == rows[:2]  # the same two trials in both storages: each counted once


def test_a_trial_in_several_sources_is_counted_once(rows, files):
    with logged() as lines:
        got = results.load_rows(files["csv"], files["json"])
    assert got == rows and lines == [f"{len(rows)} trial rows were in more than one source: each trial is counted once"]
    # A source that caught a trial running and one that has it finished: the finished row is kept.
    running = next(i for i, r in enumerate(rows) if r["state"] == "RUNNING")
    later = [dict(r, state="COMPLETE", val_top1=0.5) if i == running else r for i, r in enumerate(rows)]
    write_csv(files["dir"] / "later.csv", later)
    assert results.load_rows(files["csv"], files["dir"] / "later.csv") == later
    # Another study of the same name and numbers (other keys): never mixed into one figure.
    other = [dict(r, key=f"other{i}") for i, r in enumerate(rows)]
    write_csv(files["dir"] / "other.csv", other)
    with pytest.raises(results.ResultsError, match="two sources hold different trials as study 'fig3a' trial 0"):
        results.load_rows(files["csv"], files["dir"] / "other.csv")


def test_budget_text_is_the_train_table_less_the_seed():
    train = {"dataset": "fmnist", "epochs": 4, "seed": 3, "train_limit": 500}
    assert schema.budget_text(train) == "dataset=fmnist, epochs=4, train_limit=500"


@pytest.mark.parametrize(
    "content, message",
    [
        ("study,number,state\n", "no trial rows"),
        ("[]", "no trial rows"),
        ('{"rows": []}', "expected a JSON list"),
        ("study,number,state,params\nx,1,COMPLETE,1.5\n", "column 'params'"),
    ],
)
def test_bad_sources_are_clear_errors(tmp_path, content, message):
    path = tmp_path / ("bad.json" if content.startswith(("[", "{")) else "bad.csv")
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        results.load_rows(path)
    with pytest.raises(ValueError, match="no results source"):
        results.load_rows()
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(ValueError, match="unknown results format"):
        results.load_rows(tmp_path / "x.txt")
    with pytest.raises(FileNotFoundError, match="no such results file"):
        results.load_rows(tmp_path / "missing.csv")


def test_paper_numbers_default_location(reference, monkeypatch):
    monkeypatch.delenv("SQZDSE_REFERENCE", raising=False)
    assert (
        results.paper_numbers_path() == Path(results.__file__).parents[1] / "reference" / "paper_numbers.json"
    )  # the package's
    monkeypatch.setenv("SQZDSE_REFERENCE", str(reference))
    assert results.paper_numbers_path() == reference / "paper_numbers.json"
    monkeypatch.setenv("SQZDSE_REFERENCE", str(reference / "nowhere"))
    with pytest.raises(FileNotFoundError, match="SQZDSE_REFERENCE"):
        results.paper_numbers_path()


def test_select_reads_cli_strings_and_says_what_there_is(rows):
    assert results.select(rows, {"sr": "0.25", "bypass": "vanilla"}) == [
        r for r in rows if r["sr"] == 0.25 and r["bypass"] == "none"
    ]
    assert results.select(rows, {"pct3x3": ".5"}) == [r for r in rows if r["pct3x3"] == 0.5]
    with pytest.raises(results.ResultsError, match=r"no rows with sr=0.3 \(sr takes 0.125, 0.25"):
        results.select(rows, {"sr": "0.3"})
    with pytest.raises(results.ResultsError, match="where: no column lr"):
        results.select(rows, {"lr": "1"})


def test_budgets_of_studies_must_agree(rows):
    same = [dict(r, budget="dataset=fmnist, epochs=4") for r in rows]
    assert results.check_budgets(same) == "dataset=fmnist, epochs=4"
    short = [dict(r, budget="dataset=fmnist, epochs=1") if r["study"] == "table3" else r for r in same]
    named = r"fig3a, fig3b \(dataset=fmnist, epochs=4\); table3 \(dataset=fmnist, epochs=1\)\. Draw"
    with pytest.raises(results.BudgetMismatch, match=named):
        results.check_budgets(short)
    # Without a budget column (an export file): the dataset and the epochs the curves record.
    assert results.check_budgets(rows) == "dataset=fmnist, 4 epochs in the curves"
    cut = [dict(r, curve=r["curve"][:1]) if r["study"] == "fig3b" and r["curve"] else r for r in rows]
    with pytest.raises(results.BudgetMismatch, match=r"fig3b \(dataset=fmnist, 1 epochs in the curves\)"):
        results.check_budgets(cut)
    assert results.check_budgets([dict(r, dataset=None, curve=None) for r in rows]) is None  # nothing known
