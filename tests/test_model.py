"""The Flax SqueezeNet against the released Caffe prototxts (derived_layer_table.json)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sqzdse import api
from sqzdse.api import init_model
from sqzdse.model import config as C
from sqzdse.model.cost import abstract_model, layer_table, param_counts
from sqzdse.model.ops import max_pool_ceil
from sqzdse.model.plan import layer_plan

OUR_ROW = {"pool10": "avgpool10"}  # Caffe blob -> our table row where the names differ
PROTOTXTS = {
    "v1.0": C.squeezenet_v1_0,
    "v1.1": C.squeezenet_v1_1,
    "residual_simple_bypass": C.squeezenet_simple_bypass,
}


@pytest.mark.parametrize(
    "preset, params",
    [
        (C.squeezenet_v1_0, 1_248_424),  # reference README / paper Table 1 total
        (C.squeezenet_v1_1, 1_235_496),
        (C.squeezenet_simple_bypass, 1_248_424),  # simple bypass adds no parameters
        # Four 1x1-conv bypasses (96->128, 128->256, 256->384, 384->512, with biases):
        # paper_numbers.json table3 derived_check.
        (C.squeezenet_complex_bypass, 1_589_672),
    ],
)
def test_preset_parameter_counts(preset, params):
    assert sum(param_counts(abstract_model(preset())).values()) == params


@pytest.mark.parametrize("version", sorted(PROTOTXTS))
@pytest.mark.parametrize("table, size", [("input_227_caffe", 227), ("input_224", 224)])
def test_layers_match_prototxt(caffe_layers, version, table, size):
    """Every conv's weight shape and parameter count, and every blob's output shape."""
    cfg = PROTOTXTS[version](input_shape=(size, size, 3))
    state = nnx.state(abstract_model(cfg), nnx.Param)
    table_1 = {}
    for layer in caffe_layers[version][table]:
        if layer["type"] == "conv":
            node = state
            for part in layer["name"].split("/"):
                node = node[part]
            o, i, kh, kw = layer["weight_shape_OIHW"]
            assert node["kernel"].shape == (kh, kw, i, o), layer["name"]
            assert node["kernel"].size + node["bias"].size == layer["params"]
        if "out_shape" in layer:
            c, h, w = layer["out_shape"]
            table_1[layer["name"]] = (h, w, c)
    rows = {r["name"]: tuple(r["output"]) for r in layer_table(cfg)}
    for blob, shape in table_1.items():
        ours = OUR_ROW.get(blob) or blob.replace("/concat", "").replace("pool", "maxpool")
        if ours in rows:
            assert rows[ours] == shape, blob
    assert {OUR_ROW.get(b) or b.replace("/concat", "").replace("pool", "maxpool") for b in table_1} >= set(rows) - {
        "input image"
    }


def test_table1_per_layer_parameters(paper_numbers):
    rows = {r[0]: r[11] for r in paper_numbers["table1"]["rows"] if len(r) > 11 and r[0] != "total"}
    counts = param_counts(abstract_model(C.squeezenet_v1_0()))
    assert counts == rows


@pytest.mark.parametrize("sweep, field", [("SR_sweep_pct0.5", "sr"), ("pct_sweep_SR0.5", "pct3x3")])
def test_paper_sweep_model_sizes(paper_numbers, sweep, field):
    """The model sizes of Figure 3's points (fig3_model_sizes_derived)."""
    points = paper_numbers["fig3_model_sizes_derived"][sweep]
    fixed = dict(sr=0.5) if field == "pct3x3" else {}
    for value, expected in points.items():
        cfg = C.squeezenet_v1_0(**{**fixed, field: float(value)})
        n = sum(param_counts(abstract_model(cfg)).values())
        assert n == expected["params"], (field, value)
        assert round(n * 4 / 2**20, 2) == expected["MiB"]


