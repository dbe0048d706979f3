"""The command line: every --help answers, summary tables and JSON, clear errors."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from sqzdse.cli import build_parser, main
from sqzdse.data.datasets import MAX_DEFAULT_VAL
from sqzdse.errors import SqzdseError
from sqzdse.train.recipe import small_input_recipe


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["model"],
        ["model", "summary"],
        ["predict"],
        ["export"],
        ["train"],
        ["sweep"],
        ["sweep", "run"],
        ["sweep", "status"],
        ["sweep", "export"],
        ["sweep", "delete"],
        ["compress"],
        ["plot"],
        ["plot", "sr"],
        ["report"],
    ],
)
def test_every_help_answers(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    assert "usage: sqzdse" in capsys.readouterr().out


def test_all_subcommands_have_help():
    # Walk the parser so a new subcommand without help text fails here.
    def walk(p):
        for a in p._actions:
            if a.__class__.__name__ == "_SubParsersAction":
                for name, sub in a.choices.items():
                    assert any(c.dest == name and c.help for c in a._choices_actions), name
                    yield from walk(sub)
        yield p

    assert len(list(walk(build_parser()))) >= 3


def test_summary_table(capsys):
    assert main(["model", "summary", "--preset", "squeezenet_v1_0"]) == 0
    out = capsys.readouterr().out
    assert "fire2" in out and "55x55x128" in out and "11,920" in out
    assert "total: 1,248,424 parameters" in out


def test_summary_json_and_overrides(capsys):
    # The paper's SR = 0.25 point: 1,967,080 parameters (fig3_model_sizes_derived).
    assert main(["model", "summary", "--preset", "squeezenet_v1_0", "--sr", "0.25", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["params"] == 1_967_080 and s["bytes"] == 4 * 1_967_080
    assert s["config"]["sr"] == 0.25 and s["config"]["base_e"] == 128
    assert {"macs", "layers"} <= set(s) and s["layers"][1]["name"] == "conv1"


def test_summary_flags_without_preset(capsys):
    argv = [
        "model",
        "summary",
        "--base-e",
        "64",
        "--incr-e",
        "32",
        "--freq",
        "3",
        "--pct3x3",
        "0.25",
        "--bypass",
        "simple",
        "--num-classes",
        "10",
        "--input-size",
        "32",
        "--stem",
        "small",
        "--json",
    ]
    assert main(argv) == 0
    s = json.loads(capsys.readouterr().out)
    fires = [r for r in s["layers"] if r["name"].startswith("fire")]
    assert [f["e1x1"] + f["e3x3"] for f in fires] == [64, 64, 64, 96, 96, 96, 128, 128]
    assert fires[0]["e3x3"] == 16 and s["layers"][-1]["output"] == [1, 1, 10]


def test_invalid_metaparameter_is_a_clear_error(capsys):
    assert main(["model", "summary", "--pct3x3", "1.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sqzdse: error: pct3x3=1.5: must be in [0, 1]") and "Traceback" not in err


def test_sweep_workers_get_disjoint_cores(monkeypatch, tmp_path):
    """`sweep run --workers 2` starts two worker processes, each pinned to its own cores."""
    import subprocess

    from sqzdse.runtime import worker_cpus

    started, popen = [], subprocess.Popen

    class FakeProcess:
        def __new__(cls, argv, *args, **kwargs):
            if "sqzdse.cli" not in argv:  # not a worker (ctypes.util looks up libc with a subprocess)
                return popen(argv, *args, **kwargs)
            started.append((argv, kwargs["env"]))
            return super().__new__(cls)

        def wait(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakeProcess)
    spec = tmp_path / "s.toml"
    spec.write_text('[study]\nname = "w"\n[space]\nsr = [0.125]\n[train]\ndataset = "fashion_mnist"\n')
    url = f"sqlite:///{tmp_path}/w.db"
    assert main(["sweep", "run", str(spec), "--workers", "2", "--storage", url]) == 0
    assert [env["SQZDSE_CPUS"] for _, env in started] == [",".join(map(str, c)) for c in worker_cpus(2)]
    assert all(argv[argv.index("--workers") + 1] == "1" for argv, _ in started)
    # The storage goes by the environment: a password in the URL never shows in `ps`.
    assert all(url not in argv and env["SQZDSE_STORAGE"] == url for argv, env in started)
    assert main(["sweep", "run", str(spec), "--workers", "0"]) == 2


def test_compress_and_dsd_are_on_the_command_line(capsys):
    for argv in (["compress", "--help"], ["train", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("SOURCE", "--bits", "--huffman", "--finetune-epochs", "--dsd",
                                        "--dsd-density", "--dsd-phases", "--dsd-redense-lr"))  # fmt: skip


def test_parser_and_summary_import_no_heavy_library():
    """--help and `model summary` answer at once: JAX, Flax, matplotlib and Optuna load when a command needs them."""
    import subprocess
    import sys

    code = ("import sys; from sqzdse.cli import build_parser, main; build_parser(); main(['model', 'summary']); "
            "print(sorted(m for m in ('jax', 'flax', 'matplotlib', 'optuna') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_version_and_defaults_in_help(capsys):
    from sqzdse import __version__

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"sqzdse {__version__}"
    for argv, shown in ((["model", "summary"], "(default: 32)"), (["train"], "with the small stem"),
                        (["train"], f"(default: a tenth of the training split, at most {MAX_DEFAULT_VAL:,})"),
                        (["plot", "curves"], "colours each curve"),
                        (["plot", "edf"], "(default: study)"), (["compress"], "(default: 6)")):  # fmt: skip
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        assert shown in " ".join(capsys.readouterr().out.split()), argv


def test_train_without_a_preset_fits_a_small_input_with_the_small_stem(monkeypatch, capsys):
    """`sqzdse train --dataset fashion_mnist` (28x28): the small stem is chosen before the configuration is
    checked, where v1.0's stem would pool a 28 px input away."""
    from sqzdse.data import pipeline as D
    from sqzdse.model import config as C
    from sqzdse.train import loop as T

    small = D.from_arrays("fashion_mnist", (np.zeros((40, 28, 28), np.uint8), np.arange(40) % 10),
                          (np.zeros((10, 28, 28), np.uint8), np.arange(10) % 10), num_classes=10)  # fmt: skip
    monkeypatch.setattr(D, "load", lambda *a, **k: small)
    seen = []

    def train_and_evaluate(cfg, tc, *a, **k):
        seen.append((cfg, tc))
        raise SqzdseError("stopped before training")

    monkeypatch.setattr(T, "train_and_evaluate", train_and_evaluate)
    assert main(["train", "--dataset", "fashion_mnist", "--epochs", "1"]) == 2
    ((cfg, tc),) = seen
    assert cfg.stem == C.STEM_SMALL and cfg.input_shape == (28, 28, 1) and cfg.num_classes == 10
    assert tc.optimizer == small_input_recipe().optimizer and tc.epochs == 1
    assert "stopped before training" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["sr", "pct3x3", "frontier", "bypass", "edf", "curves"])
