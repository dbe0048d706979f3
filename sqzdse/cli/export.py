"""``sqzdse export``: a run, a sweep trial or the released v1.0 as ONNX."""

from __future__ import annotations

import os

from sqzdse.cli.common import add_output, command
from sqzdse.errors import InputError


def cmd_export(args) -> int:
    from sqzdse.api import load
    from sqzdse.deploy.onnx import export

    if not args.output.lower().endswith(".onnx"):
        raise InputError(f"-o {args.output}: the output must be an .onnx file")
    clf = load(args.source, config=args.config, data_dir=args.data_dir)
    desc = export(clf, args.output)
    inp = desc["inputs"][0]
    print(f"wrote {args.output} ({os.path.getsize(args.output):,} bytes; input {inp['name']} {inp['shape']} "
          f"{inp['layout']}) and {args.output}.json")  # fmt: skip
    return 0


def add_commands(sub) -> None:
    ex = command(
        sub,
        "export",
        help="export a trained run, a sweep trial or the released v1.0 to ONNX (dynamic batch, class names)",
        description="Write the model as an ONNX file (input 'data', NCHW float32, any batch size; outputs 'scores' "
        "and 'probabilities'; class names in its metadata) and a description of its inputs, outputs and "
        "preprocessing beside it (OUTPUT.json). Example: sqzdse export runs/fmnist -o fmnist.onnx",
    )
    ex.add_argument("source", metavar="RUN_DIR|released|FILE", help="a training run's or sweep trial's workdir, "
                    "'released' (the bundled v1.0), or a compressed .sqz / .net file")  # fmt: skip
    add_output(ex, "the .onnx file to write")
    ex.add_argument("--config", metavar="RUN_DIR", help="for a compressed FILE: the run it was compressed from "
                    "(default: v1.0 on ImageNet)")  # fmt: skip
    ex.add_argument("--data-dir", help="tensorflow-datasets directory (class names of a prepared dataset)")
    ex.set_defaults(func=cmd_export)
