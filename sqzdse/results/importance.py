"""Which metaparameter matters: Optuna's PED-ANOVA and fANOVA importances of a study's accuracy, and their agreement.

The rows (from a storage or an export) become an in-memory Optuna study: each completed trial with its varied
metaparameters as parameters (a range of the values seen, ints as ints, bypass as a category) and the accuracy
as its value. PED-ANOVA (Watanabe et al. 2023; Optuna's default evaluator) says how differently each
metaparameter is distributed among the best trials (the top ``target_quantile``) than among all; fANOVA (Hutter
et al. 2014) how much of the accuracy's variance a random forest attributes to it. Both are normalised to sum to
1. They agree when they rank the metaparameters alike: the Spearman correlation of their importances.

Seeds are not a metaparameter: with several seeds per design, the seed-to-seed spread is what neither evaluator
can explain. With fewer than ``MIN_TRIALS`` completed trials the importances say little, and are refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from sqzdse.errors import InputError
from sqzdse.results.rows import completed, study_names, varying

MIN_TRIALS = 8
INT_AXES = ("base_e", "incr_e", "freq", "batch_size", "iter_size")


@dataclasses.dataclass(frozen=True)
class Importances:
    """Per evaluator, {metaparameter: importance} (summing to 1, largest first); their rank agreement."""

    metric: str
    trials: int
    ped_anova: dict[str, float]
    fanova: dict[str, float]
    spearman: float | None  # None with fewer than three metaparameters

    def text(self) -> str:
        names = list(self.ped_anova)
        lines = [f"{'metaparameter':<14} {'PED-ANOVA':>10} {'fANOVA':>8}"]
        lines += [f"{k:<14} {self.ped_anova[k]:>10.3f} {self.fanova[k]:>8.3f}" for k in names]
        agree = "n/a (fewer than 3 metaparameters)" if self.spearman is None else f"{self.spearman:+.2f}"
        lines.append(f"rank agreement (Spearman): {agree}; {self.trials} completed trials, {self.metric}")
        return "\n".join(lines)


def importances(rows: Sequence[dict], metric: str = "val_top1", seed: int = 0) -> Importances:
    """The importances of the metaparameters the completed rows vary, for `metric` (maximised)."""
    import optuna  # here: reading rows and drawing figures never import Optuna
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator, get_param_importances

    kept, _ = completed(rows, metric)
    varied = varying(kept, ())  # the metaparameters and swept training settings that take several values
    if not varied:
        raise InputError(f"importance: the trials of {study_names(kept)} vary no metaparameter")
    if len(kept) < MIN_TRIALS:
        raise InputError(f"importance: {len(kept)} completed trials of {study_names(kept)}; at least {MIN_TRIALS} "
                         "are needed for importances that say anything")  # fmt: skip
    dists = {k: _distribution(k, [r[k] for r in kept]) for k in varied}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.add_trials([optuna.trial.create_trial(params={k: r[k] for k in varied}, distributions=dists,
                                                value=100.0 * r[metric]) for r in kept])  # fmt: skip
    ped = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator(), normalize=True)
    fan = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed), normalize=True)
    order = sorted(varied, key=lambda k: -ped.get(k, 0.0))
    ped = {k: float(ped.get(k, 0.0)) for k in order}
    fan = {k: float(fan.get(k, 0.0)) for k in order}
    return Importances(metric, len(kept), ped, fan, spearman(list(ped.values()), list(fan.values())))


def _distribution(name: str, values: list):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if any(isinstance(v, str) for v in values):  # bypass, optimizer, schedule, ...
        return CategoricalDistribution(sorted(set(map(str, values))))
    if name in INT_AXES:
        return IntDistribution(int(min(values)), int(max(values)))
    return FloatDistribution(float(min(values)), float(max(values)))


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rank correlation (ties get their mean rank); None for fewer than three values."""
    if len(a) < 3:
        return None
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for v in np.unique(x):  # ties: their mean rank
        ranks[x == v] = ranks[x == v].mean()
    return ranks
