"""Cost accounting: sizes from the parameter tree, MACs cross-checked against XLA."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from sqzdse.api import init_model
from sqzdse.model import config as C
from sqzdse.model import ops
from sqzdse.model.cost import model_bytes, summary
from sqzdse.model.network import SqueezeNet


def xla_conv_macs(cfg) -> int:
    """XLA's own count: HLO cost analysis of every convolution in the traced model, lowered alone.

    XLA counts 2 flops per multiply-accumulate that touches the input (taps on
    zero padding excluded); bias adds are separate ops, so a lone convolution's
    flops are exactly 2 x its MACs. The analysis of the lowered (not yet compiled)
    module is the same count, without minutes of compiling 227x227 convolutions.
    """
    graph, state = nnx.split(nnx.eval_shape(lambda: SqueezeNet(cfg, rngs=nnx.Rngs(0))))
    x = jax.ShapeDtypeStruct((1, *cfg.input_shape), jnp.float32)
    # The model computes convolutions as matmuls (sqzdse.model.ops); trace each layer as a lax convolution instead.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ops, "conv", lambda layer, x, add_bias=True: ops.to_chwn(layer(ops.to_chwn(x))))  # bias: not a conv
        jaxpr = jax.make_jaxpr(lambda s, x: nnx.merge(graph, s)(x))(state, x)
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name != "conv_general_dilated":
            continue
        lhs, rhs = (jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars)
        conv = jax.jit(lambda a, b, p=eqn.params: jax.lax.conv_general_dilated_p.bind(a, b, **p))
        total += int(round(conv.lower(lhs, rhs).cost_analysis()["flops"])) // 2
    assert total > 0
    return total


@pytest.mark.parametrize(
    "cfg",
    [
        C.squeezenet_v1_0(),  # conv10 pad 1: 15x15 outputs, 13x13 of them see data
        C.squeezenet_v1_1(),
        C.squeezenet_complex_bypass(),
        C.squeezenet_small(pct3x3=0.25, sr=0.5),
        C.squeezenet_small(input_shape=(32, 32, 3), freq=3, incr_e=64),
    ],
)
def test_macs_equal_xla_cost_analysis(cfg):
    assert summary(cfg)["macs"] == xla_conv_macs(cfg)


def test_whole_forward_flops_are_dominated_by_the_counted_macs():
    # The whole forward adds bias, ReLU, pooling and concat work on top (lowered: compiled counts within 0.1 %).
    cfg = C.squeezenet_v1_0()
    graph, state = nnx.split(nnx.eval_shape(lambda: SqueezeNet(cfg, rngs=nnx.Rngs(0))))
    f = jax.jit(lambda s, x: nnx.merge(graph, s)(x))
    flops = f.lower(state, jax.ShapeDtypeStruct((1, *cfg.input_shape), jnp.float32)).cost_analysis()["flops"]
    # + ~7%: the matmul convolutions (sqzdse.model.ops) also multiply the zero padding im2col reads.
    assert 1.0 < flops / (2 * summary(cfg)["macs"]) < 1.1


def test_sizes_come_from_the_parameter_tree():
    cfg = C.squeezenet_small()
    model = init_model(cfg)  # compiled in one call (test_model's dropout test builds the same), not eagerly
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    s = summary(cfg)
    assert s["params"] == sum(x.size for x in leaves)
    assert s["bytes"] == sum(x.nbytes for x in leaves)  # float32
    assert summary(cfg, bits=8)["bytes"] == s["params"]
    assert model_bytes(3, bits=6) == 3  # 18 bits round up to 3 bytes


def test_v1_0_size_is_the_papers_4_8_mb():
    s = summary(C.squeezenet_v1_0())
    assert s["params"] == 1_248_424 and s["bytes"] == 4 * 1_248_424
    assert round(s["bytes"] / 2**20, 1) == 4.8  # Table 2: "4.8MB"


def test_activation_memory_counts_every_layer_output():
    s = summary(C.squeezenet_small())
    by_name = {r["name"]: r for r in s["layers"]}
    # conv1: 28x28x64 outputs; fire2: its 28x28... no: pooled to 14x14 -> 14*14*(16 + 128).
    assert by_name["conv1"]["activations"] == 28 * 28 * 64
    assert by_name["fire2"]["activations"] == 14 * 14 * (16 + 128)
    assert s["activation_bytes"] == 4 * sum(r["activations"] for r in s["layers"])


@pytest.mark.parametrize("preset", sorted(C.PRESETS))
def test_plan_counts_equal_the_parameter_tree(preset):
    """`model summary` counts from the plan's conv shapes; that must be the tree, layer by layer."""
    import dataclasses

    from sqzdse.model.cost import abstract_model, param_counts, plan_param_counts

    base = C.from_preset(preset)
    for change in ({}, dict(sr=0.75, pct3x3=0.0), dict(pct3x3=1.0, bypass="complex"), dict(base_e=64, incr_e=32,
                   freq=3, bypass="simple", num_classes=10), dict(input_shape=(32, 32, 1))):  # fmt: skip
        cfg = dataclasses.replace(base, **change)
        assert plan_param_counts(cfg) == param_counts(abstract_model(cfg)), (preset, change)
