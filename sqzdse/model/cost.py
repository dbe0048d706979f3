"""What a configuration costs: parameters and bytes from the parameter tree, MACs from the plan.

Sizes count the leaves of the real (``nnx.eval_shape``-d, so free) parameter tree when given a model;
without one they sum ``sqzdse.model.plan.caffe_layer_shapes`` (kernel + bias per conv), the shapes the weight
files are mapped onto, so that ``model summary`` needs no JAX. The tests check both give the same count,
layer by layer, over many configurations. MACs are analytic from the layer
plan and cross-checked against XLA's cost analysis in the tests. Like XLA, they
count the multiply-accumulates that touch the input: taps that fall on zero
padding are not counted (v1.0's conv10, with pad 1 on a 1x1 kernel, computes
15x15 outputs of which only the inner 13x13 see data).
"""

from __future__ import annotations

import math

from sqzdse.errors import InputError
from sqzdse.model.config import SqueezeNetConfig
from sqzdse.model.plan import POOL_KERNEL, POOL_STRIDE, caffe_layer_shapes, conv_out, layer_plan, pool_out


def abstract_model(cfg: SqueezeNetConfig):
    """The model with shape-only parameters: no memory, no initialisation work."""

    from flax import nnx

    from sqzdse.model.network import SqueezeNet

    return nnx.eval_shape(lambda: SqueezeNet(cfg, rngs=nnx.Rngs(0)))


def param_counts(model) -> dict[str, int]:
    """Parameter count per top-level layer (conv1, fire2, ..., conv10), summed from the tree."""
    import jax
    from flax import nnx

    counts: dict[str, int] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param)):
        top = str(path[0].key)
        counts[top] = counts.get(top, 0) + math.prod(leaf.shape)
    return counts


def plan_param_counts(cfg: SqueezeNetConfig) -> dict[str, int]:
    """``param_counts`` of the model without building it: each conv's OIHW kernel and its O biases."""
    counts: dict[str, int] = {}
    for name, shape in caffe_layer_shapes(cfg).items():
        top = name.split("/")[0]
        counts[top] = counts.get(top, 0) + math.prod(shape) + shape[0]
    return counts


def model_bytes(params: int, bits: int = 32) -> int:
    """Storage of `params` weights at `bits` each, rounded up to whole bytes."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < 1:
        raise InputError(f"bits={bits!r}: the bits per weight must be a positive whole number (32 for float32)")
    return -(-params * bits // 8)


def _shape(hw, c) -> list[int]:
    return [hw[0], hw[1], c]


def _taps(n: int, kernel: int, stride: int, pad: int) -> int:
    """Kernel taps that land inside an input of size n, summed over the output positions."""
    outputs = conv_out(n, kernel, stride, pad)
    return sum(min(o * stride - pad + kernel, n) - max(o * stride - pad, 0) for o in range(outputs))


def conv_macs(hw, cin, cout, kernel, stride=1, pad=0) -> int:
    """Multiply-accumulates of one convolution on an hw input, padding taps excluded."""
    return _taps(hw[0], kernel, stride, pad) * _taps(hw[1], kernel, stride, pad) * cin * cout


def layer_table(cfg: SqueezeNetConfig, model=None) -> list[dict]:
    """Table 1 of the paper for any configuration: one row per layer, pools included.

    Each row: ``name``, ``output`` [H, W, C], ``filter`` (e.g. "7x7/2 (x96)"),
    ``s1x1``/``e1x1``/``e3x3`` for Fire modules, ``bypass``, ``params`` and ``macs``
    per image, and ``activations`` (output elements per image).
    """
    plan = layer_plan(cfg)
    counts = param_counts(model) if model is not None else plan_param_counts(cfg)
    st = cfg.stem
    rows = [dict(name="input image", output=list(plan.input_shape), params=0, macs=0, activations=0)]

    def add(name, hw, c, macs=0, **extra):
        rows.append(dict(name=name, output=_shape(hw, c), params=counts.get(name, 0), macs=macs, **extra))
        rows[-1]["activations"] = hw[0] * hw[1] * c

    def pool(name, hw, c):
        out = tuple(pool_out(n) for n in hw)
        add(name, out, c, filter=f"{POOL_KERNEL}x{POOL_KERNEL}/{POOL_STRIDE}")
        return out

    hw = plan.stem_hw
    cin = plan.input_shape[2]
    macs = conv_macs(plan.input_shape[:2], cin, st.filters, st.kernel, st.stride, st.pad)
    add("conv1", hw, st.filters, macs, filter=f"{st.kernel}x{st.kernel}/{st.stride} (x{st.filters})")
    if plan.stem_pool:
        hw = pool("maxpool1", hw, st.filters)
    for f in plan.fires:
        hw = f.hw
        pixels = hw[0] * hw[1]
        macs = pixels * f.squeeze * (f.in_channels + f.e1x1) + conv_macs(hw, f.squeeze, f.e3x3, 3, pad=1)
        if f.bypass == "conv":
            macs += pixels * f.in_channels * f.out_channels
        add(f.name, hw, f.out_channels, macs, s1x1=f.squeeze, e1x1=f.e1x1, e3x3=f.e3x3, bypass=f.bypass)
        # Backprop keeps the squeeze output too, besides the concat.
        rows[-1]["activations"] += pixels * f.squeeze
        if f.pool_after:
            hw = pool(f"maxpool{f.name[4:]}", hw, f.out_channels)
    hw10 = plan.conv10_hw
    macs = conv_macs(hw, plan.conv10_in, plan.conv10_out, 1, pad=plan.conv10_pad)
    add("conv10", hw10, plan.conv10_out, macs, filter=f"1x1/1 (x{plan.conv10_out})")
    add("avgpool10", (1, 1), plan.conv10_out, filter=f"{hw10[0]}x{hw10[1]}/1")
    return rows


def summary(cfg: SqueezeNetConfig, bits: int = 32) -> dict:
    """Totals and the per-layer table: ``params``, ``bytes`` (at `bits`), ``macs``, ``activation_bytes``."""
    rows = layer_table(cfg)
    params = sum(r["params"] for r in rows)
    activations = sum(r["activations"] for r in rows)
    return dict(
        params=params,
        bits=bits,
        bytes=model_bytes(params, bits),
        macs=sum(r["macs"] for r in rows),
        activations=activations,
        activation_bytes=activations * 4,  # float32, per image
        layers=rows,
    )
