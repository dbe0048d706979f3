"""Released Caffe weights: the Deep-Compression SqueezeNet v1.0 file, and loading into the model.

``compressed_SqueezeNet.net`` (songhan/SqueezeNet_compressed; layout in
``compressed_SqueezeNet_format.json`` beside it), little-endian:

- header: 26 x uint32, the number of stored entries ``nz`` per conv layer, prototxt order;
- per layer: codebook 256 x float32, bias n_out x float32, codes nz x uint8 (indices
  into the codebook), then ceil(nz / 2) bytes of 4-bit gaps, low nibble first.
  Entry k sits at ``cumsum(gap + 1)[k] - 1`` in the flattened OIHW weights; entries
  with code 0 (codebook[0] == 0) are fillers for gaps longer than 15.

Layer shapes come from the v1.0 layer plan, so the reader is tied to the model.
Weights are Caffe OIHW here; :func:`load_caffe_weights` turns them into NNX's HWIO.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sqzdse.config import SqueezeNetConfig, squeezenet_v1_0
from sqzdse.model import SqueezeNet
from sqzdse.plan import caffe_layer_shapes

CODEBOOK_SIZE = 256  # 8-bit codes for every layer
GAP_BITS = 4
MAX_GAP = (1 << GAP_BITS) - 1
FIRE_CONVS = ("squeeze1x1", "expand1x1", "expand3x3", "bypass1x1")


class WeightsFormatError(ValueError):
    """A weights file or dict that does not match the expected layout; the message says where."""


@dataclasses.dataclass(frozen=True, eq=False)
class CompressedLayer:
    """One layer of the compressed file as stored: enough to rebuild the bytes exactly."""

    name: str  # v1.0 prototxt name, e.g. "fire2/squeeze1x1"
    shape: tuple[int, int, int, int]  # OIHW
    codebook: np.ndarray  # (256,) float32
    bias: np.ndarray  # (O,) float32
    codes: np.ndarray  # (nz,) uint8
    gaps: np.ndarray  # (nz,) uint8, each in 0..15

    @property
    def positions(self) -> np.ndarray:
        """Flat OIHW index of every stored entry."""
        return np.cumsum(self.gaps.astype(np.int64) + 1) - 1

    def decode(self) -> np.ndarray:
        """Dense float32 OIHW weights."""
        size = int(np.prod(self.shape))
        pos = self.positions
        if pos.size and pos[-1] >= size:
            raise WeightsFormatError(
                f"{self.name}: the index gaps reach position {pos[-1]}, past the {size} weights of shape {self.shape}"
            )
        w = np.zeros(size, np.float32)
        w[pos] = self.codebook[self.codes]
        return w.reshape(self.shape)


def _layer_bytes(n_out: int, nz: int) -> int:
    return 4 * CODEBOOK_SIZE + 4 * n_out + nz + (nz + 1) // 2


def read_compressed_layers(path: str | os.PathLike, cfg: SqueezeNetConfig | None = None) -> list[CompressedLayer]:
    """Parse the compressed file into its stored pieces, one :class:`CompressedLayer` per conv.

    Raises FileNotFoundError for a missing file and WeightsFormatError when the bytes do
    not match the layout (too few, left over, or gaps running past a layer's end).
    """
    cfg = cfg or squeezenet_v1_0()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"compressed weights file not found: {path}")
    buf = np.fromfile(path, dtype=np.uint8)
    shapes = caffe_layer_shapes(cfg)
    n_layers = len(shapes)
    header = 4 * n_layers
    if buf.size < header:
        raise WeightsFormatError(
            f"{path}: {buf.size} bytes, shorter than the {header}-byte header ({n_layers} x uint32)"
        )
    nz = buf[:header].view("<u4").astype(np.int64)
    # Check the total before slicing, so a short or long file fails with sizes, not an IndexError.
    expected = header + sum(_layer_bytes(s[0], int(n)) for s, n in zip(shapes.values(), nz, strict=True))
    if expected != buf.size:
        how = "truncated or corrupt" if buf.size < expected else f"{buf.size - expected} bytes left over"
        raise WeightsFormatError(
            f"{path}: {buf.size} bytes, but its header ({n_layers} layers, {int(nz.sum())} entries) implies"
            f" {expected} ({how})"
        )
    layers, off = [], header

    def take(n: int) -> np.ndarray:
        nonlocal off
        off += n
        return buf[off - n : off]

    for (name, shape), n in zip(shapes.items(), nz.tolist(), strict=True):
        codebook = take(4 * CODEBOOK_SIZE).view("<f4").astype(np.float32)
        bias = take(4 * shape[0]).view("<f4").astype(np.float32)
        codes = take(n).copy()
        packed = take((n + 1) // 2)
        gaps = np.stack([packed & MAX_GAP, packed >> GAP_BITS], axis=1).reshape(-1)[:n]
        layer = CompressedLayer(name, shape, codebook, bias, codes, gaps)
        layer.decode()  # validates the positions
        layers.append(layer)
    return layers


def write_compressed_net(layers: list[CompressedLayer], path: str | os.PathLike) -> None:
    """Write layers in the compressed layout; the inverse of :func:`read_compressed_layers`."""
    parts = [np.array([len(layer.codes) for layer in layers], "<u4").tobytes()]
    for layer in layers:
        gaps = np.asarray(layer.gaps, np.uint8)
        if gaps.size != layer.codes.size or (gaps > MAX_GAP).any():
            raise WeightsFormatError(f"{layer.name}: need one gap in 0..{MAX_GAP} per code")
        if layer.codebook.size != CODEBOOK_SIZE or layer.bias.size != layer.shape[0]:
            raise WeightsFormatError(
                f"{layer.name}: codebook must have {CODEBOOK_SIZE} and bias {layer.shape[0]} entries"
            )
        padded = np.append(gaps, np.uint8(0)) if gaps.size % 2 else gaps  # odd count: high nibble 0
        pairs = padded.reshape(-1, 2)
        parts += [
            np.asarray(layer.codebook, "<f4").tobytes(),
            np.asarray(layer.bias, "<f4").tobytes(),
            np.asarray(layer.codes, np.uint8).tobytes(),
            (pairs[:, 0] | (pairs[:, 1] << GAP_BITS)).astype(np.uint8).tobytes(),
        ]
    Path(path).write_bytes(b"".join(parts))


def read_compressed_net(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Decoded v1.0 weights: prototxt layer name -> (float32 OIHW weights, float32 bias)."""
    return {layer.name: (layer.decode(), layer.bias) for layer in read_compressed_layers(path)}


def caffe_convs(model: SqueezeNet) -> dict[str, nnx.Conv]:
    """The model's convolutions under their Caffe prototxt names, in prototxt order."""
    convs = {"conv1": model.conv1}
    for spec in model.plan.fires:
        fire = getattr(model, spec.name)
        for attr in FIRE_CONVS:
            if getattr(fire, attr) is not None:
                convs[f"{spec.name}/{attr}"] = getattr(fire, attr)
    convs["conv10"] = model.conv10
    return convs


def load_caffe_weights(model: SqueezeNet, weights: dict[str, tuple[np.ndarray, np.ndarray]]) -> SqueezeNet:
    """Copy Caffe (OIHW weights, bias) per layer into the model in place (kernels become HWIO).

    Every conv of the model must be covered and every entry of ``weights`` used, with
    matching shapes; otherwise WeightsFormatError names the layer, and nothing is changed.
    """
    convs = caffe_convs(model)
    missing = [n for n in convs if n not in weights]
    unknown = [n for n in weights if n not in convs]
    if missing or unknown:
        raise WeightsFormatError(
            "weights do not match the model's layers:"
            + (f" missing {', '.join(missing)};" if missing else "")
            + (f" not in the model {', '.join(unknown)};" if unknown else "")
        )
    staged = []
    for name, c in convs.items():
        w, b = (np.asarray(a) for a in weights[name])
        kh, kw, cin, cout = c.kernel.shape
        if w.shape != (cout, cin, kh, kw):
            raise WeightsFormatError(
                f"{name}: weights have shape {w.shape}, the model needs OIHW {(cout, cin, kh, kw)}"
            )
        if c.bias is None or b.shape != (cout,):
            raise WeightsFormatError(f"{name}: bias has shape {b.shape}, the model needs {(cout,)}")
        staged.append((c, w.transpose(2, 3, 1, 0), b))  # OIHW -> HWIO
    for c, w, b in staged:
        # set_value, not [...] =: it also fills an abstract (nnx.eval_shape) model.
        c.kernel.set_value(jnp.asarray(w, c.kernel.dtype))
        c.bias.set_value(jnp.asarray(b, c.bias.dtype))
    return model


def load_pretrained(path: str | os.PathLike = "released") -> SqueezeNet:
    """SqueezeNet v1.0 with the released Deep-Compression weights: ``released`` (the bundled file) or a path."""
    from sqzdse.reference import weights_path

    weights = read_compressed_net(weights_path(path))
    # Every parameter is overwritten, so skip the random init (seconds of compiling on CPU).
    model = nnx.eval_shape(lambda: SqueezeNet(squeezenet_v1_0(), rngs=nnx.Rngs(0)))
    load_caffe_weights(model, weights)
    if any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(nnx.state(model))):
        raise RuntimeError("SqueezeNet has state that the Caffe weights do not cover")
    return model
