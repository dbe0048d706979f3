"""ONNX export: a trained run, a sweep trial or the released v1.0 as an ``.onnx`` file a deployment tool loads.

The model's own forward cannot be converted: its fast CPU ops (sqzdse.model.ops: im2col GEMMs in a CHWN layout,
layout constraints, optimization barriers, a custom-VJP max pool) have no ONNX lowering in jax2onnx.
:func:`lax_forward` is the same network on the same parameters in plain ``lax`` ops, NCHW as ONNX's Conv
and MaxPool are, walking the layer plan; jax2onnx turns it into Conv / Relu / MaxPool / Concat / Add /
ReduceMean nodes, and the tests check it against the model, in JAX and in ONNX Runtime.

Beside ``model.onnx`` goes ``model.onnx.json``: its inputs, outputs and preprocessing described in the
manner of the ONNX Model Zoo's cards (:func:`description`); the class names are also in the file's
metadata_props.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from sqzdse import __version__
from sqzdse.api import Classifier
from sqzdse.errors import InputError, MissingDependency
from sqzdse.model import config as C
from sqzdse.model.ops import ceil_pad
from sqzdse.model.plan import POOL_KERNEL, POOL_STRIDE, layer_plan

INPUT, SCORES, PROBS = "data", "scores", "probabilities"  # "data": the prototxts' input blob


def lax_forward(cfg: C.SqueezeNetConfig, weights: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Callable:
    """``f(x) -> (scores, probabilities)`` for NCHW x: the network of `cfg` in plain lax ops, inference mode.

    weights: {prototxt name: (OIHW kernel, bias)}, as ``sqzdse.model.weights.caffe_weights`` gives them.
    """
    plan = layer_plan(cfg)
    w = {name: (jnp.asarray(k, jnp.float32), jnp.asarray(b, jnp.float32)) for name, (k, b) in weights.items()}

    def conv(name, x, stride=1, pad=0):
        k, b = w[name]
        dims = ("NCHW", "OIHW", "NCHW")
        y = lax.conv_general_dilated(x, k, (stride, stride), ((pad, pad), (pad, pad)), dimension_numbers=dims)
        return y + b[:, None, None]

    def pool(x):
        # Caffe's ceil mode as -inf rows / columns at the bottom / right and a VALID pool. nnx.max_pool, not a 4-D
        # lax.reduce_window: jax2onnx lowers that to a MaxPool over four spatial axes, which ONNX Runtime refuses.
        _, _, h, wd = x.shape
        x = jnp.pad(x, ((0, 0), (0, 0), (0, ceil_pad(h)), (0, ceil_pad(wd))), constant_values=-jnp.inf)
        window, stride = (POOL_KERNEL, POOL_KERNEL), (POOL_STRIDE, POOL_STRIDE)
        y = nnx.max_pool(x.transpose(0, 2, 3, 1), window_shape=window, strides=stride, padding="VALID")
        return y.transpose(0, 3, 1, 2)

    def f(x):
        st = cfg.stem
        x = jax.nn.relu(conv("conv1", x, st.stride, st.pad))
        if plan.stem_pool:
            x = pool(x)
        for s in plan.fires:
            sq = jax.nn.relu(conv(f"{s.name}/squeeze1x1", x))
            # Caffe's concat order: expand1x1, then expand3x3; an empty branch is absent (sqzdse.model.network.Fire).
            branches = [jax.nn.relu(conv(f"{s.name}/expand1x1", sq))] if s.e1x1 else []
            branches += [jax.nn.relu(conv(f"{s.name}/expand3x3", sq, pad=1))] if s.e3x3 else []
            y = branches[0] if len(branches) == 1 else jnp.concatenate(branches, axis=1)
            if s.bypass == "identity":
                y = y + x
            elif s.bypass == "conv":
                y = y + conv(f"{s.name}/bypass1x1", x)
            x = pool(y) if s.pool_after else y
        scores = jnp.mean(jax.nn.relu(conv("conv10", x, pad=plan.conv10_pad)), axis=(2, 3))  # drop9: off
        return scores, jax.nn.softmax(scores, axis=-1)

    return f


def to_onnx(clf: Classifier):
    """The classifier as an ``onnx.ModelProto``: input ``data`` (batch, C, H, W), dynamic batch; metadata attached."""
    from sqzdse.model.weights import caffe_weights

    try:
        # jax2onnx imports every plugin it has; those of libraries newer than it knows log tracebacks while being
        # skipped (dm-pix's under JAX 0.10), none of which this network uses.
        logging.getLogger("jax2onnx.plugins.plugin_system").setLevel(logging.ERROR)
        from jax2onnx import to_onnx as convert
    except ImportError:
        raise MissingDependency("ONNX export needs jax2onnx: pip install 'sqzdse[onnx]'") from None
    h, w, c = clf.cfg.input_shape
    proto = convert(
        lax_forward(clf.cfg, caffe_weights(clf.cfg, clf.params)),
        [("batch", c, h, w)],
        model_name="squeezenet",
        input_names=[INPUT],
        output_names=[SCORES, PROBS],
    )
    desc = description(clf)
    proto.doc_string = f"SqueezeNet ({clf.source}) exported by sqzdse {__version__}; see metadata 'description'"
    meta = {
        "class_names": json.dumps(list(clf.labels) if clf.labels else None),
        "description": json.dumps(desc),
        "sqzdse_config": json.dumps(C.to_dict(clf.cfg)),
        "source": clf.source,
    }
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    return proto


def description(clf: Classifier) -> dict:
    """Inputs, outputs and preprocessing of the exported model, ModelHub-card style (written as ``.onnx.json``)."""
    cfg, prep = clf.cfg, clf.preprocessing
    h, w, c = cfg.input_shape
    if prep is None:
        how = {"note": "the training dataset is not known to sqzdse.data.pipeline: its normalisation is not recorded"}
    elif prep.family == "imagenet":
        how = {
            "steps": [
                "decode as RGB, 0-255",
                "resize to 256x256 (bilinear)",
                f"centre crop {h}x{w} (offset {(256 - h) // 2})",
                "RGB -> BGR",
                "subtract mean_bgr per channel (no scaling)",
                "HWC -> CHW, add the batch axis",
            ],
            "channel_order": "BGR",
            "mean_bgr": list(prep.mean),
            "std": list(prep.std),
        }
    else:
        order = "grayscale" if c == 1 else "RGB"
        how = {
            "steps": [
                f"decode as {order}, 0-255",
                f"resize to {h}x{w} if the image is not already that size",
                "(x - mean) / std per channel",
                "HWC -> CHW, add the batch axis",
            ],
            "channel_order": order,
            "mean": list(prep.mean),
            "std": list(prep.std),
        }
    labels_from = (
        "none: the dataset has no class names here"
        if not clf.labels
        else "ImageNet class names (tensorflow-datasets' IMAGENET_LABELS_LIST), by class id"
        if prep is not None and prep.dataset == "imagenet2012" and cfg.num_classes == 1000
        else f"tensorflow-datasets' label names of {prep.dataset}, by class id"
    )
    return {
        "model": "SqueezeNet (Iandola et al. 2016) in the sqzdse design space",
        "source": clf.source,
        "dataset": prep.dataset if prep else None,
        "config": C.to_dict(cfg),
        "inputs": [
            {
                "name": INPUT,
                "shape": ["batch", c, h, w],
                "dtype": "float32",
                "layout": "NCHW",
                **_value_range(prep),
            }
        ],
        "outputs": [
            {
                "name": SCORES,
                "shape": ["batch", cfg.num_classes],
                "dtype": "float32",
                "meaning": "class scores: conv10 -> ReLU -> global average pool (the input of Caffe's softmax)",
            },
            {"name": PROBS, "shape": ["batch", cfg.num_classes], "dtype": "float32", "meaning": "softmax of scores"},
        ],
        "preprocessing": how,
        "class_names_source": labels_from,
        "class_names": list(clf.labels) if clf.labels else None,
        "metadata_props": ["class_names", "description", "sqzdse_config", "source"],
        "exported_by": f"sqzdse {__version__}",
    }


def _value_range(prep) -> dict:
    """What the input's values are, from the recorded preprocessing: the text and each channel's range."""
    if prep is None:
        return {"value_range": "not recorded: normalise as the model's training data was"}
    lo = [round((0 - m) / s, 4) for m, s in zip(prep.mean, prep.std, strict=True)]
    hi = [round((255 - m) / s, 4) for m, s in zip(prep.mean, prep.std, strict=True)]
    if prep.family == "imagenet":
        text = "0-255 pixel values in BGR order minus mean_bgr (not scaled)"
    else:
        text = "(p - mean) / std of the 0-255 pixel values p, per channel (not 0-255, not 0-1)"
    return {"value_range": text, "min_per_channel": lo, "max_per_channel": hi}


def export(clf: Classifier, path: str | os.PathLike) -> dict:
    """Write ``path`` (an .onnx file) and the description beside it (``path + ".json"``); returns the description."""
    import onnx

    path = os.fspath(path)
    if not path.lower().endswith(".onnx"):
        raise InputError(f"-o {path}: the output must be an .onnx file")
    proto = to_onnx(clf)
    onnx.checker.check_model(proto)
    onnx.save(proto, path)  # one file: SqueezeNet's ~5 MB of weights need no external data
    desc = description(clf)
    with open(path + ".json", "w") as f:
        json.dump(desc, f, indent=1)
    return desc
