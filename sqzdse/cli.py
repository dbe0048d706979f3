"""The ``sqzdse`` command line: parses flags, calls the library, prints. Nothing else lives here."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from sqzdse import config as C


def add_config_args(p: argparse.ArgumentParser) -> None:
    """Metaparameter flags; given with --preset they override the preset's values."""
    g = p.add_argument_group("metaparameters (Section 5 of the paper)")
    g.add_argument(
        "--preset", choices=sorted(C.PRESETS), help="start from a released configuration (default: squeezenet_v1_0)"
    )
    g.add_argument("--base-e", type=int, help="expand filters of fire2 (v1.0: 128)")
    g.add_argument("--incr-e", type=int, help="expand filters added every FREQ Fire modules (v1.0: 128)")
    g.add_argument("--freq", type=int, help="Fire modules per width step (v1.0: 2)")
    g.add_argument("--pct3x3", type=float, help="share of 3x3 expand filters, 0..1 (v1.0: 0.5)")
    g.add_argument("--sr", type=float, help="squeeze ratio s/e, > 0 (v1.0: 0.125)")
    g.add_argument("--bypass", choices=C.BYPASSES, help="macroarchitecture of Section 6 (default: none)")
    g.add_argument(
        "--stem", choices=sorted(C.STEMS), help="conv1: v1_0 = 96x7x7/2, v1_1 = 64x3x3/2, small = 64x3x3/1 pad 1"
    )
    g.add_argument("--pool-after", help="comma-separated layers followed by a 3x3/2 max pool (v1.0: conv1,fire4,fire8)")
    g.add_argument("--num-classes", type=int, help="classes of conv10 (v1.0: 1000)")
    g.add_argument("--input-size", type=int, help="input height = width in pixels (v1.0: 227)")
    g.add_argument("--in-channels", type=int, help="input channels (v1.0: 3)")
    g.add_argument("--dropout", type=float, help="dropout rate on fire9's output (v1.0: 0.5)")


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
    from sqzdse.cost import summary

    cfg = config_from_args(args)
    s = summary(cfg, bits=args.bits)
    if args.json:
        print(json.dumps({"config": C.to_dict(cfg), **s}, indent=1))
    else:
        print(format_table(s))
    return 0


def cmd_predict(args) -> int:
    from sqzdse.predict import predict_files
    from sqzdse.weights import load_pretrained

    model = load_pretrained(args.weights)
    records = predict_files(model, args.images, top=args.top)
    if args.json:
        print(json.dumps(records, indent=1))
    else:
        for rec in records:
            print(rec["image"])
            for t in rec["top"]:
                print(f"  {t['prob']:7.2%}  {t['class_id']:4d}  {t['name']}")
    return 0


def cmd_export(args) -> int:
    from sqzdse.api import load
    from sqzdse.export import export

    if not args.output.lower().endswith(".onnx"):
        raise C.ConfigError(f"-o {args.output}: the output must be an .onnx file")
    clf = load(args.source, config=args.config, data_dir=args.data_dir)
    desc = export(clf, args.output)
    inp = desc["inputs"][0]
    print(f"wrote {args.output} ({os.path.getsize(args.output):,} bytes; input {inp['name']} {inp['shape']} "
          f"{inp['layout']}) and {args.output}.json")  # fmt: skip
    return 0


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Training-budget flags; unset ones come from the preset's default recipe (sqzdse.train.default_recipe)."""
    from sqzdse.recipe import OPTIMIZERS, SCHEDULES

    g = p.add_argument_group("training (defaults: Caffe's solver for ImageNet stems, the small-input recipe otherwise)")
    g.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist, mnist, cifar10, cifar100, imagenette, "
                   "imagenet2012 (default fashion_mnist)")  # fmt: skip
    g.add_argument(
        "--data-dir", help="tensorflow-datasets directory (default $SQZDSE_DATA_DIR or ~/tensorflow_datasets)"
    )
    g.add_argument("--no-download", action="store_true", help="fail instead of downloading a missing dataset")
    g.add_argument("--epochs", type=float, help="passes over the training split (fractions allowed)")
    g.add_argument("--batch-size", type=int, help="images per forward pass")
    g.add_argument("--iter-size", type=int, help="micro-batches accumulated per update (Caffe's iter_size)")
    g.add_argument("--optimizer", choices=OPTIMIZERS)
    g.add_argument("--lr", type=float, help="base learning rate")
    g.add_argument("--momentum", type=float, help="SGD momentum / Adam beta1")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--schedule", choices=SCHEDULES, help="learning-rate decay after warm-up")
    g.add_argument("--power", type=float, help="poly decay power")
    g.add_argument("--warmup-epochs", type=float, help="linear learning-rate warm-up")
    g.add_argument("--seed", type=int, help="seeds initialisation, data order, augmentation and dropout (default 0)")
    g.add_argument("--train-limit", type=int, help="train on the first N training images only")
    g.add_argument("--val-size", type=int, help="images carved from the training split for validation")
    g.add_argument("--eval-limit", type=int, help="evaluate on the first N validation and test images only")
    g.add_argument(
        "--init",
        choices=("caffe", "msra"),
        help="caffe: the prototxts' fillers; msra: He for conv1 and the Fire modules",
    )
    g.add_argument("--dtype", choices=("float32", "bfloat16"), help="compute dtype (parameters stay float32)")
    g.add_argument("--checkpoint-every", type=int, help="also checkpoint every N updates (default: each epoch)")


