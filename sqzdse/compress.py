"""Deep Compression (Han et al. 2016) of any sqzdse model: the pipeline, with training, and ``sqzdse compress``.

As it made the released ``compressed_SqueezeNet.net``:

1. **Pruning** (``sqzdse.prune``): per layer, keep the largest-magnitude weights at a density per layer; by
   default the released model's pattern, optionally fine-tuned with the mask held (``sqzdse.train``'s ``mask=``).
2. **Weight sharing** (``sqzdse.codec``): per layer, 1-D k-means over the kept weights with 2**bits - 1
   centroids; code 0 is reserved for the value 0 (fillers). Optionally the centroids are fine-tuned: weights =
   codebook[codes], the gradient of a centroid is the sum of its weights' gradients (``finetune_centroids``;
   the paper's Section 3.3).
3. **Sparse storage** (``sqzdse.codec``): 4-bit gaps between stored entries, zero fillers for longer ones.
4. **Huffman coding** (optional, ``sqzdse.codec``) of the codes and the gaps. The codec's docstring gives the
   layouts of both files (the released ``.net`` and SQZC).

Sizes are always the bytes the encoder produced, and ``sqzdse compress`` reports the file's size on disk.
DSD is ``sqzdse.dsd``; its flags (``sqzdse train --dsd``) are wired here too.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys

import numpy as np

from sqzdse import config as C
from sqzdse import dsd
from sqzdse.codec import (
    BITS,
    CompressedLayer,
    check_bits,
    decoded_weights,
    dense_codes,
    encode,
    read,
    share_weights,
    size_report,
    write,
)
from sqzdse.prune import layer_densities, parse_density, prune, prune_masks

# JAX, Flax, sqzdse.train and sqzdse.weights (which import them) are imported where used, so that building the
# CLI's parser, which reads this module's flags, stays cheap (as sqzdse.plots does with matplotlib).

DEFAULT_BITS = 6  # the paper's 0.47 MB point


def compressed_size(cfg: C.SqueezeNetConfig, params, bits: int = DEFAULT_BITS, density="released",
                    huffman: bool = True) -> int:  # fmt: skip
    """Bytes of the compressed file without any fine-tuning: prune, share weights, encode (a sweep's size)."""
    from sqzdse.weights import caffe_weights

    weights = caffe_weights(cfg, params)
    return len(encode(share_weights(weights, prune_masks(cfg, weights, density), bits), huffman))


# --------------------------------------------------------------------------- the pipeline with training


def _evaluate(eval_step, params, dataset, tc) -> dict:
    from sqzdse.train import evaluate

    out = {}
    for split in ("val", "test"):
        batches = dataset.batches(split, tc.batch_size, seed=0, train=False, limit=tc.eval_limit)
        m = evaluate(eval_step, params, batches, tc.batch_size)
        out.update({f"{split}_top1": m.get("top1"), f"{split}_top5": m.get("top5")})
    return out


def finetune_centroids(
    tc, graphdef, params, layers: list[CompressedLayer], dataset, *, epochs: float, progress: bool = False
) -> list[CompressedLayer]:
    """Train the shared weights (and biases) with every weight tied to its centroid (Deep Compression 3.3).

    The network's kernels are codebook[codes]; the gradient of a centroid is the sum of its weights'
    gradients (the gather's transpose). Optimizer, schedule and steps as `tc`'s (``sqzdse.train.train_epoch``),
    over `epochs`. Codes, and so the pruning mask and the stored indices, do not change.
    """
    import jax
    import jax.numpy as jnp

    from sqzdse import train as T
    from sqzdse.weights import caffe_key

    tc = dataclasses.replace(tc, epochs=float(epochs))
    per_epoch, total = T.update_counts(dataset, tc)
    theta = {x.name: {"codebook": jnp.asarray(x.codebook), "bias": jnp.asarray(x.bias)} for x in layers}
    codes = {x.name: jnp.asarray(dense_codes(x).transpose(2, 3, 1, 0)) for x in layers}  # OIHW -> HWIO
    treedef = jax.tree.structure(params)
    keys = [caffe_key(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]

    def to_params(theta, codes):
        # Code 0 is the pruned weight: its value is pinned to 0, so it gets no gradient.
        leaves = [theta[n]["codebook"].at[0].set(0.0)[codes[n]] if kind == "kernel" else theta[n]["bias"]
                  for n, kind in keys]  # fmt: skip
        return jax.tree.unflatten(treedef, leaves)

    train_step = T.make_train_step(graphdef, tc, to_params=to_params)
    state = T.init_train_state(tc, theta, total, per_epoch)
    with T.progress_bar(total, 0, progress) as bar:
        for epoch in range(math.ceil(total / per_epoch)):
            with T.train_batches(dataset, tc, epoch, 0, min(per_epoch, total - int(state.step))) as batches:
                try:
                    state = T.train_epoch(train_step, state, batches, tc, bar=bar, const=codes, stage="centroids")[0]
                except T.Diverged as e:
                    raise T.Diverged(f"centroid fine-tuning: {e}") from None
    theta = state.params
    out = []
    for x in layers:
        cb = np.asarray(theta[x.name]["codebook"], np.float32).copy()
        cb[0] = 0.0
        out.append(dataclasses.replace(x, codebook=cb, bias=np.asarray(theta[x.name]["bias"], np.float32)))
    return out


def compress_model(
    cfg: C.SqueezeNetConfig,
    params,
    *,
    bits: int = DEFAULT_BITS,
    density="released",
    tc=None,
    graphdef=None,
    dataset=None,
    finetune_epochs: float = 0.0,
    finetune_lr: float = 0.1,
    progress: bool = False,
    eval_step=None,
) -> dict:
    """Deep Compression of a model's parameters; returns {"layers", "stages", "densities", "params"}.

    With a dataset (and the run's TrainConfig `tc` and `graphdef`), each stage's val/test accuracy is
    measured: trained, pruned, [pruned + fine-tuned], quantised, [quantised + centroids fine-tuned].
    finetune_epochs > 0 retrains after pruning (mask held) and after weight sharing (centroids), each for that
    many epochs at `finetune_lr` x the run's learning rate (Deep Compression retrains at a reduced rate).
    eval_step: the jitted ``sqzdse.train.make_eval_step`` to measure with (made here when None), so that
    a caller measuring more stages compiles it once.
    """
    from sqzdse import train as T
    from sqzdse.weights import caffe_weights, with_caffe_weights

    bits = check_bits(bits)
    if finetune_epochs < 0:
        raise ValueError(f"finetune_epochs={finetune_epochs}: must be >= 0")
    if finetune_epochs and dataset is None:
        raise ValueError("fine-tuning needs the training run's dataset")
    if dataset is not None and (tc is None or graphdef is None):
        raise ValueError("measuring accuracy needs the run's TrainConfig and graphdef (sqzdse.train.load_run)")
    stages: dict[str, dict] = {}
    if dataset is None:
        eval_step = None
    elif eval_step is None:
        eval_step = T.make_eval_step(graphdef)

    def measure(stage, p):
        if eval_step is not None:
            stages[stage] = _evaluate(eval_step, p, dataset, tc)

    measure("trained", params)
    pruned, masks, mask_tree = prune(cfg, params, density)
    measure("pruned", pruned)
    if finetune_epochs:  # both fine-tunings: finetune_epochs at finetune_lr x the run's rate
        ft = dataclasses.replace(tc, epochs=float(finetune_epochs), lr=tc.lr * finetune_lr)
        r = T.train_and_evaluate(cfg, ft, None, dataset=dataset, progress=progress, init_params=pruned, mask=mask_tree)
        if r.status != "completed":
            raise T.Diverged(f"fine-tuning after pruning: {r.reason}")
        pruned = r.state.params
        measure("pruned + fine-tuned", pruned)
    layers = share_weights(caffe_weights(cfg, pruned), masks, bits)
    measure("quantised", with_caffe_weights(pruned, decoded_weights(layers)))
    if finetune_epochs:
        layers = finetune_centroids(ft, graphdef, pruned, layers, dataset, epochs=finetune_epochs, progress=progress)
        measure("quantised + fine-tuned", with_caffe_weights(pruned, decoded_weights(layers)))
    # params: the pruned (and fine-tuned) float parameters, biases included, that the layers were shared from
    return dict(layers=layers, stages=stages, densities=layer_densities(cfg, density), params=pruned)


def compress_to_file(
    out: str | os.PathLike,
    cfg: C.SqueezeNetConfig,
    params,
    *,
    bits: int = DEFAULT_BITS,
    density="released",
    huffman: bool = False,
    tc=None,
    graphdef=None,
    dataset=None,
    finetune_epochs: float = 0.0,
    finetune_lr: float = 0.1,
    progress: bool = False,
) -> dict:
    """``compress_model``, write `out`, read it back; returns the report (sizes, per-layer table, accuracy).

    The accuracy "after" (stage "decoded file") is measured on the weights decoded from the file on disk,
    which must equal the quantised weights bit for bit (RuntimeError otherwise).
    """
    from sqzdse import train as T
    from sqzdse.cost import summary
    from sqzdse.weights import with_caffe_weights

    eval_step = T.make_eval_step(graphdef) if dataset is not None and tc is not None else None
    r = compress_model(cfg, params, bits=bits, density=density, tc=tc, graphdef=graphdef, dataset=dataset,
                       finetune_epochs=finetune_epochs, finetune_lr=finetune_lr, progress=progress,
                       eval_step=eval_step)  # fmt: skip
    layers = r["layers"]
    size = write(layers, out, huffman)
    decoded, expected = decoded_weights(read(out)), decoded_weights(layers)
    for name, (w, b) in expected.items():
        if not (np.array_equal(decoded[name][0], w) and np.array_equal(decoded[name][1], b)):
            raise RuntimeError(f"{out}: {name} does not decode to the quantised weights")
    stages = r["stages"]
    if dataset is not None:
        stages["decoded file"] = _evaluate(eval_step, with_caffe_weights(r["params"], decoded), dataset, tc)
    report = size_report(layers)
    float32 = summary(cfg)
    return dict(
        file=str(out), file_bytes=size, format=report["huffman" if huffman else "fixed"]["format"], huffman=huffman,
        bits=bits, density=density, finetune_epochs=finetune_epochs, float32_bytes=float32["bytes"],
        params=float32["params"], fixed=report["fixed"], huffman_coded=report["huffman"], layers=report["layers"],
        stages=stages,
    )  # fmt: skip


# --------------------------------------------------------------------------- CLI glue (wired in sqzdse.cli)


def add_compress_arguments(p) -> None:
    """Flags of ``sqzdse compress``."""
    p.add_argument("run", nargs="?", metavar="RUN_DIR", help="a training run's workdir (sqzdse train --workdir)")
    p.add_argument(
        "--pretrained",
        metavar="PATH",
        help="compress the released v1.0 instead: 'released' (the bundled compressed_SqueezeNet.net) or a path to "
        "that file (no accuracy: ImageNet is not here)",
    )
    p.add_argument("-o", "--output", required=True, help="the compressed file to write")
    p.add_argument("--bits", type=int, default=DEFAULT_BITS, help=f"bits per shared-weight code, {BITS[0]}-{BITS[-1]} "
                   f"(default {DEFAULT_BITS}; the paper: 8 and 6)")  # fmt: skip
    p.add_argument("--density", default="released", help="'released' (the released model's per-layer pattern, "
                   "33%% for expand3x3; default) or one fraction kept for every layer, e.g. 0.4")  # fmt: skip
    p.add_argument("--huffman", action="store_true", help="Huffman-code codes and indices (both sizes are reported)")
    p.add_argument("--finetune-epochs", type=float, default=0.0, help="retrain after pruning (mask held) and after "
                   "weight sharing (centroids) for N epochs each (default 0)")  # fmt: skip
    p.add_argument("--finetune-lr", type=float, default=0.1, help="fine-tuning learning rate as a multiple of the "
                   "run's (default 0.1)")  # fmt: skip
    p.add_argument("--data-dir", help="tensorflow-datasets directory of the run's dataset")
    p.add_argument("--no-eval", action="store_true", help="skip the accuracy measurements")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while fine-tuning")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run_compress(args) -> int:
    """``sqzdse compress``: compress a run's checkpoint (or the released v1.0), write, print the report."""
    check_bits(args.bits)
    density = parse_density(args.density)
    if (args.run is None) == (args.pretrained is None):
        raise ValueError("give a RUN_DIR or --pretrained PATH (one of them)")
    kw = dict(bits=args.bits, density=density, finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr,
              progress=not args.no_progress)  # fmt: skip
    if args.pretrained:
        if args.finetune_epochs:
            raise ValueError("--finetune-epochs: the released v1.0 would need ImageNet; compress a training run")
        from flax import nnx

        from sqzdse.weights import load_pretrained

        cfg = C.squeezenet_v1_0()
        params = nnx.state(load_pretrained(args.pretrained), nnx.Param)
    else:
        from sqzdse import data as D
        from sqzdse.train import load_run

        cfg, tc, graphdef, params = load_run(args.run)
        kw.update(tc=tc, graphdef=graphdef)
        if not args.no_eval or args.finetune_epochs:
            kw["dataset"] = D.load(tc.dataset, data_dir=args.data_dir, val_size=tc.val_size)
    r = compress_to_file(args.output, cfg, params, huffman=args.huffman, **kw)
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        print(format_report(r))
    return 0


def _parts(e: dict) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in e["parts"].items())


def format_report(r: dict) -> str:
    """The per-layer table and totals of ``compress_to_file``'s report."""
    head = (f"{'layer':<18} {'OIHW':>14} {'weights':>9} {'kept':>9} {'density':>8} {'entries':>9} {'bits':>4} "
            f"{'bytes':>9} {'Huffman':>9}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for x in r["layers"]:
        lines.append(
            f"{x['name']:<18} {'x'.join(map(str, x['shape'])):>14} {x['weights']:>9,} {x['kept']:>9,} "
            f"{x['density']:>8.1%} {x['entries']:>9,} {x['bits']:>4} {x['bytes_fixed']:>9,} {x['bytes_huffman']:>9,}"
        )
    lines.append("-" * len(head))
    weights = sum(x["weights"] for x in r["layers"])
    kept = sum(x["kept"] for x in r["layers"])
    lines += [
        f"float32 model:   {r['float32_bytes']:>9,} bytes ({r['params']:,} parameters)",
        f"compressed:      {r['fixed']['bytes']:>9,} bytes fixed-width ({_parts(r['fixed'])})",
        f"                 {r['huffman_coded']['bytes']:>9,} bytes Huffman-coded ({_parts(r['huffman_coded'])})",
        f"density:         {kept / weights:.1%} of {weights:,} conv weights kept; {r['bits']}-bit shared weights",
        f"wrote {r['file']}: {r['file_bytes']:,} bytes on disk ({r['format']} format"
        f"{', Huffman' if r['huffman'] else ''}), {r['float32_bytes'] / r['file_bytes']:.1f}x smaller than float32",
    ]
    if r["stages"]:
        lines.append("accuracy           val top-1  test top-1")
        for stage, m in r["stages"].items():
            lines.append(f"  {stage:<22} {_pct(m['val_top1'])} {_pct(m['test_top1'])}")
    return "\n".join(lines)


def _pct(v) -> str:
    return f"{100 * v:8.2f}%" if v is not None else f"{'-':>9}"


def add_dsd_arguments(p) -> None:
    """``sqzdse train --dsd`` and its options."""
    g = p.add_argument_group("Dense-Sparse-Dense training (Han et al. 2017), within the --epochs budget")
    g.add_argument("--dsd", action="store_true", help="train dense, prune and retrain with the mask held, then "
                   "retrain dense; phases in WORKDIR/dense, /sparse, /redense")  # fmt: skip
    g.add_argument("--dsd-density", default=str(dsd.DSD_DENSITY), help=f"weights kept in the sparse phase: a fraction "
                   f"per layer or 'released' (default {dsd.DSD_DENSITY}, i.e. 30%% sparsity)")  # fmt: skip
    g.add_argument("--dsd-phases", default=",".join(map(str, dsd.DSD_PHASES)), help="fractions of --epochs for dense,"
                   f" sparse, re-dense (default {','.join(map(str, dsd.DSD_PHASES))})")  # fmt: skip
    g.add_argument("--dsd-redense-lr", type=float, default=dsd.DSD_REDENSE_LR, help="re-dense learning rate as a "
                   f"multiple of --lr (default {dsd.DSD_REDENSE_LR})")  # fmt: skip


def run_dsd(args, cfg, tc, dataset) -> int:
    """``sqzdse train --dsd``: the three phases, then each phase's accuracy."""
    try:
        phases = tuple(float(f) for f in args.dsd_phases.split(","))
    except ValueError:
        raise ValueError(f"--dsd-phases {args.dsd_phases!r}: three comma-separated fractions") from None
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
