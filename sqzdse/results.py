"""A sweep's results as rows: the one column list, reading exports and storages, and the labels figures use.

One row per Optuna trial, as ``sqzdse.sweep.export_rows`` collects it and ``sqzdse sweep export`` writes it
(CSV or JSON); ``load_rows`` reads those files, or a storage URL, back with their types restored. The paper's
Figure 3 numbers (``paper_fig3``) are read here too, so that figures only draw.

Accuracies are stored as fractions; model size is ``bytes`` (float32 weights), shown in MiB, the unit in which
the paper's "4.8MB" for SqueezeNet v1.0 is 1,248,424 x 4 / 2**20 = 4.76 (paper_numbers.json), or
``compressed_bytes``, the Deep-Compression file a sweep with a ``[compress]`` table recorded per trial.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from sqzdse.config import BYPASSES
from sqzdse.errors import InputError

# Section 5's metaparameters and Section 6's bypass, as the sweep names its parameters.
METAPARAMETERS = ("base_e", "incr_e", "freq", "pct3x3", "sr", "bypass")
# The export's columns, in its order (sqzdse sweep export); a row read back has every one of them.
FIELDS = ("study", "number", "state", *METAPARAMETERS, "seed", "params", "bytes", "compressed_bytes", "macs",
          "val_top1", "val_top5", "test_top1", "test_top5", "curve", "train_seconds", "compile_seconds", "status",
          "reason", "dataset", "version", "key", "workdir", "reused_from")  # fmt: skip
INT_FIELDS = ("number", "base_e", "incr_e", "freq", "seed", "params", "bytes", "compressed_bytes", "macs")
FLOAT_FIELDS = ("pct3x3", "sr", "val_top1", "val_top5", "test_top1", "test_top5", "train_seconds", "compile_seconds")
METRICS = ("val_top1", "val_top5", "test_top1", "test_top5")
BY_CHOICES = ("study", *METAPARAMETERS, "seed")  # what rows can be grouped by
BYPASS_NAMES = {"none": "vanilla", "simple": "simple bypass", "complex": "complex bypass"}  # Table 3's rows
PAPER_PROVENANCE = ("text", "derived")  # the only paper numbers a figure may show (reference/README.md)
MIB = 2**20
# size column -> what its MiB are of (axis labels)
SIZES = {"bytes": "float32 weights", "compressed_bytes": "the compressed file"}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


# --------------------------------------------------------------------------- loading


def load_rows(*sources: str | os.PathLike | Sequence, study: str | Sequence[str] | None = None) -> list[dict]:
    """Trial rows from exported files and/or Optuna storages, types restored.

    Args:
      sources: ``.csv`` or ``.json`` exports of ``sqzdse.sweep``, or storage URLs (``sqlite:///runs/x.db``,
        ``postgresql://...``, read with ``sqzdse.sweep.export_rows``); lists of them are flattened.
        Rows keep their ``study`` (a file row without one gets the file's stem).
      study: keep only rows of this study (or these studies).

    Returns:
      One dict per trial with every column of ``FIELDS`` (missing ones None; empty cells None; ints and floats
      restored, NaN as None; ``curve`` a list of floats) plus any extra columns, parsed best-effort.
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
    if wanted is not None:
        found = sorted({str(r["study"]) for r in rows})
        rows = [r for r in rows if r["study"] in wanted]
        if not rows:
            raise InputError(f"no rows of study {', '.join(sorted(wanted))}; the sources hold: {', '.join(found)}")
    return rows


def _flatten(sources) -> Iterable:
    for s in sources:
        if isinstance(s, (str, os.PathLike)):
            yield s
        else:
            yield from _flatten(s)


def is_storage_url(source) -> bool:
    return isinstance(source, str) and bool(_URL.match(source))


def _read_source(src, study: str | None) -> list[dict]:
    if is_storage_url(src):
        from sqzdse.sweep import export_rows  # the only tie to the sweep engine: its results store

        return [normalize_row(r, src) for r in export_rows(src, study_name=study)]
    path = Path(src)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such results file")
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
        raise InputError(f"{path}: unknown results format {path.suffix!r}; expected .csv, .json or a storage URL")
    out = []
    for i, r in enumerate(raw):
        try:
            out.append(normalize_row(r, path.stem))
        except ValueError as e:
            raise InputError(f"{path}: row {i + 1}: {e}") from None
    return out


def normalize_row(raw: Mapping, default_study: str | None = None) -> dict:
    """One exported row with its types restored (CSV cells are strings; JSON ones may already be typed)."""
    row = dict.fromkeys(FIELDS)
    for key, value in raw.items():
        if key is None:  # a CSV line with more cells than the header
            continue
        key = key.strip()
        try:
            if key in INT_FIELDS:
                row[key] = _to_int(value)
            elif key in FLOAT_FIELDS:
                row[key] = _to_float(value)
            elif key == "curve":
                row[key] = _to_curve(value)
            elif key in FIELDS:
                row[key] = None if value is None or value == "" else str(value)
            else:
                row[key] = _guess(value)
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


def _to_curve(v) -> list[float] | None:
    if v is None or v == "":
        return None
    if isinstance(v, str):
        v = json.loads(v)
    return [float("nan") if x is None else float(x) for x in v]


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
        raise ValueError("no trial rows to plot")
    kept, skipped = completed(rows, metric)
    if not kept:
        why = ", ".join(f"{n} {s}" for s, n in skipped.most_common())
        reasons = sorted({r["reason"] for r in rows if r.get("reason")})[:3]
        more = f"; reasons: {' | '.join(reasons)}" if reasons else ""
        raise ValueError(f"no completed trials with {metric}{what} among {len(rows)} rows ({why}){more}")
    return kept, skipped


def check_size(size: str) -> None:
    if size not in SIZES:
        raise InputError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")


def size_mib(row: dict, size: str = "bytes") -> float | None:
    """Model size in MiB: of float32 weights (``bytes``; 4 x ``params`` where an export lacks bytes), or of the
    compressed file (``compressed_bytes``; None where the sweep did not compress)."""
    check_size(size)
    b = row.get(size)
    if b is None and size == "bytes" and row.get("params") is not None:
        b = 4 * row["params"]
    return None if b is None else b / MIB


def select(rows: Sequence[dict], where: Mapping | None) -> list[dict]:
    """The rows with these values (all rows for an empty `where`)."""
    if not where:
        return list(rows)
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def varying(rows: Sequence[dict], fixed: Sequence[str]) -> list[str]:
    """The metaparameters, other than `fixed`, that take more than one value among `rows`."""
    return [k for k in METAPARAMETERS if k not in fixed and len({r.get(k) for r in rows}) > 1]


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
    bypass = {"none": "vanilla"}.get(row.get("bypass"), row.get("bypass") or "?")
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
        return BYPASS_NAMES.get(k, str(k))
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
