"""Metaparameters: the paper's formulas, rounding, and clear errors for impossible values."""

import dataclasses

import pytest

from sqzdse.model import config as C
from sqzdse.model.plan import layer_plan


def test_paper_formulas_for_squeezenet():
    # Section 5: base_e=128, incr_e=128, freq=2, pct3x3=0.5, SR=0.125 gives Table 1's widths.
    plan = layer_plan(C.squeezenet_v1_0())
    widths = [(f.squeeze, f.e1x1, f.e3x3) for f in plan.fires]
    assert widths == [(16, 64, 64)] * 2 + [(32, 128, 128)] * 2 + [(48, 192, 192)] * 2 + [(64, 256, 256)] * 2


def test_widths_round_half_up():
    # pct3x3 = 0.01: 1.28 -> 1, 2.56 -> 3, 3.84 -> 4, 5.12 -> 5 (e3x3); the rest is 1x1.
    plan = layer_plan(C.squeezenet_v1_0(pct3x3=0.01, sr=0.5))
    assert [f.e3x3 for f in plan.fires] == [1, 1, 3, 3, 4, 4, 5, 5]
    assert [f.e1x1 + f.e3x3 for f in plan.fires] == [128, 128, 256, 256, 384, 384, 512, 512]
    # 2.5 rounds up to 3 (Python's round would give 2).
    plan = layer_plan(C.squeezenet_v1_0(base_e=5, incr_e=0, pct3x3=0.5, sr=0.5))
    assert (plan.fires[0].e3x3, plan.fires[0].e1x1, plan.fires[0].squeeze) == (3, 2, 3)


def test_pct3x3_extremes_drop_a_branch():
    assert all(f.e3x3 == 0 for f in layer_plan(C.squeezenet_v1_0(pct3x3=0.0)).fires)
    assert all(f.e1x1 == 0 for f in layer_plan(C.squeezenet_v1_0(pct3x3=1.0)).fires)


def test_config_is_hashable_and_frozen():
    a, b = C.squeezenet_v1_0(sr=0.25), C.from_preset("squeezenet_v1_0", sr=0.25)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.sr = 0.5


def test_dict_round_trip():
    for name in C.PRESETS:
        cfg = C.from_preset(name)
        assert C.from_dict(C.to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "overrides, field, allowed",
    [
        (dict(sr=0.0), "sr", "> 0"),
        (dict(sr=-0.5), "sr", "> 0"),
        (dict(sr=0.001), "sr", "rounds to 0"),
        (dict(pct3x3=-0.1), "pct3x3", "[0, 1]"),
        (dict(pct3x3=1.5), "pct3x3", "[0, 1]"),
        (dict(freq=0), "freq", ">= 1"),
        (dict(freq=1.5), "freq", "integer"),
        (dict(base_e=0), "base_e", ">= 1"),
        (dict(incr_e=-1), "incr_e", ">= 0"),
        (dict(bypass="dense"), "bypass", "none, simple, complex"),
        (dict(num_classes=0), "num_classes", ">= 1"),
        (dict(dropout=1.0), "dropout", "[0, 1)"),
        (dict(input_shape=(24, 24, 3)), "input_shape", "too small"),
        (dict(input_shape=(5, 5, 3)), "input_shape", "too small"),
        (dict(pool_after=("fire10",)), "pool_after", "fire9"),
        (dict(stem=C.Stem(filters=0, kernel=3, stride=1)), "stem.filters", ">= 1"),
    ],
)
def test_invalid_metaparameters_name_field_and_range(overrides, field, allowed):
    with pytest.raises(C.ConfigError) as e:
        C.squeezenet_v1_0(**overrides)
    msg = str(e.value)
    assert msg.startswith(field + "=") and allowed in msg


def test_unknown_preset():
    with pytest.raises(C.ConfigError, match="preset='v2'.*squeezenet_v1_0"):
        C.from_preset("v2")


def test_small_input_stem_fits_28_and_32_px():
    assert layer_plan(C.squeezenet_small()).conv10_hw == (3, 3)
    assert layer_plan(C.squeezenet_small(input_shape=(32, 32, 3))).conv10_hw == (4, 4)
