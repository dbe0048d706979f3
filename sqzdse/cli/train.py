"""``sqzdse train`` (with ``--dsd``, whose flags are in ``sqzdse.cli.compress``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from sqzdse.cli.common import add_config_args, command, config_from_args
from sqzdse.data.datasets import MAX_DEFAULT_VAL
from sqzdse.model import config as C
from sqzdse.train.recipe import (
    CHOICES,
    TRAIN_HELP,
    TrainConfig,
    caffe_solver,
    small_input_recipe,
)

TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


# What an unset limit means (TrainConfig's None).
UNSET = {"train_limit": "all", "eval_limit": "all",
         "val_size": f"a tenth of the training split, at most {MAX_DEFAULT_VAL:,}"}  # fmt: skip


def _recipe_default(name: str) -> str:
    imagenet, small = getattr(caffe_solver(), name), getattr(small_input_recipe(), name)
    if imagenet == small:
        return f"default: {imagenet}" if imagenet is not None else f"default: {UNSET[name]}"
    return f"default: {imagenet} with an ImageNet stem, {small} with the small stem"


def add_train_args(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; unset ones come from the configuration's recipe (recipe.default_recipe)."""
    g = p.add_argument_group("training (unset flags: Caffe's solver for the ImageNet stems v1_0 / v1_1, the "
                             "small-input recipe for the small stem; sqzdse.train.recipe)")  # fmt: skip
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "dataset":
            g.add_argument(flag, default=f.default, help=TRAIN_HELP[f.name])
            continue
        kind = {"float": float, "int": int, "int | None": int}.get(str(f.type), str)
        help_ = f"{TRAIN_HELP[f.name]} ({_recipe_default(f.name)})".lstrip()
        g.add_argument(flag, type=kind, choices=CHOICES.get(f.name), help=help_)
    g.add_argument("--data-dir", help="tensorflow-datasets directory (default: $SQZDSE_DATA_DIR, else "
                   "~/tensorflow_datasets)")  # fmt: skip
    g.add_argument("--no-download", action="store_true", help="fail instead of downloading a missing dataset")


def train_config_from_args(args, cfg: C.SqueezeNetConfig) -> TrainConfig:
    from sqzdse.train.recipe import default_recipe

    return default_recipe(cfg, **{k: getattr(args, k) for k in TRAIN_FIELDS if getattr(args, k, None) is not None})


def cmd_train(args) -> int:
    from sqzdse.runtime import deferred_signals

    # SIGINT/SIGTERM: the run checkpoints at the next update and main() prints one line (exit 130/143).
    with deferred_signals("as the run finished (its summary is written)"):
        return _train(args)


def _train(args) -> int:
    from sqzdse.data import pipeline as D
    from sqzdse.train.loop import train_and_evaluate

    if args.coordinator or args.processes or args.process_id is not None:
        from sqzdse.runtime import join_processes

        join_processes(args.coordinator, args.processes, args.process_id)
    ds = D.load(args.dataset, data_dir=args.data_dir, val_size=args.val_size, download=not args.no_download)
    fit = {}  # no preset or stem named: a small input gets the small stem (checked with it, not with v1.0's)
    if args.preset is None and args.stem is None and ds.info.family == "small":
        fit = dict(stem=C.STEM_SMALL, conv10_pad=0)
    cfg = config_from_args(args, input_shape=ds.info.image_shape, num_classes=ds.info.num_classes, **fit)
    tc = train_config_from_args(args, cfg)
    print(f"training {cfg} on {ds.info.name} with {tc}", file=sys.stderr)
    if args.dsd:
        from sqzdse.cli.compress import run_dsd

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


def add_commands(sub) -> None:
    from sqzdse.cli.compress import add_dsd_arguments

    tr = command(
        sub,
        "train",
        help="train one configuration: progress bar, per-epoch metrics, checkpoints, final summary",
        description="Train a configuration on a dataset. With --workdir, metrics go to WORKDIR/metrics.jsonl, the "
        "summary to WORKDIR/summary.json, and orbax checkpoints let the same command resume a killed run. A run whose "
        "loss becomes NaN stops with status 'diverged' (exit code 3). Example: sqzdse train --preset squeezenet_small "
        "--dataset fashion_mnist --epochs 2 --workdir runs/fmnist",
    )
    add_config_args(tr, preset_default="squeezenet_v1_0; with neither --preset nor --stem, a small-input dataset "
                    "(28x28, 32x32) gets the small stem, so the small-input recipe")  # fmt: skip
    add_train_args(tr)
    tr.add_argument("--workdir", help="where metrics, summary and checkpoints go (resumes a run found there)")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.add_argument("--json", action="store_true", help="print the summary as JSON")
    mp = tr.add_argument_group("one run over several processes or hosts (jax.distributed; docs/training.md)")
    mp.add_argument("--coordinator", help="HOST:PORT of process 0, which every process reaches (unset with "
                    "--processes: from the cluster's environment, e.g. SLURM's)")  # fmt: skip
    mp.add_argument("--processes", type=int, help="processes in the run, each started with the same command")
    mp.add_argument("--process-id", type=int, help="this process's index, 0 to --processes - 1 (0 writes the workdir)")
    add_dsd_arguments(tr)
    tr.set_defaults(func=cmd_train)