TRAIN_FIELDS = ("dataset", "epochs", "batch_size", "iter_size", "optimizer", "lr", "momentum", "weight_decay",
                "schedule", "power", "warmup_epochs", "seed", "train_limit", "val_size", "eval_limit", "init", "dtype",
                "checkpoint_every")  # fmt: skip


def train_config_from_args(args, cfg: C.SqueezeNetConfig):
    from sqzdse.recipe import default_recipe

    return default_recipe(cfg, **{k: getattr(args, k) for k in TRAIN_FIELDS if getattr(args, k, None) is not None})


def cmd_train(args) -> int:
    from sqzdse.runtime import deferred_signals

    # SIGINT/SIGTERM: the run checkpoints at the next update and main() prints one line (exit 130/143).
    with deferred_signals("as the run finished (its summary is written)"):
        return _train(args)


def _train(args) -> int:
    from sqzdse import data as D
    from sqzdse.train import train_and_evaluate

    ds = D.load(args.dataset, data_dir=args.data_dir, val_size=args.val_size, download=not args.no_download)
    cfg = config_from_args(args, input_shape=ds.info.image_shape, num_classes=ds.info.num_classes)
    if args.preset is None and args.stem is None and ds.info.family == "small":
        cfg = dataclasses.replace(cfg, stem=C.STEM_SMALL, conv10_pad=0)  # no preset named: fit the small input
    tc = train_config_from_args(args, cfg)
    print(f"training {cfg} on {ds.info.name} with {tc}", file=sys.stderr)
    if args.dsd:
        from sqzdse.compress import run_dsd

        return run_dsd(args, cfg, tc, ds)
    result = train_and_evaluate(cfg, tc, args.workdir, dataset=ds, progress=not args.no_progress)
    if result.reused:
        print(f"{args.workdir} holds this run, finished: its summary, not trained again", file=sys.stderr)
    r = result.summary()
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        keys = ("status", "reason", "val_top1", "val_top5", "test_top1", "test_top5", "params", "bytes", "macs",
                "updates", "train_seconds", "compile_seconds", "wall_seconds")  # fmt: skip
        for k in keys:
            v = r[k]
            print(f"{k:>16}: {v:.4f}" if isinstance(v, float) else f"{k:>16}: {v}")
    return 0 if r["status"] == "completed" else 3


def cmd_sweep_run(args) -> int:
    from sqzdse import sweep as S

    spec = S.load_spec(args.file, max_points=None if args.yes else S.GRID_LIMIT)
    url = S.storage_url(args.storage, spec)
    if args.workers < 1:
        raise ValueError(f"--workers {args.workers}: must be >= 1")
    if args.workers > 1:
        return _spawn_workers(args, url)
    n = S.run_worker(spec, url, runs_dir=args.runs_dir, max_trials=args.max_trials, progress=not args.no_progress,
                     log=lambda msg: print(msg, file=sys.stderr, flush=True))  # fmt: skip
    st = S.status(url, spec.name)
    print(f"{spec.name}: ran {n} trials here; storage {S.redact(url)} holds {st['trials']} ({_states(st)})")
    return 0


