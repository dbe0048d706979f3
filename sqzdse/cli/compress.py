"""``sqzdse compress`` and the flags of ``sqzdse train --dsd``."""

from __future__ import annotations

import dataclasses
import json
import sys

from sqzdse.cli.common import add_output, command
from sqzdse.errors import InputError
from sqzdse.model import config as C
from sqzdse.reference import RELEASED

# sqzdse.compress.pipeline imports NumPy only; JAX, Flax and the training code are imported when a command runs.


def add_compress_arguments(p) -> None:
    """Flags of ``sqzdse compress``."""
    from sqzdse.compress.codec import BITS
    from sqzdse.compress.pipeline import DEFAULT_BITS

    p.add_argument("source", metavar="SOURCE", help="a training run's workdir (sqzdse train --workdir, a sweep "
                   "trial's), or the released v1.0 as export and predict name it: 'released' (the bundled "
                   "compressed_SqueezeNet.net) or a path to that .net file (no accuracy: ImageNet is not "
                   "here)")  # fmt: skip
    add_output(p, "the compressed file to write")
    p.add_argument("--bits", type=int, default=DEFAULT_BITS,
                   help=f"bits per shared-weight code, {BITS[0]}-{BITS[-1]} (the paper: 8 and 6)")  # fmt: skip
    p.add_argument("--density", default="released", help="'released' (the released model's per-layer pattern, "
                   "33%% for expand3x3) or one fraction kept for every layer, e.g. 0.4")  # fmt: skip
    p.add_argument("--huffman", action="store_true", help="Huffman-code codes and indices (both sizes are reported)")
    p.add_argument("--finetune-epochs", type=float, default=0.0, help="retrain a RUN_DIR after pruning (mask held) "
                   "and after weight sharing (centroids) for N epochs each")  # fmt: skip
    p.add_argument("--finetune-lr", type=float, default=0.1, help="fine-tuning learning rate as a multiple of the "
                   "run's")  # fmt: skip
    p.add_argument("--data-dir", help="tensorflow-datasets directory of the run's dataset")
    p.add_argument("--no-eval", action="store_true", help="skip the accuracy measurements")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while fine-tuning")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run_compress(args) -> int:
    """``sqzdse compress``: compress a run's checkpoint (or the released v1.0), write, print the report."""
    from sqzdse.compress.pipeline import compress_to_file
    from sqzdse.compress.prune import parse_density

    density = parse_density(args.density)
    released = args.source == RELEASED or args.source.lower().endswith(".net")  # v1.0, or a file of its layout
    kw = dict(bits=args.bits, density=density, finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr,
              progress=not args.no_progress)  # fmt: skip
    if released:
        if args.finetune_epochs:
            raise InputError("--finetune-epochs: the released v1.0 would need ImageNet; compress a training run")
        from flax import nnx

        from sqzdse.model.weights import load_pretrained

        cfg = C.squeezenet_v1_0()
        params = nnx.state(load_pretrained(args.source), nnx.Param)
    else:
        from sqzdse.data import pipeline as D
        from sqzdse.train.loop import load_run

        cfg, tc, graphdef, params = load_run(args.source)
        kw.update(tc=tc, graphdef=graphdef)
        if not args.no_eval or args.finetune_epochs:
            kw["dataset"] = D.load(tc.dataset, data_dir=args.data_dir, val_size=tc.val_size)
    r = compress_to_file(args.output, cfg, params, huffman=args.huffman, **kw)
    print(json.dumps(dataclasses.asdict(r), indent=1) if args.json else r.text())
    return 0


def add_dsd_arguments(p) -> None:
    """``sqzdse train --dsd`` and its options."""
    from sqzdse.compress import dsd

    g = p.add_argument_group("Dense-Sparse-Dense training (Han et al. 2017), within the --epochs budget")
    g.add_argument("--dsd", action="store_true", help="train dense, prune and retrain with the mask held, then "
                   "retrain dense; phases in WORKDIR/dense, /sparse, /redense")  # fmt: skip
    g.add_argument("--dsd-density", default=str(dsd.DSD_DENSITY), help="weights kept in the sparse phase: a fraction "
                   f"per layer or 'released' ({dsd.DSD_DENSITY} is 30%% sparsity)")  # fmt: skip
    g.add_argument("--dsd-phases", default=",".join(map(str, dsd.DSD_PHASES)), help="fractions of --epochs for dense,"
                   " sparse, re-dense")  # fmt: skip
    g.add_argument("--dsd-redense-lr", type=float, default=dsd.DSD_REDENSE_LR, help="re-dense learning rate as a "
                   "multiple of --lr")  # fmt: skip


def _pct(v) -> str:
    return f"{100 * v:8.2f}%" if v is not None else f"{'-':>9}"


def run_dsd(args, cfg, tc, dataset) -> int:
    """``sqzdse train --dsd``: the three phases, then each phase's accuracy."""
    from sqzdse.compress import dsd
    from sqzdse.compress.prune import parse_density

    try:
        phases = tuple(float(f) for f in args.dsd_phases.split(","))
    except ValueError:
        raise InputError(f"--dsd-phases {args.dsd_phases!r}: three comma-separated fractions") from None
    r = dsd.train_dsd(cfg, tc, args.workdir, dataset=dataset, density=parse_density(args.dsd_density),
                      phases=phases, redense_lr=args.dsd_redense_lr, progress=not args.no_progress)  # fmt: skip
    r = r.summary
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        print(f"{'phase':<8} {'epochs':>7} {'lr':>9} {'density':>8} {'val top-1':>10} {'test top-1':>10}  status")
        for name, p in r["phases"].items():
            print(f"{name:<8} {p['epochs']:>7.3g} {p['lr']:>9.3g} {p['kernel_density']:>8.1%} {_pct(p['val_top1'])}"
                  f"  {_pct(p['test_top1'])}  {p['status']}")  # fmt: skip
    print(f"DSD {r['status']}: test top-1 {_pct(r['test_top1']).strip()}", file=sys.stderr)
    return 0 if r["status"] == "completed" else 3


def add_commands(sub) -> None:
    cp = command(
        sub,
        "compress",
        help="Deep Compression of a trained run (or the released v1.0): prune, share weights, encode, report sizes",
        description="Prune every conv by magnitude (default: the released model's per-layer densities), optionally "
        "fine-tune with the mask held, share weights by k-means at --bits, store them sparsely with 4-bit relative "
        "indices, optionally Huffman-code, write -o FILE and print the bytes per layer and part and the accuracy "
        "before and after. Example: sqzdse compress runs/fmnist --bits 6 --huffman --finetune-epochs 1 -o fmnist.sqz",
    )
    add_compress_arguments(cp)
    cp.set_defaults(func=run_compress)
