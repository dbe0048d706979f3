"""The codec: the released .net read against the reference decode and written back byte for byte, SQZC,
exact decoding, k-means, relative indices, Huffman; and that it needs no JAX."""

import hashlib
import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
from builders import kernels, random_weights, tiny
from conftest import DATA, NET

from sqzdse.compress import codec as K
from sqzdse.compress import prune as P
from sqzdse.model.config import squeezenet_v1_0
from sqzdse.model.plan import caffe_layer_shapes


def v1_0_name(compressed_name: str, name_map: dict) -> str:
    """Map a compressed-prototxt layer name to v1.0's with the JSON's fireN/... patterns."""
    m = re.fullmatch(r"fire(\d)/(.+)", compressed_name)
    if m:
        return name_map[f"fireN/{m.group(2)}"].replace("fireN", f"fire{m.group(1)}")
    return name_map.get(compressed_name, compressed_name)


@pytest.fixture(scope="module")
def fmt():
    return json.loads((NET.parent / "compressed_SqueezeNet_format.json").read_text())


@pytest.fixture(scope="module")
def layers():
    return K.read(NET)


# --------------------------------------------------------------------------- the released .net


def test_shapes_from_plan_match_the_json(fmt):
    shapes = caffe_layer_shapes(squeezenet_v1_0())
    expected = {
        v1_0_name(e["layer"], fmt["name_map_to_v1_0_prototxt"]): tuple(e["weight_shape_OIHW"]) for e in fmt["per_layer"]
    }
    assert list(shapes.items()) == list(expected.items())  # prototxt order too


def test_decoded_weights_equal_the_independent_decode(fmt, released):
    # The hashes of an independent decoder's output (tests/data/released_decoded_sha256.json says how).
    ref = json.loads((DATA / "released_decoded_sha256.json").read_text())["layers"]
    names = {k[: -len("/w")] for k in ref if k.endswith("/w")}
    assert len(names) == len(released) == 26
    for name in names:
        w, b = released[v1_0_name(name, fmt["name_map_to_v1_0_prototxt"])]
        assert w.dtype == b.dtype == np.float32
        for key, a in ((f"{name}/w", w), (f"{name}/b", b)):
            assert list(a.shape) == ref[key]["shape"], key
            assert hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() == ref[key]["sha256"], key


def test_nonzero_fractions_match_the_json(fmt, released):
    for e in fmt["per_layer"]:
        w, _ = released[v1_0_name(e["layer"], fmt["name_map_to_v1_0_prototxt"])]
        assert round(float(np.count_nonzero(w)) / w.size, 4) == e["nonzero_weight_fraction"], e["layer"]
        assert len(np.unique(w[w != 0])) <= e["distinct_weight_values"]
    total = sum(np.count_nonzero(w) + np.count_nonzero(b) for w, b in released.values())
    assert total == fmt["total_nonzero_params_incl_biases"]
    assert sum(w.size + b.size for w, b in released.values()) == fmt["total_params_dense"]


def test_consumes_every_byte_and_writes_back_identically(layers, tmp_path):
    consumed = 4 * len(layers) + sum(
        4 * (layer.codebook.size + layer.bias.size) + layer.codes.size + (layer.gaps.size + 1) // 2 for layer in layers
    )
    assert consumed == NET.stat().st_size == 675_763
    assert all(layer.codebook[0] == 0.0 and layer.gaps.max() <= 15 for layer in layers)
    out = tmp_path / "copy.net"
    K.write(layers, out)
    assert out.read_bytes() == NET.read_bytes()


@pytest.mark.parametrize("keep", [50, 675_000, 675_762])
def test_truncated_file_is_a_clear_error(tmp_path, keep):
    bad = tmp_path / "short.net"
    bad.write_bytes(NET.read_bytes()[:keep])
    with pytest.raises(K.WeightsFormatError, match="short.net"):
        K.read_weights(bad)


def test_bytes_left_over_is_a_clear_error(tmp_path):
    bad = tmp_path / "long.net"
    bad.write_bytes(NET.read_bytes() + b"\0\0\0")
    with pytest.raises(K.WeightsFormatError, match="3 bytes left over"):
        K.read_weights(bad)


def test_gaps_past_the_layer_end_are_a_clear_error(layers, tmp_path):
    last = layers[-1]
    corrupt = type(last)(last.name, last.shape, last.codebook, last.bias, last.codes, np.full_like(last.gaps, 15))
    bad = tmp_path / "gaps.net"
    K.write([*layers[:-1], corrupt], bad)
    with pytest.raises(K.WeightsFormatError, match="conv10: the index gaps reach"):
        K.read_weights(bad)


def test_released_file_reencodes_byte_identically(tmp_path):
    layers = K.read(NET)
    assert K.file_format(layers, huffman=False) == "net"
    assert K.encode(layers) == NET.read_bytes()
    for layer in layers:  # the released relative index, fillers included, is ours
        codes, gaps = K.relative_index(np.flatnonzero(layer.decode()), layer.codes[layer.codes != 0])
        np.testing.assert_array_equal(codes, layer.codes, err_msg=layer.name)
        np.testing.assert_array_equal(gaps, layer.gaps, err_msg=layer.name)
    out = tmp_path / "released.sqz"
    assert K.write(layers, out, huffman=True) == out.stat().st_size < NET.stat().st_size
    for a, b in zip(layers, K.read(out), strict=True):
        np.testing.assert_array_equal(a.decode(), b.decode())
    assert K.size_report(layers)["fixed"]["bytes"] == NET.stat().st_size


# --------------------------------------------------------------------------- exactness, k-means, index, Huffman


