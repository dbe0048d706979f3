"""The sweep file: validation that names the key, the shipped sweeps, and a study that only runs its own file."""

import json
import re
from pathlib import Path

import pytest
from builders import TINY_SPEC, logged, points_of, spec

from sqzdse.cli import main
from sqzdse.sweep import engine as S
from sqzdse.sweep import spec as SP
from sqzdse.sweep import storage as ST

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"study": {"sampler": "bayes"}}, "study.sampler: 'bayes' is not one of grid, random, tpe, nsga2"),
        ({"space": {"sq": [0.5]}}, "space.sq: unknown; allowed: the metaparameters"),
        ({"space": {"sr": {"low": 1.0, "high": 0.5}}}, "space.sr: low (1.0) must be < high (0.5)"),
        ({"space": {"pct3x3": [1.5]}}, "pct3x3=1.5: must be in [0, 1]"),
        ({"train": {"lr": -1}}, "lr=-1: must be > 0"),
        ({"train": {"optimiser": "sgd"}}, "train.optimiser: unknown"),
        ({"study": {"sampler": "tpe"}}, "study.n_trials: required with sampler 'tpe'"),
        ({"study": {"objectives": ["accuracy"]}}, "study.objectives"),
        ({"model": {"preset": "alexnet"}}, "model.preset: 'alexnet' is not one of"),
        # Every value of every axis, and every type, before any training:
        ({"space": {"pct3x3": [0.5, 1.5]}}, "space point sr=0.25 pct3x3=1.5: pct3x3=1.5: must be in [0, 1]"),
        ({"space": {"sr": ["half"]}}, "space.sr: 'half' is not a number"),
        ({"space": {"base_e": [16, 24.5]}}, "space.base_e: 24.5 is not an integer"),
        ({"space": {"sr": [0.5, 0.5]}}, "space.sr: 0.5 is listed twice"),
        ({"train": {"epochs": "one"}}, "train.epochs: 'one' is not a number"),
        ({"train": {"train_limit": "many"}}, "train.train_limit: 'many' is not an integer"),
        ({"model": {"dropout": "none"}}, "model.dropout: 'none' is not a number"),
        (
            {"study": {"sampler": "random", "n_trials": 2}, "space": {"sr": {"low": 0.001, "high": 0.5}}},
            "space point sr=0.001: sr=0.001: fire2 gets",
        ),  # a range's endpoints  # fmt: skip
        (
            {"space": {"sr": {"low": 0.0001, "high": 1.0, "step": 0.00005}}},
            "space: the grid has 19,999 points (19,999 sr x 1 seed), over the limit of 10,000",
        ),
        (
            {"study": {"grace_period": 3}},
            "study.grace_period: 3 s must be >= 2 x study.heartbeat_interval (10 s) + 5 s = 25 s",
        ),
        ({"study": {"heartbeat_interval": 60}}, "study.grace_period: 120 s must be >= 2 x study.heartbeat_interval"),
        # Values of the right type that no run can use:
        ({"space": {"sr": [0.125, float("inf")]}}, "space.sr: inf: must be a finite number"),
        ({"space": {"sr": {"low": 0.1, "high": 1.0, "step": float("nan")}}}, "space.sr.step: nan: must be a finite"),
        ({"train": {"epochs": float("inf")}}, "train.epochs: inf: must be a finite number"),
        ({"train": {"lr": float("inf")}}, "train.lr: inf: must be a finite number"),
        ({"train": {"weight_decay": float("nan")}}, "train.weight_decay: nan: must be a finite number"),
        ({"model": {"dropout": float("nan")}}, "model.dropout: nan: must be a finite number"),
        ({"study": {"seeds": [0, -1]}}, "study.seeds: [0, -1]: a number of seeds (1 to 1,000,000) or a list"),
        ({"train": {"eval_limit": 0}}, "eval_limit=0: must be unset or an integer >= 1"),
        ({"train": {"val_size": 0}}, "val_size=0: must be unset or an integer >= 1"),
        ({"train": {"train_limit": -5}}, "train_limit=-5: must be unset or an integer >= 1"),
        ({"train": {"batch_size": 0}}, "batch_size=0: must be an integer >= 1"),
        ({"train": {"power": -1.0}}, "power=-1.0: must be >= 0"),
        (
            {"space": {"sr": {"low": 0.5, "high": 1.0, "step": 0.3}}},
            "space.sr: step (0.3) does not divide high - low (0.5)",
        ),
        # Sizes are counted before anything is listed: neither takes memory or time.
        ({"study": {"seeds": 10**12}}, "study.seeds: 1000000000000: a number of seeds (1 to 1,000,000)"),
        (
            {"space": {"sr": {"low": 0.0, "high": 1.0, "step": 1e-12}}},
            "space: the grid has 1,000,000,000,001 points (1,000,000,000,001 sr x 1 seed), over the limit of 1,000,000",
        ),
    ],
)
def test_invalid_sweep_file_names_the_key(patch, message):
    raw = json.loads(json.dumps(TINY_SPEC))
    for section, values in patch.items():
        raw[section].update(values)
    if "sq" in patch.get("space", {}):
        del raw["space"]["sr"]
    with pytest.raises(SP.SpecError) as e:
        SP.parse_spec(raw)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "table, message",
    [
        ({"bits": 9}, "compress.bits: bits=9: must be an integer from 2 to 8"),
        ({"density": 1.5}, "compress.density: density=1.5"),
        ({"huffman": "yes"}, "compress.huffman: 'yes': true or false"),
        ({"level": 3}, "compress.level: unknown; allowed: bits, density, huffman"),
    ],
)
def test_invalid_compress_table_names_the_key(table, message):
    raw = json.loads(json.dumps(TINY_SPEC))
    raw["compress"] = table
    with pytest.raises(SP.SpecError) as e:
        SP.parse_spec(raw)
    assert message in str(e.value)


