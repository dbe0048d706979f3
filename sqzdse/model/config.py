"""SqueezeNet metaparameters (Iandola et al. 2016, Section 5) and the released presets.

A configuration is data: a frozen, validated, hashable dataclass. Variants are
``dataclasses.replace(cfg, sr=0.25)``; every invalid value fails at construction
with a message naming the field and the allowed range.
"""

from __future__ import annotations

import dataclasses

# plan.py holds the width formulas, so the names and the error they use; importable from here too.
from sqzdse.model.plan import FIRE_NAMES as FIRE_NAMES
from sqzdse.model.plan import ConfigError as ConfigError
from sqzdse.model.plan import layer_plan
from sqzdse.model.plan import round_half_up as round_half_up

BYPASSES = ("none", "simple", "complex")
# Table 3 calls "none" vanilla, as every figure and report does: both are accepted wherever a bypass is given.
BYPASS_ALIASES = {"vanilla": "none"}


# ... and printed as Table 3 names them, in every figure, table, legend and line.
BYPASS_NAMES = {"none": "vanilla", "simple": "simple", "complex": "complex"}


def canonical_bypass(value):
    """'vanilla' -> 'none'; any other value as it is (validated where it is used)."""
    return BYPASS_ALIASES.get(value, value) if isinstance(value, str) else value


def bypass_name(value) -> str:
    """A bypass kind as every figure, table and message shows it: vanilla / simple / complex."""
    return BYPASS_NAMES.get(value, "?" if value is None else str(value))


def shown(key: str, value) -> str:
    """A metaparameter's value as messages show it (`bypass=vanilla`, `sr=0.25`)."""
    return bypass_name(value) if key == "bypass" else str(value)


# Section 5's metaparameters and Section 6's bypass, as sweeps name their parameters and exports their columns.
METAPARAMETERS = ("base_e", "incr_e", "freq", "pct3x3", "sr", "bypass")
POOL_SITES = ("conv1",) + FIRE_NAMES


@dataclasses.dataclass(frozen=True)
class Stem:
    """conv1: the only layer outside the Fire modules besides conv10."""

    filters: int
    kernel: int
    stride: int
    pad: int = 0


# train_val.prototxt v1.0: conv1 num_output 96, kernel_size 7, stride 2, no pad.
STEM_V1_0 = Stem(filters=96, kernel=7, stride=2)
# train_val.prototxt v1.1: conv1 num_output 64, kernel_size 3, stride 2, no pad.
STEM_V1_1 = Stem(filters=64, kernel=3, stride=2)
# Small inputs (28-32 px): a stride-1, same-padded 3x3 keeps the resolution the
# pools need; 64 filters as in v1.1.
STEM_SMALL = Stem(filters=64, kernel=3, stride=1, pad=1)

STEMS = {"v1_0": STEM_V1_0, "v1_1": STEM_V1_1, "small": STEM_SMALL}


@dataclasses.dataclass(frozen=True)
class SqueezeNetConfig:
    """The Fire-module design space of Section 5, plus the macroarchitecture around it."""

    base_e: int = 128  # expand filters of fire2
    incr_e: int = 128  # expand filters added every `freq` Fire modules
    freq: int = 2  # Fire modules per width step
    pct3x3: float = 0.5  # share of expand filters that are 3x3, in [0, 1]
    sr: float = 0.125  # squeeze ratio s_i / e_i, > 0 (the paper sweeps 0.125..1.0)
    bypass: str = "none"  # "none" | "simple" | "complex" (Section 6)
    stem: Stem = STEM_V1_0  # conv1
    pool_after: tuple[str, ...] = ("conv1", "fire4", "fire8")  # 3x3/2 ceil-mode max pools
    conv10_pad: int = 1  # v1.0's conv10 is 1x1 with pad 1; v1.1 has pad 0
    num_classes: int = 1000
    input_shape: tuple[int, int, int] = (227, 227, 3)  # (H, W, C); Caffe crops 227
    dropout: float = 0.5  # on fire9's output (drop9)

    def __post_init__(self):
        _check_int(self, "base_e", 1)
        _check_int(self, "incr_e", 0)
        _check_int(self, "freq", 1)
        _check_int(self, "num_classes", 1)
        _check_int(self, "conv10_pad", 0)
        if not 0.0 <= self.pct3x3 <= 1.0:
            raise ConfigError(f"pct3x3={self.pct3x3!r}: must be in [0, 1]")
        if not self.sr > 0.0:
            raise ConfigError(f"sr={self.sr!r}: the squeeze ratio must be > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout!r}: must be in [0, 1)")
        object.__setattr__(self, "bypass", canonical_bypass(self.bypass))  # frozen: the one place it is normalised
        if self.bypass not in BYPASSES:
            raise ConfigError(f"bypass={self.bypass!r}: must be one of {', '.join(BYPASSES)} (or vanilla)")
        if not isinstance(self.stem, Stem):
            raise ConfigError(f"stem={self.stem!r}: must be a Stem or one of {', '.join(STEMS)}")
        for field in ("filters", "kernel", "stride"):
            if getattr(self.stem, field) < 1:
                raise ConfigError(f"stem.{field}={getattr(self.stem, field)}: must be >= 1")
        if self.stem.pad < 0:
            raise ConfigError(f"stem.pad={self.stem.pad}: must be >= 0")
        bad = [p for p in self.pool_after if p not in POOL_SITES]
        if bad or len(set(self.pool_after)) != len(self.pool_after):
            raise ConfigError(f"pool_after={self.pool_after!r}: must be distinct names among {', '.join(POOL_SITES)}")
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ConfigError(f"input_shape={self.input_shape!r}: must be (H, W, C), each >= 1")
        # Widths and spatial sizes: ConfigError if a squeeze rounds to 0 or the input is too small for the pools.
        layer_plan(self)


