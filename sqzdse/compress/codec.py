"""Compressed weights as numpy arrays and bytes (Han et al. 2016): weight sharing, sparse index, Huffman, files.

Numpy only (no JAX), so that the files can be read, written and sized anywhere. A layer is a
:class:`CompressedLayer`: a codebook of 2**bits float32 shared weights (codebook[0] = 0, the filler), the float32
bias, and per stored entry a code (an index into the codebook) and a gap. Entry k sits at
``cumsum(gap + 1)[k] - 1`` in the flattened OIHW weights.

- **Weight sharing**: per layer, 1-D k-means over the kept weights with 2**bits - 1 centroids from a linear
  initialisation (``kmeans_1d``, ``share_weights``); code 0 is reserved for the value 0 (fillers).
- **Sparse storage**: each entry's gap to the previous one fits 4 bits; a longer gap gets zero-valued filler
  entries every 16 positions (``relative_index``, the released layout).
- **Huffman coding** (optional) of the codes and of the gaps, per layer (canonical codes, ``huffman_*``).

Files (``encode`` / ``write`` / ``read``), little-endian:

- **The released ``.net`` layout** (``compressed_SqueezeNet.net``, songhan/SqueezeNet_compressed; described in
  ``compressed_SqueezeNet_format.json`` beside it), written whenever it can hold the layers: 8 bits, no Huffman,
  exactly v1.0's layers. Header: 26 x u32, the entries per conv layer in prototxt order; then per layer the
  codebook 256 x f32, the bias O x f32, the codes (a byte each), then ceil(entries / 2) bytes of 4-bit gaps, low
  nibble first. The file holds no shapes: they are v1.0's (``sqzdse.model.plan.caffe_layer_shapes``).
  ``sqzdse predict --weights`` reads such a file.
- **SQZC** otherwise: ``b"SQZC"``, version u8 (1), flags u8 (bit 0: Huffman), layer count u16; then per
  layer: name length u8 + name (UTF-8, the prototxt name, e.g. ``fire2/squeeze1x1``), the OIHW shape
  4 x u32, bits u8, entries u32 (stored entries, fillers included), the codebook 2**bits x f32
  (codebook[0] = 0), the bias O x f32, then either fixed-width codes (``bits`` bits each, least significant
  bit first) and 4-bit gaps (low nibble first, as the ``.net``), or, with Huffman: the code lengths of the
  2**bits code symbols and of the 16 gap symbols (4 bits each, at most 15), the two streams' byte counts
  (2 x u32), and the two canonical-Huffman bit streams (most significant bit first). Shapes and bits are in
  the file, so it decodes without the model's configuration.

Sizes are always the bytes the encoder produced (``size_report``).
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import itertools
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from sqzdse.errors import InputError, SqzdseError
from sqzdse.model.config import squeezenet_v1_0
from sqzdse.model.plan import caffe_layer_shapes

BITS = tuple(range(2, 9))  # codes are stored in at most one byte; code 0 is the zero filler
NET_BITS = 8  # the .net layout: 256-entry codebooks, a byte per code
GAP_BITS = 4
MAX_GAP = (1 << GAP_BITS) - 1
MAX_CODE_LENGTH = 15  # Huffman code lengths are stored in 4 bits
MAGIC = b"SQZC"
VERSION = 1
HUFFMAN_FLAG = 1
PART_ORDER = ("header", "codebook", "bias", "tables", "codes", "index")


class WeightsFormatError(SqzdseError, ValueError):
    """A weights file or dict that does not match the expected layout; the message says where."""


@dataclasses.dataclass(frozen=True, eq=False)
class CompressedLayer:
    """One layer of a compressed file as stored: enough to rebuild the bytes exactly."""

    name: str  # v1.0 prototxt name, e.g. "fire2/squeeze1x1"
    shape: tuple[int, int, int, int]  # OIHW
    codebook: np.ndarray  # (2**bits,) float32, codebook[0] == 0
    bias: np.ndarray  # (O,) float32
    codes: np.ndarray  # (entries,) uint8
    gaps: np.ndarray  # (entries,) uint8, each in 0..15

    @property
    def positions(self) -> np.ndarray:
        """Flat OIHW index of every stored entry."""
        return np.cumsum(self.gaps.astype(np.int64) + 1) - 1

    def decode(self) -> np.ndarray:
        """Dense float32 OIHW weights."""
        size = math.prod(self.shape)
        pos = self.positions
        if pos.size and pos[-1] >= size:
            raise WeightsFormatError(
                f"{self.name}: the index gaps reach position {pos[-1]}, past the {size} weights of shape {self.shape}"
            )
        w = np.zeros(size, np.float32)
        w[pos] = self.codebook[self.codes]
        return w.reshape(self.shape)


def check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or bits not in BITS:
        raise InputError(
            f"bits={bits!r}: must be an integer from {BITS[0]} to {BITS[-1]} (codes fit a byte; code 0 is the zero "
            "filler, so 2**bits - 1 shared weights per layer)"
        )
    return int(bits)


def layer_bits(layer: CompressedLayer) -> int:
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
    """{prototxt name: (float32 OIHW weights, float32 bias)}."""
    return {layer.name: (layer.decode(), layer.bias) for layer in layers}


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
    bits = check_bits(bits)
    layers = []
    for name, (w, b) in weights.items():
        w = np.asarray(w, np.float32)
        pos = np.flatnonzero(np.asarray(masks[name]).reshape(-1))
        if pos.size == 0:
            raise InputError(f"{name}: the mask keeps no weight")
        centroids, labels = kmeans_1d(w.reshape(-1)[pos], 2**bits - 1)
        codes, gaps = relative_index(pos, labels + 1)
        codebook = np.concatenate([[0.0], centroids]).astype(np.float32)
        layers.append(CompressedLayer(name, tuple(w.shape), codebook, np.asarray(b, np.float32), codes, gaps))
    return layers


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


@functools.cache
def net_layers() -> tuple[tuple[str, tuple[int, int, int, int]], ...]:
    """(name, OIHW shape) of the ``.net`` layout's layers, in file order: v1.0's convolutions."""
    return tuple(caffe_layer_shapes(squeezenet_v1_0()).items())


def file_format(layers: list[CompressedLayer], huffman: bool) -> str:
    """'net' (the released layout) for 8-bit, fixed-width, v1.0-shaped layers; 'sqzc' otherwise."""
    if (
        not huffman
        and all(layer_bits(x) == NET_BITS for x in layers)
        and tuple((x.name, x.shape) for x in layers) == net_layers()
    ):
        return "net"
    return "sqzc"


def _layer_parts(layer: CompressedLayer, huffman: bool, fmt: str) -> dict[str, bytes]:
    """The bytes of one layer by part: header, codebook, bias, [Huffman tables], codes, index."""
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


def encode_parts(layers: list[CompressedLayer], huffman: bool = False) -> tuple[str, bytes, list[dict]]:
    """(format, file header, per layer {part: bytes}); ``encode`` joins them."""
    fmt = file_format(layers, huffman)
    if fmt == "net":  # 26 x u32 entry counts, then the layers
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
    """The layers of a SQZC file or of a released-layout ``.net`` (v1.0's shapes); the inverse of ``write``.

    Raises FileNotFoundError for a missing file and WeightsFormatError, naming the file, when the bytes do not
    match the layout (too few, left over, or gaps running past a layer's end).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"compressed weights file not found: {path}")
    data = path.read_bytes()
    off = 0

    def take(n: int, what: str) -> bytes:
        nonlocal off
        if off + n > len(data):
            raise WeightsFormatError(f"{path}: truncated in {what} (byte {off} of {len(data)}, {n} more needed)")
        off += n
        return data[off - n : off]

    def sqzc_heads(n_layers):
        for i in range(n_layers):
            name = take(take(1, f"layer {i}")[0], f"layer {i}'s name").decode()
            *shape, bits, n = struct.unpack("<4IBI", take(21, name))
            if bits not in BITS:
                raise WeightsFormatError(f"{path}: {name}: {bits} bits per code")
            yield name, tuple(shape), bits, n

    huffman = False
    if data[:4] == MAGIC:
        _, version, flags, n_layers = struct.unpack("<4sBBH", take(8, "the header"))
        if version != VERSION:
            raise WeightsFormatError(f"{path}: SQZC version {version}; this sqzdse reads version {VERSION}")
        huffman = bool(flags & HUFFMAN_FLAG)
        heads = sqzc_heads(n_layers)
    else:  # the .net: entry counts, then v1.0's layers
        net = net_layers()
        counts = np.frombuffer(take(4 * len(net), f"the header ({len(net)} x uint32)"), "<u4").tolist()
        heads = ((name, shape, NET_BITS, n) for (name, shape), n in zip(net, counts, strict=True))
    layers = []
    for name, shape, bits, n in heads:
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
        layer = CompressedLayer(name, shape, codebook, bias, codes, gaps)
        layer.decode()  # validates the positions
        layers.append(layer)
    if off != len(data):
        raise WeightsFormatError(f"{path}: {len(data) - off} bytes left over after {len(layers)} layers")
    return layers


def read_weights(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A compressed file's decoded weights: prototxt layer name -> (float32 OIHW weights, float32 bias)."""
    return decoded_weights(read(path))


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
