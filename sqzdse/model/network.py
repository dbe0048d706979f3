"""SqueezeNet in Flax NNX: one Fire module, a network that loops over the layer plan, its seeded initialisation.

Layer names follow the Caffe prototxts (``conv1``, ``fire2/squeeze1x1`` ->
``fire2.squeeze1x1``, ..., ``conv10``) so released weights map one-to-one.
Inputs are NHWC; inside, activations are (C, H, W, N), the layout in which sqzdse.model.ops makes
every convolution one matrix product. Kernels are HWIO.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sqzdse.model import ops
from sqzdse.model.config import SqueezeNetConfig
from sqzdse.model.plan import FireSpec, layer_plan

# Caffe's "xavier" filler is uniform in +-sqrt(3 / fan_in) (filler.hpp, default FAN_IN).
xavier = jax.nn.initializers.variance_scaling(1.0, "fan_in", "uniform")
# conv10: weight_filler { type: "gaussian" mean: 0.0 std: 0.01 }.
gaussian_001 = jax.nn.initializers.normal(0.01)
# Caffe's "msra" filler (He et al.): gaussian with variance 2 / fan_in, for ReLU networks.
msra = jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal")
# (conv1 + Fire convolutions, conv10) per initialisation scheme. "msra" keeps Caffe's conv10: with
# He's larger scale there, the first updates push every class score below zero, and the ReLU after
# conv10 then blocks all gradient (measured: the loss sticks at ln(10) on Fashion-MNIST).
INITS = {"caffe": (xavier, gaussian_001), "msra": (msra, gaussian_001)}


def conv(cin, cout, kernel, *, stride=1, pad=0, init=xavier, dtype=None, rngs) -> nnx.Conv:
    return nnx.Conv(
        cin,
        cout,
        (kernel, kernel),
        strides=stride,
        padding=((pad, pad), (pad, pad)),
        kernel_init=init,
        dtype=dtype,
        rngs=rngs,
    )


class Fire(nnx.Module):
    """squeeze1x1 -> ReLU -> concat(expand1x1, expand3x3) -> ReLU, with an optional bypass and pool after."""

    def __init__(self, spec: FireSpec, *, init=xavier, dtype=None, rngs: nnx.Rngs):
        s = spec.squeeze
        kw = dict(init=init, dtype=dtype, rngs=rngs)
        self.squeeze1x1 = conv(spec.in_channels, s, 1, **kw)
        # pct3x3 = 0 or 1 leaves one branch with no filters: it is absent, not empty.
        self.expand1x1 = conv(s, spec.e1x1, 1, **kw) if spec.e1x1 else None
        self.expand3x3 = conv(s, spec.e3x3, 3, pad=1, **kw) if spec.e3x3 else None
        # Section 6 complex bypass: a 1x1 conv where in and out channels differ.
        self.bypass1x1 = conv(spec.in_channels, spec.out_channels, 1, **kw) if spec.bypass == "conv" else None
        self.identity = spec.bypass == "identity"
        self.pool = spec.pool_after

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (C, H, W, N), the layout sqzdse.model.ops computes convolutions in."""
        s = nnx.relu(ops.conv(self.squeeze1x1, x))
        # Caffe's concat order: expand1x1 first, then expand3x3.
        branches = [b for b in (self.expand1x1, self.expand3x3) if b is not None]
        bypass = self.bypass1x1 is not None or self.identity
        # Without a bypass the pool comes first (same values, a quarter of the elements; see ops.bias_relu_pool).
        ys, biases = [ops.conv(b, s, add_bias=False) for b in branches], [b.bias[...] for b in branches]
        y = ops.bias_relu_pool(ys, biases, self.pool and not bypass)
        if self.bypass1x1 is not None:
            y = y + ops.conv(self.bypass1x1, x)
        elif self.identity:
            y = y + x  # SqueezeNet-Residual: Eltwise SUM of the Fire's input and its concat
        return ops.max_pool(y) if self.pool and bypass else y


class SqueezeNet(nnx.Module):
    """conv1 -> Fire x 8 (pools per plan) -> dropout -> conv10 -> ReLU -> global average pool."""

    def __init__(self, cfg: SqueezeNetConfig, *, init: str = "caffe", dtype=None, rngs: nnx.Rngs):
        """init: "caffe" (the prototxts' fillers: xavier, gaussian 0.01 for conv10) or "msra" (He before conv10)."""
        if init not in INITS:
            raise ValueError(f"init={init!r}: must be one of {', '.join(INITS)}")
        self.cfg = cfg
        plan = layer_plan(cfg)
        self.plan = plan
        st = cfg.stem
        body, head = INITS[init]
        c = cfg.input_shape[2]
        self.conv1 = conv(c, st.filters, st.kernel, stride=st.stride, pad=st.pad, init=body, dtype=dtype, rngs=rngs)
        for spec in plan.fires:
            setattr(self, spec.name, Fire(spec, init=body, dtype=dtype, rngs=rngs))
        self.drop9 = nnx.Dropout(cfg.dropout)
        self.conv10 = conv(plan.conv10_in, plan.conv10_out, 1, pad=plan.conv10_pad, init=head, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool = False, dropout_rng: jax.Array | None = None) -> jax.Array:
        """Class scores (N, num_classes): the input to Caffe's SoftmaxWithLoss (after conv10's ReLU)."""
        x = ops.to_chwn(x)  # NHWC in; (C, H, W, N) inside, where every conv is one matmul (sqzdse.model.ops)
        y = ops.conv(self.conv1, x, add_bias=False)
        x = ops.bias_relu_pool([y], [self.conv1.bias[...]], self.plan.stem_pool)
        for spec in self.plan.fires:
            x = getattr(self, spec.name)(x)  # pools when spec.pool_after
        x = self.drop9(x, deterministic=not train, rngs=dropout_rng)
        x = nnx.relu(ops.conv(self.conv10, x))  # relu_conv10: ReLU follows conv10 too
        return jnp.mean(x, axis=(1, 2), dtype=jnp.float32).T  # pool10: global average -> (N, classes)


def initial_params(cfg: SqueezeNetConfig, seed: int = 0, *, init: str = "caffe", dtype=None):
    """(graphdef, params) of the model seeded with `seed` (init: an ``INITS`` scheme), in one compiled call.

    One compiled initialisation instead of ~50 eagerly compiled initializer calls: ~2 s instead of
    ~14 s per run here, at LLVM -O0 (the threefry code compiles slowly and runs once). The same random
    bits: the Xavier (uniform) parameters equal the eager ones bit for bit, the Gaussian (erfinv) within an ulp.
    """
    initialise, (graphdef, _) = initialiser(cfg, init, dtype)
    return graphdef, initialise(jax.random.key(seed))[1]  # the key nnx.Rngs(seed) would make


@functools.lru_cache(maxsize=16)
def initialiser(cfg: SqueezeNetConfig, init: str, dtype) -> tuple[Callable, Any]:
    """(the jitted key -> (graphdef, params), its abstract output): the model traced once per configuration, not
    again for every seed (``jax.eval_shape`` of the jitted function leaves the trace that its first call compiles)."""

    def split(key):
        return nnx.split(SqueezeNet(cfg, init=init, dtype=dtype, rngs=nnx.Rngs(key)), nnx.Param)

    initialise = jax.jit(split, compiler_options={"xla_backend_optimization_level": 0})
    return initialise, jax.eval_shape(initialise, jax.random.key(0))