def test_invalid_toml_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[study]\nname = \n")
    assert main(["sweep", "run", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(SWEEPS.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_sweeps_are_valid(path):
    s = SP.load_spec(str(path))
    assert s.name == path.stem
    head = path.read_text().splitlines()[:30]
    assert any("sqzdse sweep run" in line for line in head), "the header says the command"


def claim_and_suggest(study, s):
    """What a worker does before training: claim a waiting trial and suggest its point (Optuna checks the
    distributions against the study's earlier trials here)."""
    trial = ST.claim_waiting(study)
    point = {d.name: d.suggest(trial) for d in s.space} | {"seed": s.seed_dim.suggest(trial)}
    study.tell(trial, [0.5])
    return point


def test_a_grid_that_grew_gets_its_new_points_only(tmp_path):
    url = f"sqlite:///{tmp_path}/grow.db"
    first = spec()
    study = S.open_study(first, url)
    assert claim_and_suggest(study, first) == {"sr": 0.25, "seed": 0}
    grown = spec(space={"sr": [0.25, 0.5, 0.75, 1]}, seeds=[0, 1])  # 1: an int in a float axis is the point 1.0
    with logged() as lines:
        study = S.open_study(grown, url)
    assert lines == ["[tiny] enqueued 5 grid points the study did not have"]
    assert points_of(url) == sorted((sr, seed) for sr in (0.25, 0.5, 0.75, 1.0) for seed in (0, 1))
    # New categories and seeds suggest fine next to the first trial's (a grid records ranges, not categories).
    assert claim_and_suggest(study, grown) == {"sr": 0.5, "seed": 0}
    with logged() as lines:
        S.open_study(grown, url)  # idempotent: nothing more
    assert len(points_of(url)) == 8 and not lines
    assert optuna_spec(url)["space"] == {"sr": [0.25, 0.5, 0.75, 1.0]}  # the study records the file it now follows


def optuna_spec(url, name="tiny"):
    import optuna

    return optuna.load_study(study_name=name, storage=ST.open_storage(url)).user_attrs["spec"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"train": {"epochs": 2}}, "train.epochs: 1 → 2"),
        ({"model": {"base_e": 32}}, "model.base_e: 16 → 32"),
        ({"study": {"objectives": ["val_top5"]}}, 'study.objectives: ["val_top1"] → ["val_top5"]'),
        ({"study": {"sampler": "random", "n_trials": 3}}, 'study.sampler: "grid" → "random"'),
        ({"space": {"sr": [0.25, 0.5]}}, "1 of its grid points are not in the file's grid (seed=0 sr=0.75)"),
        ({"space": {"sr": [0.25, 0.5, 0.75], "pct3x3": [0.5]}}, "space.pct3x3: (unset) → [0.5]"),
        ({"compress": {"bits": 4}}, "compress.bits: (unset) → 4"),
    ],
)
def test_a_different_file_with_the_same_study_name_is_refused(tmp_path, change, message):
    url = f"sqlite:///{tmp_path}/mix.db"
    S.open_study(spec(), url)
    raw = json.loads(json.dumps(TINY_SPEC))
    for section, values in change.items():
        raw[section] = values if section in ("space", "compress") else {**raw[section], **values}
    with pytest.raises(SP.SpecError) as e:
        S.open_study(SP.parse_spec(raw, source="other.toml"), url)
    assert message in str(e.value), str(e.value)
    assert "nothing was run" in str(e.value) and "sqzdse sweep delete other.toml" in str(e.value)
    assert points_of(url) == [(0.25, 0), (0.5, 0), (0.75, 0)]  # nothing enqueued, nothing changed


