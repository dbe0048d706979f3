"""The paper's design-space claims, tested on a sweep's trials: statistic, 95 % interval, verdict.

A design is one combination of metaparameters; its trials are its seeds. For each claim a study can test, the
statistic is computed on the design means, its interval by ``sqzdse.results.stats`` (seeds resampled within each
design; designs trained with the same seeds compared seed by seed), and the verdict is

* **holds**: the interval lies on the claim's side of its threshold;
* **contradicted**: it lies on the other side;
* **cannot tell**: it straddles the threshold, with the number of seeds per design that would decide it if the
  spread and the estimate stayed as they are (``stats.seeds_to_decide``).

The claims (Iandola et al. 2016, Sections 5-6; accuracies in points of the chosen metric):

* ``sr_rises``: accuracy rises with the squeeze ratio: the knee's mean minus the smallest SR's, > 0. The knee is
  SR 0.75, where the paper's Fig. 3a saturates, or the second-largest SR of a study without 0.75.
* ``sr_saturates``: beyond the knee it saturates: the largest SR's mean minus the knee's, < ``MARGIN``.
* ``pct3x3_saturates``: the 3x3 share saturates near 50 % (Fig. 3b): the mean of the larger shares' means minus
  that of 0.5, < ``MARGIN``.
* ``simple_beats_vanilla``: simple bypass beats vanilla at equal size (Table 3): paired difference > 0.
* ``complex_beats_vanilla``: complex bypass beats vanilla, with its 1x1 bypass convolutions' extra parameters
  (Table 3): paired difference > 0, also given per 100,000 added parameters.
* ``simple_beats_complex``: simple bypass beats complex (Table 3: 60.4 against 58.8 % top-1): paired > 0.

Each claim compares designs that differ only in its axis: of the trials, the designs that agree on every other
metaparameter and cover the most values of the axis (named in ``Claim.held``).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from sqzdse.results import stats
from sqzdse.results.rows import completed, short_number, where_text
from sqzdse.sweep.schema import DESIGN_KEYS

MARGIN = 0.5  # points: a gain below this is "saturated"
PAPER_KNEE = 0.75  # Fig. 3a: "accuracy plateaus at SR=0.75"
VERDICTS = ("holds", "contradicted", "cannot tell")


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim tested: what the paper says, what was measured, its interval, the verdict."""

    key: str
    claim: str  # what the paper says
    statistic: str  # what was measured, e.g. "mean(SR 0.75) - mean(SR 0.125)"
    interval: stats.Interval  # in points of the metric
    threshold: float  # the claim holds on the `side` of it
    side: str  # ">" or "<"
    verdict: str  # one of VERDICTS
    seeds_needed: int | None  # with "cannot tell": seeds per design that would decide it at this spread
    held: str  # the other metaparameters, held fixed
    note: str = ""

    def text(self) -> str:
        """One line: the claim, the statistic and interval in points, the verdict."""
        s = f"{self.claim}: {self.statistic} = {self.interval.text(' pt')}"
        s += f" (needs {self.side} {self.threshold:g}): {self.verdict}"
        if self.verdict == "cannot tell":
            s += f" at {self.interval.n} seed{'s' if self.interval.n != 1 else ''} per design"
            if self.seeds_needed:
                s += f"; ~{self.seeds_needed} would decide it at this spread"
        return s + (f"; {self.note}" if self.note else "")


def check_claims(rows: Sequence[dict], metric: str = "val_top1") -> list[Claim]:
    """Every claim the completed rows can test (none for a study that varies none of the claims' axes)."""
    kept, _ = completed(rows, metric)
    out = []
    sr = _designs(kept, "sr", metric)
    if sr and len(sr[0]) >= 2:
        out += _sr_claims(*sr)
    pct = _designs(kept, "pct3x3", metric)
    if pct and 0.5 in pct[0] and any(p > 0.5 for p in pct[0]):
        out.append(_pct_claim(*pct))
    by = _designs(kept, "bypass", metric)
    if by and "none" in by[0]:
        out += _bypass_claims(*by, kept)
    return out