def _spawn_workers(args, url: str) -> int:
    """N worker processes on this machine, each one JAX thread pool, sharing the storage."""
    import subprocess

    from sqzdse.sweep import STORAGE_ENV

    argv = [sys.executable, "-m", "sqzdse.cli", "sweep", "run", args.file, "--runs-dir", args.runs_dir, "--workers",
            "1", "--no-progress"]  # fmt: skip
    if args.max_trials:
        argv += ["--max-trials", str(args.max_trials)]
    if args.yes:
        argv.append("--yes")
    from sqzdse.runtime import worker_cpus

    procs = []
    for cpus in worker_cpus(args.workers):  # one disjoint set of cores per worker
        # The storage goes by the environment: a password in its URL stays out of `ps`.
        env = {**os.environ, "SQZDSE_CPUS": ",".join(map(str, cpus)), STORAGE_ENV: url}
        procs.append(subprocess.Popen(argv, env=env))
    return max(p.wait() for p in procs)


def _states(st: dict) -> str:
    return ", ".join(f"{n} {s.lower()}" for s, n in sorted(st["states"].items())) or "no trials"


def cmd_sweep_status(args) -> int:
    from sqzdse import sweep as S

    url, study = _storage_of(args)
    if args.top < 0:
        raise ValueError(f"--top {args.top}: must be >= 0")
    st = S.status(url, study, top=args.top)
    if args.json:
        print(json.dumps(st, indent=1))
        return 0
    print(f"study {st['study']} in {S.redact(url)}: {st['trials']} trials ({_states(st)})")

    def line(r) -> str:
        objs = " ".join(f"{o}={r[o]:.4f}" if isinstance(r[o], float) else f"{o}={r[o]:,}" for o in st["objectives"])
        meta = " ".join(f"{k}={r[k]}" for k in S.METAPARAMETERS)
        test = f"test_top1 {r['test_top1']:.4f}, {r['bytes']:,} bytes"
        return f"  trial {r['number']}: {objs} ({test}) | {meta} seed={r['seed']}"

    goal = ", ".join(f"{o} ({d})" for o, d in zip(st["objectives"], st["directions"], strict=True))
    if len(st["objectives"]) > 1:
        print(f"Pareto set of {goal}: {len(st['pareto'])} trials")
        for r in st["pareto"]:
            print(line(r))
    elif st["best"]:
        print(f"best by {goal}:\n{line(st['best'])}")
    if st["top"]:
        print(f"top {len(st['top'])} by {goal.split(',')[0]}:")
        for r in st["top"]:
            print(line(r))
    return 0


def _storage_of(args) -> tuple[str, str | None]:
    """The storage (--storage > $SQZDSE_STORAGE > the FILE's default) and study (--study > the FILE's) to read."""
    from sqzdse import sweep as S

    if args.file:
        spec = S.load_spec(args.file, max_points=None)  # only its name and storage are needed: no grid limit
        return S.storage_url(args.storage, spec), args.study or spec.name
    url = S.storage_url(args.storage)
    if not url:
        raise C.ConfigError(f"give a sweep FILE or --storage URL (or set ${S.STORAGE_ENV})")
    return url, args.study


def cmd_sweep_delete(args) -> int:
    from sqzdse import sweep as S

    url, study = _storage_of(args)
    if not study:
        raise C.ConfigError("sweep delete: name the study: a sweep FILE or --study NAME")

    def confirm(n_trials: int) -> bool:
        what = f"study {study!r} ({n_trials} trials) from {S.redact(url)}"
        if args.yes:
            return True
        if not sys.stdin.isatty():
            raise C.ConfigError(f"sweep delete: no terminal to confirm on; pass --yes to delete {what}")
        try:
            return input(f"delete {what}? This cannot be undone [y/N] ").strip().lower() in ("y", "yes")
        except EOFError:
            return False

    n = S.delete_study(url, study, confirm)
    print(f"deleted {study!r} ({n} trials) from {S.redact(url)}" if n is not None else "nothing deleted")
    return 0 if n is not None else 1


def cmd_sweep_export(args) -> int:
    from sqzdse import sweep as S

    fmt = export_format(args.format, args.output)
    url, study = _storage_of(args)
    rows = S.export_rows(url, S.resolve_study(url, study))
    if args.output:
        with open(args.output, "w", newline="") as f:
            S.write_rows(rows, fmt, f)
        print(f"wrote {len(rows)} trials to {args.output}", file=sys.stderr)
    else:
        S.write_rows(rows, fmt, sys.stdout)
    return 0


