"""Bad input a user types by mistake: one line naming what is wrong, exit code 2, never a wrong number."""

import csv
import json
import shutil

import optuna
import pytest
from builders import logged

from sqzdse.cli import main


def one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sqzdse: error:") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("bits", ["-8", "0"])
def test_summary_bits_must_be_positive(capsys, bits):
    one_line_error(capsys, ["model", "summary", "--preset", "squeezenet_small", "--bits", bits], f"bits={bits}")


@pytest.fixture
def storage(tmp_path):
    url = f"sqlite:///{tmp_path}/one.db"
    study = optuna.create_study(study_name="one", storage=url)
    trial = study.ask()
    trial.set_user_attr("sr", 0.5)
    study.tell(trial, 0.5)
    return url


@pytest.mark.parametrize("suffix, fmt", [(".json", "json"), (".csv", "csv"), (".JSON", "json")])
def test_export_format_follows_the_suffix(storage, tmp_path, suffix, fmt):
    out = tmp_path / f"grid{suffix}"
    assert main(["sweep", "export", "--storage", storage, "-o", str(out)]) == 0
    text = out.read_text()
    if fmt == "json":
        assert json.loads(text)[0]["sr"] == 0.5
    else:
        assert next(csv.DictReader(text.splitlines()))["sr"] == "0.5"


def test_export_format_flag_wins_and_unknown_suffix_is_refused(storage, tmp_path, capsys):
    out = tmp_path / "grid.txt"
    one_line_error(capsys, ["sweep", "export", "--storage", storage, "-o", str(out)], "grid.txt", "--format")
    assert not out.exists()
    assert main(["sweep", "export", "--storage", storage, "-o", str(out), "--format", "json"]) == 0
    assert json.loads(out.read_text())[0]["state"] == "COMPLETE"


# --------------------------------------------------------------------------- a run's damaged files


@pytest.fixture
def damaged_run(run_dir, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(run_dir, workdir, ignore=shutil.ignore_patterns("lock"))
    return workdir


def test_garbage_run_json_is_named(damaged_run, capsys):
    (damaged_run / "run.json").write_text("garbage{")
    out = damaged_run.parent / "m.onnx"
    one_line_error(capsys, ["export", str(damaged_run), "-o", str(out)], f"{damaged_run / 'run.json'}: not a readable")
    one_line_error(capsys, ["compress", str(damaged_run), "-o", str(out.with_suffix(".sqz"))], "run.json")


def test_a_bad_line_in_metrics_is_named_a_half_written_last_line_dropped(damaged_run):
    from builders import synthetic

    from sqzdse.train import checkpoints as ckpt
    from sqzdse.train import loop as T

    metrics = damaged_run / "metrics.jsonl"
    good = metrics.read_text()
    (damaged_run / "summary.json").unlink()  # the run finishes again from its checkpoint: it reads its history
    cfg, tc = ckpt.run_config(str(damaged_run))[1:]
    metrics.write_text("not json\n" + good)
    with pytest.raises(ckpt.RunFileError, match=r"metrics.jsonl: line 1 is not an epoch record"):
        T.train_and_evaluate(cfg, tc, str(damaged_run), dataset=synthetic(), progress=False)
    metrics.write_text(good + '{"step": 3, "val_to')  # a killed writer's half line
    (damaged_run / "summary.json").unlink(missing_ok=True)
    with logged() as lines:
        r = T.train_and_evaluate(cfg, tc, str(damaged_run), dataset=synthetic(), progress=False)
    assert r.status == "completed" and metrics.read_text() == good
    assert any("dropped its last line" in m for m in lines), lines
