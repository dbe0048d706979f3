"""``sqzdse model summary`` and ``sqzdse predict``."""

from __future__ import annotations

import json

from sqzdse.cli.common import add_config_args, command, config_from_args
from sqzdse.model import config as C

# (header, width): negative widths align left.
COLUMNS = [("layer", -12), ("output size", 12), ("filter/stride", -15), ("s1x1", 6), ("e1x1", 6), ("e3x3", 6),
           ("bypass", -10), ("params", 11), ("MACs", 15)]  # fmt: skip


def _row(cells) -> str:
    return " ".join(f"{c:<{-w}}" if w < 0 else f"{c:>{w}}" for c, (_, w) in zip(cells, COLUMNS, strict=True))


def format_table(s: dict) -> str:
    """The summary as a Table-1-like text table."""
    head = _row([h for h, _ in COLUMNS])
    lines = [head, "-" * len(head)]
    for r in s["layers"]:
        lines.append(
            _row(
                [
                    r["name"],
                    "x".join(map(str, r["output"])),
                    r.get("filter", ""),
                    *(str(r.get(k, "")) for k in ("s1x1", "e1x1", "e3x3")),
                    " " + {"identity": "simple", "conv": "1x1 conv"}.get(r.get("bypass"), ""),
                    f"{r['params']:,}" if r["params"] else "",
                    f"{r['macs']:,}" if r["macs"] else "",
                ]
            )
        )
    lines.append("-" * len(head))
    lines.append(
        f"total: {s['params']:,} parameters, {s['bytes']:,} bytes at {s['bits']} bits ({s['bytes'] / 2**20:.2f} MiB), "
        f"{s['macs']:,} MACs per image, {s['activation_bytes'] / 2**20:.1f} MiB of float32 activations per image"
    )
    return "\n".join(lines)


def cmd_model_summary(args) -> int:
    from sqzdse.model.cost import summary

    cfg = config_from_args(args)
    s = summary(cfg, bits=args.bits)
    if args.json:
        print(json.dumps({"config": C.to_dict(cfg), **s}, indent=1))
    else:
        print(format_table(s))
    return 0


def cmd_predict(args) -> int:
    from sqzdse.api import load
    from sqzdse.deploy.predict import predict_files

    clf = load(args.weights, config=args.config, data_dir=args.data_dir)
    records = predict_files(clf, args.images, top=args.top)
    if args.json:
        print(json.dumps(records, indent=1))
    else:
        for rec in records:
            print(rec["image"])
            for t in rec["top"]:
                print(f"  {t['prob']:7.2%}  {t['class_id']:4d}  {t['name'] or ''}")
    return 0


def add_commands(sub) -> None:
    model = sub.add_parser("model", help="inspect a configuration", description="Inspect a configuration.")
    msub = model.add_subparsers(dest="model_command", required=True)
    ms = command(
        msub,
        "summary",
        help="per-layer table like the paper's Table 1: shapes, widths, parameters, MACs",
        description="Print the layer plan of a configuration with its parameter count, bytes and MACs. "
        "Example: sqzdse model summary --preset squeezenet_v1_0 --sr 0.25 (the paper's SR = 0.25 point).",
    )
    add_config_args(ms)
    ms.add_argument("--bits", type=int, default=32, help="bits per weight for the byte count")
    ms.add_argument("--json", action="store_true", help="print JSON: params, bytes, macs, layers, config")
    ms.set_defaults(func=cmd_model_summary)

    pr = command(
        sub,
        "predict",
        help="classify images with any model: the released v1.0, a training run, a sweep trial, a compressed file",
        description="Prepare each image as the model's training data was (the release: Caffe's resize 256, centre "
        "227 crop, BGR, mean subtraction; a small-input run: its dataset's normalisation) and print its top-K "
        "classes. Example: sqzdse predict --weights runs/trials/KEY photo.png",
    )
    pr.add_argument("--weights", default="released", metavar="SOURCE", help="'released' (the bundled "
                    "Deep-Compression v1.0), a run's or sweep trial's workdir, or a compressed .sqz / .net file, "
                    "as sqzdse.api.load and sqzdse export take them")  # fmt: skip
    pr.add_argument("--config", help="for a compressed file: the run directory it was compressed from (default: "
                    "v1.0 on ImageNet)")  # fmt: skip
    pr.add_argument("--data-dir", help="tensorflow-datasets directory, for a run's class names")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    pr.add_argument("--top", type=int, default=5, help="classes to print per image")
    pr.add_argument("--json", action="store_true", help="print a JSON list, one record per image in argument order")
    pr.set_defaults(func=cmd_predict)
