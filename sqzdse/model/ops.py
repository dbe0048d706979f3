"""Layer ops that XLA:CPU runs fast: matmul convolutions in a CHWN layout and a max pool with a cheap VJP.

Why (benchmarks/README.md has the measurements, 2 cores, batch 128):

* Autodiff of ``lax.reduce_window`` max pooling lowers its backward pass to XLA's
  select-and-scatter, a scalar loop on CPU (110 ms for one (128, 28, 28, 64) pool).
  ``max_pool_ceil`` (2 ms) records, per window, which of the nine taps won (int8) and
  scatters the cotangent with nine shifted pads that XLA fuses into one loop;
  its gradient is bit-for-bit the select-and-scatter one, ties included.
* XLA:CPU runs forward convolutions well (~200 GFLOP/s), but their weight gradients
  (a convolution over the batch) at ~49 GFLOP/s for 3x3 and ~12 for 1x1. Here every
  convolution is one matrix product on a channels-major ``CHWN`` activation
  (channels, height, width, batch): a 1x1 conv is ``W^T @ x``, a kxk conv is
  ``W^T @ im2col(x)``; the weight gradient is ``g @ im2col(x)^T`` and the input
  gradient a col2im of ``W @ g``. All of them are plain (non-transposed) GEMMs,
  which XLA hands to YNNPACK; the batch is the minor axis, so im2col, col2im,
  pooling and the channel concatenation move contiguous 128-float rows.
* ``fence`` (``lax.optimization_barrier``) pins where XLA materialises a tensor,
  so that it does not recompute, say, the pool's winner index inside each of nine
  scatter loops. XLA:CPU drops these barriers early unless
  ``sqzdse.runtime.configure_cpu`` has kept them (``cse_barrier_expander``
  disabled); without it the ops are as correct, only slower.

* bfloat16 (a layer dtype of bfloat16): only the matrix products take bf16 operands,
  accumulating in fp32 (YNNPACK's avx512_bf16 kernels, ~2x the fp32 rate). XLA:CPU widens
  every bf16 pad, slice or concatenation to fp32 and back, so im2col moves the operands'
  uint16 bits (``bf16_bits``), fenced so that their final reinterpretation as bf16 is a free
  bitcast (under ``configure_cpu``'s loop emitter; fused into the stack it was a copy of the
  whole operand); and a transposed bf16 kernel must be stored row-major, or
  XLA makes the product a transposed-operand dot that it then runs in fp32 on unrounded
  operands (``_row_major``).

Elsewhere (GPU, TPU) XLA's own convolution and pooling are faster than hand-written GEMMs: ``op_path`` picks
``"gemm"`` (the above) on CPU and ``"xla"`` (``lax.conv_general_dilated`` and ``lax.reduce_window`` on the same CHWN
tensors, whose layout XLA's GPU and TPU layout assignment re-chooses for its kernels) on other backends;
``$SQZDSE_OPS`` (``gemm``, ``xla`` or ``auto``) chooses for every network a process traces. Both give the same
forward pass and gradients to float tolerance (``tests/test_ops.py``).

The network keeps NHWC at its edges: ``to_chwn`` on the input, ``.T`` on the
pooled (classes, N) scores. Kernels stay HWIO, so parameters and Caffe weights
are unchanged.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental.layout import Layout, with_layout_constraint

from sqzdse.model.plan import POOL_KERNEL, POOL_STRIDE, conv_out, pool_out

# The winner-index scatter below is written for 3x3/2 windows (every pool in both prototxts).
assert (POOL_KERNEL, POOL_STRIDE) == (3, 2)


OP_PATHS = ("auto", "gemm", "xla")
OPS_ENV = "SQZDSE_OPS"


def op_path() -> str:
    """The op set networks trace with now: ``$SQZDSE_OPS``, whose default ``auto`` is ``gemm`` on CPU and ``xla``
    on any other backend."""
    chosen = os.environ.get(OPS_ENV, "auto") or "auto"
    if chosen not in OP_PATHS:
        raise ValueError(f"{OPS_ENV}={chosen!r}: one of {', '.join(OP_PATHS)}")
    return chosen if chosen != "auto" else "gemm" if jax.default_backend() == "cpu" else "xla"


def fence(x):
    """Materialise ``x`` here: XLA may not fuse across it (on CPU, see ``runtime.configure_cpu``)."""
    return lax.optimization_barrier(x)


def to_chwn(x: jax.Array) -> jax.Array:
    """NHWC -> CHWN (and back: the permutation is its own inverse)."""
    return x.transpose(3, 1, 2, 0)


# --------------------------------------------------------------------------- max pooling


def ceil_pad(n: int) -> int:
    """Rows (or columns) of -inf Caffe's ceil mode adds at the bottom (right): 0 or 1 here."""
    return (pool_out(n) - 1) * POOL_STRIDE + POOL_KERNEL - n


