"""Loading Caffe weights into the model: the released v1.0, layer by layer, and mismatches."""

import numpy as np
import pytest
from conftest import NET
from flax import nnx

from sqzdse.compress.codec import WeightsFormatError
from sqzdse.model.config import squeezenet_v1_1
from sqzdse.model.network import SqueezeNet
from sqzdse.model.weights import load_caffe_weights, load_pretrained


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.net"):
        load_pretrained(tmp_path / "nope.net")


@pytest.fixture(scope="module")
def model():
    return load_pretrained(NET)


def test_load_puts_values_in_place(model, released):
    w, b = released["conv1"]
    k = np.asarray(model.conv1.kernel[...])
    assert k.shape == (7, 7, 3, 96)
    for h, x, i, o in [(0, 0, 0, 0), (6, 2, 1, 5), (3, 5, 2, 95)]:
        assert k[h, x, i, o] == w[o, i, h, x]
    np.testing.assert_array_equal(np.asarray(model.conv1.bias[...]), b)
    for name, conv in [("fire9/expand3x3", model.fire9.expand3x3), ("conv10", model.conv10)]:
        np.testing.assert_array_equal(
            np.asarray(conv.kernel[...]), released[name][0].transpose(2, 3, 1, 0), err_msg=name
        )
        np.testing.assert_array_equal(np.asarray(conv.bias[...]), released[name][1], err_msg=name)
    # Fire's concat is expand1x1 then expand3x3: the two must not be swapped.
    np.testing.assert_array_equal(np.asarray(model.fire2.expand1x1.bias[...]), released["fire2/expand1x1"][1])


def test_mismatches_name_the_layer_and_change_nothing(model, released):
    bad = dict(released)
    bad["fire5/expand3x3"] = (np.zeros((128, 32, 1, 1), np.float32), released["fire5/expand3x3"][1])
    bad["conv1"] = (np.zeros_like(released["conv1"][0]), released["conv1"][1])  # staged before the bad layer
    with pytest.raises(WeightsFormatError, match=r"fire5/expand3x3: weights have shape \(128, 32, 1, 1\)"):
        load_caffe_weights(model, bad)
    np.testing.assert_array_equal(np.asarray(model.conv1.kernel[...]), released["conv1"][0].transpose(2, 3, 1, 0))
    bad = {k: v for k, v in released.items() if k != "fire7/squeeze1x1"}
    with pytest.raises(WeightsFormatError, match="missing fire7/squeeze1x1"):
        load_caffe_weights(model, bad)
    with pytest.raises(WeightsFormatError, match="not in the model extra/conv"):
        load_caffe_weights(model, {**released, "extra/conv": released["conv10"]})
    with pytest.raises(WeightsFormatError, match="conv1: weights have shape"):
        load_caffe_weights(nnx.eval_shape(lambda: SqueezeNet(squeezenet_v1_1(), rngs=nnx.Rngs(0))), released)
