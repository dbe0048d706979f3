"""The compressed-weights reader against the reference decode, and loading into the model."""

import hashlib
import json
import re

import numpy as np
import pytest
from conftest import DATA, REFERENCE
from flax import nnx

from sqzdse.config import squeezenet_v1_0, squeezenet_v1_1
from sqzdse.model import SqueezeNet
from sqzdse.weights import (
    WeightsFormatError,
    caffe_layer_shapes,
    load_caffe_weights,
    load_pretrained,
    read_compressed_layers,
    read_compressed_net,
    write_compressed_net,
)

REF = REFERENCE / "caffe" / "SqueezeNet_compressed"
NET = REF / "compressed_SqueezeNet.net"


def v1_0_name(compressed_name: str, name_map: dict) -> str:
    """Map a compressed-prototxt layer name to v1.0's with the JSON's fireN/... patterns."""
    m = re.fullmatch(r"fire(\d)/(.+)", compressed_name)
    if m:
        return name_map[f"fireN/{m.group(2)}"].replace("fireN", f"fire{m.group(1)}")
    return name_map.get(compressed_name, compressed_name)


@pytest.fixture(scope="module")
def fmt():
    return json.loads((REF / "compressed_SqueezeNet_format.json").read_text())


@pytest.fixture(scope="module")
def layers():
    return read_compressed_layers(NET)


@pytest.fixture(scope="module")
def weights():
    return read_compressed_net(NET)


def test_shapes_from_plan_match_the_json(fmt):
    shapes = caffe_layer_shapes(squeezenet_v1_0())
    expected = {
        v1_0_name(e["layer"], fmt["name_map_to_v1_0_prototxt"]): tuple(e["weight_shape_OIHW"]) for e in fmt["per_layer"]
    }
    assert list(shapes.items()) == list(expected.items())  # prototxt order too


def test_decoded_weights_equal_the_independent_decode(fmt, weights):
    # The hashes of an independent decoder's output (tests/data/released_decoded_sha256.json says how).
    ref = json.loads((DATA / "released_decoded_sha256.json").read_text())["layers"]
    names = {k[: -len("/w")] for k in ref if k.endswith("/w")}
    assert len(names) == len(weights) == 26
    for name in names:
        w, b = weights[v1_0_name(name, fmt["name_map_to_v1_0_prototxt"])]
        assert w.dtype == b.dtype == np.float32
        for key, a in ((f"{name}/w", w), (f"{name}/b", b)):
            assert list(a.shape) == ref[key]["shape"], key
            assert hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() == ref[key]["sha256"], key


def test_nonzero_fractions_match_the_json(fmt, weights):
    for e in fmt["per_layer"]:
        w, _ = weights[v1_0_name(e["layer"], fmt["name_map_to_v1_0_prototxt"])]
        assert round(float(np.count_nonzero(w)) / w.size, 4) == e["nonzero_weight_fraction"], e["layer"]
        assert len(np.unique(w[w != 0])) <= e["distinct_weight_values"]
    total = sum(np.count_nonzero(w) + np.count_nonzero(b) for w, b in weights.values())
    assert total == fmt["total_nonzero_params_incl_biases"]
    assert sum(w.size + b.size for w, b in weights.values()) == fmt["total_params_dense"]


def test_consumes_every_byte_and_writes_back_identically(layers, tmp_path):
    consumed = 4 * len(layers) + sum(
        4 * (layer.codebook.size + layer.bias.size) + layer.codes.size + (layer.gaps.size + 1) // 2 for layer in layers
    )
    assert consumed == NET.stat().st_size == 675_763
    assert all(layer.codebook[0] == 0.0 and layer.gaps.max() <= 15 for layer in layers)
    out = tmp_path / "copy.net"
    write_compressed_net(layers, out)
    assert out.read_bytes() == NET.read_bytes()


@pytest.mark.parametrize("keep", [50, 675_000, 675_762])
def test_truncated_file_is_a_clear_error(tmp_path, keep):
    bad = tmp_path / "short.net"
    bad.write_bytes(NET.read_bytes()[:keep])
    with pytest.raises(WeightsFormatError, match="short.net"):
        read_compressed_net(bad)


def test_bytes_left_over_is_a_clear_error(tmp_path):
    bad = tmp_path / "long.net"
    bad.write_bytes(NET.read_bytes() + b"\0\0\0")
    with pytest.raises(WeightsFormatError, match="3 bytes left over"):
        read_compressed_net(bad)


def test_gaps_past_the_layer_end_are_a_clear_error(layers, tmp_path):
    last = layers[-1]
    corrupt = type(last)(last.name, last.shape, last.codebook, last.bias, last.codes, np.full_like(last.gaps, 15))
    bad = tmp_path / "gaps.net"
    write_compressed_net([*layers[:-1], corrupt], bad)
    with pytest.raises(WeightsFormatError, match="conv10: the index gaps reach"):
        read_compressed_net(bad)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.net"):
        load_pretrained(tmp_path / "nope.net")


@pytest.fixture(scope="module")
def model():
    return load_pretrained(NET)


def test_load_puts_values_in_place(model, weights):
    w, b = weights["conv1"]
    k = np.asarray(model.conv1.kernel[...])
    assert k.shape == (7, 7, 3, 96)
    for h, x, i, o in [(0, 0, 0, 0), (6, 2, 1, 5), (3, 5, 2, 95)]:
        assert k[h, x, i, o] == w[o, i, h, x]
    np.testing.assert_array_equal(np.asarray(model.conv1.bias[...]), b)
    for name, conv in [("fire9/expand3x3", model.fire9.expand3x3), ("conv10", model.conv10)]:
        np.testing.assert_array_equal(
            np.asarray(conv.kernel[...]), weights[name][0].transpose(2, 3, 1, 0), err_msg=name
        )
        np.testing.assert_array_equal(np.asarray(conv.bias[...]), weights[name][1], err_msg=name)
    # Fire's concat is expand1x1 then expand3x3: the two must not be swapped.
    np.testing.assert_array_equal(np.asarray(model.fire2.expand1x1.bias[...]), weights["fire2/expand1x1"][1])


def test_mismatches_name_the_layer_and_change_nothing(model, weights):
    bad = dict(weights)
    bad["fire5/expand3x3"] = (np.zeros((128, 32, 1, 1), np.float32), weights["fire5/expand3x3"][1])
    bad["conv1"] = (np.zeros_like(weights["conv1"][0]), weights["conv1"][1])  # staged before the bad layer
    with pytest.raises(WeightsFormatError, match=r"fire5/expand3x3: weights have shape \(128, 32, 1, 1\)"):
        load_caffe_weights(model, bad)
    np.testing.assert_array_equal(np.asarray(model.conv1.kernel[...]), weights["conv1"][0].transpose(2, 3, 1, 0))
    bad = {k: v for k, v in weights.items() if k != "fire7/squeeze1x1"}
    with pytest.raises(WeightsFormatError, match="missing fire7/squeeze1x1"):
        load_caffe_weights(model, bad)
    with pytest.raises(WeightsFormatError, match="not in the model extra/conv"):
        load_caffe_weights(model, {**weights, "extra/conv": weights["conv10"]})
    with pytest.raises(WeightsFormatError, match="conv1: weights have shape"):
        load_caffe_weights(nnx.eval_shape(lambda: SqueezeNet(squeezenet_v1_1(), rngs=nnx.Rngs(0))), weights)
