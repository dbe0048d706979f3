"""Deep Compression (Han et al. 2016) of any sqzdse model: the pipeline, with training, and ``sqzdse compress``.

As it made the released ``compressed_SqueezeNet.net``:

1. **Pruning** (``sqzdse.compress.prune``): per layer, keep the largest-magnitude weights at a density per layer; by
   default the released model's pattern, optionally fine-tuned with the mask held (``sqzdse.train.loop``'s ``mask=``).
2. **Weight sharing** (``sqzdse.compress.codec``): per layer, 1-D k-means over the kept weights with 2**bits - 1
   centroids; code 0 is reserved for the value 0 (fillers). Optionally the centroids are fine-tuned: weights =
   codebook[codes], the gradient of a centroid is the sum of its weights' gradients (``finetune_centroids``;
   the paper's Section 3.3).
3. **Sparse storage** (``sqzdse.compress.codec``): 4-bit gaps between stored entries, zero fillers for longer ones.
4. **Huffman coding** (optional, ``sqzdse.compress.codec``) of the codes and the gaps. The codec's docstring gives the
   layouts of both files (the released ``.net`` and SQZC).

Sizes are always the bytes the encoder produced, and ``sqzdse compress`` reports the file's size on disk.
DSD is ``sqzdse.compress.dsd``. The flags of both are ``sqzdse.cli.compress``'s.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from sqzdse.compress.codec import (
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
from sqzdse.compress.prune import layer_densities, prune, prune_masks
from sqzdse.errors import InputError
from sqzdse.model import config as C
from sqzdse.train.recipe import update_counts

# JAX, Flax, sqzdse.train.loop and sqzdse.model.weights (which import them) are imported where used, so that
# building the
# CLI's parser, which reads DEFAULT_BITS, stays cheap.

DEFAULT_BITS = 6  # the paper's 0.47 MB point


def compressed_size(cfg: C.SqueezeNetConfig, params, bits: int = DEFAULT_BITS, density="released",
                    huffman: bool = True) -> int:  # fmt: skip
    """Bytes of the compressed file without any fine-tuning: prune, share weights, encode (a sweep's size)."""
    from sqzdse.model.weights import caffe_weights

    weights = caffe_weights(cfg, params)
    return len(encode(share_weights(weights, prune_masks(cfg, weights, density), bits), huffman))


# --------------------------------------------------------------------------- the pipeline with training


def _evaluate(eval_step, params, dataset, tc) -> dict:
    from sqzdse.train.loop import evaluate

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
    gradients (the gather's transpose). Optimizer, schedule and steps as `tc`'s (``sqzdse.train.loop.train_epoch``),
    over `epochs`. Codes, and so the pruning mask and the stored indices, do not change.
    """
    import jax
    import jax.numpy as jnp

    from sqzdse.model.weights import caffe_key
    from sqzdse.train import loop as T

    tc = dataclasses.replace(tc, epochs=float(epochs))
    per_epoch, total = update_counts(dataset, tc)
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


@dataclasses.dataclass(frozen=True)
class Compressed:
    """``compress_model``'s result: the shared-weight layers, the accuracy per stage, the densities kept."""

    layers: list  # codec.SharedLayer, one per conv, in the network's order
    stages: dict[str, dict]  # stage -> {"val_top1", "test_top1", ...}; empty without a dataset
    densities: dict[str, float]  # conv -> fraction of its weights kept
    params: dict  # the pruned (and fine-tuned) float parameters, biases included, the layers were shared from


@dataclasses.dataclass(frozen=True)
class CompressionReport:
    """``compress_to_file``'s report (``sqzdse compress --json`` prints it as a JSON object of these fields)."""

    file: str
    file_bytes: int  # the file on disk
    format: str  # the codec's format name
    huffman: bool
    bits: int
    density: object  # "released" or a fraction
    finetune_epochs: float
    float32_bytes: int  # the uncompressed model
    params: int
    fixed: dict  # {"bytes", "parts"} of the fixed-width coding
    huffman_coded: dict  # the same, Huffman-coded
    layers: list[dict]  # one per conv: name, shape, weights, kept, density, entries, bits, bytes_fixed, ...
    stages: dict[str, dict]  # stage -> accuracies, "decoded file" last; empty without a dataset

    def text(self) -> str:
        """The per-layer table and totals, as ``sqzdse compress`` prints them."""
        return format_report(self)


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
) -> Compressed:
    """Deep Compression of a model's parameters (``Compressed``).

    With a dataset (and the run's TrainConfig `tc` and `graphdef`), each stage's val/test accuracy is
    measured: trained, pruned, [pruned + fine-tuned], quantised, [quantised + centroids fine-tuned].
    finetune_epochs > 0 retrains after pruning (mask held) and after weight sharing (centroids), each for that
    many epochs at `finetune_lr` x the run's learning rate (Deep Compression retrains at a reduced rate).
    eval_step: the jitted ``sqzdse.train.loop.make_eval_step`` to measure with (made here when None), so that
    a caller measuring more stages compiles it once.
    """
    from sqzdse.model.weights import caffe_weights, with_caffe_weights
    from sqzdse.train import loop as T

    bits = check_bits(bits)
    if finetune_epochs < 0:
        raise InputError(f"finetune_epochs={finetune_epochs}: must be >= 0")
    if finetune_epochs and dataset is None:
        raise ValueError("fine-tuning needs the training run's dataset")
    if dataset is not None and (tc is None or graphdef is None):
        raise ValueError("measuring accuracy needs the run's TrainConfig and graphdef (sqzdse.train.loop.load_run)")
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
    return Compressed(layers=layers, stages=stages, densities=layer_densities(cfg, density), params=pruned)


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
) -> CompressionReport:
    """``compress_model``, write `out`, read it back; returns the report (sizes, per-layer table, accuracy).

    The accuracy "after" (stage "decoded file") is measured on the weights decoded from the file on disk,
    which must equal the quantised weights bit for bit (RuntimeError otherwise).
    """
    from sqzdse.model.cost import summary
    from sqzdse.model.weights import with_caffe_weights
    from sqzdse.train import loop as T

    eval_step = T.make_eval_step(graphdef) if dataset is not None and tc is not None else None
    r = compress_model(cfg, params, bits=bits, density=density, tc=tc, graphdef=graphdef, dataset=dataset,
                       finetune_epochs=finetune_epochs, finetune_lr=finetune_lr, progress=progress,
                       eval_step=eval_step)  # fmt: skip
    layers = r.layers
    size = write(layers, out, huffman)
    decoded, expected = decoded_weights(read(out)), decoded_weights(layers)
    for name, (w, b) in expected.items():
        if not (np.array_equal(decoded[name][0], w) and np.array_equal(decoded[name][1], b)):
            raise RuntimeError(f"{out}: {name} does not decode to the quantised weights")
    stages = r.stages
    if dataset is not None:
        stages["decoded file"] = _evaluate(eval_step, with_caffe_weights(r.params, decoded), dataset, tc)
    report = size_report(layers)
    float32 = summary(cfg)
    return CompressionReport(
        file=str(out), file_bytes=size, format=report["huffman" if huffman else "fixed"]["format"], huffman=huffman,
        bits=bits, density=density, finetune_epochs=finetune_epochs, float32_bytes=float32["bytes"],
        params=float32["params"], fixed=report["fixed"], huffman_coded=report["huffman"], layers=report["layers"],
        stages=stages,
    )  # fmt: skip