@pytest.mark.parametrize("bits, huffman, density", [(4, False, "released"), (4, True, 0.5), (8, True, 0.25)])
def test_decoded_equals_the_quantised_weights_exactly(tmp_path, bits, huffman, density):
    cfg = tiny()
    weights = random_weights(cfg)
    masks = P.magnitude_masks(kernels(weights), P.layer_densities(cfg, density))
    layers = K.share_weights(weights, masks, bits)
    for layer in layers:
        # The quantised weights, computed independently: each kept weight becomes its nearest centroid.
        w, m = weights[layer.name][0], masks[layer.name]
        centroids = layer.codebook[1:]
        assert centroids.size == 2**bits - 1 and layer.codebook[0] == 0 and (np.diff(centroids) > 0).all()
        expected = np.zeros_like(w)
        expected[m] = centroids[np.argmin(np.abs(w[m][:, None] - centroids[None, :]), axis=1)]
        np.testing.assert_array_equal(layer.decode(), expected, err_msg=layer.name)
    out = tmp_path / "tiny.sqz"
    size = K.write(layers, out, huffman=huffman)
    assert size == out.stat().st_size == K.size_report(layers)["huffman" if huffman else "fixed"]["bytes"]
    assert out.read_bytes()[:4] == b"SQZC"
    back = K.read(out)
    assert [(x.name, x.shape) for x in back] == list(caffe_layer_shapes(cfg).items())
    for a, b in zip(layers, back, strict=True):
        np.testing.assert_array_equal(b.decode(), a.decode(), err_msg=a.name)
        np.testing.assert_array_equal(b.bias, weights[a.name][1])


def test_kmeans_is_deterministic_and_starts_linear():
    v = np.random.default_rng(1).laplace(size=4000).astype(np.float32)
    c1, l1 = K.kmeans_1d(v, 15)
    c2, l2 = K.kmeans_1d(v, 15)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(l1, l2)
    c0, _ = K.kmeans_1d(v, 15, iters=0)  # the linear initialisation, unchanged
    np.testing.assert_allclose(c0, np.linspace(v.min(), v.max(), 15), rtol=1e-6)
    assert c1.min() >= v.min() and c1.max() <= v.max() and (np.diff(c1) > 0).all()
    assert np.abs(v - c1[l1]).mean() < np.abs(v - c0[_nearest(v, c0)]).mean()  # Lloyd improves on it


def _nearest(v, c):
    return np.argmin(np.abs(v[:, None] - c[None, :]), axis=1)


def test_relative_index_bridges_long_gaps_with_fillers():
    codes, gaps = K.relative_index([0, 15, 16, 50, 83], [1, 2, 3, 4, 5])
    # 33 zeros before 50: fillers at 32 and 48, then gap 1; 32 zeros before 83: fillers at 66 and 82, gap 0.
    assert codes.tolist() == [1, 2, 3, 0, 0, 4, 0, 0, 5]
    assert gaps.tolist() == [0, 14, 0, 15, 15, 1, 15, 15, 0]
    pos = np.cumsum(gaps.astype(int) + 1) - 1
    assert pos[codes != 0].tolist() == [0, 15, 16, 50, 83]
    with pytest.raises(ValueError, match="increasing"):
        K.relative_index([3, 3], [1, 1])


def test_huffman_round_trip_and_code_properties():
    rng = np.random.default_rng(0)
    symbols = np.minimum(rng.geometric(0.35, 20_000) - 1, 15)
    counts = np.bincount(symbols, minlength=16)
    lengths = K.huffman_lengths(counts)
    assert sum(2.0 ** -lengths[lengths > 0]) == 1.0  # a complete prefix code (Kraft equality)
    data = K.huffman_encode(symbols, lengths)
    assert len(data) == math.ceil(int(lengths[symbols].sum()) / 8)
    p = counts[counts > 0] / counts.sum()
    assert lengths[symbols].mean() < -(p * np.log2(p)).sum() + 1  # within a bit of the entropy
    np.testing.assert_array_equal(K.huffman_decode(data, lengths, symbols.size), symbols)
    # Canonical: the code depends on the lengths only, so the lengths are all a decoder needs.
    codes = K.canonical_codes(lengths)
    words = {format(int(codes[s]), f"0{int(lengths[s])}b") for s in np.flatnonzero(lengths)}
    assert not any(a != b and b.startswith(a) for a in words for b in words)
    # One symbol, none, and counts that would need codes longer than 15 bits.
    one = K.huffman_lengths(np.bincount([7] * 9, minlength=16))
    assert one[7] == 1 and one.sum() == 1
    np.testing.assert_array_equal(K.huffman_decode(K.huffman_encode([7] * 9, one), one, 9), [7] * 9)
    assert K.huffman_encode([], one) == b"" and K.huffman_lengths(np.zeros(4, int)).sum() == 0
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    long = K.huffman_lengths(fib)
    assert long.max() == K.MAX_CODE_LENGTH and sum(2.0**-long) <= 1
    sym = np.repeat(np.arange(30), 3)
    np.testing.assert_array_equal(K.huffman_decode(K.huffman_encode(sym, long), long, sym.size), sym)


def test_bit_packing_round_trips():
    v = np.random.default_rng(0).integers(0, 64, 1001).astype(np.uint8)
    packed = K.pack_bits(v, 6)
    assert len(packed) == math.ceil(1001 * 6 / 8)
    np.testing.assert_array_equal(K.unpack_bits(packed, 6, 1001), v)
    assert K.pack_bits([1, 2, 3], 4) == bytes([0x21, 0x03])  # low nibble first, as the released file


def test_importing_codec_loads_only_numpy():
    # The codec reads and writes files anywhere: of what is not the standard library, only numpy (and sqzdse).
    code = (
        "import sys; before = set(sys.modules); import sqzdse.compress.codec; "
        "print(sorted({m.split('.')[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "['numpy', 'sqzdse']\n"