@pytest.mark.parametrize(
    "cfg, batch",
    [
        (C.squeezenet_v1_0(), 2),
        (C.squeezenet_v1_1(), 1),
        (C.squeezenet_small(), 3),
        (C.squeezenet_small(input_shape=(32, 32, 3), bypass="complex", num_classes=100), 2),
    ],
)
def test_output_shapes(cfg, batch):
    # A trace of the real forward, compiled for none of these networks (test_scores_are_rectified runs one).
    x = jax.ShapeDtypeStruct((batch, *cfg.input_shape), jnp.float32)
    y = nnx.eval_shape(lambda m, x: m(x), abstract_model(cfg), x)
    assert y.shape == (batch, cfg.num_classes) and y.dtype == jnp.float32


def test_scores_are_rectified():
    model = init_model(C.squeezenet_small())
    y = api.forward(model, jax.random.normal(jax.random.key(0), (2, 28, 28, 1)))  # as the dropout test's forward
    assert bool(jnp.all(y >= 0)) and bool(jnp.any(y > 0))  # Caffe's ReLU follows conv10


def test_simple_bypass_placement_as_residual_prototxt():
    # SqueezeNet-Residual: fire2+fire3 -> fire4, pool4+fire5 -> fire6, fire6+fire7 -> fire8, pool8+fire9.
    plan = layer_plan(C.squeezenet_simple_bypass())
    assert [f.name for f in plan.fires if f.bypass == "identity"] == ["fire3", "fire5", "fire7", "fire9"]
    assert all(f.bypass == "none" for f in plan.fires if f.name in ("fire2", "fire4", "fire6", "fire8"))
    plan = layer_plan(C.squeezenet_complex_bypass())
    assert [f.bypass for f in plan.fires] == ["conv", "identity"] * 4


def test_caffe_initialisation():
    model = init_model(C.squeezenet_v1_0())
    k = model.fire9.expand3x3.kernel[...]
    bound = np.sqrt(3.0 / (3 * 3 * 64))  # xavier: uniform +-sqrt(3 / fan_in)
    assert float(jnp.max(jnp.abs(k))) <= bound and float(jnp.max(jnp.abs(k))) > 0.95 * bound
    assert abs(float(jnp.std(model.conv10.kernel[...])) - 0.01) < 5e-4  # gaussian std 0.01
    assert all(float(jnp.abs(b).max()) == 0 for b in jax.tree.leaves(nnx.state(model, nnx.Param)) if b.ndim == 1)


def caffe_max_pool(x, k=3, s=2):
    """Reference: Caffe's pooling_layer.cpp (pad 0): out = ceil((n - k) / s) + 1, windows clipped."""
    n, h, w, c = x.shape
    oh, ow = -(-(h - k) // s) + 1, -(-(w - k) // s) + 1
    out = np.empty((n, oh, ow, c), x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = x[:, i * s : min(i * s + k, h), j * s : min(j * s + k, w)].max(axis=(1, 2))
    return out


@pytest.mark.parametrize("hw", [(111, 111), (28, 28), (7, 8), (4, 3)])
def test_ceil_mode_max_pool_matches_caffe(hw):
    x = np.random.default_rng(0).normal(size=(2, *hw, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(max_pool_ceil(jnp.asarray(x))), caffe_max_pool(x))


def test_fire_concat_order_is_expand1x1_then_expand3x3():
    cfg = C.squeezenet_small()
    model = init_model(cfg)
    fire = model.fire2
    x = jax.random.normal(jax.random.key(1), (64, 5, 5, 1))  # (C, H, W, N): the layout inside the network
    y1 = fire(x)
    fire.expand3x3.bias[...] = fire.expand3x3.bias[...] + 100.0
    y2 = fire(x)
    np.testing.assert_array_equal(y1[:64], y2[:64])  # expand1x1's 64 channels untouched
    assert bool(jnp.all(y2[64:] > y1[64:]))


def test_dropout_only_in_training_and_seeded():
    model = init_model(C.squeezenet_small())
    x = jax.random.normal(jax.random.key(0), (2, 28, 28, 1))
    key = jax.random.key(3)
    train = nnx.jit(lambda m, x, key: m(x, train=True, dropout_rng=key))
    a, b = train(model, x, key), train(model, x, key)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, api.forward(model, x))
    np.testing.assert_array_equal(api.forward(model, x), api.forward(model, x))