def test_heartbeat_and_retry_settings_may_change(tmp_path):
    url = f"sqlite:///{tmp_path}/hb.db"
    S.open_study(spec(), url)
    S.open_study(spec(heartbeat_interval=20, grace_period=60, max_retry=1), url)
    assert optuna_spec(url)["grace_period"] == 60 and len(points_of(url)) == 3


def test_a_file_that_is_not_utf8_is_refused_in_one_line(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[study]\nname = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(SP.SpecError, match=r"latin1.toml: not UTF-8 text \(byte \d+\)"):
        SP.load_spec(str(path))


def test_a_hundred_thousand_seeds_are_checked_at_once():
    # Counting a grid and checking its seeds for duplicates are linear: 100,000 seeds parse in well under a second
    # (a quadratic check took ~1 min); over the grid limit they are refused, under --yes (no limit) they parse.
    with pytest.raises(SP.SpecError, match="the grid has 300,000 points"):
        spec({"sr": [0.25, 0.5, 0.75]}, seeds=100_000)
    assert spec({"sr": [0.25]}, seeds=list(range(9_000))).grid_size() == 9_000


def test_vanilla_is_none_wherever_a_bypass_is_given():
    from sqzdse.cli import build_parser
    from sqzdse.model import config as C

    assert C.squeezenet_small(bypass="vanilla") == C.squeezenet_small(bypass="none")
    vanilla = SP.parse_spec({**TINY_SPEC, "space": {"bypass": ["vanilla", "simple"]}, "model": {
        **TINY_SPEC["model"], "bypass": "vanilla"}})  # fmt: skip
    none = SP.parse_spec({**TINY_SPEC, "space": {"bypass": ["none", "simple"]}, "model": {
        **TINY_SPEC["model"], "bypass": "none"}})  # fmt: skip
    assert SP.spec_record(vanilla) == SP.spec_record(none)  # one study, however the file spells it
    with pytest.raises(SP.SpecError, match="space.bypass"):
        SP.parse_spec({**TINY_SPEC, "space": {"bypass": ["vanilla", "none"]}})  # the same kind twice
    args = build_parser().parse_args(["model", "summary", "--preset", "squeezenet_small", "--bypass", "vanilla"])
    assert args.bypass == "none"


def test_the_docs_list_every_sweep_key_and_each_is_accepted_at_its_default():
    from pathlib import Path

    from sqzdse.cli.sweep import keys_table

    docs = (Path(__file__).resolve().parents[1] / "docs" / "sweeps.md").read_text()
    assert keys_table(markdown=True) in docs  # `sqzdse sweep keys --markdown`, pasted: regenerate it when it fails
    for key, _, default, _ in SP.sweep_keys():
        table, name = key.split(".")
        if default in ("(required)", "(unset)", "(held)", "([train])") or name == "preset":
            continue
        raw = json.loads(json.dumps(TINY_SPEC))
        raw.setdefault(table, {})[name] = json.loads(default)
        SP.parse_spec(raw)  # a key the list names is one the parser takes, at the default the list shows


def test_training_settings_are_sweep_axes_validated_like_metaparameters():
    raw = json.loads(json.dumps(TINY_SPEC))
    raw["space"] = {"lr": [0.001, 0.004], "optimizer": ["sgd", "adam"], "batch_size": [8, 16]}
    del raw["train"]["batch_size"]
    s = SP.parse_spec(raw)
    assert s.grid_size() == 8 and {"lr", "optimizer", "batch_size"} <= s.swept()
    point = {"lr": 0.004, "optimizer": "sgd", "batch_size": 8}
    tc = SP.train_config(s, s.config(point), 3, point)
    assert (tc.lr, tc.optimizer, tc.batch_size, tc.seed, tc.epochs) == (0.004, "sgd", 8, 3, 1)
    for space, train, message in (
        ({"lr": [0.001]}, {"lr": 0.01}, "space.lr: also set in [train]"),
        ({"optimizer": {"low": 0, "high": 1}}, {}, "space.optimizer: optimizer is categorical: give a list of sgd"),
        ({"lr": [0.0, 0.1]}, {}, "lr=0.0: must be > 0"),
        ({"optimizer": ["rmsprop"]}, {}, "space.optimizer: 'rmsprop' is not one of sgd, adam, adamw"),
        ({"dataset": ["mnist"]}, {}, "space.dataset: unknown"),
    ):
        bad = json.loads(json.dumps(TINY_SPEC))
        bad["space"], bad["train"] = space, {**bad["train"], **train}
        bad["train"].pop("batch_size")
        with pytest.raises(SP.SpecError, match=re.escape(message)):
            SP.parse_spec(bad)


def test_a_study_stored_before_a_key_existed_agrees_at_the_keys_default(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path}/old.db"
    S.open_study(spec(), url)
    study = optuna.load_study(study_name="tiny", storage=ST.open_storage(url))
    stored = study.user_attrs["spec"]
    del stored["prune_margin"]  # what a study made before prune_margin existed holds
    study.set_user_attr("spec", stored)
    S.open_study(spec(), url)  # the file at the key's default: the same sweep (the study now records the key)
    raw = json.loads(json.dumps(TINY_SPEC))
    raw["study"]["prune_margin"] = 2.0
    with pytest.raises(SP.SpecError, match=r"study.prune_margin: 1.0 → 2.0"):
        S.open_study(SP.parse_spec(raw), url)


@pytest.mark.parametrize(
    "study, message",
    [
        ({"pruner": "pareto"}, "'pareto' needs objectives with an accuracy and a size"),
        ({"pruner": "pareto", "objectives": ["val_top1", "compressed_bytes"]}, "known before training"),
        ({"pruner": "median", "objectives": ["val_top1", "bytes"]}, "a multi-objective study takes 'pareto'"),
        ({"pruner": "pareto", "objectives": ["val_top1", "bytes"], "prune_margin": -1}, "a number in [0, 100)"),
    ],
)
def test_pruners_fit_the_objectives(study, message):
    raw = json.loads(json.dumps(TINY_SPEC))
    raw["study"].update(study)
    with pytest.raises(SP.SpecError) as e:
        SP.parse_spec(raw)
    assert message in str(e.value)
    raw["study"].update(objectives=["val_top1", "macs"], pruner="pareto", prune_margin=1.5)
    parsed = SP.parse_spec(raw)
    assert parsed.size_objective() == "macs" and parsed.prune_margin == 1.5


def test_a_file_with_several_objectives_and_no_sampler_gets_the_benchmarks_winner():
    """benchmarks/README.md#search-efficiency: TPE reached the full grid's front with the least compute."""
    raw = json.loads(json.dumps(TINY_SPEC))
    del raw["study"]["sampler"]
    assert SP.parse_spec(raw).sampler == "grid"  # one objective: a grid, as before
    raw["study"]["objectives"] = ["val_top1", "bytes"]
    with pytest.raises(SP.SpecError, match=r"n_trials: required with sampler 'tpe' \(the default for several "):
        SP.parse_spec(raw)
    raw["study"]["n_trials"] = 5
    assert SP.parse_spec(raw).sampler == SP.MULTI_OBJECTIVE_SAMPLER == "tpe"
    raw["study"]["sampler"] = "grid"  # named: kept
    assert SP.parse_spec(raw).sampler == "grid"
