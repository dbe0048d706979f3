"""Deep Compression (Han et al. 2016) and Dense-Sparse-Dense training (Han et al. 2017) for any sqzdse model.

Deep Compression, as it made the released ``compressed_SqueezeNet.net``:

1. **Pruning**: per layer, keep the largest-magnitude weights (``magnitude_masks``) at a density per layer;
   by default the released model's pattern (``released_densities``), optionally fine-tuned with the mask
   held (``sqzdse.train``'s ``mask=``).
2. **Weight sharing**: per layer, 1-D k-means over the kept weights with 2**bits - 1 centroids from a linear
   initialisation (``kmeans_1d``); code 0 is reserved for the value 0 (fillers). Optionally the centroids are
   fine-tuned: weights = codebook[codes], the gradient of a centroid is the sum of its weights' gradients
   (``finetune_centroids``; the paper's Section 3.3).
3. **Sparse storage**: each stored entry holds its distance from the previous one in 4 bits; a longer gap
   gets zero-valued filler entries every 16 positions (``relative_index``, the released layout).
4. **Huffman coding** (optional) of the codes and of the gaps, per layer (canonical codes, ``huffman_*``).

Files (``encode`` / ``read``), little-endian:

- **The released ``.net`` layout** (``sqzdse.weights``), written whenever it can hold the result: 8 bits,
  no Huffman, and exactly v1.0's layers. ``sqzdse predict --weights`` reads such a file.
- **SQZC** otherwise: ``b"SQZC"``, version u8 (1), flags u8 (bit 0: Huffman), layer count u16; then per
  layer: name length u8 + name (UTF-8, the prototxt name, e.g. ``fire2/squeeze1x1``), the OIHW shape
  4 x u32, bits u8, entries u32 (stored entries, fillers included), the codebook 2**bits x f32
  (codebook[0] = 0), the bias O x f32, then either fixed-width codes (``bits`` bits each, least significant
  bit first) and 4-bit gaps (low nibble first, as the ``.net``), or, with Huffman: the code lengths of the
  2**bits code symbols and of the 16 gap symbols (4 bits each, at most 15), the two streams' byte counts
  (2 x u32), and the two canonical-Huffman bit streams (most significant bit first). Shapes and bits are in
  the file, so it decodes without the model's configuration.

Sizes are always the bytes the encoder produced, and ``sqzdse compress`` reports the file's size on disk.

DSD (``train_dsd``, ``sqzdse train --dsd``) trains dense, prunes by magnitude and retrains with the mask held,
then lets the pruned weights back (from 0) and retrains at a lower learning rate: three ``train_and_evaluate``
runs on the pruning above.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import json
import math
import os
import struct
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sqzdse import config as C

if TYPE_CHECKING:
    from sqzdse.weights import CompressedLayer

# JAX, Flax and sqzdse.weights (which imports them) are imported where used, so that building the CLI's
# parser, which reads this module's flags, stays cheap (as sqzdse.plots does with matplotlib).

BITS = tuple(range(2, 9))  # codes are stored in at most one byte; code 0 is the zero filler
DEFAULT_BITS = 6  # the paper's 0.47 MB point
MAX_CODE_LENGTH = 15  # Huffman code lengths are stored in 4 bits
MAGIC = b"SQZC"
VERSION = 1
HUFFMAN_FLAG = 1

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

# DSD defaults (Han et al. 2017): 30 % sparsity per layer in the sparse phase, the low end of the paper's
# 30-50 % for CNNs; half the epochs dense, a quarter sparse, a quarter re-dense at a tenth of the learning rate.
DSD_DENSITY = 0.7
DSD_PHASES = (0.5, 0.25, 0.25)
DSD_REDENSE_LR = 0.1
PHASE_NAMES = ("dense", "sparse", "redense")


# --------------------------------------------------------------------------- densities and masks


def released_densities(cfg: C.SqueezeNetConfig) -> dict[str, float]:
    """Per-layer density of the released compressed v1.0, for any configuration, by role.

    A layer takes the density of v1.0's layer of the same name (conv1, fireN/squeeze1x1, fireN/expand1x1,
    fireN/expand3x3, conv10: every configuration has fire2..fire9), whatever its width; a complex bypass's 1x1
    conv, which v1.0 lacks, takes its Fire's expand1x1 density (both are 1x1 convs to the Fire's output).
    """
    from sqzdse.weights import caffe_layer_shapes

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
        raise ValueError(f"density={value!r}: must be 'released' or a fraction of weights kept in (0, 1]")
    return d


def layer_densities(cfg: C.SqueezeNetConfig, density="released") -> dict[str, float]:
    """Density per conv layer (prototxt names): the released pattern, or one density for every layer."""
    from sqzdse.weights import caffe_layer_shapes

    d = parse_density(density)
    return released_densities(cfg) if d == "released" else dict.fromkeys(caffe_layer_shapes(cfg), d)


def check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or bits not in BITS:
        raise ValueError(
            f"bits={bits!r}: must be an integer from {BITS[0]} to {BITS[-1]} (codes fit a byte; code 0 is the zero "
            "filler, so 2**bits - 1 shared weights per layer)"
        )
    return int(bits)


def magnitude_masks(weights: Mapping[str, np.ndarray], densities: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Per layer, True for the density x size (rounded half up) weights of largest magnitude (at least one).

    Ties go to the earlier flat index; weights that are exactly 0 are never kept (they would cost an entry).
    """
    masks = {}
    for name, w in weights.items():
        if name not in densities:
            raise ValueError(f"{name}: no density given for this layer")
        a = np.abs(np.asarray(w, np.float32)).reshape(-1)
        k = min(a.size, max(1, C.round_half_up(densities[name] * a.size)))
        m = np.zeros(a.size, bool)
        m[np.argsort(-a, kind="stable")[:k]] = True
        masks[name] = (m & (a != 0)).reshape(np.shape(w))
    return masks