def max_pool_ceil_reference(x: jax.Array) -> jax.Array:
    """3x3/2 max pool over axes 1 and 2 with Caffe's ceil mode: ``lax.reduce_window``, -inf padding bottom/right.

    The ground truth for :func:`max_pool_ceil`; its autodiff gradient is XLA's select-and-scatter.
    """
    _, h, w, _ = x.shape
    return lax.reduce_window(
        x,
        -jnp.inf,
        lax.max,
        (1, POOL_KERNEL, POOL_KERNEL, 1),
        (1, POOL_STRIDE, POOL_STRIDE, 1),
        ((0, 0), (0, ceil_pad(h)), (0, ceil_pad(w)), (0, 0)),
    )


def _pool_taps(x: jax.Array):
    """The nine window taps, each (A, ho, wo, B), in row-major window order.

    A tap that runs into Caffe's ceil-mode overhang (one row or column past the edge) is
    padded with -inf on its own, not the whole input first: XLA then fuses each tap into its
    consumer instead of materialising a padded copy of x.
    """
    a, h, w, b = x.shape
    ho, wo = pool_out(h), pool_out(w)

    def tap(di, dj):
        nh = min(ho, (h - 1 - di) // POOL_STRIDE + 1)  # window rows whose tap row lies inside x
        nw = min(wo, (w - 1 - dj) // POOL_STRIDE + 1)
        t = lax.slice(
            x,
            (0, di, dj, 0),
            (a, di + POOL_STRIDE * (nh - 1) + 1, dj + POOL_STRIDE * (nw - 1) + 1, b),
            (1, POOL_STRIDE, POOL_STRIDE, 1),
        )
        return jnp.pad(t, ((0, 0), (0, ho - nh), (0, wo - nw), (0, 0)), constant_values=-jnp.inf)

    return [tap(di, dj) for di in range(POOL_KERNEL) for dj in range(POOL_KERNEL)]


def _pool_with_winner(x: jax.Array):
    """The pooled maximum and, per window, the first tap (row-major, 0..8) that holds it.

    The maximum and the winner are two loops over the nine taps. Each reads its own fenced
    alias of x: with the taps shared, XLA would materialise every padded tap to feed both.
    """
    x_max, x_winner = fence((x, x))
    y = functools.reduce(jnp.maximum, _pool_taps(x_max))
    taps = _pool_taps(x_winner)
    winner = jnp.full(y.shape, len(taps) - 1, jnp.int8)
    for k in range(len(taps) - 2, -1, -1):  # the lowest k wins ties
        winner = jnp.where(taps[k] == y, jnp.int8(k), winner)
    return y, winner


@jax.custom_vjp
def max_pool_ceil(x: jax.Array) -> jax.Array:
    """3x3/2 max pool over axes 1 and 2 (NHWC or CHWN) with Caffe's ceil-mode output size.

    Forward equals :func:`max_pool_ceil_reference`; so does the gradient, bit for bit,
    ties included: like XLA's select-and-scatter (what ``jax.grad`` of the reference
    runs), each window sends its cotangent to the first maximum in row-major order,
    and where windows overlap their cotangents are added in row-major window order.
    """
    return functools.reduce(jnp.maximum, _pool_taps(x))


def _pool_fwd(x):
    y, winner = fence(_pool_with_winner(x))
    return y, (winner, x.shape)


def _pool_bwd(res, g):
    winner, (_, h, w, _) = res
    g = fence(g)
    _, ho, wo, _ = g.shape
    zero = jnp.zeros((), g.dtype)
    dx = None
    # Tap (di, dj) of window (i, j) is padded input row 2i + di, column 2j + dj: an interior-padded
    # copy of the window grid, shifted. Select-and-scatter adds window (i-1) before window i wherever
    # two windows share a row, so the taps are summed from the last (8) to the first (0).
    for k in range(POOL_KERNEL * POOL_KERNEL - 1, -1, -1):
        di, dj = divmod(k, POOL_KERNEL)
        hi_h = h + ceil_pad(h) - di - POOL_STRIDE * (ho - 1) - 1
        hi_w = w + ceil_pad(w) - dj - POOL_STRIDE * (wo - 1) - 1
        part = lax.pad(
            jnp.where(winner == k, g, zero),
            zero,
            ((0, 0, 0), (di, hi_h, POOL_STRIDE - 1), (dj, hi_w, POOL_STRIDE - 1), (0, 0, 0)),
        )
        dx = part if dx is None else dx + part
    return (fence(dx[:, :h, :w, :]),)


max_pool_ceil.defvjp(_pool_fwd, _pool_bwd)


# --------------------------------------------------------------------------- convolutions (CHWN)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _padding(p) -> tuple[tuple[int, int], tuple[int, int]]:
    """int, or per spatial axis an int or a (low, high) pair -> ((top, bottom), (left, right))."""
    if isinstance(p, str):
        raise NotImplementedError(f"ops.conv2d: padding={p!r}; give explicit sizes")
    return tuple(_pair(q) for q in _pair(p))


def _im2col(x: jax.Array, kh: int, kw: int, stride, padding) -> jax.Array:
    """(C, H, W, N) -> (kh * kw * C, Ho * Wo * N), rows in HWIO order (tap-major, then channel)."""
    c, h, w, n = x.shape
    (sh, sw), (ph, pw) = stride, padding
    ho, wo = conv_out(h, kh, sh, ph), conv_out(w, kw, sw, pw)
    xp = jnp.pad(x, ((0, 0), ph, pw, (0, 0)))
    taps = [
        lax.slice(xp, (0, di, dj, 0), (c, di + sh * (ho - 1) + 1, dj + sw * (wo - 1) + 1, n), (1, sh, sw, 1))
        for di in range(kh)
        for dj in range(kw)
    ]
    return jnp.stack(taps).reshape(kh * kw * c, ho * wo * n)


def _col2im(cols: jax.Array, x_shape, kh: int, kw: int, stride, padding) -> jax.Array:
    """The transpose of :func:`_im2col`: each tap's rows added back where they were read."""
    c, h, w, n = x_shape
    (sh, sw), (ph, pw) = stride, padding
    ho, wo = conv_out(h, kh, sh, ph), conv_out(w, kw, sw, pw)
    hp, wp = h + ph[0] + ph[1], w + pw[0] + pw[1]
    cols = cols.reshape(kh * kw, c, ho, wo, n)
    zero = jnp.zeros((), cols.dtype)
    dxp = None
    for k in range(kh * kw):
        di, dj = divmod(k, kw)
        part = lax.pad(
            cols[k],
            zero,
            (
                (0, 0, 0),
                (di, hp - di - sh * (ho - 1) - 1, sh - 1),
                (dj, wp - dj - sw * (wo - 1) - 1, sw - 1),
                (0, 0, 0),
            ),
        )
        dxp = part if dxp is None else dxp + part
    return dxp[:, ph[0] : ph[0] + h, pw[0] : pw[0] + w, :]


def _matmul(a: jax.Array, b: jax.Array, contract: tuple[int, int]) -> jax.Array:
    """``a @ b`` contracting a's axis contract[0] with b's contract[1], accumulated and returned in float32.

    bfloat16 operands stay bfloat16 (YNNPACK's bf16 kernels, twice the fp32 rate on
    avx512_bf16); a bfloat16 *result* XLA:CPU would compute in fp32 between conversions.
    """
    return lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((), ())), preferred_element_type=jnp.float32)


