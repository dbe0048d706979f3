"""What several commands share: the help formatter, the metaparameter flags, the output flag."""

from __future__ import annotations

import argparse
import dataclasses

from sqzdse.errors import InputError
from sqzdse.model import config as C
from sqzdse.sweep.schema import DESIGN_KEYS

WHERE_KEYS = (*DESIGN_KEYS, "seed")


class HelpFormatter(argparse.HelpFormatter):
    """Appends each option's default to its help, unless it has none (None, False) or the help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return text
        return f"{text} (default: %(default)s)"


def command(sub, name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand whose --help shows the defaults."""
    return sub.add_parser(name, help=help, description=description or help, formatter_class=HelpFormatter)


def add_output(p: argparse.ArgumentParser, help: str, required: bool = True) -> None:
    """The one spelling of an output option: -o/--output."""
    p.add_argument("-o", "--output", required=required, metavar="FILE", help=help)


def _stem_name(stem) -> str:
    return next(k for k, v in C.STEMS.items() if v == stem)


def add_config_args(p: argparse.ArgumentParser, preset_default: str = "squeezenet_v1_0") -> None:
    """Metaparameter flags; given with --preset they override the preset's values."""
    v10 = C.squeezenet_v1_0()
    g = p.add_argument_group("metaparameters (Section 5 of the paper); unset ones are the preset's, v1.0's shown")
    g.add_argument("--preset", choices=sorted(C.PRESETS), help=f"start from a released configuration "
                   f"(default: {preset_default})")  # fmt: skip
    g.add_argument("--base-e", type=int, help=f"expand filters of fire2 (v1.0: {v10.base_e})")
    g.add_argument("--incr-e", type=int, help=f"expand filters added every FREQ Fire modules (v1.0: {v10.incr_e})")
    g.add_argument("--freq", type=int, help=f"Fire modules per width step (v1.0: {v10.freq})")
    g.add_argument("--pct3x3", type=float, help=f"share of 3x3 expand filters, 0..1 (v1.0: {v10.pct3x3})")
    g.add_argument("--sr", type=float, help=f"squeeze ratio s/e, > 0 (v1.0: {v10.sr})")
    g.add_argument("--bypass", type=C.canonical_bypass, choices=C.BYPASSES, metavar="{none|vanilla,simple,complex}",
                   help=f"macroarchitecture of Section 6; vanilla is none (v1.0: {v10.bypass})")  # fmt: skip
    g.add_argument("--stem", choices=sorted(C.STEMS), help="conv1: v1_0 = 96x7x7/2, v1_1 = 64x3x3/2, small = "
                   f"64x3x3/1 pad 1 (v1.0: {_stem_name(v10.stem)})")  # fmt: skip
    g.add_argument("--pool-after", help="comma-separated layers followed by a 3x3/2 max pool "
                   f"(v1.0: {','.join(v10.pool_after)})")  # fmt: skip
    g.add_argument("--num-classes", type=int, help=f"classes of conv10 (v1.0: {v10.num_classes})")
    g.add_argument("--input-size", type=int, help=f"input height = width in pixels (v1.0: {v10.input_shape[0]})")
    g.add_argument("--in-channels", type=int, help=f"input channels (v1.0: {v10.input_shape[2]})")
    g.add_argument("--dropout", type=float, help=f"dropout rate on fire9's output (v1.0: {v10.dropout})")


def config_from_args(args: argparse.Namespace, **defaults) -> C.SqueezeNetConfig:
    """The configuration the flags describe; `defaults` (e.g. from a dataset) sit under the flags."""
    base = C.from_preset(args.preset or "squeezenet_v1_0")
    fields = {k: v for k, v in defaults.items() if v is not None}
    for name in ("base_e", "incr_e", "freq", "pct3x3", "sr", "bypass", "num_classes", "dropout"):
        if getattr(args, name, None) is not None:
            fields[name] = getattr(args, name)
    if args.stem:
        fields["stem"] = C.STEMS[args.stem]
    if args.pool_after is not None:
        fields["pool_after"] = tuple(x for x in args.pool_after.split(",") if x)
    h, w, c = fields.get("input_shape", base.input_shape)
    if args.input_size is not None:
        h = w = args.input_size
    if args.in_channels is not None:
        c = args.in_channels
    fields["input_shape"] = (h, w, c)
    return dataclasses.replace(base, **fields)


def where_item(text: str) -> tuple[str, object]:
    """KEY=VALUE of --where; numbers become numbers, so 0.5 matches a row's 0.5."""
    key, sep, value = text.partition("=")
    if not sep or key not in WHERE_KEYS:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE with KEY one of {', '.join(WHERE_KEYS)}")
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, value


def add_sources(p: argparse.ArgumentParser, metric_help: str) -> None:
    """The results a reading command takes (plot, report, claims, importance): sources, --storage, --study,
    --metric, --where, spelled alike everywhere."""
    from sqzdse.results.rows import METRICS

    p.add_argument("sources", nargs="*", metavar="SOURCE", help="results: sweep files (sweeps/smoke.toml: its study, "
                   "in its storage), .csv / .json exports or storage URLs (sqlite:///runs/sqzdse.db, "
                   "postgresql://...); several are combined, each trial counted once")  # fmt: skip
    p.add_argument("--storage", action="append", metavar="URL", help="a storage, as `sweep status` takes "
                   "it: the same as giving the URL as a SOURCE (repeatable)")  # fmt: skip
    p.add_argument("--study", action="append", help="only this study (repeatable)")
    p.add_argument("--metric", default="val_top1", choices=METRICS, help=metric_help)
    p.add_argument("--where", action="append", type=where_item, metavar="KEY=VALUE", help="only trials with this "
                   "value, e.g. --where pct3x3=0.5 to hold an axis fixed (repeatable)")  # fmt: skip


def sources_of(args: argparse.Namespace) -> list[str]:
    """The SOURCEs and --storage URLs given, or an InputError when there are none."""
    sources = [*args.sources, *(args.storage or ())]
    if not sources:
        raise InputError("no results given: name a sweep file, an export or a storage (SOURCE, or --storage URL)")
    return sources
