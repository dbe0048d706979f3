"""Bad input a user types by mistake: one line naming what is wrong, exit code 2, never a wrong number."""

import csv
import json

import optuna
import pytest

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