def bf16_bits(x: jax.Array) -> jax.Array:
    """float32 -> bfloat16, rounded to nearest even, returned as its uint16 bit pattern.

    Equal bit for bit to ``x.astype(jnp.bfloat16)`` (a NaN becomes the canonical quiet NaN of
    its sign), but computed with integer ops: XLA:CPU has no bfloat16 arithmetic and widens every bfloat16 pad, slice or
    concatenate to float32 between conversions, whereas uint16 data moves as it is. im2col
    on these bits moves half the bytes of float32; ``lax.bitcast_convert_type`` turns them
    into bfloat16 for the matrix product (fused into the producer, or a free bitcast of the
    fenced im2col, see ``_conv_fwd``).
    """
    u = lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    rounded = (u + (jnp.uint32(0x7FFF) + ((u >> 16) & 1))) >> 16
    nan = ((u >> 16) & 0x8000) | 0x7FC0  # the canonical quiet NaN, sign kept
    return jnp.where(jnp.isnan(x), nan, rounded).astype(jnp.uint16)


def _bits(x: jax.Array, compute: str) -> jax.Array:
    """x in the products' operand dtype, as stored for moving it around: bfloat16 as its uint16 bits."""
    return bf16_bits(x) if compute == "bfloat16" else x.astype(compute)


