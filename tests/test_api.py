"""The Python API: compiled initialisation, loading runs / .sqz / the release back, classifying arrays and images."""

import jax
import numpy as np
import pytest
import skimage.data
from builders import tiny
from flax import nnx
from PIL import Image

from sqzdse import api
from sqzdse.compress import pipeline as Z
from sqzdse.model import config as C
from sqzdse.model.network import SqueezeNet
from sqzdse.model.weights import WeightsFormatError, caffe_weights
from sqzdse.train import loop as T


@pytest.mark.slow
def test_init_model_equals_the_eager_model():
    # Every Fire the same width (incr_e=0): the eager initialisers compile once per shape, so a few shapes keep the
    # eager model quick to build; fire2's squeeze and bypass still read the stem's 64 channels (a bypass conv).
    cfg = tiny(bypass="complex", incr_e=0)
    fast = nnx.state(api.init_model(cfg, seed=3, init="msra"), nnx.Param)
    eager = nnx.state(SqueezeNet(cfg, init="msra", rngs=nnx.Rngs(3)), nnx.Param)
    # Xavier / He (uniform, normal) draw the same bits; the Gaussian's erfinv may differ by an ulp.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), fast, eager)


def test_released_classifies_the_cat_and_the_espresso():
    clf = api.load("released")
    assert clf.cfg.num_classes == 1000 and clf.preprocessing.family == "imagenet"
    # Three images: the batch test_predict's `sqzdse predict` compiles the release's forward for.
    cat, coffee, again = clf.classify([skimage.data.chelsea(), Image.fromarray(skimage.data.coffee()),
                                       skimage.data.chelsea()], top=3)  # fmt: skip
    assert [c["class_id"] for c in again] == [c["class_id"] for c in cat]
    assert 281 <= cat[0]["class_id"] <= 285 and "cat" in cat[0]["name"]  # tabby / tiger / Persian / Siamese / Egyptian
    assert coffee[0]["class_id"] == 967 and coffee[0]["name"] == "espresso"
    assert cat[0]["prob"] >= cat[1]["prob"] >= cat[2]["prob"]
    one = clf.classify(skimage.data.chelsea(), top=1)  # a single image needs no list
    assert one[0][0]["class_id"] == cat[0]["class_id"]


def test_a_run_and_its_compressed_file_load_back(run_dir, tmp_path):
    cfg, _, _, params = T.load_run(run_dir)
    clf = api.load(run_dir)
    # Trained on in-memory arrays: the run records TrainConfig's default dataset, which its 4 classes do not fit.
    assert clf.cfg == cfg and clf.preprocessing is None and clf.labels is None
    x = np.random.default_rng(0).normal(size=(3, *cfg.input_shape)).astype(np.float32)
    np.testing.assert_array_equal(api.forward(clf.model, x), api.forward(nnx.merge(clf.graphdef, params), x))
    with pytest.raises(ValueError, match="not recorded"):
        clf.classify(np.zeros(cfg.input_shape[:2], np.uint8))
    assert clf.probabilities(x).shape == (3, cfg.num_classes)

    sqz = tmp_path / "tiny.sqz"
    Z.compress_to_file(sqz, cfg, params, bits=6)
    packed = api.load(sqz, config=run_dir)
    decoded = Z.decoded_weights(Z.read(sqz))
    assert caffe_weights(cfg, packed.params).keys() == decoded.keys()
    for name, (w, b) in caffe_weights(cfg, packed.params).items():
        np.testing.assert_array_equal(w, decoded[name][0])
        np.testing.assert_array_equal(b, decoded[name][1])
    with pytest.raises(WeightsFormatError, match="conv1: .* config=RUN_DIR"):
        api.load(sqz)  # without its configuration: v1.0's layers do not match


def test_small_input_preprocessing_is_the_training_pipelines():
    prep = api.Preprocessing.of("fashion_mnist")
    image = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    family, mean, std = prep.family, np.float32(prep.mean), np.float32(prep.std)
    assert family == "small"
    np.testing.assert_allclose(prep(image, (28, 28, 1))[..., 0], (image - mean) / std, rtol=1e-6)
    # Another size and colour: made grayscale and resized to the model's input.
    big = Image.fromarray(np.stack([np.kron(image, np.ones((2, 2), np.uint8))] * 3, axis=-1))
    assert prep(big, (28, 28, 1)).shape == (28, 28, 1)
    with pytest.raises(ValueError, match="uint8"):
        prep(image.astype(np.float32), (28, 28, 1))
    clf = api.Classifier(C.squeezenet_small(input_shape=(28, 28, 1)), None, None, prep, None, "test")
    batch = np.stack([image] * 5)  # (5, 28, 28): a grayscale batch, not one 28-channel image
    assert clf.prepare(batch).shape == (5, 28, 28, 1) and clf.prepare(image).shape == (1, 28, 28, 1)
    assert api.Preprocessing.of("synthetic") is None
    prep, names = api.what_training_saw("fashion_mnist", C.squeezenet_small(input_shape=(28, 28, 1)))
    assert prep == api.Preprocessing.of("fashion_mnist") and names[0] == "T-shirt/top" and len(names) == 10
    assert api.what_training_saw("fashion_mnist", C.squeezenet_small(num_classes=4)) == (None, None)
