"""Caffe layers <-> the NNX model: weights by prototxt name, and the released Deep-Compression v1.0.

Caffe keeps a conv's weights as OIHW under its prototxt name (``fire2/squeeze1x1``); the model keeps
``fire2 -> squeeze1x1 -> kernel`` as HWIO (and the bias). The layer names and shapes come from the plan
(``sqzdse.model.plan.caffe_layer_shapes``); the files are ``sqzdse.compress.codec``'s.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sqzdse.compress.codec import WeightsFormatError, read_weights
from sqzdse.errors import InputError
from sqzdse.model.config import SqueezeNetConfig, squeezenet_v1_0
from sqzdse.model.cost import abstract_model
from sqzdse.model.network import SqueezeNet
from sqzdse.model.plan import caffe_layer_shapes
from sqzdse.reference import weights_path


def caffe_key(path) -> tuple[str, str]:
    """('fire2/squeeze1x1', 'kernel') for the parameter tree path fire2 -> squeeze1x1 -> kernel."""
    keys = [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]
    return "/".join(keys[:-1]), keys[-1]


def caffe_weights(cfg: SqueezeNetConfig, params) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Model parameters as {prototxt name: (OIHW weights, bias)}, float32 numpy, in prototxt order."""
    leaves = {caffe_key(p): np.asarray(x, np.float32) for p, x in jax.tree_util.tree_leaves_with_path(params)}
    out = {}
    for name, shape in caffe_layer_shapes(cfg).items():
        w = leaves[(name, "kernel")].transpose(3, 2, 0, 1)  # HWIO -> OIHW
        if w.shape != shape:
            raise InputError(f"{name}: parameters of shape {w.shape}, the configuration needs {shape}")
        out[name] = (w, leaves[(name, "bias")])
    return out


def with_caffe_weights(params, weights: Mapping[str, tuple[np.ndarray, np.ndarray]], *, every_layer: bool = False):
    """A copy of the parameter tree with the layers of `weights` ({name: (OIHW, bias)}) put in (kernels as HWIO).

    every_layer: `weights` must cover every conv of the tree. A layer the tree lacks, a layer missing, or a
    shape that does not fit is a WeightsFormatError that names the layer. Works on a shape-only tree too.
    """
    have = {caffe_key(p): np.shape(x) for p, x in jax.tree_util.tree_leaves_with_path(params)}
    convs = list(dict.fromkeys(name for name, _ in have))
    missing = [n for n in convs if n not in weights] if every_layer else []
    unknown = [n for n in weights if n not in convs]
    if missing or unknown:
        raise WeightsFormatError(
            "weights do not match the model's layers:"
            + (f" missing {', '.join(missing)};" if missing else "")
            + (f" not in the model {', '.join(unknown)};" if unknown else "")
        )
    staged = {}  # every layer checked before any is put in
    for name, (w, b) in weights.items():
        w, b = np.asarray(w), np.asarray(b)
        kh, kw, cin, cout = have[(name, "kernel")]
        if w.shape != (cout, cin, kh, kw):
            raise WeightsFormatError(
                f"{name}: weights have shape {w.shape}, the model needs OIHW {(cout, cin, kh, kw)}"
            )
        if have.get((name, "bias")) != b.shape:
            raise WeightsFormatError(f"{name}: bias has shape {b.shape}, the model needs {(cout,)}")
        staged[(name, "kernel")], staged[(name, "bias")] = w.transpose(2, 3, 1, 0), b  # OIHW -> HWIO

    def put(path, x):
        key = caffe_key(path)
        return jnp.asarray(staged[key], x.dtype) if key in staged else x

    return jax.tree_util.tree_map_with_path(put, params)


def param_mask(params, masks: Mapping[str, np.ndarray]):
    """The tree of booleans ``sqzdse.train.loop`` holds: kernels masked per `masks` (OIHW), biases never pruned."""

    def leaf(path, x):
        name, kind = caffe_key(path)
        if kind == "kernel" and name in masks:
            return jnp.asarray(np.asarray(masks[name]).transpose(2, 3, 1, 0))
        return jnp.ones(x.shape, bool)

    return jax.tree_util.tree_map_with_path(leaf, params)


def kernels(params) -> list[np.ndarray]:
    """Every conv kernel of a parameter tree, as numpy."""
    return [np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(params) if caffe_key(p)[1] == "kernel"]


def load_caffe_weights(model: SqueezeNet, weights: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> SqueezeNet:
    """Copy Caffe (OIHW weights, bias) per layer into the model in place (kernels become HWIO).

    Every conv of the model must be covered and every entry of ``weights`` used, with matching shapes;
    otherwise WeightsFormatError names the layer, and nothing is changed. Fills an ``nnx.eval_shape`` model too.
    """
    nnx.update(model, with_caffe_weights(nnx.state(model, nnx.Param), weights, every_layer=True))
    return model


def load_pretrained(path: str | os.PathLike = "released") -> SqueezeNet:
    """SqueezeNet v1.0 with the released Deep-Compression weights: ``released`` (the bundled file) or a path."""
    weights = read_weights(weights_path(path))
    # Every parameter is overwritten, so skip the random init (seconds of compiling on CPU).
    model = load_caffe_weights(abstract_model(squeezenet_v1_0()), weights)
    if any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(nnx.state(model))):
        raise RuntimeError("SqueezeNet has state that the Caffe weights do not cover")
    return model
