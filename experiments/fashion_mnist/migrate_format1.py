"""Carry this experiment's format-1 studies (grid trials recorded as categories) into a format-2 storage.

The studies of ``sweeps.db`` were made before ``sqzdse.sweep.spec.SPEC_FORMAT`` 2, so today's ``sweep run`` refuses to
continue them (``sqzdse.format: 1 → 2``). This copies every trial, with its values, attributes, intermediate
values and times, into a new storage as if the current sweep file had made it (the distributions the current
``Dim.suggest`` records, the spec record of the file), so that growing the files' seeds only adds the new points.

    python experiments/fashion_mnist/migrate_format1.py   # from the repository root: writes sweeps.db anew
"""

import os

import optuna

from sqzdse.sweep.spec import load_spec, spec_record

HERE = "experiments/fashion_mnist"
OLD, NEW = f"{HERE}/sweeps.db", f"{HERE}/sweeps.format2.db"


def migrate(name: str) -> int:
    spec = load_spec(f"sweeps/{name}.toml")
    old = optuna.load_study(study_name=name, storage=f"sqlite:///{OLD}")
    assert old.user_attrs["spec"].get("format", 1) == 1, "already format 2"
    new = optuna.create_study(study_name=name, storage=f"sqlite:///{NEW}", directions=spec.directions)
    new.set_metric_names(list(spec.objectives))
    for key, value in old.user_attrs.items():
        new.set_user_attr(key, value)
    new.set_user_attr("spec", spec_record(spec))
    for t in old.get_trials(deepcopy=False):
        fixed = optuna.trial.FixedTrial(t.params)
        for d in (*spec.space, spec.seed_dim):
            d.suggest(fixed)
        t = optuna.trial.FrozenTrial(
            number=t.number, state=t.state, value=None, values=t.values, datetime_start=t.datetime_start,
            datetime_complete=t.datetime_complete, params=t.params, distributions=fixed.distributions,
            user_attrs=t.user_attrs, system_attrs=t.system_attrs, intermediate_values=t.intermediate_values,
            trial_id=t._trial_id,
        )  # fmt: skip
        new.add_trial(t)
    return len(new.trials)


if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for study in ("squeeze_ratio", "pct3x3", "bypass"):
        print(study, migrate(study), "trials")
    os.replace(NEW, OLD)
