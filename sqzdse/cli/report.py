"""``sqzdse report``: one Markdown or HTML page per study."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from sqzdse.cli.common import add_output, add_sources, command, sources_of
from sqzdse.errors import InputError


def run_report(args) -> int:
    """``sqzdse report``: load the rows, write the page, print its path."""
    from sqzdse.results.report import REPORT_SUFFIXES, study_spec, write_report
    from sqzdse.results.rows import is_storage_url, load_rows

    out = Path(args.output)
    if out.suffix.lower() not in REPORT_SUFFIXES:
        raise InputError(f"{out}: a report is .md or .html")
    sources = sources_of(args)
    rows = load_rows(*sources, study=args.study)
    spec = None
    if args.spec:
        try:
            spec = json.loads(Path(args.spec).read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{args.spec}: not valid JSON ({e})") from None
    elif len(sources) == 1 and str(sources[0]).lower().endswith(".toml"):  # its study, in its storage
        from sqzdse.sweep.spec import load_spec
        from sqzdse.sweep.storage import storage_url

        sweep = load_spec(sources[0], max_points=None)
        spec = study_spec(storage_url(None, sweep), sweep.name)
    elif len(sources) == 1 and is_storage_url(sources[0]):
        names = {r["study"] for r in rows}
        spec = study_spec(sources[0], names.pop()) if len(names) == 1 else None
    path = write_report(rows, out, spec=spec, metric=args.metric, title=args.title, where=dict(args.where or ()))
    print(f"wrote {path}")
    return 0


def _selected(args) -> tuple[list[dict], list[dict]]:
    """(the rows the sources, --study and --where give, the completed ones), of one training budget: claims and
    importances would otherwise compare trainings of different lengths."""
    from sqzdse.results.rows import check_budgets, completed, load_rows, select

    rows = select(load_rows(*sources_of(args), study=args.study), dict(args.where or ()))
    kept, _ = completed(rows, args.metric)
    check_budgets(kept)
    return rows, kept


def run_claims(args) -> int:
    """``sqzdse claims``: each of the paper's claims the rows can test, with its interval and verdict."""
    from sqzdse.results.claims import check_claims
    from sqzdse.results.rows import study_names
    from sqzdse.results.stats import LEVEL, RESAMPLES

    rows, kept = _selected(args)
    found = check_claims(kept, args.metric)
    if args.json:
        print(json.dumps([dataclasses.asdict(c) for c in found], indent=1))
        return 0
    print(f"claims tested on {study_names(rows) or 'no rows'} ({len(kept)} completed trials, {args.metric} in points;"
          f" {LEVEL:.0%} percentile-bootstrap intervals over seeds, {RESAMPLES:,} resamples):")  # fmt: skip
    for c in found:
        print(f"  {c.text()}\n    held fixed: {c.held}")
    if not found:
        print("  none: the trials vary neither sr, pct3x3 (with 0.5 and a larger share) nor bypass (with vanilla)")
    return 0


def run_importance(args) -> int:
    """``sqzdse importance``: PED-ANOVA and fANOVA importances of the metaparameters, their agreement."""
    from sqzdse.results.importance import importances

    if args.output:  # a wrong suffix is refused before the work
        from sqzdse.results.canvas import check_figure_path

        check_figure_path(args.output)
    imp = importances(_selected(args)[1], args.metric)
    if args.output:
        from sqzdse.results.canvas import save_figure
        from sqzdse.results.design_plots import plot_importance

        save_figure(plot_importance(imp), args.output)
    print(json.dumps(dataclasses.asdict(imp), indent=1) if args.json else imp.text())
    if args.output:
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def add_commands(sub) -> None:
    rp = command(sub, "report", help="one Markdown or HTML page per study: spec, trials, Pareto set, figures")
    add_sources(rp, "ranks trials")
    add_output(rp, "OUT.md (figures as PNGs beside it) or OUT.html (one file)")
    rp.add_argument("--spec", help="the sweep's spec as a JSON file (default: the spec stored on the study, when "
                    "SOURCE is a storage URL)")  # fmt: skip
    rp.add_argument("--title", help="page title (default: Study NAME)")
    rp.set_defaults(func=run_report)
    cl = command(sub, "claims", help="test the paper's claims on a study: statistic, bootstrap interval over seeds, "
                 "verdict (holds / contradicted / cannot tell, with the seeds that would decide)")  # fmt: skip
    add_sources(cl, "the accuracy the claims are about")
    cl.add_argument("--json", action="store_true", help="print JSON")
    cl.set_defaults(func=run_claims)
    im = command(sub, "importance", help="which metaparameter matters: Optuna's PED-ANOVA and fANOVA importances "
                 "of a study's accuracy, and how much they agree")  # fmt: skip
    add_sources(im, "the accuracy whose importance is asked")
    add_output(im, "also draw the importances: .png, .svg or .pdf", required=False)
    im.add_argument("--json", action="store_true", help="print JSON")
    im.set_defaults(func=run_importance)
