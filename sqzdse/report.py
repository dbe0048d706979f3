"""One self-contained page per study: its spec, every trial ranked by accuracy, the Pareto set, the figures.

Reads exported rows only (STYLE rule 8). Markdown links PNGs written beside the page (``OUT.frontier.png``,
...); HTML embeds them as base64 data URIs, so the one file is the whole report.

    sqzdse report sqlite:///runs/fig3a.db -o reports/fig3a.html
    sqzdse report fig3a.csv -o reports/fig3a.md --spec sweeps/fig3a.json

Its flags are ``sqzdse.cli.report``'s.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from sqzdse import plots as P

REPORT_SUFFIXES = (".md", ".html")


def _pct(v) -> str:
    return "" if v is None else f"{100.0 * v:.2f}"


def _num(v, fmt: str = "{:,}") -> str:
    return "" if v is None else fmt.format(v)


def trial_table(rows: Sequence[dict], metric: str) -> tuple[list[str], list[list[str]]]:
    """Every trial: completed ones by `metric`, best first, then the rest by trial number."""
    kept, _ = P.completed(rows, metric)
    done = {id(r) for r in kept}
    ranked = sorted(kept, key=lambda r: -r[metric]) + sorted(
        (r for r in rows if id(r) not in done), key=lambda r: (str(r.get("study")), r.get("number") or 0)
    )
    many = len({r.get("study") for r in rows}) > 1
    head = [*(["study"] if many else []), "rank", "trial", "state", "status", "SR", "pct3x3", "e = base+incr/freq",
            "bypass", "seed", "params", "MiB", "MMACs", "val top-1 %", "val top-5 %", "test top-1 %", "test top-5 %",
            "train s", "reason"]  # fmt: skip
    body = []
    for i, r in enumerate(ranked):
        size = P.size_mib(r)
        reason = r.get("reason") or ""
        body.append([
            *([str(r.get("study"))] if many else []),
            str(i + 1) if id(r) in done else "",
            _num(r.get("number"), "{}"),
            r.get("state") or "",
            r.get("status") or "",
            _num(r.get("sr"), "{:g}"),
            _num(r.get("pct3x3"), "{:g}"),
            f"{r.get('base_e')}+{r.get('incr_e')}/{r.get('freq')}",
            r.get("bypass") or "",
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
    """The Pareto set (max `metric`, min size) of each study, smallest first."""
    head = ["study", "trial", "metaparameters", "seed", "MiB", f"{metric} %"]
    body = []
    for name, group in P.group_by_study(rows).items():
        kept, _ = P.completed(group, metric)
        kept = [r for r in kept if P.size_mib(r) is not None]
        front = P.pareto_front([(r[metric], P.size_mib(r)) for r in kept])
        for k in front:
            r = kept[k]
            body.append([name, str(r.get("number")), P.trial_label(r), _num(r.get("seed"), "{}"),
                         f"{P.size_mib(r):.2f}", _pct(r[metric])])  # fmt: skip
    return head, body


def _figures(rows: Sequence[dict], metric: str) -> list[tuple[str, str, object]]:
    """(name, caption, Figure) for every figure the rows can show; a figure that cannot be drawn is left out."""
    kept, _ = P.completed(rows, metric)

    def varies(key):
        return len({r.get(key) for r in kept if r.get(key) is not None}) > 1

    plans = [("frontier", "Accuracy vs model size; Pareto fronts", lambda: P.plot_frontier(rows, metric=metric))]
    if varies("sr"):
        plans.append(("sr", "Accuracy and size vs squeeze ratio (Fig. 3a)", lambda: P.plot_sr(rows, metric=metric)))
    if varies("pct3x3"):
        plans.append(("pct3x3", "Accuracy and size vs pct3x3 (Fig. 3b)", lambda: P.plot_pct3x3(rows, metric=metric)))
    if varies("bypass"):
        plans.append(("bypass", "Bypass connections (Table 3)", lambda: P.plot_bypass(rows, metric=metric)))
    by = "study" if len({r.get("study") for r in kept}) > 1 else "bypass" if varies("bypass") else "study"
    plans.append(("edf", f"Error EDF by {by}", lambda: P.plot_edf(rows, by=by, metric=metric)))
    if any(r.get("curve") for r in kept):
        plans.append(("curves", "Validation curves", lambda: P.plot_curves(rows, metric=metric)))
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
) -> Path:
    """Write the report of `rows` (usually one study) to `out_path` (``.md`` or ``.html``).

    Args:
      spec: the sweep's specification (e.g. the study's ``spec`` user attribute), shown as JSON.
      metric: the accuracy that ranks trials and defines the Pareto set.

    Returns:
      The report's path. Markdown also writes ``<stem>.<figure>.png`` beside it.
    """
    out = Path(out_path)
    fmt = out.suffix.lower()
    if fmt not in REPORT_SUFFIXES:
        raise ValueError(f"{out}: a report is .md (figures as PNG files beside it) or .html (self-contained)")
    P.check_metric(metric)
    rows = list(rows)
    if not rows:
        raise ValueError("no trial rows to report")
    P.require_completed(rows, metric)
    studies = list(dict.fromkeys(str(r.get("study")) for r in rows))
    states = Counter(r.get("state") or "?" for r in rows)
    title = title or f"Study {', '.join(studies)}"
    blocks: list[tuple] = [("h1", title)]
    summary = f"{len(rows)} trials: " + ", ".join(f"{n} {s}" for s, n in states.most_common())
    versions = sorted({str(r["version"]) for r in rows if r.get("version")})
    if versions:
        summary += f". sqzdse version {', '.join(versions)}"
    # Columns the tables below do not show, and the dataset: a line each when they take few values.
    extras = {k for r in rows for k in r if k not in P.FIELDS} | {"dataset"}
    for k in sorted(extras):
        values = sorted({str(r[k]) for r in rows if r.get(k) is not None})
        if 0 < len(values) <= 5:
            summary += f". {k}: {', '.join(values)}"
    blocks.append(("p", summary + f". Ranked by {metric}; sizes are float32 weights in MiB."))
    blocks.append(("h2", "Spec"))
    blocks.append(("code", json.dumps(spec, indent=1, sort_keys=True)) if spec else ("p", "No spec given."))
    blocks.append(("h2", f"Pareto set (max {metric}, min size)"))
    blocks.append(("table", *pareto_table(rows, metric)))
    blocks.append(("h2", "Figures"))
    for name, caption, fig in _figures(rows, metric):
        if fig is None:
            blocks.append(("p", caption))
        elif fmt == ".md":
            png = out.with_name(f"{out.stem}.{name}.png")
            P.save_figure(fig, png)
            blocks.append(("img", caption, png.name))
        else:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=110)
            blocks.append(("img", caption, "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()))
    blocks.append(("h2", f"Trials (by {metric}, best first)"))
    blocks.append(("table", *trial_table(rows, metric)))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_markdown(blocks) if fmt == ".md" else _html(blocks, title))
    return out


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _markdown(blocks) -> str:
    parts = []
    for kind, *a in blocks:
        if kind in ("h1", "h2"):
            parts.append(("#" if kind == "h1" else "##") + " " + a[0])
        elif kind == "p":
            parts.append(a[0])
        elif kind == "code":
            parts.append(f"```json\n{a[0]}\n```")
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
figure{margin:1.5em 0}img{max-width:100%}figcaption{color:#555;font-size:14px}"""


def _html(blocks, title: str) -> str:
    e = html.escape
    parts = [f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{e(title)}</title><style>{_CSS}</style>'
             "</head><body>"]  # fmt: skip
    for kind, *a in blocks:
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{e(a[0])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{e(a[0])}</p>")
        elif kind == "code":
            parts.append(f"<pre><code>{e(a[0])}</code></pre>")
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
    import optuna

    from sqzdse.storage import open_storage, study_names

    storage = open_storage(storage_url)  # read only: never creates a storage
    names = study_names(storage, storage_url)
    if study is None and len(names) == 1:
        study = names[0]
    if study not in names:
        return None
    return optuna.load_study(study_name=study, storage=storage).user_attrs.get("spec")
