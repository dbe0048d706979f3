"""sqzdse.model.ops: the pool's forward and gradient equal the reduce_window reference exactly; convs match lax."""

import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sqzdse.model import ops
from sqzdse.model.plan import pool_out

SIZES = [(28, 28), (14, 14), (7, 7), (3, 3), (4, 4), (13, 13), (111, 55), (55, 111), (8, 9), (6, 5)]


def caffe_max_pool(x: np.ndarray) -> np.ndarray:
    """pooling_layer.cpp, MAX, kernel 3, stride 2, pad 0: windows clipped at the bottom/right edge."""
    n, h, w, c = x.shape
    ho, wo = pool_out(h), pool_out(w)
    y = np.empty((n, ho, wo, c), x.dtype)
    for i in range(ho):
        for j in range(wo):
            y[:, i, j] = x[:, 2 * i : min(2 * i + 3, h), 2 * j : min(2 * j + 3, w)].max(axis=(1, 2))
    return y


def inputs(kind: str, shape, rng) -> np.ndarray:
    x = rng.standard_normal(shape).astype(np.float32)
    if kind == "relu":  # most of a ReLU'd map is exactly 0: ties everywhere
        return np.maximum(x, 0)
    if kind == "constant":
        return np.full(shape, 0.5, np.float32)
    if kind == "levels":  # three values: ties inside windows and across overlapping windows
        return rng.integers(0, 3, shape).astype(np.float32)
    if kind == "blocks":  # constant 4x4 regions
        return np.repeat(np.repeat(x[:, ::4, ::4], 4, axis=1), 4, axis=2)[:, : shape[1], : shape[2]]
    return x


def cotangent(shape, rng) -> np.ndarray:
    # Magnitudes 1e-6..1e6, so the result depends on the order in which overlapping windows add up.
    return (rng.standard_normal(shape) * 10.0 ** rng.integers(-6, 7, shape)).astype(np.float32)


def bits(a) -> np.ndarray:
    return np.asarray(a, np.float32).view(np.uint32)


@jax.jit
def _ref_vjp(x, g):
    return jax.vjp(ops.max_pool_ceil_reference, x)[1](g)[0]


@jax.jit
def _ops_vjp(x, g):
    return jax.vjp(ops.max_pool_ceil, x)[1](g)[0]