def test_each_plot_kind_has_only_its_options(kind, capsys):
    with pytest.raises(SystemExit):
        main(["plot", kind, "--help"])
    out = capsys.readouterr().out
    assert "--where" in out and "-o FILE" in out
    assert ("--paper" in out) == (kind in ("sr", "pct3x3"))
    assert ("--normalize" in out) == (kind == "edf")


def test_a_bug_shows_its_traceback(monkeypatch):
    """Only the project's errors become one line; anything else is a bug and propagates."""
    from sqzdse.cli import model

    def broken(args):
        raise ValueError("a bug")

    monkeypatch.setattr(model, "format_table", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["model", "summary"])


def test_a_closed_pipe_stops_quietly():
    """`sqzdse sweep run FILE --dry-run | head -3`: the reader went away; exit 141 without a traceback."""
    code = ("import sys\nfrom sqzdse.cli import main, model\n"
            "def flood(*a, **k):\n    while True:\n        print('x' * 1000)\n"
            "model.format_table = flood\nsys.exit(main(['model', 'summary']))\n")  # fmt: skip
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.read(10)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141 and "Traceback" not in err, err


def test_an_output_in_a_missing_folder_gets_its_folder_before_any_work(tmp_path, capsys):
    import optuna

    url = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(study_name="s", storage=url).add_trial(optuna.create_trial(value=0.5))
    out = tmp_path / "new" / "deeper" / "s.csv"
    assert main(["sweep", "export", "--storage", url, "--study", "s", "-o", str(out)]) == 0
    assert out.read_text().startswith("study,number,state")
    capsys.readouterr()
    (tmp_path / "afile").write_text("")
    assert main(["export", "released", "-o", str(tmp_path / "afile" / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert f"-o {tmp_path / 'afile' / 'm.onnx'}: {tmp_path / 'afile'} is a file, not a folder" in err, err
    assert err.count("\n") == 1, err


def test_train_help_shows_each_settings_default_from_the_recipes():
    import dataclasses

    from sqzdse.cli.train import UNSET
    from sqzdse.train.recipe import TrainConfig, caffe_solver

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    helps = {a.dest: sub._get_formatter()._expand_help(a) for a in sub._actions if a.help}
    for f in dataclasses.fields(TrainConfig):
        if f.name == "dataset":
            continue
        imagenet, small = getattr(caffe_solver(), f.name), getattr(small_input_recipe(), f.name)
        if imagenet == small:
            assert f"(default: {UNSET[f.name] if imagenet is None else imagenet})" in helps[f.name], f.name
        else:
            assert f"(default: {imagenet} with an ImageNet stem, {small} with the small stem)" in helps[f.name], f.name


def test_export_summary_is_one_row_per_design_with_its_seeds_interval(tmp_path, capsys):
    import optuna

    from sqzdse.results import stats

    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="s", storage=url)
    accs = {0.25: [0.80, 0.82, 0.85], 0.5: [0.9]}  # SR 0.25 at three seeds, SR 0.5 at one
    for sr, values in accs.items():
        for seed, acc in enumerate(values):
            attrs = dict(sr=sr, pct3x3=0.5, bypass="none", seed=seed, val_top1=acc, test_top1=acc - 0.01, bytes=100)
            study.add_trial(optuna.create_trial(value=acc, user_attrs=attrs))
    out = tmp_path / "summary.csv"
    assert main(["sweep", "export", "--storage", url, "--summary", "-o", str(out)]) == 0
    assert "wrote 2 designs" in capsys.readouterr().err
    best, three = list(csv.DictReader(out.read_text().splitlines()))
    assert best["sr"] == "0.5" and best["n"] == "1" and best["val_top1_low"] == best["val_top1_high"] == ""
    assert three["seeds"] == "[0, 1, 2]" and three["trials"] == "[0, 1, 2]"
    ci = stats.mean(accs[0.25])
    assert float(three["val_top1"]) == pytest.approx(np.mean(accs[0.25]))
    assert (float(three["val_top1_low"]), float(three["val_top1_high"])) == pytest.approx((ci.low, ci.high))
    assert float(three["val_top1_low"]) < float(three["val_top1"]) < float(three["val_top1_high"])
    assert float(three["test_top1"]) == pytest.approx(np.mean(accs[0.25]) - 0.01)


def test_workers_on_a_gpu_machine_get_their_own_gpus(monkeypatch):
    from sqzdse import runtime

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    envs = runtime.worker_devices(2)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0,1", "2,3"]
    assert [e["SQZDSE_CPUS"] for e in envs] == [",".join(map(str, c)) for c in runtime.worker_cpus(2)]
    assert not any("XLA_PYTHON_CLIENT_PREALLOCATE" in e for e in envs)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")  # three workers, one GPU: shared, memory on demand
    envs = runtime.worker_devices(3)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["5"] * 3
    assert all(e["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" for e in envs)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # none visible: cores only
    assert all(set(e) == {"SQZDSE_CPUS"} for e in runtime.worker_devices(2))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 0, stdout="GPU 0: NVIDIA H100 (UUID: x)\nGPU 1: NVIDIA H100 (UUID: y)\n"))  # fmt: skip
    assert runtime.visible_gpus() == [0, 1]