def _designs(rows, axis: str, metric: str):
    """({axis value: {seed: accuracy in points}}, held text) of the designs that vary only `axis` and cover the
    most of its values; None when no such designs have two values."""
    families = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        others = tuple((k, r.get(k)) for k in DESIGN_KEYS if k != axis and r.get(k) is not None)
        families[others][r.get(axis)][r.get("seed")].append(100.0 * r[metric])
    if not families:
        return None
    others, family = max(families.items(), key=lambda kv: (len(kv[1]), sum(len(s) for s in kv[1].values())))
    if len(family) < 2:
        return None
    seeds = {v: {s: float(np.mean(a)) for s, a in by_seed.items()} for v, by_seed in family.items()}
    return seeds, where_text(dict(others))


def _verdict(key, claim, statistic, ci, threshold, side, held, note="") -> Claim:
    above, below = ci.low > threshold, ci.high < threshold
    if ci.n < 2:
        verdict = "cannot tell"
    elif (above and side == ">") or (below and side == "<"):
        verdict = "holds"
    elif above or below:
        verdict = "contradicted"
    else:
        verdict = "cannot tell"
    needed = stats.seeds_to_decide(ci, threshold) if verdict == "cannot tell" else None
    return Claim(key, claim, statistic, ci, threshold, side, verdict, needed, held, note)


def _sr_claims(by_sr: dict, held: str) -> list[Claim]:
    values = sorted(by_sr)
    knee = PAPER_KNEE if PAPER_KNEE in by_sr and PAPER_KNEE != values[0] else values[-2] if len(values) > 2 else None
    out = []
    lo, hi = values[0], values[-1]
    rise_to = knee if knee is not None else hi
    ci = stats.difference(list(by_sr[lo].values()), list(by_sr[rise_to].values()))
    statistic = f"mean(SR {short_number(rise_to)}) - mean(SR {short_number(lo)})"
    out.append(_verdict("sr_rises", "accuracy rises with the squeeze ratio (Fig. 3a)", statistic, ci, 0.0, ">", held))
    if knee is not None and knee != hi:
        ci = stats.difference(list(by_sr[knee].values()), list(by_sr[hi].values()))
        statistic = f"mean(SR {short_number(hi)}) - mean(SR {short_number(knee)})"
        claim = f"beyond SR {short_number(knee)} it saturates (Fig. 3a)"
        out.append(_verdict("sr_saturates", claim, statistic, ci, MARGIN, "<", held))
    return out


def _pct_claim(by_pct: dict, held: str) -> Claim:
    larger = sorted(p for p in by_pct if p > 0.5)
    groups = [list(by_pct[0.5].values())] + [list(by_pct[p].values()) for p in larger]
    ci = stats.bootstrap(groups, lambda m: m[:, 1:].mean(axis=1) - m[:, 0])
    shares = ", ".join(short_number(p) for p in larger)
    return _verdict("pct3x3_saturates", "the 3x3 share saturates near 50 % (Fig. 3b)",
                    f"mean over pct3x3 {shares} - mean(pct3x3 .5)", ci, MARGIN, "<", held)  # fmt: skip


def _bypass_claims(by_kind: dict, held: str, rows) -> list[Claim]:
    out = []
    params = {b: next((r["params"] for r in rows if r.get("bypass") == b and r.get("params")), None) for b in by_kind}
    pairs = (("simple_beats_vanilla", "none", "simple", "simple bypass beats vanilla at equal size (Table 3)"),
             ("complex_beats_vanilla", "none", "complex", "complex bypass beats vanilla (Table 3)"),
             ("simple_beats_complex", "complex", "simple", "simple bypass beats complex bypass (Table 3)"))  # fmt: skip
    for key, a, b, claim in pairs:
        if a not in by_kind or b not in by_kind or not set(by_kind[a]) & set(by_kind[b]):
            continue
        ci = stats.paired(by_kind[a], by_kind[b])
        note = ""
        added = (params[b] - params[a]) if params[a] and params[b] else None
        if key == "simple_beats_vanilla" and added is not None:
            note = "the same parameter count" if added == 0 else f"simple bypass adds {added:,} parameters"
        if key == "complex_beats_vanilla" and added:
            note = f"{added:,} parameters added: {ci.estimate / (added / 1e5):+.2f} pt per 100,000"
        name = {"none": "vanilla"}
        out.append(_verdict(key, claim, f"mean over seeds of {name.get(b, b)} - {name.get(a, a)}", ci, 0.0, ">",
                            held, note))  # fmt: skip
    return out
