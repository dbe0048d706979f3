"""The layer plan: the one place where metaparameters become layer widths and shapes.

Pure Python, no JAX: ``layer_plan(cfg)`` is what the network loops over, what the
cost accounting reads for MACs, and what ``model summary`` prints; ``caffe_layer_shapes(cfg)``
names its convolutions as the prototxts and weight files do.
"""

from __future__ import annotations

import dataclasses
import math

from sqzdse.errors import SqzdseError

FIRE_NAMES = tuple(f"fire{i}" for i in range(2, 10))  # fire2..fire9, i = 0..7 in the paper
POOL_KERNEL, POOL_STRIDE = 3, 2  # every max pool in both prototxts is 3x3/2


class ConfigError(SqzdseError, ValueError):
    """An impossible metaparameter; the message names the field and the allowed range."""


def round_half_up(x: float) -> int:
    """Widths round half up (Python's round() would send 2.5 to 2)."""
    return int(math.floor(x + 0.5))


@dataclasses.dataclass(frozen=True)
class FireSpec:
    """One Fire module: squeeze 1x1 -> [expand 1x1 | expand 3x3] (Table 1's s1x1, e1x1, e3x3)."""

    name: str
    in_channels: int
    squeeze: int
    e1x1: int
    e3x3: int
    bypass: str  # "none", "identity" (simple) or "conv" (complex: a 1x1 conv on the bypass)
    hw: tuple[int, int]  # spatial size in and out (Fire keeps it)
    pool_after: bool

    @property
    def out_channels(self) -> int:
        return self.e1x1 + self.e3x3


@dataclasses.dataclass(frozen=True)
class Plan:
    """conv1 (+ pool) -> fire2..fire9 -> dropout -> conv10 -> ReLU -> global average pool."""

    input_shape: tuple[int, int, int]
    stem_hw: tuple[int, int]  # conv1's output size
    stem_pool: bool
    fires: tuple[FireSpec, ...]
    conv10_in: int
    conv10_out: int
    conv10_pad: int
    conv10_hw: tuple[int, int]


def conv_out(size: int, kernel: int, stride: int, pad: int | tuple[int, int]) -> int:
    """Caffe (and XLA) convolution output size: floor((size + 2 pad - kernel) / stride) + 1.

    `pad` is one pad for both sides, or (before, after).
    """
    before, after = (pad, pad) if isinstance(pad, int) else pad
    return (size + before + after - kernel) // stride + 1


def pool_out(size: int) -> int:
    """Caffe pooling rounds up: ceil((size - kernel) / stride) + 1 (pooling_layer.cpp, pad 0)."""
    return math.ceil((size - POOL_KERNEL) / POOL_STRIDE) + 1


def fire_widths(cfg) -> list[tuple[int, int, int]]:
    """(squeeze, e1x1, e3x3) of fire2..fire9 (Section 5); ConfigError where a squeeze width rounds to 0.

    e_i = base_e + incr_e * floor(i / freq), e3x3 = pct3x3 * e_i, s1x1 = sr * e_i, i = 0..7.
    """
    widths = []
    for i, name in enumerate(FIRE_NAMES):
        e = cfg.base_e + cfg.incr_e * (i // cfg.freq)
        e3, s = round_half_up(cfg.pct3x3 * e), round_half_up(cfg.sr * e)
        if s < 1:
            raise ConfigError(
                f"sr={cfg.sr}: {name} gets {cfg.sr} x {e} expand filters = {cfg.sr * e:.3g}"
                f" squeeze filters, which rounds to 0; need sr >= {0.5 / e:.3g}"
            )
        widths.append((s, e - e3, e3))
    return widths


def layer_plan(cfg) -> Plan:
    """Expand metaparameters into the per-layer plan; raises ConfigError for impossible sizes."""

    def too_small(where, hw):
        return ConfigError(
            f"input_shape={cfg.input_shape}: too small, {where} gets a {hw[0]}x{hw[1]} input;"
            f" use a larger input or fewer pools (pool_after={cfg.pool_after})"
        )

    def pool(hw, where):
        if min(hw) < POOL_KERNEL:
            raise too_small(where, hw)
        return tuple(pool_out(x) for x in hw)

    widths = fire_widths(cfg)  # first: a width error is the one to report
    st = cfg.stem
    hw = tuple(conv_out(x, st.kernel, st.stride, st.pad) for x in cfg.input_shape[:2])
    if min(hw) < 1:
        raise too_small("conv1", cfg.input_shape[:2])
    stem_hw = hw
    if "conv1" in cfg.pool_after:
        hw = pool(hw, "pool1")
    fires = []
    channels = st.filters
    for name, (s, e1, e3) in zip(FIRE_NAMES, widths, strict=True):
        e = e1 + e3
        if channels == e and cfg.bypass != "none":
            bypass = "identity"  # Section 6: only where input and output channels match
        elif cfg.bypass == "complex":
            bypass = "conv"
        else:
            bypass = "none"
        pooled = name in cfg.pool_after
        fires.append(FireSpec(name, channels, s, e1, e3, bypass, hw, pooled))
        if pooled:
            hw = pool(hw, f"pool{name[4:]}")
        channels = e
    p = cfg.conv10_pad
    return Plan(
        input_shape=tuple(cfg.input_shape),
        stem_hw=stem_hw,
        stem_pool="conv1" in cfg.pool_after,
        fires=tuple(fires),
        conv10_in=channels,
        conv10_out=cfg.num_classes,
        conv10_pad=p,
        conv10_hw=(hw[0] + 2 * p, hw[1] + 2 * p),
    )


def caffe_layer_shapes(cfg) -> dict[str, tuple[int, int, int, int]]:
    """OIHW weight shape per conv layer, named as in the v1.0 prototxt, in prototxt order."""
    plan = layer_plan(cfg)
    st = cfg.stem
    shapes = {"conv1": (st.filters, cfg.input_shape[2], st.kernel, st.kernel)}
    for f in plan.fires:
        shapes[f"{f.name}/squeeze1x1"] = (f.squeeze, f.in_channels, 1, 1)
        if f.e1x1:
            shapes[f"{f.name}/expand1x1"] = (f.e1x1, f.squeeze, 1, 1)
        if f.e3x3:
            shapes[f"{f.name}/expand3x3"] = (f.e3x3, f.squeeze, 3, 3)
        if f.bypass == "conv":
            shapes[f"{f.name}/bypass1x1"] = (f.out_channels, f.in_channels, 1, 1)
    shapes["conv10"] = (plan.conv10_out, plan.conv10_in, 1, 1)
    return shapes