def _operand(x: jax.Array) -> jax.Array:
    """Stored bits -> the product's operand (a bitcast; fused into the producer where there is one)."""
    return lax.bitcast_convert_type(x, jnp.bfloat16) if x.dtype == jnp.uint16 else x


def _row_major(x: jax.Array) -> jax.Array:
    """x stored row-major, so that a transpose above it is a real copy, not a layout change.

    Otherwise XLA gives the transposed kernel a column-major layout and the product becomes a
    transposed-operand dot, which XLA:CPU's libraries do not take in bfloat16: it would
    convert both operands to float32.
    """
    return with_layout_constraint(x, Layout(tuple(range(x.ndim))))


def _is_pointwise(kh, kw, stride, padding) -> bool:
    return (kh, kw, *stride) == (1, 1, 1, 1) and not any(padding[0] + padding[1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, kernel, stride, padding, compute):
    return _conv_fwd(x, kernel, stride, padding, compute)[0]


def _conv_fwd(x, kernel, stride, padding, compute):
    kh, kw, cin, cout = kernel.shape
    c, h, w, n = x.shape
    if _is_pointwise(kh, kw, stride, padding):
        cols = _operand(_bits(x, compute)).reshape(c, h * w * n)
    else:  # im2col moves uint16 bits: XLA:CPU would widen a bfloat16 pad, slice or stack to float32;
        # the fenced uint16 columns then become the bfloat16 operand by a bitcast, not by a copy
        cols = _operand(fence(_im2col(fence(_bits(x, compute)), kh, kw, stride, padding)))
    wt = _row_major(fence(_operand(_bits(kernel, compute)).reshape(kh * kw * cin, cout).T))  # (cout, K): plain GEMM
    ho, wo = conv_out(h, kh, stride[0], padding[0]), conv_out(w, kw, stride[1], padding[1])
    y = _matmul(wt, cols, (1, 0)).reshape(cout, ho, wo, n).astype(x.dtype)
    return y, (cols, kernel, x.shape)


def _conv_bwd(stride, padding, compute, res, g):
    cols, kernel, x_shape = res
    kh, kw, cin, cout = kernel.shape
    g2 = fence(_operand(_bits(g, compute))).reshape(cout, -1)
    # (K, P) x (cout, P) contracted over P: the weight gradient in HWIO order, an NT GEMM.
    dw = _matmul(cols, g2, (1, 1)).reshape(kernel.shape).astype(kernel.dtype)
    dcols = _matmul(_operand(_bits(kernel, compute)).reshape(kh * kw * cin, cout), g2, (1, 0))
    if _is_pointwise(kh, kw, stride, padding):
        dx = dcols.reshape(x_shape)
    else:
        dx = fence(_col2im(fence(dcols), x_shape, kh, kw, stride, padding))
    return dx.astype(g.dtype), dw  # g has y's dtype, which is x's


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv2d(
    x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None, *, stride=1, padding=0, compute_dtype=None
) -> jax.Array:
    """2-D convolution of a CHWN activation with an HWIO kernel, as one matrix product.

    Args:
      x: (C, H, W, N).
      kernel: (kh, kw, C, Cout), Flax's and Caffe-converted layout.
      bias: (Cout,) or None.
      stride: int or (sh, sw).
      padding: int, or ((top, bottom), (left, right)) of zeros.
      compute_dtype: the matrix products' operand dtype (e.g. bfloat16; they accumulate in
        float32). The result, and everything outside the products, keeps x's dtype.
    Returns:
      (Cout, Ho, Wo, N).
    """
    stride, padding = _pair(stride), _padding(padding)
    if op_path() == "xla":
        compute = compute_dtype or x.dtype
        y = lax.conv_general_dilated(x.astype(compute), kernel.astype(compute), stride, padding,
                                     dimension_numbers=("CHWN", "HWIO", "CHWN"),
                                     preferred_element_type=jnp.float32).astype(x.dtype)  # fmt: skip
    else:
        y = _conv(x, kernel, stride, padding, jnp.dtype(compute_dtype or x.dtype).name)  # hashable
    if bias is not None:
        y = y + bias[:, None, None, None]
    return y


def conv(layer, x: jax.Array, *, add_bias: bool = True) -> jax.Array:
    """Apply an ``nnx.Conv`` (its kernel, bias, stride and padding) to a CHWN activation.

    add_bias=False leaves the bias out (for :func:`bias_relu_pool`, which adds it after pooling).

    The layer's ``dtype`` (say bfloat16) becomes the matrix products' operand dtype; unlike
    ``nnx.Conv``, the output stays in x's dtype: XLA:CPU has no bf16 arithmetic and would
    convert every bf16 ReLU, pool and bias gradient to fp32 and back.
    """
    dilated = (_pair(layer.input_dilation), _pair(layer.kernel_dilation)) != ((1, 1), (1, 1))
    if layer.feature_group_count != 1 or dilated:
        raise NotImplementedError("ops.conv: grouped or dilated convolutions")
    bias = layer.bias[...] if layer.bias is not None and add_bias else None
    return conv2d(x, layer.kernel[...], bias, stride=layer.strides, padding=layer.padding, compute_dtype=layer.dtype)


def max_pool(x: jax.Array) -> jax.Array:
    """The 3x3/2 ceil-mode max pool of the op set in use: ``max_pool_ceil`` (gemm) or XLA's ``reduce_window``."""
    return max_pool_ceil(x) if op_path() == "gemm" else max_pool_ceil_reference(x)


def bias_relu_pool(ys: list[jax.Array], biases: list[jax.Array], pool: bool) -> jax.Array:
    """``max_pool(concat(relu(y + b) for y, b))``, pooled first: ys are CHWN outputs of ``conv(..., add_bias=False)``.

    Max pooling works per channel and commutes with adding a per-channel bias and with ReLU:
    both are monotone, and so is rounding ``y + b`` to float32, so ``relu(pool(y) + b)``
    equals ``pool(relu(y + b))`` bit for bit, and pooling each branch before the
    concatenation gives the same tensor as pooling it after. Pooled first, the bias, the
    ReLU and the concatenation (forward and backward) touch a quarter as many elements.
    The gradient sends each window's cotangent to the same input, except where rounding
    ``y + b`` makes two different values of one window equal (both are then maxima).
    """
    if pool:
        ys = [max_pool(y) for y in ys]
    outs = [jax.nn.relu(y + b[:, None, None, None]) for y, b in zip(ys, biases, strict=True)]
    return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=0)