@pytest.mark.parametrize("hw", SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_pool_forward_is_caffe(hw):
    rng = np.random.default_rng(0)
    for kind in ("random", "relu", "levels"):
        x = inputs(kind, (2, *hw, 3), rng)
        y = np.asarray(jax.jit(ops.max_pool_ceil)(x))
        np.testing.assert_array_equal(y, caffe_max_pool(x))
        np.testing.assert_array_equal(y, np.asarray(ops.max_pool_ceil_reference(x)))


@pytest.mark.parametrize("hw", SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_pool_gradient_is_select_and_scatter_bit_for_bit(hw):
    rng = np.random.default_rng(hw[0] * 1000 + hw[1])
    kinds = ("random", "relu", "constant", "levels", "blocks")
    x = np.concatenate([inputs(kind, (2, *hw, 4), rng) for kind in kinds])  # 2 images of each kind
    g = cotangent((len(x), pool_out(hw[0]), pool_out(hw[1]), 4), rng)
    got, want = bits(_ops_vjp(x, g)), bits(_ref_vjp(x, g))
    for i, kind in enumerate(kinds):
        np.testing.assert_array_equal(got[2 * i : 2 * i + 2], want[2 * i : 2 * i + 2], err_msg=kind)


def test_pool_gradient_eager_and_in_a_network():
    """Outside jit, and composed with ReLU and a second pool (cotangents that are sums)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 15, 15, 5)).astype(np.float32)
    g = cotangent((3, 7, 7, 5), rng)
    eager = jax.vjp(ops.max_pool_ceil, x)[1](g)[0]
    np.testing.assert_array_equal(bits(eager), bits(_ref_vjp(x, g)))

    def net(pool, x):
        y = pool(jax.nn.relu(x))
        return jnp.sum(pool(y * y) * jnp.arange(5.0))

    ref = jax.jit(jax.grad(lambda x: net(ops.max_pool_ceil_reference, x)))(x)
    np.testing.assert_array_equal(bits(jax.jit(jax.grad(lambda x: net(ops.max_pool_ceil, x)))(x)), bits(ref))


def test_pool_chwn_is_nhwc_transposed():
    x = np.maximum(np.random.default_rng(2).standard_normal((4, 14, 14, 8)), 0).astype(np.float32)
    g = cotangent((4, 7, 7, 8), np.random.default_rng(3))
    y = ops.max_pool_ceil(ops.to_chwn(x))
    np.testing.assert_array_equal(ops.to_chwn(y), ops.max_pool_ceil_reference(x))
    dx = _ops_vjp(ops.to_chwn(x), ops.to_chwn(g))
    np.testing.assert_array_equal(bits(ops.to_chwn(dx)), bits(_ref_vjp(x, g)))


def lax_conv(x_nhwc, kernel, bias, stride, padding):
    y = jax.lax.conv_general_dilated(x_nhwc, kernel, stride, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias


# (kernel, stride, padding): Fire's 1x1 and 3x3, v1.0's and v1.1's stems, v1.0's padded conv10.
CONVS = [(1, 1, 0), (3, 1, 1), (7, 2, 0), (3, 2, 0), (1, 1, 1), (3, 1, 0)]


@pytest.mark.parametrize("k,s,p", CONVS, ids=lambda v: str(v))
def test_conv2d_matches_lax_value_and_gradients(k, s, p):
    rng = np.random.default_rng(k * 10 + s + p)
    x = rng.standard_normal((3, 11, 9, 5)).astype(np.float32)
    kernel = rng.standard_normal((k, k, 5, 6)).astype(np.float32) / k
    bias = rng.standard_normal(6).astype(np.float32)
    pads = ((p, p), (p, p))

    def f_ops(x, kernel, bias):
        return ops.to_chwn(ops.conv2d(ops.to_chwn(x), kernel, bias, stride=s, padding=p))

    def f_lax(x, kernel, bias):
        return lax_conv(x, kernel, bias, (s, s), pads)

    y = jax.jit(f_ops)(x, kernel, bias)
    np.testing.assert_allclose(y, f_lax(x, kernel, bias), rtol=1e-5, atol=1e-5)
    g = rng.standard_normal(y.shape).astype(np.float32)
    got = jax.jit(lambda *a: jax.vjp(f_ops, *a)[1](g))(x, kernel, bias)
    want = jax.vjp(f_lax, x, kernel, bias)[1](g)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_conv_applies_an_nnx_conv_layer():
    # Weights set from numpy (an eager initialiser would compile its random number generator for this one layer).
    layer = nnx.Conv(4, 6, (3, 3), strides=1, padding=((1, 1), (1, 1)), kernel_init=nnx.initializers.zeros_init(),
                     rngs=nnx.Rngs(0))  # fmt: skip
    layer.kernel[...] = np.random.default_rng(3).standard_normal((3, 3, 4, 6)).astype(np.float32)
    layer.bias[...] = jnp.arange(6.0)
    x = np.random.default_rng(4).standard_normal((2, 7, 7, 4)).astype(np.float32)
    got = nnx.jit(lambda layer, x: ops.to_chwn(ops.conv(layer, ops.to_chwn(x))))(layer, x)
    np.testing.assert_allclose(got, nnx.jit(lambda layer, x: layer(x))(layer, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pool", [True, False])
def test_bias_relu_pool_is_the_layer_order_of_caffe(pool):
    """Pooled first, bias + ReLU + concat give Caffe's pool(concat(relu(y + b))) bit for bit, and its gradients."""
    rng = np.random.default_rng(5)
    # Two branches (a Fire's expand1x1 and expand3x3), CHWN, biases large enough to flip signs.
    ys = [rng.standard_normal((c, 14, 13, 4)).astype(np.float32) for c in (3, 5)]
    biases = [rng.standard_normal(c).astype(np.float32) for c in (3, 5)]

    def ours(ys, biases):
        return ops.bias_relu_pool(ys, biases, pool)

    def caffe(ys, biases):
        y = jnp.concatenate([jax.nn.relu(y + b[:, None, None, None]) for y, b in zip(ys, biases, strict=True)])
        return ops.to_chwn(ops.max_pool_ceil_reference(ops.to_chwn(y))) if pool else y

    got, want = jax.jit(ours)(ys, biases), jax.jit(caffe)(ys, biases)
    np.testing.assert_array_equal(bits(got), bits(want))
    g = cotangent(want.shape, rng)
    (gy, gb), (wy, wb) = (jax.jit(lambda *a, f=f: jax.vjp(f, *a)[1](g))(ys, biases) for f in (ours, caffe))
    for a, b in zip(gy, wy, strict=True):  # each window's cotangent reaches the same input (no rounding ties here)
        np.testing.assert_array_equal(bits(a), bits(b))
    for a, b in zip(gb, wb, strict=True):  # the bias gradient is the same sum, added in another order
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * float(np.abs(g).max()))


def run_under_configure_cpu(code: str) -> None:
    """Run `code` (which calls runtime.configure_cpu first) in a fresh Python without the caller's XLA_FLAGS;
    it must print "ok"."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_fences_kept_under_configure_cpu():
    """With runtime.configure_cpu's flags XLA keeps the fences, and the pool's gradient is still exact."""
    code = textwrap.dedent(
        """
        from sqzdse import runtime
        runtime.configure_cpu()
        import jax, numpy as np
        from sqzdse.model import ops
        x = np.maximum(np.random.default_rng(0).standard_normal((2, 13, 13, 3)), 0).astype(np.float32)
        g = np.random.default_rng(1).standard_normal((2, 6, 6, 3)).astype(np.float32)
        f = jax.jit(lambda x, g: jax.vjp(ops.max_pool_ceil, x)[1](g)[0])
        assert "opt-barrier" in f.lower(x, g).compile().as_text()
        ref = jax.vjp(ops.max_pool_ceil_reference, x)[1](g)[0]
        assert np.array_equal(np.asarray(f(x, g)).view(np.uint32), np.asarray(ref).view(np.uint32))
        print("ok")
        """
    )
    run_under_configure_cpu(code)


def test_conv2d_bfloat16_products_stay_close_to_float32():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 9, 9, 4)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 8, 16)).astype(np.float32) / 9

    def loss(x, kernel, dtype):
        return jnp.sum(jnp.sin(ops.conv2d(x, kernel, padding=1, compute_dtype=dtype)))

    f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)
    (v32, g32), (v16, g16) = f(x, kernel, jnp.float32), f(x, kernel, jnp.bfloat16)
    assert g16[0].dtype == g16[1].dtype == jnp.float32  # only the products run in bf16
    np.testing.assert_allclose(v16, v32, rtol=0.05, atol=0.5)
    for a, b in zip(g16, g32, strict=True):
        np.testing.assert_allclose(a, b, rtol=0.05, atol=0.05 * float(np.abs(b).max()))


def test_bf16_bits_is_xlas_rounding_bit_for_bit():
    rng = np.random.default_rng(11)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 3.4e38, -3.4e38, 1e-45, 1e-39], np.float32)
    ties = (np.arange(1, 4097, dtype=np.uint32) << 16 | 0x8000).view(np.float32)  # exactly halfway: to even
    anything = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([special, ties, anything, -ties])
    bits = np.asarray(jax.jit(ops.bf16_bits)(x))
    assert bits.dtype == np.uint16
    ref = np.asarray(jnp.asarray(x).astype(jnp.bfloat16)).view(np.uint16)
    np.testing.assert_array_equal(bits, ref)


def test_conv2d_bfloat16_multiplies_bfloat16_operands():
    # The forward product must see bf16-rounded operands (accumulated in f32), not the f32 ones:
    # XLA:CPU once silently upcast a transposed bf16 kernel and cancelled the rounding.
    rng = np.random.default_rng(6)
    x = rng.standard_normal((8, 9, 9, 4)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 8, 16)).astype(np.float32) / 9
    got = np.asarray(jax.jit(lambda x, k: ops.conv2d(x, k, padding=1, compute_dtype=jnp.bfloat16))(x, kernel))
    round16 = lambda a: np.asarray(jnp.asarray(a).astype(jnp.bfloat16).astype(jnp.float32))
    exact = lambda x, k: np.asarray(ops.conv2d(jnp.asarray(x), jnp.asarray(k), padding=1))
    np.testing.assert_allclose(got, exact(round16(x), round16(kernel)), rtol=1e-5, atol=1e-5)
    assert np.abs(got - exact(x, kernel)).max() > 1e-3  # the rounding is visible, so the check above has teeth


def test_conv2d_bfloat16_gemms_stay_bfloat16_in_the_compiled_step():
    # Every matrix product of a bf16 conv's forward and backward pass takes bf16 operands
    # (twice the fp32 GEMM rate on avx512_bf16); none is converted back to f32 by XLA.
    x = jnp.ones((8, 9, 9, 4))
    loss = lambda x, k, p: jnp.sum(jnp.sin(ops.conv2d(x, k, padding=p, compute_dtype=jnp.bfloat16)))
    for kernel, pad in ((jnp.ones((3, 3, 8, 16)), 1), (jnp.ones((1, 1, 8, 16)), 0)):
        hlo = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2).lower(x, kernel, pad).compile().as_text()
        dots = re.findall(r"\n\s*(?:ROOT )?%\S+ = (\w+)\[[^\n]*? dot\(([^)]*)\)", hlo)
        assert len(dots) == 3, hlo[-3000:]
        for _, operands in dots:
            for name in re.findall(r"%([\w.\-]+)", operands):
                decl = re.search(rf"%{re.escape(name)} = (\w+)\[", hlo)
                assert decl and decl.group(1) == "bf16", (name, decl and decl.group(1))


def test_bfloat16_im2col_reaches_the_product_without_a_copy():
    """Under configure_cpu, a bf16 3x3 conv's im2col (uint16 bits) becomes the GEMM operand by a bitcast.

    Fused into the stack of taps, the uint16 -> bfloat16 reinterpretation was a copy of the whole
    (K, P) operand, ~8% of a bf16 training step (benchmarks/README.md)."""
    code = textwrap.dedent(
        """
        from sqzdse import runtime
        runtime.configure_cpu()
        import re, jax, jax.numpy as jnp
        from sqzdse.model import ops
        x, k = jnp.ones((8, 9, 9, 4)), jnp.ones((3, 3, 8, 16))
        loss = lambda x, k: jnp.sum(jnp.sin(ops.conv2d(x, k, padding=1, compute_dtype=jnp.bfloat16)))
        hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, k).compile().as_text()
        entry = hlo[hlo.index("ENTRY"):]
        # the (K, P) columns: K = 9 taps * 8 channels, P = 9 * 9 positions * 4 images
        decls = re.findall(r"= bf16\\[72,324\\]\\{1,0\\} (\\S+)\\(", entry)
        assert decls == ["bitcast"], decls
        print("ok")
        """
    )
    run_under_configure_cpu(code)


def test_configure_cpu_appends_and_keeps_the_users_flags(monkeypatch):
    from sqzdse import runtime

    monkeypatch.setattr(runtime, "backend_initialized", lambda: False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true --xla_dump_to=/tmp/d")
    flags = runtime.configure_cpu(keep_memory=False).split()
    assert flags[:2] == ["--xla_cpu_use_fusion_emitters=true", "--xla_dump_to=/tmp/d"]  # the user's, untouched
    assert "--xla_disable_hlo_passes=cse_barrier_expander" in flags
    assert "--xla_cpu_use_fusion_emitters=false" not in flags
    assert runtime.configure_cpu(keep_memory=False).split() == flags  # idempotent


def test_worker_cpus_split_the_cores_disjointly():
    from sqzdse.runtime import parse_cpus, worker_cpus

    assert worker_cpus(2, [0, 1]) == [[0], [1]]
    assert worker_cpus(2, [4, 0, 1, 2, 3]) == [[0, 1, 2], [3, 4]]
    assert worker_cpus(3, [0, 1]) == [[0], [1], [0]]  # more workers than cores: shared round-robin
    assert worker_cpus(1, [0, 1]) == [[0, 1]]
    assert parse_cpus("0,2-4, 7") == [0, 2, 3, 4, 7]
    for bad in ("", "a", "1-x"):
        with pytest.raises(ValueError, match="CPU list"):
            parse_cpus(bad)
    with pytest.raises(ValueError, match="workers"):
        worker_cpus(0)


def test_cli_pins_itself_to_sqzdse_cpus():
    """`sweep run --workers N` hands each worker its cores in $SQZDSE_CPUS; the CLI pins to them."""
    cpu = min(os.sched_getaffinity(0))
    code = "import os; from sqzdse.cli import main; main(['model', 'summary', '--preset', 'squeezenet_small']); " \
           "print(sorted(os.sched_getaffinity(0)))"  # fmt: skip
    env = {**os.environ, "SQZDSE_CPUS": str(cpu)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == f"[{cpu}]"
    env["SQZDSE_CPUS"] = "nonsense"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "sqzdse: error: CPU list 'nonsense'" in out.stderr


@pytest.mark.parametrize(
    "preset", ["squeezenet_v1_0", "squeezenet_v1_1", "squeezenet_simple_bypass", "squeezenet_complex_bypass",
               "squeezenet_small"],
)  # fmt: skip
def test_the_gemm_and_xla_op_sets_agree_on_every_preset(preset, monkeypatch):
    """XLA's convolution and pooling (what GPUs and TPUs run) and the CPU's GEMMs: the same forward pass and
    gradients, to float tolerance, on every preset's structure (stem, pools, bypass), at small widths and inputs."""
    from sqzdse.model import config as C
    from sqzdse.model.network import initial_params

    size = 28 if preset == "squeezenet_small" else 64
    cfg = C.from_preset(preset, base_e=16, incr_e=16, num_classes=10, input_shape=(size, size, 3))
    graphdef, params = initial_params(cfg, 0, init="msra")
    x = jax.random.normal(jax.random.key(1), (4, size, size, 3))

    def loss(p):
        return jnp.sum(nnx.merge(graphdef, p)(x) ** 2)

    got = {}
    for path in ("gemm", "xla"):
        monkeypatch.setenv(ops.OPS_ENV, path)
        assert ops.op_path() == path
        logits = jax.jit(lambda p: nnx.merge(graphdef, p)(x))(params)
        got[path] = (logits, jax.jit(jax.grad(loss))(params))
    (la, ga), (lb, gb) = got["gemm"], got["xla"]
    assert float(jnp.abs(la).max()) > 0
    np.testing.assert_allclose(la, lb, rtol=2e-4, atol=2e-5 * float(jnp.abs(la).max()))
    for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4 * float(jnp.abs(a).max()) + 1e-12)


def test_the_op_set_follows_the_backend_unless_chosen(monkeypatch):
    monkeypatch.delenv(ops.OPS_ENV, raising=False)
    assert ops.op_path() == "gemm"  # CPU
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert ops.op_path() == "xla"
    monkeypatch.setenv(ops.OPS_ENV, "gemm")
    assert ops.op_path() == "gemm"
    monkeypatch.setenv(ops.OPS_ENV, "cudnn")
    with pytest.raises(ValueError, match="SQZDSE_OPS='cudnn': one of auto, gemm, xla"):
        ops.op_path()
