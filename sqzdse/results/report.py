"""One self-contained page per study: the results first (summary, Pareto set, figures, every trial), the spec last.

Reads exported rows only (STYLE rule 8). Markdown links PNGs written beside the page (``OUT.frontier.png``,
...); HTML embeds them as base64 data URIs, so the one file is the whole report.

    sqzdse report sweeps/squeeze_ratio.toml -o reports/fig3a.html
    sqzdse report fig3a.csv -o reports/fig3a.md --spec sweeps/fig3a.json

Its flags are ``sqzdse.cli.report``'s.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from sqzdse.errors import InputError
from sqzdse.model.config import shown
from sqzdse.results.analysis import designs, pareto_front
from sqzdse.results.canvas import save_figure
from sqzdse.results.claims import check_claims
from sqzdse.results.design_plots import plot_curves, plot_edf, plot_frontier
from sqzdse.results.paper_plots import plot_bypass, plot_pct3x3, plot_sr
from sqzdse.results.rows import (
    bypass_name,
    chance_note,
    check_budgets,
    check_metric,
    completed,
    group_by_study,
    require_completed,
    select,
    size_of,
    study_specs,
    trial_label,
    varying,
    where_text,
)
from sqzdse.sweep.schema import FIELDS, budget_text

REPORT_SUFFIXES = (".md", ".html")


def _pct(v) -> str:
    return "" if v is None else f"{100.0 * v:.2f}"


def _num(v, fmt: str = "{:,}") -> str:
    return "" if v is None else fmt.format(v)


# Optuna's state as the table says it; the trial's own status is added where it says more (diverged, interrupted).
_OUTCOMES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}
_SAME = {"complete": "completed", "pruned": "pruned", "failed": "failed"}


def outcome(row: dict) -> str:
    """One word for a trial's end, from Optuna's ``state`` and sqzdse's ``status``: 'complete', 'pruned',
    'failed: diverged', ...; the two columns side by side mostly said the same thing twice."""
    state, status = row.get("state"), row.get("status")
    word = _OUTCOMES.get(state, (state or "?").lower())
    return word if not status or status == _SAME.get(word) else f"{word}: {status}"


def spec_items(spec: dict) -> list[tuple[str, str]]:
    """The spec as short (key, value) lines: tables as 'k=v, ...', a search space as its values or range."""
    items = []
    for key, value in spec.items():
        if value is None or value == {} or value == []:
            continue
        if key == "space" and isinstance(value, dict):
            dims = [f"{name} in {_dim(name, d)}" for name, d in value.items()]
            items.append((key, "; ".join(dims)))
        elif key == "train" and isinstance(value, dict):
            items.append((key, budget_text(value)))
        elif isinstance(value, dict):
            items.append((key, ", ".join(f"{k}={shown(k, v)}" for k, v in value.items() if v is not None)))
        elif isinstance(value, list):
            items.append((key, ", ".join(map(str, value))))
        else:
            items.append((key, str(value)))
    return items


def _dim(name: str, d) -> str:
    if not isinstance(d, dict):
        return ", ".join(shown(name, v) for v in d) if isinstance(d, list) else str(d)
    if d.get("choices"):
        return "{" + ", ".join(shown(name, v) for v in d["choices"]) + "}"
    step = f" step {_g(d['step'])}" if d.get("step") else ""
    return f"[{_g(d.get('low'))}, {_g(d.get('high'))}]{step}" + (" log" if d.get("log") else "")


def _g(v) -> str:
    return f"{v:g}" if isinstance(v, int | float) else str(v)


def trial_table(rows: Sequence[dict], metric: str) -> tuple[list[str], list[list[str]]]:
    """Every trial: completed ones by `metric`, best first, then the rest by trial number."""
    kept, _ = completed(rows, metric)
    done = {id(r) for r in kept}
    ranked = sorted(kept, key=lambda r: -r[metric]) + sorted(
        (r for r in rows if id(r) not in done), key=lambda r: (str(r.get("study")), r.get("number") or 0)
    )
    many = len({r.get("study") for r in rows}) > 1
    head = [*(["study"] if many else []), "rank", "trial", "outcome", "SR", "pct3x3", "e = base+incr/freq",
            "bypass", "seed", "params", "MiB", "MMACs", "val top-1 %", "val top-5 %", "test top-1 %", "test top-5 %",
            "train s", "reason"]  # fmt: skip
    body = []
    for i, r in enumerate(ranked):
        size = size_of(r)
        reason = r.get("reason") or ""
        body.append([
            *([str(r.get("study"))] if many else []),
            str(i + 1) if id(r) in done else "",
            _num(r.get("number"), "{}"),
            outcome(r),
            _num(r.get("sr"), "{:g}"),
            _num(r.get("pct3x3"), "{:g}"),
            f"{r.get('base_e')}+{r.get('incr_e')}/{r.get('freq')}",
            bypass_name(r.get("bypass")),
            _num(r.get("seed"), "{}"),
            _num(r.get("params")),
            "" if size is None else f"{size:.2f}",
            "" if r.get("macs") is None else f"{r['macs'] / 1e6:,.1f}",
            _pct(r.get("val_top1")),
            _pct(r.get("val_top5")),
            _pct(r.get("test_top1")),
            _pct(r.get("test_top5")),
            _num(r.get("train_seconds"), "{:.0f}"),
            reason if len(reason) <= 100 else reason[:97] + "...",
        ])  # fmt: skip
    return head, body


def pareto_table(rows: Sequence[dict], metric: str) -> tuple[list[str], list[list[str]]]:
    """The Pareto set (max `metric`, min size) of each study's designs, smallest first: a design trained with
    several seeds at its mean over them, with that mean's 95 % bootstrap interval."""
    head = ["study", "trials", "metaparameters", "seeds", "MiB", f"{metric} % [95 % interval]"]
    body = []
    for name, group in group_by_study(rows).items():
        kept, _ = completed(group, metric)
        found = designs([r for r in kept if size_of(r) is not None], metric)
        front = pareto_front([(d.interval.estimate, d.size()) for d in found])
        for k in front:
            d = found[k]
            ci = d.interval.text() if d.interval.n >= 2 else f"{d.interval.estimate:.1f}"
            body.append([name, ", ".join(str(r.get("number")) for r in d.trials), trial_label(d.first),
                         ", ".join(_num(r.get("seed"), "{}") for r in d.trials), f"{d.size():.2f}", ci])  # fmt: skip
    return head, body


