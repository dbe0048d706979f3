"""Magnitude pruning (Deep Compression's first step, DSD's sparse phase): densities per layer and masks.

Per layer, the largest-magnitude weights are kept (``magnitude_masks``) at a density per layer: by default the
released compressed v1.0's pattern (``released_densities``), or one density for every layer. ``prune`` does it
to a model's parameter tree and returns the mask tree that ``sqzdse.train.loop`` holds while fine-tuning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from sqzdse.errors import InputError
from sqzdse.model import config as C
from sqzdse.model.plan import caffe_layer_shapes

# Stored non-zero weights per layer of the released compressed_SqueezeNet.net (tests recount them from
# the bundled reference data). Over the layer sizes this is the released density pattern: ~99 % for conv1 and the
# 1x1 convolutions, 50 % for fire6-8's expand1x1 and fire7/9's squeeze1x1, 33 % for expand3x3 (30 % in
# fire8-9), 20 % for conv10; 33.6 % of all weights.
RELEASED_NONZERO = {
    "conv1": 13902,
    "fire2/squeeze1x1": 1528, "fire2/expand1x1": 1020, "fire2/expand3x3": 3039,
    "fire3/squeeze1x1": 2038, "fire3/expand1x1": 1023, "fire3/expand3x3": 3039,
    "fire4/squeeze1x1": 4085, "fire4/expand1x1": 4071, "fire4/expand3x3": 12156,
    "fire5/squeeze1x1": 8160, "fire5/expand1x1": 4067, "fire5/expand3x3": 12147,
    "fire6/squeeze1x1": 12161, "fire6/expand1x1": 4602, "fire6/expand3x3": 27325,
    "fire7/squeeze1x1": 9205, "fire7/expand1x1": 9129, "fire7/expand3x3": 27336,
    "fire8/squeeze1x1": 24388, "fire8/expand1x1": 8187, "fire8/expand3x3": 44144,
    "fire9/squeeze1x1": 16370, "fire9/expand1x1": 16303, "fire9/expand3x3": 44173,
    "conv10": 102323,
}  # fmt: skip


def released_densities(cfg: C.SqueezeNetConfig) -> dict[str, float]:
    """Per-layer density of the released compressed v1.0, for any configuration, by role.

    A layer takes the density of v1.0's layer of the same name (conv1, fireN/squeeze1x1, fireN/expand1x1,
    fireN/expand3x3, conv10: every configuration has fire2..fire9), whatever its width; a complex bypass's 1x1
    conv, which v1.0 lacks, takes its Fire's expand1x1 density (both are 1x1 convs to the Fire's output).
    """
    v10 = caffe_layer_shapes(C.squeezenet_v1_0())
    ref = {name: RELEASED_NONZERO[name] / math.prod(shape) for name, shape in v10.items()}
    return {name: ref[name.replace("bypass1x1", "expand1x1")] for name in caffe_layer_shapes(cfg)}


def parse_density(value) -> str | float:
    """'released', or a density in (0, 1] (strings from the command line are parsed)."""
    if value == "released":
        return value
    try:
        d = float(value)
    except (TypeError, ValueError):
        d = math.nan
    if isinstance(value, bool) or not 0 < d <= 1:
        raise InputError(f"density={value!r}: must be 'released' or a fraction of weights kept in (0, 1]")
    return d


def layer_densities(cfg: C.SqueezeNetConfig, density="released") -> dict[str, float]:
    """Density per conv layer (prototxt names): the released pattern, or one density for every layer."""
    d = parse_density(density)
    return released_densities(cfg) if d == "released" else dict.fromkeys(caffe_layer_shapes(cfg), d)


def magnitude_masks(weights: Mapping[str, np.ndarray], densities: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Per layer, True for the density x size (rounded half up) weights of largest magnitude (at least one).

    Ties go to the earlier flat index; weights that are exactly 0 are never kept (they would cost an entry).
    """
    masks = {}
    for name, w in weights.items():
        if name not in densities:
            raise InputError(f"{name}: no density given for this layer")
        a = np.abs(np.asarray(w, np.float32)).reshape(-1)
        k = min(a.size, max(1, C.round_half_up(densities[name] * a.size)))
        m = np.zeros(a.size, bool)
        m[np.argsort(-a, kind="stable")[:k]] = True
        masks[name] = (m & (a != 0)).reshape(np.shape(w))
    return masks


def prune_masks(cfg: C.SqueezeNetConfig, weights: Mapping[str, tuple], density="released") -> dict[str, np.ndarray]:
    """OIHW masks of Caffe weights ({name: (OIHW, bias)}): magnitude pruning of every conv to `density`."""
    return magnitude_masks({n: w for n, (w, _) in weights.items()}, layer_densities(cfg, density))


def prune(cfg: C.SqueezeNetConfig, params, density="released"):
    """(pruned params, OIHW masks, param mask tree): magnitude pruning of every conv to `density`."""
    # sqzdse.model.weights imports JAX: here, not above, so that the CLI's parser (which reads densities) stays cheap.
    from sqzdse.model.weights import caffe_weights, param_mask, with_caffe_weights

    weights = caffe_weights(cfg, params)
    masks = prune_masks(cfg, weights, density)
    pruned = with_caffe_weights(params, {n: (w * masks[n], b) for n, (w, b) in weights.items()})
    return pruned, masks, param_mask(params, masks)