def _check_int(cfg, field: str, lo: int):
    value = getattr(cfg, field)
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"{field}={value!r}: must be an integer >= {lo}")


def squeezenet_v1_0(**overrides) -> SqueezeNetConfig:
    """SqueezeNet v1.0 (SqueezeNet_v1.0/train_val.prototxt): 1,248,424 parameters."""
    return SqueezeNetConfig(**overrides)


def squeezenet_v1_1(**overrides) -> SqueezeNetConfig:
    """SqueezeNet v1.1 (SqueezeNet_v1.1/train_val.prototxt): 1,235,496 parameters, 2.4x fewer MACs."""
    defaults = dict(stem=STEM_V1_1, pool_after=("conv1", "fire3", "fire5"), conv10_pad=0)
    return SqueezeNetConfig(**{**defaults, **overrides})


def squeezenet_simple_bypass(**overrides) -> SqueezeNetConfig:
    """v1.0 with simple bypass, as SqueezeNet-Residual/trainval.prototxt (Table 3, row 2)."""
    return squeezenet_v1_0(**{"bypass": "simple", **overrides})


def squeezenet_complex_bypass(**overrides) -> SqueezeNetConfig:
    """v1.0 with complex bypass: 1x1-conv bypasses where channels differ (Table 3, row 3)."""
    return squeezenet_v1_0(**{"bypass": "complex", **overrides})


def squeezenet_small(**overrides) -> SqueezeNetConfig:
    """The SqueezeNet defaults for 28-32 px inputs (Fashion-MNIST, CIFAR): v1.0 with a stride-1 3x3 stem.

    The pools stay where v1.0 has them (conv1, fire4, fire8): 28 -> 14 -> 7 -> 3 px.
    """
    defaults = dict(
        stem=STEM_SMALL,
        conv10_pad=0,
        num_classes=10,
        input_shape=(28, 28, 1),
    )
    return SqueezeNetConfig(**{**defaults, **overrides})


PRESETS = {
    "squeezenet_v1_0": squeezenet_v1_0,
    "squeezenet_v1_1": squeezenet_v1_1,
    "squeezenet_simple_bypass": squeezenet_simple_bypass,
    "squeezenet_complex_bypass": squeezenet_complex_bypass,
    "squeezenet_small": squeezenet_small,
}


def from_preset(name: str, **overrides) -> SqueezeNetConfig:
    """A preset by name, with fields replaced (``from_preset("squeezenet_v1_0", sr=0.25)``)."""
    if name not in PRESETS:
        raise ConfigError(f"preset={name!r}: must be one of {', '.join(PRESETS)}")
    return PRESETS[name](**overrides)


def to_dict(cfg: SqueezeNetConfig) -> dict:
    """JSON-ready metaparameters (the stem as a dict, tuples as lists)."""
    d = dataclasses.asdict(cfg)
    d["pool_after"] = list(cfg.pool_after)
    d["input_shape"] = list(cfg.input_shape)
    return d


def from_dict(d: dict) -> SqueezeNetConfig:
    """Inverse of :func:`to_dict`."""
    d = dict(d)
    stem = d.get("stem", STEM_V1_0)
    d["stem"] = STEMS[stem] if isinstance(stem, str) else Stem(**stem) if isinstance(stem, dict) else stem
    for key in ("pool_after", "input_shape"):
        if key in d:
            d[key] = tuple(d[key])
    return SqueezeNetConfig(**d)