def _parts(e: dict) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in e["parts"].items())


def format_report(r: CompressionReport) -> str:
    """The per-layer table and totals of ``compress_to_file``'s report."""
    head = (f"{'layer':<18} {'OIHW':>14} {'weights':>9} {'kept':>9} {'density':>8} {'entries':>9} {'bits':>4} "
            f"{'bytes':>9} {'Huffman':>9}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for x in r.layers:
        lines.append(
            f"{x['name']:<18} {'x'.join(map(str, x['shape'])):>14} {x['weights']:>9,} {x['kept']:>9,} "
            f"{x['density']:>8.1%} {x['entries']:>9,} {x['bits']:>4} {x['bytes_fixed']:>9,} {x['bytes_huffman']:>9,}"
        )
    lines.append("-" * len(head))
    weights = sum(x["weights"] for x in r.layers)
    kept = sum(x["kept"] for x in r.layers)
    lines += [
        f"float32 model:   {r.float32_bytes:>9,} bytes ({r.params:,} parameters)",
        f"compressed:      {r.fixed['bytes']:>9,} bytes fixed-width ({_parts(r.fixed)})",
        f"                 {r.huffman_coded['bytes']:>9,} bytes Huffman-coded ({_parts(r.huffman_coded)})",
        f"density:         {kept / weights:.1%} of {weights:,} conv weights kept; {r.bits}-bit shared weights",
        f"wrote {r.file}: {r.file_bytes:,} bytes on disk ({r.format} format"
        f"{', Huffman' if r.huffman else ''}), {r.float32_bytes / r.file_bytes:.1f}x smaller than float32",
    ]
    if r.stages:
        lines.append("accuracy           val top-1  test top-1")
        for stage, m in r.stages.items():
            lines.append(f"  {stage:<22} {_pct(m['val_top1'])} {_pct(m['test_top1'])}")
    return "\n".join(lines)


def _pct(v) -> str:
    return f"{100 * v:8.2f}%" if v is not None else f"{'-':>9}"