def export_format(fmt: str | None, output: str | None) -> str:
    """--format if given, else the output file's suffix (.csv, .json); standard output gets CSV."""
    if fmt:
        return fmt
    suffix = os.path.splitext(output)[1].lower() if output else ".csv"
    if suffix not in (".csv", ".json"):
        raise C.ConfigError(f"-o {output}: cannot tell the format from {suffix or 'no suffix'!r}; name the file "
                            ".csv or .json, or give --format csv|json")  # fmt: skip
    return suffix[1:]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sqzdse",
        description="Design-space exploration of SqueezeNet's Fire-module metaparameters (Iandola et al. 2016).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    from sqzdse.compress import add_compress_arguments, add_dsd_arguments, run_compress

    model = sub.add_parser("model", help="inspect a configuration").add_subparsers(dest="model_command", required=True)
    ms = model.add_parser(
        "summary",
        help="per-layer table like the paper's Table 1: shapes, widths, parameters, MACs",
        description="Print the layer plan of a configuration with its parameter count, bytes and MACs. "
        "Example: sqzdse model summary --preset squeezenet_v1_0 --sr 0.25 (the paper's SR = 0.25 point).",
    )
    add_config_args(ms)
    ms.add_argument("--bits", type=int, default=32, help="bits per weight for the byte count (default 32)")
    ms.add_argument("--json", action="store_true", help="print JSON: params, bytes, macs, layers, config")
    ms.set_defaults(func=cmd_model_summary)

    pr = sub.add_parser(
        "predict",
        help="classify images with the released Deep-Compression SqueezeNet v1.0 weights",
        description="Apply Caffe's preprocessing (resize 256, centre 227 crop, BGR, mean subtraction) and print "
        "the top-K ImageNet classes of each image with SqueezeNet v1.0.",
    )
    pr.add_argument("--weights", default="released", help="'released' (the bundled Deep-Compression v1.0, "
                    "compressed_SqueezeNet.net; default) or a path to such a .net file")  # fmt: skip
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    pr.add_argument("--top", type=int, default=5, help="classes to print per image (default 5)")
    pr.add_argument("--json", action="store_true", help="print a JSON list, one record per image in argument order")
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser(
        "export",
        help="export a trained run, a sweep trial or the released v1.0 to ONNX (dynamic batch, class names)",
        description="Write the model as an ONNX file (input 'data', NCHW float32, any batch size; outputs 'scores' "
        "and 'probabilities'; class names in its metadata) and a description of its inputs, outputs and "
        "preprocessing beside it (OUTPUT.json). Example: sqzdse export runs/fmnist -o fmnist.onnx",
    )
    ex.add_argument("source", metavar="RUN_DIR|released|FILE", help="a training run's or sweep trial's workdir, "
                    "'released' (the bundled v1.0), or a compressed .sqz / .net file")  # fmt: skip
    ex.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    ex.add_argument("--config", metavar="RUN_DIR", help="for a compressed FILE: the run it was compressed from "
                    "(default: v1.0 on ImageNet)")  # fmt: skip
    ex.add_argument("--data-dir", help="tensorflow-datasets directory (class names of a prepared dataset)")
    ex.set_defaults(func=cmd_export)

    tr = sub.add_parser(
        "train",
        help="train one configuration: progress bar, per-epoch metrics, checkpoints, final summary",
        description="Train a configuration on a dataset. With --workdir, metrics go to WORKDIR/metrics.jsonl, the "
        "summary to WORKDIR/summary.json, and orbax checkpoints let the same command resume a killed run. A run whose "
        "loss becomes NaN stops with status 'diverged' (exit code 3). Example: sqzdse train --preset squeezenet_small "
        "--dataset fashion_mnist --epochs 2 --workdir runs/fmnist",
    )
    add_config_args(tr)
    add_train_args(tr)
    tr.add_argument("--workdir", help="where metrics, summary and checkpoints go (resumes a run found there)")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_dsd_arguments(tr)
    tr.set_defaults(func=cmd_train)

    from sqzdse.sweep import GRID_LIMIT, STORAGE_ENV

    sw = sub.add_parser("sweep", help="Optuna sweeps over the design space: run, status, export, delete")
    sws = sw.add_subparsers(dest="sweep_command", required=True)
    run = sws.add_parser(
        "run",
        help="work on a sweep until it is done (start as many as you like, on any machines, on one storage)",
        description="Run the trials of a sweep file (sweeps/*.toml). Workers on one --storage share the work: a grid "
        "runs each point once; a killed worker's trial is retried (resuming its checkpoint); rerunning a finished "
        "or interrupted sweep continues it. Default storage: sqlite:///runs/NAME.db (no server). Many machines: "
        "--storage postgresql+psycopg2://USER:PASS@HOST/DB on every machine.",
    )
    run.add_argument("file", help="sweep file (TOML), e.g. sweeps/smoke.toml")
    run.add_argument("--storage", help=f"Optuna storage URL (default ${STORAGE_ENV}, else sqlite:///runs/NAME.db)")
    run.add_argument("--runs-dir", default="runs", help="trial workdirs and the JAX compilation cache (default runs)")
    run.add_argument("--max-trials", type=int, help="stop this worker after N trials")
    run.add_argument("--workers", type=int, default=1,
                     help="worker processes on this machine, each pinned to its own share of the cores "
                          "(default 1: one process using them all)")  # fmt: skip
    run.add_argument("--no-progress", action="store_true", help="no per-trial progress bar")
    run.add_argument("--yes", action="store_true", help=f"run a grid of more than {GRID_LIMIT:,} points")
    run.set_defaults(func=cmd_sweep_run)
    for name, func, helptext in (("status", cmd_sweep_status, "progress of a sweep: trials per state, the best"),
                                 ("export", cmd_sweep_export, "one row per trial as CSV or JSON"),
                                 ("delete", cmd_sweep_delete, "remove a study and all its trials from the storage, "
                                  "after a confirmation")):  # fmt: skip
        where = f". Give a sweep FILE or --storage URL (default ${STORAGE_ENV}); a missing storage is an error"
        q = sws.add_parser(name, help=helptext, description=helptext + where + ", never created.")
        q.add_argument("file", nargs="?", help="sweep file (its default storage and study)")
        q.add_argument("--storage", help=f"Optuna storage URL (default ${STORAGE_ENV})")
        q.add_argument("--study", help="study name (optional when the storage holds one)")
        if name == "export":
            q.add_argument("--format", choices=("csv", "json"),
                           help="default: the suffix of -o (.csv or .json); CSV on standard output")  # fmt: skip
            q.add_argument("-o", "--output", help="write here instead of standard output")
        elif name == "status":
            q.add_argument("--json", action="store_true", help="print JSON")
            q.add_argument("--top", type=int, default=0, help="also list the N best trials by the first objective")
        else:
            q.add_argument("--yes", action="store_true", help="delete without asking")
        q.set_defaults(func=func)

    from sqzdse.plots import add_plot_arguments, run_plot
    from sqzdse.report import add_report_arguments, run_report

    cp = sub.add_parser(
        "compress",
        help="Deep Compression of a trained run (or the released v1.0): prune, share weights, encode, report sizes",
        description="Prune every conv by magnitude (default: the released model's per-layer densities), optionally "
        "fine-tune with the mask held, share weights by k-means at --bits, store them sparsely with 4-bit relative "
        "indices, optionally Huffman-code, write -o FILE and print the bytes per layer and part and the accuracy "
        "before and after. Example: sqzdse compress runs/fmnist --bits 6 --huffman --finetune-epochs 1 -o fmnist.sqz",
    )
    add_compress_arguments(cp)
    cp.set_defaults(func=run_compress)

    pl = sub.add_parser("plot", help="figures from sweep results: sr, pct3x3, frontier, bypass, edf, curves")
    add_plot_arguments(pl)
    pl.set_defaults(func=run_plot)
    rp = sub.add_parser("report", help="one Markdown or HTML page per study: spec, trials, Pareto set, figures")
    add_report_arguments(rp)
    rp.set_defaults(func=run_report)
    return p


def main(argv: list[str] | None = None) -> int:
    from sqzdse.runtime import Interrupted, backend_initialized, configure_cpu, parse_cpus

    args = build_parser().parse_args(argv)
    try:
        if not backend_initialized():  # XLA:CPU flags and malloc settings must precede JAX's backend
            cpus = os.environ.get("SQZDSE_CPUS")  # set per worker by `sweep run --workers N`
            configure_cpu(cpus=parse_cpus(cpus) if cpus else None)  # what they buy: benchmarks/README.md
        return args.func(args)
    except (C.ConfigError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"sqzdse: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a command that does not defer signals (sqzdse.train.deferred_signals)
        print("sqzdse: interrupted (SIGINT)", file=sys.stderr)
        return 130
    except Interrupted as e:  # a deferred SIGINT/SIGTERM, acted on at a safe point (sqzdse.runtime)
        print(f"sqzdse: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
