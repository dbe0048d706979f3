"""A sweep's results as rows: the one column list, reading exports and storages, and the labels figures use.

One row per Optuna trial, as ``sqzdse.sweep.engine.export_rows`` collects it and ``sqzdse sweep export`` writes it
(CSV or JSON); ``load_rows`` reads those files, or a storage URL, back with their types restored. The paper's
Figure 3 numbers (``paper_fig3``) are read here too, so that figures only draw.

Accuracies are stored as fractions; model size is ``bytes`` (float32 weights), shown in MiB, the unit in which
the paper's "4.8MB" for SqueezeNet v1.0 is 1,248,424 x 4 / 2**20 = 4.76 (paper_numbers.json), or
``compressed_bytes``, the Deep-Compression file a sweep with a ``[compress]`` table recorded per trial.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import typing
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from sqzdse.errors import InputError
from sqzdse.model.config import BYPASSES, bypass_name, shown
from sqzdse.sweep.schema import DESIGN_KEYS, FIELDS, TYPES
from sqzdse.sweep.schema import TrialRow as TrialRow

METRICS = ("val_top1", "val_top5", "test_top1", "test_top5")
BY_CHOICES = ("study", *DESIGN_KEYS, "seed")  # what rows can be grouped by
PAPER_PROVENANCE = ("text", "derived")  # the only paper numbers a figure may show (reference/README.md)
MIB = 2**20
# size column -> (what it is, the unit figures and tables show it in, stored units per shown unit)
SIZES = {
    "bytes": ("model size", "MiB of float32 weights", MIB),
    "compressed_bytes": ("model size", "MiB of the compressed file", MIB),
    "latency_b1_ms": ("latency", "ms per image at batch 1", 1.0),  # sqzdse.deploy.latency
    "latency_b64_ms": ("latency", "ms per batch of 64", 1.0),
}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
log = logging.getLogger(__name__)


class ResultsError(InputError):
    """Rows that cannot be drawn or reported without misleading: what is wrong, and what to do instead."""


class BudgetMismatch(ResultsError):
    """Studies trained at different budgets asked into one figure."""


class MissingSizeError(ResultsError):
    """A size column (``compressed_bytes``) that none of the rows to draw has."""


# --------------------------------------------------------------------------- loading


def load_rows(*sources: str | os.PathLike | Sequence, study: str | Sequence[str] | None = None) -> list[TrialRow]:
    """Trial rows from exported files and/or Optuna storages, types restored.

    Args:
      sources: ``.csv`` or ``.json`` exports of ``sqzdse.sweep.engine``, sweep files (``.toml``: that sweep's
        study in its storage, as ``sweep run`` chose it), or storage URLs (``sqlite:///runs/x.db``,
        ``postgresql://...``, read with ``sqzdse.sweep.engine.export_rows``); lists of them are flattened.
        Rows keep their ``study`` (a file row without one gets the file's stem).
      study: keep only rows of this study (or these studies).

    Returns:
      One ``TrialRow`` per trial: every column of ``FIELDS`` (missing ones None; empty cells None; each read as its
      type, NaN as None; ``curve`` a list of floats) plus any extra columns, parsed best-effort.
    """
    flat = list(_flatten(sources))
    if not flat:
        raise InputError("no results source given (a .csv or .json export, or a storage URL)")
    wanted = None if study is None else {study} if isinstance(study, str) else set(study)
    rows = []
    for src in flat:
        got = _read_source(src, next(iter(wanted)) if wanted and len(wanted) == 1 else None)
        if not got:
            raise InputError(f"{src}: no trial rows")
        rows.extend(got)
    rows = _unique(rows)
    if wanted is not None:
        found = sorted({str(r["study"]) for r in rows})
        rows = [r for r in rows if r["study"] in wanted]
        if not rows:
            raise InputError(f"no rows of study {', '.join(sorted(wanted))}; the sources hold: {', '.join(found)}")
    return rows


def _unique(rows: list[TrialRow]) -> list[TrialRow]:
    """Each trial once: rows of one study and trial number from several sources (an export beside its storage)
    are one trial, kept once (its finished row where one source caught it still running), and the number
    dropped is logged. Two different trials under one study name and number (their keys differ) are refused:
    drawn together they would mix two studies."""
    kept: dict = {}
    for i, r in enumerate(rows):
        ident = (r.get("study"), r.get("number")) if r.get("number") is not None else i
        first = kept.setdefault(ident, r)
        if first is r:
            continue
        if first.get("key") != r.get("key"):
            raise ResultsError(
                f"two sources hold different trials as study {ident[0]!r} trial {ident[1]} (keys {first.get('key')}"
                f" and {r.get('key')}): they are two studies of one name; read them one at a time"
            )
        if r.get("state") == "COMPLETE" and first.get("state") != "COMPLETE":
            kept[ident] = r
    if len(kept) < len(rows):
        log.warning(f"{len(rows) - len(kept)} trial rows were in more than one source: each trial is counted once")
    return list(kept.values())


def _flatten(sources) -> Iterable:
    for s in sources:
        if isinstance(s, (str, os.PathLike)):
            yield s
        else:
            yield from _flatten(s)


def is_storage_url(source) -> bool:
    return isinstance(source, str) and bool(_URL.match(source))


def _read_source(src, study: str | None) -> list[TrialRow]:
    if is_storage_url(src):
        from sqzdse.sweep.engine import export_rows  # the only tie to the sweep engine: its results store

        return [normalize_row(r, src) for r in export_rows(src, study_name=study)]
    path = Path(src)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such results file")
    if path.suffix.lower() == ".toml":  # a sweep file: its study, in its storage (what `sweep run FILE` wrote)
        from sqzdse.sweep.spec import load_spec
        from sqzdse.sweep.storage import storage_url

        spec = load_spec(str(path), max_points=None)
        return _read_source(storage_url(None, spec), spec.name)
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
            raise InputError(f"{path}: expected a JSON list of row objects")
    elif path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            raw = list(csv.DictReader(f))
    else:
        raise InputError(f"{path}: unknown results format {path.suffix!r}; expected .csv, .json, a sweep's .toml or "
                         "a storage URL")  # fmt: skip
    out = []
    for i, r in enumerate(raw):
        try:
            out.append(normalize_row(r, path.stem))
        except ValueError as e:
            raise InputError(f"{path}: row {i + 1}: {e}") from None
    return out


def study_specs(storage_url: str) -> dict[str, dict | None]:
    """{study: the ``spec`` its sweep stored on it (``user_attrs["spec"]``), or None} of a storage, read only."""
    from sqzdse.sweep.storage import open_storage  # never creates a storage

    return {s.study_name: s.user_attrs.get("spec") for s in open_storage(storage_url).get_all_studies()}


def normalize_row(raw: Mapping, default_study: str | None = None) -> TrialRow:
    """One exported row with its types restored (CSV cells are strings; JSON ones may already be typed): each
    column of ``TrialRow`` read as its type says, any other column parsed best-effort."""
    row = dict.fromkeys(FIELDS)
    for key, value in raw.items():
        if key is None:  # a CSV line with more cells than the header
            continue
        key = key.strip()
        try:
            row[key] = _READERS[key](value) if key in _READERS else _guess(value)
        except (TypeError, ValueError):
            raise InputError(f"column {key!r}: cannot read {value!r}") from None
    if row["state"] is not None:
        row["state"] = row["state"].upper().removeprefix("TRIALSTATE.")
    if row["study"] is None:
        row["study"] = default_study
    return row


def _to_int(v) -> int | None:
    if v is None or v == "":
        return None
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            pass
    f = float(v)
    if not math.isfinite(f):
        return None
    if not f.is_integer():
        raise ValueError(v)
    return int(f)


def _to_float(v) -> float | None:
    if v is None or v == "":
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _to_str(v) -> str | None:
    return None if v is None or v == "" else str(v)


def _to_floats(v) -> list[float] | None:
    if v is None or v == "":
        return None
    if isinstance(v, str):
        v = json.loads(v)
    return [float("nan") if x is None else float(x) for x in v]


def _to_seed(v) -> int | list[int] | None:
    """One seed, or the list an adaptive sampler's trial trained (a JSON list in a CSV cell)."""
    if isinstance(v, str) and v.strip().startswith("["):
        v = json.loads(v)
    return [_to_int(x) for x in v] if isinstance(v, list) else _to_int(v)


def _reader(tp):
    """How a cell of a column of type `tp` (TrialRow's, None allowed or not) is read back."""
    kinds = tuple(t for t in typing.get_args(tp) if t is not type(None)) or (tp,)
    return {(int,): _to_int, (float,): _to_float, (str,): _to_str, (list[float],): _to_floats,
            (int, list[int]): _to_seed}[kinds]  # fmt: skip


_READERS = {key: _reader(tp) for key, tp in TYPES.items()}


def _guess(v):
    if not isinstance(v, str):
        return v
    if v == "":
        return None
    for parse in (int, float):
        try:
            return parse(v)
        except ValueError:
            pass
    return v


# --------------------------------------------------------------------------- selecting


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def completed(rows: Sequence[dict], metric: str = "val_top1") -> tuple[list[dict], Counter]:
    """(rows in state COMPLETE with `metric` present, why the others were skipped: state or 'no <metric>')."""
    check_metric(metric)
    kept, skipped = [], Counter()
    for r in rows:
        if r.get("state") != "COMPLETE":
            skipped[r.get("state") or "no state"] += 1
        elif r.get(metric) is None or not math.isfinite(r[metric]):
            skipped[f"no {metric}"] += 1
        else:
            kept.append(r)
    return kept, skipped


def require_completed(rows: Sequence[dict], metric: str, what: str = "") -> tuple[list[dict], Counter]:
    """``completed``, or a ValueError that says why nothing is left (states, first failure reasons)."""
    if not rows:
        raise InputError("no trial rows to plot")
    kept, skipped = completed(rows, metric)
    if not kept:
        why = ", ".join(f"{n} {s}" for s, n in skipped.most_common())
        reasons = sorted({r["reason"] for r in rows if r.get("reason")})[:3]
        more = f"; reasons: {' | '.join(reasons)}" if reasons else ""
        raise InputError(f"no completed trials with {metric}{what} among {len(rows)} rows ({why}){more}")
    return kept, skipped


def check_size(size: str) -> None:
    if size not in SIZES:
        raise InputError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")


def size_of(row: dict, size: str = "bytes") -> float | None:
    """A trial's size in its shown unit (``SIZES``): MiB of float32 weights (``bytes``; 4 x ``params`` where an
    export lacks bytes) or of the compressed file (``compressed_bytes``; None where the sweep did not compress), or
    its measured latency in ms (None for a trial from before sqzdse measured it)."""
    check_size(size)
    b = row.get(size)
    if b is None and size == "bytes" and row.get("params") is not None:
        b = 4 * row["params"]
    return None if b is None else b / SIZES[size][2]


def size_label(size: str, note: str = "") -> str:
    """An axis label: 'model size (MiB of float32 weights, log scale)' for note 'log scale'."""
    what, unit, _ = SIZES[size]
    return f"{what} ({unit}{', ' + note if note else ''})"


def size_unit(size: str) -> str:
    """'MiB' or 'ms'."""
    return SIZES[size][1].split()[0]


def select(rows: Sequence[dict], where: Mapping | None) -> list[dict]:
    """The rows with these values (all rows for an empty `where`); a ResultsError when none is left.

    Values may be given as the CLI reads them (``{"pct3x3": "0.5"}``, ``{"bypass": "vanilla"}``): a string
    matches a number equal to it and a bypass kind by its shown name.
    """
    if not where:
        return list(rows)
    columns = {k for r in rows for k in r}
    unknown = sorted(set(where) - columns)
    if rows and unknown:
        raise ResultsError(f"where: no column {', '.join(unknown)}; the rows have {', '.join(sorted(columns))}")
    picked = [r for r in rows if all(_matches(r.get(k), v) for k, v in where.items())]
    if rows and not picked:
        seen = "; ".join(f"{k} takes {', '.join(sorted({_shown(r.get(k)) for r in rows}))}" for k in where)
        raise ResultsError(f"no rows with {where_text(where)} ({seen})")
    return picked


def where_text(where: Mapping) -> str:
    """{'pct3x3': 0.5, 'bypass': 'none'} -> 'pct3x3=0.5, bypass=vanilla'."""
    return ", ".join(f"{k}={shown(k, v)}" for k, v in where.items())


def _matches(value, wanted) -> bool:
    if value == wanted:
        return True
    if not isinstance(wanted, str) or value is None:
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(wanted) == value
        except ValueError:
            return False
    return wanted == bypass_name(value) or str(value) == wanted


def _shown(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return bypass_name(v) if isinstance(v, str) else str(v)


def varying(rows: Sequence[dict], fixed: Sequence[str]) -> list[str]:
    """The metaparameters, other than `fixed`, that take more than one value among `rows`."""
    return [k for k in DESIGN_KEYS if k not in fixed and len({r.get(k) for r in rows}) > 1]


def study_names(rows: Sequence[dict]) -> str:
    """The rows' studies, in order, at most four named."""
    names = list(dict.fromkeys(str(r.get("study")) for r in rows))
    return ", ".join(names[:4]) + (f" (+{len(names) - 4} more)" if len(names) > 4 else "")


def group_by_study(rows_by_study) -> dict[str, list[dict]]:
    """{study: rows} from a mapping (kept) or a flat list of rows (grouped by their ``study``, in order)."""
    if isinstance(rows_by_study, Mapping):
        return {str(k): list(v) for k, v in rows_by_study.items()}
    groups = defaultdict(list)
    for r in rows_by_study:
        groups[str(r.get("study"))].append(r)
    return dict(groups)


def check_budgets(rows: Sequence[dict]) -> str | None:
    """The one training budget of the rows' studies, or a BudgetMismatch naming each study's budget.

    A study's budget is its ``budget`` column (rows read from a storage carry the spec's ``train`` table, see
    ``budget_text``); where rows lack it (an export file), the dataset and the epochs the completed trials'
    curves record are compared instead. Studies of which neither is known are not compared.

    Returns:
      The shared budget to name in a figure's note ('dataset=..., epochs=...'), or None when it is unknown.
    """
    by_study = group_by_study(rows)
    full = {s: {r.get("budget") for r in g} for s, g in by_study.items()}
    if all(None not in b for b in full.values()):
        seen = {s: " | ".join(sorted(map(str, b))) for s, b in full.items()}
    else:
        seen = {s: _coarse_budget(g) for s, g in by_study.items()}
        seen = {s: b for s, b in seen.items() if b is not None}
    if len(set(seen.values())) > 1:
        studies = defaultdict(list)
        for s, b in seen.items():
            studies[b].append(s)
        named = "; ".join(f"{', '.join(names)} ({b})" for b, names in studies.items())
        raise BudgetMismatch(
            f"studies trained at different budgets are not drawn together, their accuracies are not comparable: "
            f"{named}. Draw each budget on its own (--study NAME, or --where)"
        )
    return next(iter(seen.values()), None)


def _coarse_budget(rows: Sequence[dict]) -> str | None:
    datasets = sorted({str(r["dataset"]) for r in rows if r.get("dataset")})
    epochs = sorted({len(r["curve"]) for r in rows if r.get("state") == "COMPLETE" and r.get("curve")})
    parts = ([f"dataset={'/'.join(datasets)}"] if datasets else []) + (
        [f"{'/'.join(map(str, epochs))} epochs in the curves"] if epochs else []
    )
    return ", ".join(parts) or None


def require_size(rows: Sequence[dict], size: str) -> None:
    """A MissingSizeError when none of `rows` has `size` (e.g. ``compressed_bytes`` of a sweep that did not
    compress): its axis would be drawn empty."""
    check_size(size)
    if rows and all(size_of(r, size) is None for r in rows):
        raise MissingSizeError(
            f"size={size}: none of the {len(rows)} trials of {study_names(rows)} has {size} ({size_label(size)}); "
            + ("a sweep records it with a [compress] table; " if size == "compressed_bytes" else "")
            + "choose another size (bytes: float32 weights)"
        )
    machines = sorted({f"{r.get('latency_cpu')}, {r.get('latency_threads')} threads, {r.get('latency_backend')}"
                       for r in rows if size.startswith("latency_") and size_of(r, size) is not None})  # fmt: skip
    if len(machines) > 1:
        raise ResultsError(f"size={size}: the trials' latencies were measured on {len(machines)} machines "
                           f"({'; '.join(machines)}), which do not compare; draw each machine's studies alone "
                           "(--study), or compare their bytes or MACs instead")  # fmt: skip


def require_varied(rows: Sequence[dict], column: str, what: str) -> None:
    """A ResultsError when `rows` hold fewer than two values of `column`: `what` (a figure against it, a curve per
    value) would show one point, one curve or one category and look like a result."""
    values = {r.get(column) for r in rows if r.get(column) is not None}
    if len(values) < 2:
        held = f"{column}={_shown(next(iter(values)))}" if values else f"no {column}"
        raise ResultsError(
            f"{what}: all {len(rows)} trials of {study_names(rows)} have {held}, so it would show one "
            f"{'point' if column in ('sr', 'pct3x3') else 'group'}; give a study that varies {column}"
        )


def plotted(rows: Sequence[dict], metric: str, where: Mapping | None = None) -> tuple[list[dict], Counter, str]:
    """What a figure draws: the rows with `where`, completed with `metric`, of one training budget.

    Returns:
      (kept, skipped, note lines): the note names the selection and the shared budget, where known.
    """
    picked = select(rows, where)
    kept, skipped = require_completed(picked, metric, f" for {where_text(where)}" if where else "")
    note = selection_note(where, check_budgets(kept))
    chance = chance_note(kept, metric)
    return kept, skipped, "\n".join(n for n in (note, chance) if n)


def chance_note(rows: Sequence[dict], metric: str) -> str:
    """'' unless every row's `metric` is below twice chance (1/classes for top-1, 5/classes for top-5, of the
    rows' dataset): then a line saying the trials learned next to nothing, so no best trial or front means much."""
    from sqzdse.data.datasets import DATASETS  # here: importing the results stage loads no data module

    names = {r.get("dataset") for r in rows}
    if len(names) != 1 or (name := names.pop()) not in DATASETS or not rows:
        return ""
    classes = DATASETS[name].num_classes
    chance = min(1.0, (5 if metric.endswith("top5") else 1) / classes)
    if chance >= 0.5 or max(r[metric] for r in rows) >= 2 * chance:
        return ""
    return (
        f"every trial is below twice chance ({100 * chance:.0f} % for {name}'s {classes} classes): they have "
        "learned next to nothing; train longer before reading a best trial or a front"
    )


def selection_note(where: Mapping | None, budget: str | None) -> str:
    """A figure's note lines on what it shows: 'selected: pct3x3=0.5' and 'trained: dataset=..., epochs=10'."""
    lines = ([f"selected: {where_text(where)}"] if where else []) + ([f"trained: {budget}"] if budget else [])
    return "\n".join(lines)


# --------------------------------------------------------------------------- labels


def count_note(n_plotted: int, skipped: Counter) -> str:
    """'12 trials plotted; 3 skipped (2 PRUNED, 1 FAIL)'."""
    n_skipped = sum(n for n in skipped.values() if n > 0)
    why = ", ".join(f"{n} {s}" for s, n in skipped.most_common() if n > 0)
    s = "" if n_plotted == 1 else "s"
    return f"{n_plotted} trial{s} plotted; {n_skipped} skipped" + (f" ({why})" if why else "")


def short_number(v) -> str:
    """0.25 -> '.25', 1.0 -> '1' (the frontier's labels must stay short)."""
    s = f"{v:g}"
    return s[1:] if s.startswith("0.") else s


def trial_label(row: dict) -> str:
    """A trial's metaparameters in one short line, e.g. 'SR=.25 3x3=.5 e=128+128/2 simple'."""
    bypass = bypass_name(row.get("bypass"))
    sr = "?" if row.get("sr") is None else short_number(row["sr"])
    pct = "?" if row.get("pct3x3") is None else short_number(row["pct3x3"])
    return f"SR={sr} 3x3={pct} e={row.get('base_e')}+{row.get('incr_e')}/{row.get('freq')} {bypass}"


def metric_label(metric: str) -> str:
    split, k = metric.split("_")
    return f"{'validation' if split == 'val' else split} top-{k[3:]} accuracy (%)"


def group_sort_key(k):
    """Sorts group keys: bypass kinds in the paper's order, then numbers and names, None last."""
    if k is None:
        return (2, 0, "")
    if k in BYPASSES:
        return (0, BYPASSES.index(k), "")
    return (1, k, "") if isinstance(k, int | float) else (1, 0, str(k))


def group_name(by: str, k) -> str:
    """A group's name in a legend: the study, the bypass's Table 3 name, or e.g. 'sr=.25'."""
    if by == "study":
        return str(k)
    if by == "bypass":
        return bypass_name(k)
    return f"{by}={short_number(k) if isinstance(k, float) else k}"


# --------------------------------------------------------------------------- paper numbers


def paper_numbers_path(reference: str | os.PathLike | None = None) -> Path:
    """paper_numbers.json: `reference` (the file or its folder), else the bundled reference data."""
    if reference is None:
        from sqzdse import reference as R

        return R.path("paper_numbers.json")
    p = Path(reference)
    if p.is_dir():
        p = p / "paper_numbers.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: paper_numbers.json not found")
    return p


def paper_fig3(panel: str, reference: str | os.PathLike | None = None) -> dict:
    """The paper's Figure 3 numbers that may be drawn: only those tagged ``text`` or ``derived``.

    Returns:
      {"top5": [(x, top-5 %, note)], "size": [(x, MiB)]} for panel "a" (x = SR, pct3x3 = 0.5) or "b"
      (x = pct3x3, SR = 0.5): the anchor points quoted in the running text (``fig3_anchor_points_text``, numeric
      top-5 only) and the model sizes computed from the metaparameter formulas (``fig3_model_sizes_derived``).
    """
    pn = json.loads(paper_numbers_path(reference).read_text())
    key = "sr" if panel == "a" else "pct3x3"
    top5 = [
        (float(a["SR" if panel == "a" else "pct3x3"]), float(a["top5"]), a.get("note", ""))
        for a in pn["fig3_anchor_points_text"]
        if a.get("panel") == panel and a.get("prov") in PAPER_PROVENANCE and isinstance(a.get("top5"), int | float)
    ]
    sizes = pn["fig3_model_sizes_derived"]  # computed from the prototxt / formulas: provenance "derived"
    sweep = sizes["SR_sweep_pct0.5" if key == "sr" else "pct_sweep_SR0.5"]
    size = sorted((float(x), float(v["MiB"])) for x, v in sweep.items())
    return {"top5": sorted(top5), "size": size}