# --------------------------------------------------------------------------- model parameters <-> Caffe layers


def _leaf_key(path) -> tuple[str, str]:
    """('fire2/squeeze1x1', 'kernel') for the parameter tree path fire2 -> squeeze1x1 -> kernel."""
    import jax

    keys = [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]
    return "/".join(keys[:-1]), keys[-1]


def caffe_weights(cfg: C.SqueezeNetConfig, params) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Model parameters as {prototxt name: (OIHW weights, bias)}, float32 numpy, in prototxt order."""
    import jax

    from sqzdse.weights import caffe_layer_shapes

    leaves = {_leaf_key(p): np.asarray(x, np.float32) for p, x in jax.tree_util.tree_leaves_with_path(params)}
    out = {}
    for name, shape in caffe_layer_shapes(cfg).items():
        w = leaves[(name, "kernel")].transpose(3, 2, 0, 1)  # HWIO -> OIHW
        if w.shape != shape:
            raise ValueError(f"{name}: parameters of shape {w.shape}, the configuration needs {shape}")
        out[name] = (w, leaves[(name, "bias")])
    return out


def with_caffe_weights(params, weights: Mapping[str, tuple[np.ndarray, np.ndarray]]):
    """A copy of the parameter tree with the layers of `weights` ({name: (OIHW, bias)}) replaced."""
    import jax
    import jax.numpy as jnp

    def put(path, x):
        name, kind = _leaf_key(path)
        if name not in weights:
            return x
        w, b = weights[name]
        v = np.asarray(w).transpose(2, 3, 1, 0) if kind == "kernel" else np.asarray(b)
        if v.shape != x.shape:
            raise ValueError(f"{name}/{kind}: shape {v.shape}, the model has {x.shape}")
        return jnp.asarray(v, x.dtype)

    return jax.tree_util.tree_map_with_path(put, params)


def param_mask(params, masks: Mapping[str, np.ndarray]):
    """The tree of booleans ``sqzdse.train`` holds: kernels masked per `masks` (OIHW), biases never pruned."""
    import jax
    import jax.numpy as jnp

    def leaf(path, x):
        name, kind = _leaf_key(path)
        if kind == "kernel" and name in masks:
            return jnp.asarray(np.asarray(masks[name]).transpose(2, 3, 1, 0))
        return jnp.ones(x.shape, bool)

    return jax.tree_util.tree_map_with_path(leaf, params)


def prune(cfg: C.SqueezeNetConfig, params, density="released"):
    """(pruned params, OIHW masks, param mask tree): magnitude pruning of every conv to `density`."""
    weights = caffe_weights(cfg, params)
    masks = magnitude_masks({n: w for n, (w, _) in weights.items()}, layer_densities(cfg, density))
    pruned = with_caffe_weights(params, {n: (w * masks[n], b) for n, (w, b) in weights.items()})
    return pruned, masks, param_mask(params, masks)


# --------------------------------------------------------------------------- weight sharing, sparse index


def kmeans_1d(values, k: int, iters: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(k float32 centroids, ascending; the nearest centroid's index per value): Lloyd's algorithm in 1-D.

    Deep Compression's linear initialisation: centroids evenly spaced over [min, max], which keeps the rare
    large weights represented. Deterministic; an empty cluster keeps its centroid.
    """
    v = np.asarray(values, np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("kmeans_1d: no values")
    c = np.linspace(v.min(), v.max(), k)
    for _ in range(iters):
        labels = np.searchsorted((c[1:] + c[:-1]) / 2, v)  # in 1-D the centroids stay sorted
        counts = np.bincount(labels, minlength=k)
        new = np.where(counts > 0, np.bincount(labels, v, minlength=k) / np.maximum(counts, 1), c)
        if np.array_equal(new, c):
            break
        c = new
    c32 = c.astype(np.float32)
    # Assign against the stored float32 centroids, so every weight gets the nearest value the file holds.
    v32 = np.asarray(values, np.float32).reshape(-1)
    i = np.clip(np.searchsorted(c32, v32), 1, k - 1) if k > 1 else np.zeros(v.size, np.int64)
    if k > 1:
        i = np.where(np.abs(v32 - c32[i - 1]) <= np.abs(c32[i] - v32), i - 1, i)
    return c32, i.astype(np.int64)


def relative_index(positions, codes) -> tuple[np.ndarray, np.ndarray]:
    """(codes, gaps) of the sparse layout: each entry's gap to the previous one (minus 1) in 4 bits.

    positions: ascending flat indices of the stored weights; codes: their codes (>= 1). A gap longer than 15
    is bridged by filler entries (code 0, gap 15) every 16 positions, as in the released file.
    """
    from sqzdse.weights import MAX_GAP

    pos = np.asarray(positions, np.int64)
    codes = np.asarray(codes, np.uint8)
    prev = np.concatenate([[-1], pos[:-1]])
    between = pos - prev - 1
    if (between < 0).any():
        raise ValueError("relative_index: positions must be strictly increasing and >= 0")
    fillers = between // (MAX_GAP + 1)
    at = np.arange(pos.size) + np.cumsum(fillers)  # where each real entry lands among all entries
    n = pos.size + int(fillers.sum())
    out_codes = np.zeros(n, np.uint8)
    out_gaps = np.full(n, MAX_GAP, np.uint8)
    out_codes[at] = codes
    out_gaps[at] = between % (MAX_GAP + 1)
    return out_codes, out_gaps


def share_weights(
    weights: Mapping[str, tuple[np.ndarray, np.ndarray]], masks: Mapping[str, np.ndarray], bits: int
) -> list[CompressedLayer]:
    """k-means weight sharing of each layer's kept weights, stored sparsely: one CompressedLayer per layer."""
    from sqzdse.weights import CompressedLayer

    bits = check_bits(bits)
    layers = []
    for name, (w, b) in weights.items():
        w = np.asarray(w, np.float32)
        pos = np.flatnonzero(np.asarray(masks[name]).reshape(-1))
        if pos.size == 0:
            raise ValueError(f"{name}: the mask keeps no weight")
        centroids, labels = kmeans_1d(w.reshape(-1)[pos], 2**bits - 1)
        codes, gaps = relative_index(pos, labels + 1)
        codebook = np.concatenate([[0.0], centroids]).astype(np.float32)
        layers.append(CompressedLayer(name, tuple(w.shape), codebook, np.asarray(b, np.float32), codes, gaps))
    return layers


def layer_bits(layer: CompressedLayer) -> int:
    from sqzdse.weights import WeightsFormatError

    bits = int(layer.codebook.size).bit_length() - 1
    if layer.codebook.size != 1 << bits:
        raise WeightsFormatError(f"{layer.name}: a codebook of {layer.codebook.size} entries is not 2**bits")
    return bits


def dense_codes(layer: CompressedLayer) -> np.ndarray:
    """The code of every weight (0 where pruned), OIHW: ``codebook[dense_codes] == decode()``."""
    c = np.zeros(math.prod(layer.shape), np.int32)
    c[layer.positions] = layer.codes
    return c.reshape(layer.shape)


def decoded_weights(layers: list[CompressedLayer]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {layer.name: (layer.decode(), layer.bias) for layer in layers}


# --------------------------------------------------------------------------- bits and Huffman


def pack_bits(values, bits: int) -> bytes:
    """Fixed-width values, least significant bit first (4 bits: low nibble first, as the released file)."""
    v = np.asarray(values, np.uint8).reshape(-1, 1)
    return np.packbits(np.unpackbits(v, axis=1, bitorder="little")[:, :bits], bitorder="little").tobytes()


def unpack_bits(data: bytes, bits: int, n: int) -> np.ndarray:
    flat = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[: n * bits]
    return np.packbits(flat.reshape(n, bits), axis=1, bitorder="little").reshape(n)


def huffman_lengths(counts, max_length: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Huffman code length per symbol (0 for an absent symbol; 1 when only one occurs).

    Deterministic (ties by symbol order). Should a code exceed `max_length` bits, the counts are halved
    (rounding up) until it fits: rarely needed, and costs little.
    """
    counts = np.asarray(counts, np.int64)
    lengths = np.zeros(counts.size, np.int64)
    used = np.flatnonzero(counts > 0)
    if used.size <= 1:
        lengths[used] = 1
        return lengths
    if used.size > 1 << max_length:
        raise ValueError(f"huffman_lengths: {used.size} symbols do not fit codes of {max_length} bits")
    c = counts[used]
    while True:
        depth = np.zeros(c.size, np.int64)
        heap = [(int(w), i, (i,)) for i, w in enumerate(c)]
        heapq.heapify(heap)
        ids = itertools.count(c.size)
        while len(heap) > 1:
            w1, _, a = heapq.heappop(heap)
            w2, _, b = heapq.heappop(heap)
            depth[list(a + b)] += 1
            heapq.heappush(heap, (w1 + w2, next(ids), a + b))
        if depth.max() <= max_length:
            lengths[used] = depth
            return lengths
        c = (c + 1) // 2


def canonical_codes(lengths) -> np.ndarray:
    """Canonical Huffman codes: by (length, symbol), each code the previous plus one, shifted to its length."""
    lengths = np.asarray(lengths, np.int64)
    codes = np.zeros(lengths.size, np.int64)
    code, prev = 0, 0
    for s in np.lexsort((np.arange(lengths.size), lengths)):
        n = int(lengths[s])
        if n == 0:
            continue
        code <<= n - prev
        codes[s], code, prev = code, code + 1, n
    return codes


def huffman_encode(symbols, lengths) -> bytes:
    """The symbols' canonical codes, most significant bit first, the last byte padded with 0 bits."""
    sym = np.asarray(symbols, np.int64).reshape(-1)
    lengths = np.asarray(lengths, np.int64)
    if sym.size == 0:
        return b""
    n = lengths[sym]
    if (n == 0).any():
        raise ValueError("huffman_encode: a symbol has no code (count it in the lengths)")
    c = canonical_codes(lengths)[sym]
    entry = np.repeat(np.arange(sym.size), n)
    j = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)  # bit index within its code
    return np.packbits(((c[entry] >> (n[entry] - 1 - j)) & 1).astype(np.uint8)).tobytes()


def huffman_decode(data: bytes, lengths, n: int) -> np.ndarray:
    """`n` symbols from a stream of :func:`huffman_encode`, by a table lookup on the next max-length bits."""
    from sqzdse.weights import WeightsFormatError

    lengths = np.asarray(lengths, np.int64)
    if n == 0:
        return np.zeros(0, np.int64)
    width = int(lengths.max())
    if width == 0:
        raise WeightsFormatError("Huffman stream: the code-length table is empty")
    codes = canonical_codes(lengths)
    table_sym = np.zeros(1 << width, np.int64)
    table_len = np.zeros(1 << width, np.int64)
    for s in np.flatnonzero(lengths):
        shift = width - int(lengths[s])
        table_sym[codes[s] << shift : (codes[s] + 1) << shift] = s
        table_len[codes[s] << shift : (codes[s] + 1) << shift] = lengths[s]
    bits = np.unpackbits(np.frombuffer(data, np.uint8)).astype(np.int64)
    total = bits.size
    bits = np.concatenate([bits, np.zeros(width, np.int64)])
    window = np.zeros(total, np.int64)
    for j in range(width):
        window = (window << 1) | bits[j : j + total]
    syms, lens = table_sym[window].tolist(), table_len[window].tolist()
    out, p = [], 0
    try:
        for _ in range(n):
            out.append(syms[p])
            if lens[p] == 0:
                raise IndexError
            p += lens[p]
    except IndexError:
        raise WeightsFormatError(f"Huffman stream: {len(data)} bytes do not hold {n} symbols") from None
    if p > total:
        raise WeightsFormatError(f"Huffman stream: {len(data)} bytes do not hold {n} symbols")
    return np.asarray(out, np.int64)


# --------------------------------------------------------------------------- files


def file_format(layers: list[CompressedLayer], huffman: bool) -> str:
    """'net' (the released layout) for 8-bit, fixed-width, v1.0-shaped layers; 'sqzc' otherwise."""
    from sqzdse.weights import caffe_layer_shapes

    v10 = list(caffe_layer_shapes(C.squeezenet_v1_0()).items())
    if not huffman and all(layer_bits(x) == 8 for x in layers) and [(x.name, x.shape) for x in layers] == v10:
        return "net"
    return "sqzc"


def _layer_parts(layer: CompressedLayer, huffman: bool, fmt: str) -> dict[str, bytes]:
    """The bytes of one layer by part: header, codebook, bias, [Huffman tables], codes, index."""
    from sqzdse.weights import GAP_BITS, MAX_GAP, WeightsFormatError

    bits = layer_bits(layer)
    codes, gaps = np.asarray(layer.codes, np.uint8), np.asarray(layer.gaps, np.uint8)
    if gaps.size != codes.size or (gaps > MAX_GAP).any() or (codes >= 1 << bits).any():
        raise WeightsFormatError(f"{layer.name}: need one gap in 0..{MAX_GAP} and one {bits}-bit code per entry")
    if layer.bias.size != layer.shape[0] or len(layer.shape) != 4:
        raise WeightsFormatError(f"{layer.name}: an OIHW shape and {layer.shape[0]} biases needed")
    name = layer.name.encode()
    parts = {"header": b""}
    if fmt == "sqzc":
        parts["header"] = struct.pack("<B", len(name)) + name + struct.pack("<4IBI", *layer.shape, bits, codes.size)
    parts["codebook"] = np.asarray(layer.codebook, "<f4").tobytes()
    parts["bias"] = np.asarray(layer.bias, "<f4").tobytes()
    if huffman:
        code_len = huffman_lengths(np.bincount(codes, minlength=1 << bits))
        gap_len = huffman_lengths(np.bincount(gaps, minlength=MAX_GAP + 1))
        parts["codes"] = huffman_encode(codes, code_len)
        parts["index"] = huffman_encode(gaps, gap_len)
        streams = struct.pack("<2I", len(parts["codes"]), len(parts["index"]))
        parts["tables"] = pack_bits(code_len, 4) + pack_bits(gap_len, 4) + streams
    else:
        parts["codes"] = pack_bits(codes, bits)
        parts["index"] = pack_bits(gaps, GAP_BITS)
    return parts


PART_ORDER = ("header", "codebook", "bias", "tables", "codes", "index")


def encode_parts(layers: list[CompressedLayer], huffman: bool = False) -> tuple[str, bytes, list[dict]]:
    """(format, file header, per layer {part: bytes}); ``encode`` joins them."""
    fmt = file_format(layers, huffman)
    if fmt == "net":  # sqzdse.weights: 26 x u32 entry counts, then the layers
        head = np.array([x.codes.size for x in layers], "<u4").tobytes()
    else:
        head = MAGIC + struct.pack("<BBH", VERSION, HUFFMAN_FLAG if huffman else 0, len(layers))
    return fmt, head, [_layer_parts(x, huffman, fmt) for x in layers]


def encode(layers: list[CompressedLayer], huffman: bool = False) -> bytes:
    """The file's bytes (format: ``file_format``)."""
    _, head, parts = encode_parts(layers, huffman)
    return head + b"".join(p[k] for p in parts for k in PART_ORDER if k in p)


def write(layers: list[CompressedLayer], path: str | os.PathLike, huffman: bool = False) -> int:
    """Write the file; returns its size on disk."""
    Path(path).write_bytes(encode(layers, huffman))
    return os.path.getsize(path)


def read(path: str | os.PathLike) -> list[CompressedLayer]:
    """The layers of a SQZC file or of a released-layout ``.net`` (v1.0's shapes)."""
    from sqzdse.weights import GAP_BITS, MAX_GAP, CompressedLayer, WeightsFormatError, read_compressed_layers

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"compressed weights file not found: {path}")
    data = path.read_bytes()
    if data[:4] != MAGIC:
        return read_compressed_layers(path)
    off = 0

    def take(n: int, what: str) -> bytes:
        nonlocal off
        if off + n > len(data):
            raise WeightsFormatError(f"{path}: truncated in {what} (byte {off} of {len(data)}, {n} more needed)")
        off += n
        return data[off - n : off]

    _, version, flags, n_layers = struct.unpack("<4sBBH", take(8, "the header"))
    if version != VERSION:
        raise WeightsFormatError(f"{path}: SQZC version {version}; this sqzdse reads version {VERSION}")
    huffman = bool(flags & HUFFMAN_FLAG)
    layers = []
    for i in range(n_layers):
        name = take(take(1, f"layer {i}")[0], f"layer {i}'s name").decode()
        *shape, bits, n = struct.unpack("<4IBI", take(21, name))
        if bits not in BITS:
            raise WeightsFormatError(f"{path}: {name}: {bits} bits per code")
        codebook = np.frombuffer(take(4 << bits, name), "<f4").astype(np.float32)
        bias = np.frombuffer(take(4 * shape[0], name), "<f4").astype(np.float32)
        if huffman:
            code_len = unpack_bits(take(1 << (bits - 1), name), 4, 1 << bits)
            gap_len = unpack_bits(take(8, name), 4, MAX_GAP + 1)
            n_codes, n_gaps = struct.unpack("<2I", take(8, name))
            codes = huffman_decode(take(n_codes, name), code_len, n).astype(np.uint8)
            gaps = huffman_decode(take(n_gaps, name), gap_len, n).astype(np.uint8)
        else:
            codes = unpack_bits(take(-(-n * bits // 8), name), bits, n)
            gaps = unpack_bits(take(-(-n // 2), name), GAP_BITS, n)
        layer = CompressedLayer(name, tuple(shape), codebook, bias, codes, gaps)
        layer.decode()  # validates the positions
        layers.append(layer)
    if off != len(data):
        raise WeightsFormatError(f"{path}: {len(data) - off} bytes left over after {n_layers} layers")
    return layers


def size_report(layers: list[CompressedLayer]) -> dict:
    """Bytes of both encodings, per layer and per part, from the encoder's own output.

    Returns {"fixed": {...}, "huffman": {...}, "layers": [...]}: per encoding ``format``, ``bytes`` (the file
    size) and ``parts`` (header, codebook, bias, tables, codes, index; file header counted in header); per
    layer name, shape, weights, kept, entries (fillers included), density, bits, bytes_fixed, bytes_huffman.
    """
    out: dict = {"layers": []}
    per_layer = {}
    for key, huffman in (("fixed", False), ("huffman", True)):
        fmt, head, parts = encode_parts(layers, huffman)
        totals = {k: sum(len(p.get(k, b"")) for p in parts) for k in PART_ORDER}
        totals["header"] += len(head)
        out[key] = dict(format=fmt, bytes=sum(totals.values()), parts={k: v for k, v in totals.items() if v})
        per_layer[key] = [sum(len(v) for v in p.values()) for p in parts]
    for i, x in enumerate(layers):
        kept = int(np.count_nonzero(x.codes))
        out["layers"].append(dict(
            name=x.name, shape=list(x.shape), weights=math.prod(x.shape), kept=kept, entries=int(x.codes.size),
            density=kept / math.prod(x.shape), bits=layer_bits(x), bytes_fixed=per_layer["fixed"][i],
            bytes_huffman=per_layer["huffman"][i],
        ))  # fmt: skip
    return out


def compressed_size(cfg: C.SqueezeNetConfig, params, bits: int = DEFAULT_BITS, density="released",
                    huffman: bool = True) -> int:  # fmt: skip
    """Bytes of the compressed file without any fine-tuning: prune, share weights, encode (a sweep's size)."""
    weights = caffe_weights(cfg, params)
    masks = magnitude_masks({n: w for n, (w, _) in weights.items()}, layer_densities(cfg, density))
    return len(encode(share_weights(weights, masks, bits), huffman))


# --------------------------------------------------------------------------- released weights


def load_released(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The released compressed v1.0 as {v1.0 prototxt name: (OIHW, bias)}: ``released`` (the bundled
    ``compressed_SqueezeNet.net``) or a path to that file."""
    from sqzdse.reference import weights_path
    from sqzdse.weights import read_compressed_net

    return read_compressed_net(weights_path(path))


# --------------------------------------------------------------------------- the pipeline with training


def _evaluate(eval_step, params, dataset, tc) -> dict:
    from sqzdse.train import evaluate

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
    gradients (the gather's transpose). Optimizer and schedule as `tc` (``sqzdse.train``), over `epochs`.
    Codes, and so the pruning mask and the stored indices, do not change.
    """
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from sqzdse import train as T

    per_update = tc.batch_size * tc.iter_size
    per_epoch = dataset.steps_per_epoch("train", per_update, limit=tc.train_limit)
    if per_epoch < 1:
        raise C.ConfigError(f"batch_size x iter_size = {per_update}: larger than the training split")
    total = max(1, math.ceil(epochs * per_epoch))
    theta = {x.name: {"codebook": jnp.asarray(x.codebook), "bias": jnp.asarray(x.bias)} for x in layers}
    codes = {x.name: jnp.asarray(dense_codes(x).transpose(2, 3, 1, 0)) for x in layers}  # OIHW -> HWIO
    treedef = jax.tree.structure(params)
    keys = [_leaf_key(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    tx = T._optimizer(tc)
    opt_state = tx.init(theta)
    hp = dict(lr=tc.lr, warmup_steps=round(tc.warmup_epochs * per_epoch), total_steps=total, power=tc.power)
    hp = {k: jnp.float32(v) for k, v in hp.items()}

    def build(theta, codes):
        # Code 0 is the pruned weight: its value is pinned to 0, so it gets no gradient.
        leaves = [theta[n]["codebook"].at[0].set(0.0)[codes[n]] if kind == "kernel" else theta[n]["bias"]
                  for n, kind in keys]  # fmt: skip
        return jax.tree.unflatten(treedef, leaves)

    def loss_fn(theta, codes, x, y, key):
        logits = nnx.merge(graphdef, build(theta, codes))(x, train=True, dropout_rng=key)
        return T._metrics(logits, y)["loss"].mean()

    grad_fn = jax.jit(jax.value_and_grad(loss_fn))

    @jax.jit
    def update(theta, opt_state, grads, step):
        lr = T.learning_rate(step, hp, tc.schedule)
        opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr})
        updates, opt_state = tx.update(grads, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state

    seed_key = jax.random.key(tc.seed)
    step = 0
    with T._progress(total, 0, progress) as bar:
        for epoch in range(math.ceil(total / per_epoch)):
            batches = dataset.batches("train", per_update, seed=tc.seed, epoch=epoch, train=True, limit=tc.train_limit)
            for x, y in itertools.islice(batches, min(per_epoch, total - step)):
                x = x.reshape(tc.iter_size, tc.batch_size, *x.shape[1:])
                y = y.reshape(tc.iter_size, tc.batch_size)
                grads, loss = None, 0.0
                for i in range(tc.iter_size):
                    key = jax.random.fold_in(jax.random.fold_in(seed_key, step), i)
                    value, g = grad_fn(theta, codes, x[i], y[i], key)
                    loss += float(value) / tc.iter_size
                    grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
                if not math.isfinite(loss):
                    raise T.Diverged(f"centroid fine-tuning: the loss became {loss} at update {step + 1}")
                grads = jax.tree.map(lambda g: g / tc.iter_size, grads)
                theta, opt_state = update(theta, opt_state, grads, step)
                step += 1
                if bar is not None:
                    bar.set_postfix(stage="centroids", loss=f"{loss:.3f}")
                    bar.update(1)
    out = []
    for x in layers:
        cb = np.asarray(theta[x.name]["codebook"], np.float32).copy()
        cb[0] = 0.0
        out.append(dataclasses.replace(x, codebook=cb, bias=np.asarray(theta[x.name]["bias"], np.float32)))
    return out


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
) -> dict:
    """Deep Compression of a model's parameters; returns {"layers", "stages", "densities", "params"}.

    With a dataset (and the run's TrainConfig `tc` and `graphdef`), each stage's val/test accuracy is
    measured: trained, pruned, [pruned + fine-tuned], quantised, [quantised + centroids fine-tuned].
    finetune_epochs > 0 retrains after pruning (mask held) and after weight sharing (centroids), each for that
    many epochs at `finetune_lr` x the run's learning rate (Deep Compression retrains at a reduced rate).
    eval_step: the jitted ``sqzdse.train.make_eval_step`` to measure with (made here when None), so that
    a caller measuring more stages compiles it once.
    """
    from sqzdse import train as T

    bits = check_bits(bits)
    if finetune_epochs < 0:
        raise ValueError(f"finetune_epochs={finetune_epochs}: must be >= 0")
    if finetune_epochs and dataset is None:
        raise ValueError("fine-tuning needs the training run's dataset")
    if dataset is not None and (tc is None or graphdef is None):
        raise ValueError("measuring accuracy needs the run's TrainConfig and graphdef (sqzdse.train.load_run)")
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
        if r["status"] != "completed":
            raise T.Diverged(f"fine-tuning after pruning: {r['reason']}")
        pruned = r["state"][1].params
        measure("pruned + fine-tuned", pruned)
    layers = share_weights(caffe_weights(cfg, pruned), masks, bits)
    measure("quantised", with_caffe_weights(pruned, decoded_weights(layers)))
    if finetune_epochs:
        layers = finetune_centroids(ft, graphdef, pruned, layers, dataset, epochs=finetune_epochs, progress=progress)
        measure("quantised + fine-tuned", with_caffe_weights(pruned, decoded_weights(layers)))
    # params: the pruned (and fine-tuned) float parameters, biases included, that the layers were shared from
    return dict(layers=layers, stages=stages, densities=layer_densities(cfg, density), params=pruned)


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
) -> dict:
    """``compress_model``, write `out`, read it back; returns the report (sizes, per-layer table, accuracy).

    The accuracy "after" (stage "decoded file") is measured on the weights decoded from the file on disk,
    which must equal the quantised weights bit for bit (RuntimeError otherwise).
    """
    from sqzdse import train as T
    from sqzdse.cost import summary

    eval_step = T.make_eval_step(graphdef) if dataset is not None and tc is not None else None
    r = compress_model(cfg, params, bits=bits, density=density, tc=tc, graphdef=graphdef, dataset=dataset,
                       finetune_epochs=finetune_epochs, finetune_lr=finetune_lr, progress=progress,
                       eval_step=eval_step)  # fmt: skip
    layers = r["layers"]
    size = write(layers, out, huffman)
    decoded, expected = decoded_weights(read(out)), decoded_weights(layers)
    for name, (w, b) in expected.items():
        if not (np.array_equal(decoded[name][0], w) and np.array_equal(decoded[name][1], b)):
            raise RuntimeError(f"{out}: {name} does not decode to the quantised weights")
    stages = r["stages"]
    if dataset is not None:
        stages["decoded file"] = _evaluate(eval_step, with_caffe_weights(r["params"], decoded), dataset, tc)
    report = size_report(layers)
    float32 = summary(cfg)
    return dict(
        file=str(out), file_bytes=size, format=report["huffman" if huffman else "fixed"]["format"], huffman=huffman,
        bits=bits, density=density, finetune_epochs=finetune_epochs, float32_bytes=float32["bytes"],
        params=float32["params"], fixed=report["fixed"], huffman_coded=report["huffman"], layers=report["layers"],
        stages=stages,
    )  # fmt: skip


# --------------------------------------------------------------------------- DSD


def train_dsd(
    cfg: C.SqueezeNetConfig,
    tc,
    workdir: str | None = None,
    *,
    dataset=None,
    density=DSD_DENSITY,
    phases=DSD_PHASES,
    redense_lr: float = DSD_REDENSE_LR,
    progress: bool = True,
) -> dict:
    """Dense-Sparse-Dense training (Han et al. 2017) within the budget of ``tc.epochs``.

    Dense: the recipe for phases[0] x epochs. Sparse: prune every conv to `density` by magnitude (or the
    released pattern) and retrain phases[1] x epochs with the mask held (pruned weights stay exactly 0).
    Re-dense: the pruned weights come back at 0 and the whole network trains phases[2] x epochs at
    `redense_lr` x the learning rate. Each phase is a ``train_and_evaluate`` run in WORKDIR/dense, /sparse,
    /redense (so each checkpoints and resumes); the summary (also WORKDIR/summary.json) is the re-dense
    run's, with every phase's accuracy and kernel density under ``phases``.
    """
    import jax

    from sqzdse.train import train_and_evaluate

    phases = tuple(float(f) for f in phases)
    if len(phases) != 3 or not all(f > 0 for f in phases):
        raise ValueError(f"DSD phases={phases}: three positive fractions of --epochs (dense, sparse, re-dense)")
    parse_density(density)
    if not redense_lr > 0:
        raise ValueError(f"DSD redense_lr={redense_lr}: must be > 0")
    tcs = [dataclasses.replace(tc, epochs=tc.epochs * f) for f in phases]
    tcs[2] = dataclasses.replace(tcs[2], lr=tc.lr * redense_lr)

    def sub(name):
        return os.path.join(workdir, name) if workdir else None

    results, init, sparse_mask = {}, None, None
    for name, phase_tc in zip(PHASE_NAMES, tcs, strict=True):
        if name == "sparse":
            init, _, sparse_mask = prune(cfg, init, density)
        mask = sparse_mask if name == "sparse" else None
        r = train_and_evaluate(cfg, phase_tc, sub(name), dataset=dataset, progress=progress, init_params=init,
                               mask=mask)  # fmt: skip
        results[name] = r
        if r["status"] != "completed":
            break
        init = r["state"][1].params
    last = results[list(results)[-1]]

    def phase_record(r):
        kernels = [np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(r["state"][1].params)
                   if _leaf_key(p)[1] == "kernel"]  # fmt: skip
        nonzero = sum(int(np.count_nonzero(k)) for k in kernels) / sum(k.size for k in kernels)
        keys = ("status", "reason", "val_top1", "val_top5", "test_top1", "test_top5", "epochs", "updates",
                "train_seconds")  # fmt: skip
        return {**{k: r[k] for k in keys}, "lr": r["train_config"]["lr"], "kernel_density": nonzero}

    summary = {k: v for k, v in last.items() if k not in ("state", "history", "train_config")}
    summary.update(
        epochs=tc.epochs,
        train_config=dataclasses.asdict(tc),
        dsd=dict(density=density, phases=list(phases), redense_lr=redense_lr),
        phases={name: phase_record(r) for name, r in results.items()},
        updates=sum(r["updates"] for r in results.values()),
        train_seconds=sum(r["train_seconds"] for r in results.values()),
        compile_seconds=sum(r["compile_seconds"] for r in results.values()),
        wall_seconds=sum(r["wall_seconds"] for r in results.values()),
    )
    if workdir:
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
    summary["state"] = last["state"]
    summary["mask"] = sparse_mask  # the sparse phase's (param_mask tree), None if the dense phase failed
    summary["sparse_params"] = results["sparse"]["state"][1].params if "sparse" in results else None
    return summary


# --------------------------------------------------------------------------- CLI glue (wired in sqzdse.cli)


def add_compress_arguments(p) -> None:
    """Flags of ``sqzdse compress``."""
    p.add_argument("run", nargs="?", metavar="RUN_DIR", help="a training run's workdir (sqzdse train --workdir)")
    p.add_argument(
        "--pretrained",
        metavar="PATH",
        help="compress the released v1.0 instead: 'released' (the bundled compressed_SqueezeNet.net) or a path to "
        "that file (no accuracy: ImageNet is not here)",
    )
    p.add_argument("-o", "--output", required=True, help="the compressed file to write")
    p.add_argument("--bits", type=int, default=DEFAULT_BITS, help=f"bits per shared-weight code, {BITS[0]}-{BITS[-1]} "
                   f"(default {DEFAULT_BITS}; the paper: 8 and 6)")  # fmt: skip
    p.add_argument("--density", default="released", help="'released' (the released model's per-layer pattern, "
                   "33%% for expand3x3; default) or one fraction kept for every layer, e.g. 0.4")  # fmt: skip
    p.add_argument("--huffman", action="store_true", help="Huffman-code codes and indices (both sizes are reported)")
    p.add_argument("--finetune-epochs", type=float, default=0.0, help="retrain after pruning (mask held) and after "
                   "weight sharing (centroids) for N epochs each (default 0)")  # fmt: skip
    p.add_argument("--finetune-lr", type=float, default=0.1, help="fine-tuning learning rate as a multiple of the "
                   "run's (default 0.1)")  # fmt: skip
    p.add_argument("--data-dir", help="tensorflow-datasets directory of the run's dataset")
    p.add_argument("--no-eval", action="store_true", help="skip the accuracy measurements")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while fine-tuning")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run_compress(args) -> int:
    """``sqzdse compress``: compress a run's checkpoint (or the released v1.0), write, print the report."""
    check_bits(args.bits)
    density = parse_density(args.density)
    if (args.run is None) == (args.pretrained is None):
        raise ValueError("give a RUN_DIR or --pretrained PATH (one of them)")
    kw = dict(bits=args.bits, density=density, finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr,
              progress=not args.no_progress)  # fmt: skip
    if args.pretrained:
        if args.finetune_epochs:
            raise ValueError("--finetune-epochs: the released v1.0 would need ImageNet; compress a training run")
        import jax
        from flax import nnx

        from sqzdse.cost import abstract_model

        cfg = C.squeezenet_v1_0()
        params = with_caffe_weights(
            jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), nnx.state(abstract_model(cfg), nnx.Param)),
            load_released(args.pretrained),
        )
    else:
        from sqzdse import data as D
        from sqzdse.train import load_run

        cfg, tc, graphdef, params = load_run(args.run)
        kw.update(tc=tc, graphdef=graphdef)
        if not args.no_eval or args.finetune_epochs:
            kw["dataset"] = D.load(tc.dataset, data_dir=args.data_dir, val_size=tc.val_size)
    r = compress_to_file(args.output, cfg, params, huffman=args.huffman, **kw)
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        print(format_report(r))
    return 0


def _parts(e: dict) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in e["parts"].items())


def format_report(r: dict) -> str:
    """The per-layer table and totals of ``compress_to_file``'s report."""
    head = (f"{'layer':<18} {'OIHW':>14} {'weights':>9} {'kept':>9} {'density':>8} {'entries':>9} {'bits':>4} "
            f"{'bytes':>9} {'Huffman':>9}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for x in r["layers"]:
        lines.append(
            f"{x['name']:<18} {'x'.join(map(str, x['shape'])):>14} {x['weights']:>9,} {x['kept']:>9,} "
            f"{x['density']:>8.1%} {x['entries']:>9,} {x['bits']:>4} {x['bytes_fixed']:>9,} {x['bytes_huffman']:>9,}"
        )
    lines.append("-" * len(head))
    weights = sum(x["weights"] for x in r["layers"])
    kept = sum(x["kept"] for x in r["layers"])
    lines += [
        f"float32 model:   {r['float32_bytes']:>9,} bytes ({r['params']:,} parameters)",
        f"compressed:      {r['fixed']['bytes']:>9,} bytes fixed-width ({_parts(r['fixed'])})",
        f"                 {r['huffman_coded']['bytes']:>9,} bytes Huffman-coded ({_parts(r['huffman_coded'])})",
        f"density:         {kept / weights:.1%} of {weights:,} conv weights kept; {r['bits']}-bit shared weights",
        f"wrote {r['file']}: {r['file_bytes']:,} bytes on disk ({r['format']} format"
        f"{', Huffman' if r['huffman'] else ''}), {r['float32_bytes'] / r['file_bytes']:.1f}x smaller than float32",
    ]
    if r["stages"]:
        lines.append("accuracy           val top-1  test top-1")
        for stage, m in r["stages"].items():
            lines.append(f"  {stage:<22} {_pct(m['val_top1'])} {_pct(m['test_top1'])}")
    return "\n".join(lines)


def _pct(v) -> str:
    return f"{100 * v:8.2f}%" if v is not None else f"{'-':>9}"


def add_dsd_arguments(p) -> None:
    """``sqzdse train --dsd`` and its options."""
    g = p.add_argument_group("Dense-Sparse-Dense training (Han et al. 2017), within the --epochs budget")
    g.add_argument("--dsd", action="store_true", help="train dense, prune and retrain with the mask held, then "
                   "retrain dense; phases in WORKDIR/dense, /sparse, /redense")  # fmt: skip
    g.add_argument("--dsd-density", default=str(DSD_DENSITY), help=f"weights kept in the sparse phase: a fraction "
                   f"per layer or 'released' (default {DSD_DENSITY}, i.e. 30%% sparsity)")  # fmt: skip
    g.add_argument("--dsd-phases", default=",".join(map(str, DSD_PHASES)), help="fractions of --epochs for dense,"
                   f" sparse, re-dense (default {','.join(map(str, DSD_PHASES))})")  # fmt: skip
    g.add_argument("--dsd-redense-lr", type=float, default=DSD_REDENSE_LR, help="re-dense learning rate as a "
                   f"multiple of --lr (default {DSD_REDENSE_LR})")  # fmt: skip


def run_dsd(args, cfg, tc, dataset) -> int:
    """``sqzdse train --dsd``: the three phases, then each phase's accuracy."""
    try:
        phases = tuple(float(f) for f in args.dsd_phases.split(","))
    except ValueError:
        raise ValueError(f"--dsd-phases {args.dsd_phases!r}: three comma-separated fractions") from None
    r = train_dsd(cfg, tc, args.workdir, dataset=dataset, density=parse_density(args.dsd_density), phases=phases,
                  redense_lr=args.dsd_redense_lr, progress=not args.no_progress)  # fmt: skip
    for key in ("state", "mask", "sparse_params"):
        r.pop(key)
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        print(f"{'phase':<8} {'epochs':>7} {'lr':>9} {'density':>8} {'val top-1':>10} {'test top-1':>10}  status")
        for name, p in r["phases"].items():
            print(f"{name:<8} {p['epochs']:>7.3g} {p['lr']:>9.3g} {p['kernel_density']:>8.1%} {_pct(p['val_top1'])}"
                  f"  {_pct(p['test_top1'])}  {p['status']}")  # fmt: skip
    print(f"DSD {r['status']}: test top-1 {_pct(r['test_top1']).strip()}", file=sys.stderr)
    return 0 if r["status"] == "completed" else 3