def _importance(kept: Sequence[dict], metric: str):
    """The importances (``sqzdse.results.importance``) where two or more metaparameters vary over enough trials."""
    from sqzdse.results.importance import MIN_TRIALS, importances  # imports Optuna: only when a report has one

    return importances(kept, metric) if len(varying(kept, ())) >= 2 and len(kept) >= MIN_TRIALS else None


def claims_table(found) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the claims a study can test (``sqzdse.results.claims``)."""
    head = ["claim", "statistic", "points [95 % interval]", "verdict", "held fixed; note"]
    body = []
    for c in found:
        verdict = c.verdict
        if c.verdict == "cannot tell":
            verdict += f" at {c.interval.n} seed{'s' if c.interval.n != 1 else ''}"
            verdict += f" (~{c.seeds_needed} would decide)" if c.seeds_needed else ""
        body.append([c.claim, f"{c.statistic} {c.side} {c.threshold:g}", c.interval.text(), verdict,
                     c.held + (f"; {c.note}" if c.note else "")])  # fmt: skip
    return head, body


def _figures(rows: Sequence[dict], metric: str) -> list[tuple[str, str, object]]:
    """(name, caption, Figure) for every figure the rows can show; a figure that cannot be drawn is left out."""
    kept, _ = completed(rows, metric)

    def varies(key):
        return len({r.get(key) for r in kept if r.get(key) is not None}) > 1

    plans = [("frontier", "Accuracy vs model size; Pareto fronts", lambda: plot_frontier(rows, metric=metric))]
    if varies("sr"):
        plans.append(("sr", "Accuracy and size vs squeeze ratio (Fig. 3a)", lambda: plot_sr(rows, metric=metric)))
    if varies("pct3x3"):
        plans.append(("pct3x3", "Accuracy and size vs pct3x3 (Fig. 3b)", lambda: plot_pct3x3(rows, metric=metric)))
    if varies("bypass"):
        plans.append(("bypass", "Bypass connections (Table 3)", lambda: plot_bypass(rows, metric=metric)))
    by = "study" if len({r.get("study") for r in kept}) > 1 else "bypass" if varies("bypass") else "study"
    plans.append(("edf", f"Error EDF by {by}", lambda: plot_edf(rows, by=by, metric=metric)))
    if any(r.get("curve") for r in kept):
        plans.append(("curves", "Validation curves", lambda: plot_curves(rows, metric=metric)))
    out = []
    for name, caption, make in plans:
        try:
            out.append((name, caption, make()))
        except ValueError as e:  # e.g. no sizes in the export: the other figures still go in
            out.append((name, f"{caption}: not drawn ({e})", None))
    return out


def write_report(
    rows: Sequence[dict],
    out_path: str | os.PathLike,
    spec: dict | None = None,
    metric: str = "val_top1",
    title: str | None = None,
    where: Mapping | None = None,
) -> Path:
    """Write the report of `rows` (usually one study) to `out_path` (``.md`` or ``.html``).

    The page leads with the results: a summary (trials, training budget, the best trial), the Pareto set, the
    figures, every trial; the spec comes last, one short line per table (in HTML folded in ``<details>``).

    Raises:
      BudgetMismatch: rows of studies trained at different budgets (``check_budgets``): report each alone.

    Args:
      spec: the sweep's specification (e.g. the study's ``spec`` user attribute).
      metric: the accuracy that ranks trials and defines the Pareto set.
      where: report only rows with these values (``sqzdse.results.rows.select``; CLI strings accepted).

    Returns:
      The report's path. Markdown also writes ``<stem>.<figure>.png`` beside it.
    """
    out = Path(out_path)
    fmt = out.suffix.lower()
    if fmt not in REPORT_SUFFIXES:
        raise InputError(f"{out}: a report is .md (figures as PNG files beside it) or .html (self-contained)")
    check_metric(metric)
    rows = list(rows)
    if not rows:
        raise InputError("no trial rows to report")
    rows = select(rows, where)
    kept, _ = require_completed(rows, metric)
    budget = check_budgets(kept)  # one ranking, one Pareto set, one figure: of one training budget
    studies = list(dict.fromkeys(str(r.get("study")) for r in rows))
    title = title or f"Study {', '.join(studies)}"
    blocks: list[tuple] = [("h1", title), ("p", _summary(rows, kept, metric, where, budget))]
    chance = chance_note(kept, metric)
    if chance:
        blocks.append(("p", f"Note: {chance}."))
    blocks.append(("h2", f"Pareto set (max {metric}, min size)"))
    blocks.append(("table", *pareto_table(rows, metric)))
    found = check_claims(kept, metric)
    if found:
        blocks.append(("h2", f"The paper's claims ({metric}; 95 % bootstrap intervals over seeds)"))
        blocks.append(("table", *claims_table(found)))
    importance = _importance(kept, metric)
    if importance is not None:
        blocks.append(("h2", f"Which metaparameter matters ({metric})"))
        body = [[k, f"{v:.3f}", f"{importance.fanova[k]:.3f}"] for k, v in importance.ped_anova.items()]
        blocks.append(("table", ["metaparameter", "PED-ANOVA", "fANOVA"], body))
        agree = "n/a" if importance.spearman is None else f"{importance.spearman:+.2f}"
        blocks.append(("p", f"Importances normalised to sum to 1 (Optuna's evaluators, {importance.trials} completed "
                            f"trials); their rank agreement (Spearman): {agree}."))  # fmt: skip
    blocks.append(("h2", "Figures"))
    for name, caption, fig in _figures(rows, metric):
        if fig is None:
            blocks.append(("p", caption))
        elif fmt == ".md":
            png = out.with_name(f"{out.stem}.{name}.png")
            save_figure(fig, png)
            blocks.append(("img", caption, png.name))
        else:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=110)
            blocks.append(("img", caption, "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()))
    blocks.append(("h2", f"Trials (by {metric}, best first)"))
    blocks.append(("table", *trial_table(rows, metric)))
    blocks.append(("spec", spec_items(spec) if spec else []))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_markdown(blocks) if fmt == ".md" else _html(blocks, title))
    return out


def _summary(rows: Sequence[dict], kept: Sequence[dict], metric: str, where: Mapping | None, budget) -> str:
    """The page's first lines: trials by outcome, the selection, the training budget, the best trial."""
    outcomes = Counter(outcome(r) for r in rows)
    parts = [f"{len(rows)} trials: " + ", ".join(f"{n} {s}" for s, n in outcomes.most_common())]
    if where:
        parts.append(f"selected: {where_text(where)}")
    if budget:
        parts.append(f"trained: {budget}")  # it names the dataset
    best = max(kept, key=lambda r: r[metric])
    size = size_of(best)
    parts.append(
        f"best by {metric}: trial {best.get('number')}"
        + (f" of {best.get('study')}" if len({r.get("study") for r in rows}) > 1 else "")
        + f" ({trial_label(best)}), {_pct(best[metric])}%"
        + ("" if size is None else f" at {size:.2f} MiB")
    )
    # Columns the tables below do not show, and the dataset: a line each when they take few values.
    extras = {k for r in rows for k in r if k not in FIELDS and k != "budget"} | (set() if budget else {"dataset"})
    for k in sorted(extras):
        values = sorted({str(r[k]) for r in rows if r.get(k) is not None})
        if 0 < len(values) <= 5:
            parts.append(f"{k}: {', '.join(values)}")
    versions = sorted({str(r["version"]) for r in rows if r.get("version")})
    if versions:
        parts.append(f"version: sqzdse {', '.join(versions)}")
    return ". ".join(p[0].upper() + p[1:] for p in parts) + (
        ". Sizes are float32 weights in MiB; bypass: vanilla (none), simple, complex."
    )


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _markdown(blocks) -> str:
    parts = []
    for kind, *a in blocks:
        if kind in ("h1", "h2"):
            parts.append(("#" if kind == "h1" else "##") + " " + a[0])
        elif kind == "p":
            parts.append(a[0])
        elif kind == "spec":
            parts.append("## Spec\n\n" + ("\n".join(f"- {k}: {v}" for k, v in a[0]) if a[0] else "No spec given."))
        elif kind == "img":
            parts.append(f"![{a[0]}]({a[1]})")
        elif kind == "table":
            head, body = a
            lines = ["| " + " | ".join(map(_md_cell, head)) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in body]
            parts.append("\n".join(lines) if body else "(none)")
    return "\n\n".join(parts) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1250px;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f0f0f0}td:nth-last-child(1){text-align:left}pre{background:#f6f6f6;padding:.8em;overflow:auto}
figure{margin:1.5em 0}img{max-width:100%}figcaption{color:#555;font-size:14px}
details{margin:2em 0;color:#444}summary{cursor:pointer;font-weight:600}.spec th,.spec td{text-align:left}"""


def _html(blocks, title: str) -> str:
    e = html.escape
    parts = [f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{e(title)}</title><style>{_CSS}</style>'
             "</head><body>"]  # fmt: skip
    for kind, *a in blocks:
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{e(a[0])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{e(a[0])}</p>")
        elif kind == "spec":
            items = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in a[0])
            body = f'<table class="spec">{items}</table>' if a[0] else "<p>No spec given.</p>"
            parts.append(f"<details><summary>Spec: the sweep as it was run</summary>{body}</details>")
        elif kind == "img":
            parts.append(f'<figure><img src="{a[1]}" alt="{e(a[0])}"><figcaption>{e(a[0])}</figcaption></figure>')
        elif kind == "table":
            head, body = a
            if not body:
                parts.append("<p>(none)</p>")
                continue
            rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in body)
            parts.append(f"<table><tr>{''.join(f'<th>{e(h)}</th>' for h in head)}</tr>{rows}</table>")
    return "\n".join(parts) + "\n</body></html>\n"


def study_spec(storage_url: str, study: str | None = None) -> dict | None:
    """The ``spec`` a sweep stored on its study (``study.user_attrs["spec"]``), or None."""
    specs = study_specs(storage_url)  # read only: never creates a storage
    if study is None and len(specs) == 1:
        study = next(iter(specs))
    return specs.get(study)
