"""ImageNet prediction with the released weights on scikit-image's photos (a tabby cat, an espresso)."""

import contextlib
import io
import json

import numpy as np
import pytest
import skimage.data
from PIL import Image

from sqzdse import api
from sqzdse.cli import main
from sqzdse.deploy.predict import imagenet_labels, imagenet_synsets, predict_files, preprocess


@pytest.fixture(scope="module")
def model():
    return api.load("released")  # the bundled compressed_SqueezeNet.net


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    cat, coffee = str(d / "chelsea.png"), str(d / "coffee.jpg")
    Image.fromarray(skimage.data.chelsea()).save(cat)
    Image.fromarray(skimage.data.coffee()).save(coffee, quality=95)
    return cat, coffee


@pytest.fixture(scope="module")
def records(photos):
    # Three images, one repeated: argument order and batching in a single forward; the CLI's default
    # weights are the bundled release (`--weights released`).
    cat, coffee = photos
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["predict", coffee, cat, coffee, "--top", "5", "--json"]) == 0
    return json.loads(out.getvalue())


def test_labels_from_tfds():
    labels, synsets = imagenet_labels(), imagenet_synsets()
    assert len(labels) == len(set(synsets)) == 1000
    assert labels[281] == "tabby, tabby cat" and labels[967] == "espresso"
    assert synsets[0] == "n01440764" and synsets[281] == "n02123045"


def test_preprocess_is_caffe_bgr_minus_mean():
    x = preprocess(np.full((300, 400, 3), (123, 117, 104), np.uint8))  # RGB = the BGR mean reversed
    assert x.shape == (227, 227, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x, 0.0)
    red = preprocess(Image.new("RGB", (64, 64), (255, 0, 0)))
    np.testing.assert_array_equal(red[0, 0], [-104.0, -117.0, 255.0 - 123.0])
    # Centre crop of the 256x256 resize: rows 14..240 keep a 256-row gradient's middle.
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, axis=2).repeat(256, axis=1)
    np.testing.assert_array_equal(preprocess(ramp)[[0, -1], 0, 0], [14.0 - 104.0, 240.0 - 104.0])


def test_cat_and_espresso(records, photos):
    cat, coffee = photos
    assert [r["image"] for r in records] == [coffee, cat, coffee]
    assert 281 <= records[1]["top"][0]["class_id"] <= 285  # tabby .. Egyptian cat
    assert records[0]["top"][0]["class_id"] == 967
    assert records[0]["top"][0]["name"] == "espresso"
    # The same photo twice in one batch: same classes; probabilities equal to float32 rounding (the
    # GEMM convolutions of sqzdse.model.ops block over the batch axis, so position can move the last bit).
    assert [t["class_id"] for t in records[0]["top"]] == [t["class_id"] for t in records[2]["top"]]
    np.testing.assert_allclose([t["prob"] for t in records[0]["top"]], [t["prob"] for t in records[2]["top"]],
                               rtol=1e-5)  # fmt: skip


def test_probabilities_sorted_and_bounded(records):
    for r in records:
        probs = [t["prob"] for t in r["top"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True)
        assert all(p > 0 for p in probs) and sum(probs) <= 1.0 + 1e-6
        assert len({t["class_id"] for t in r["top"]}) == 5


def test_unreadable_files_are_clear_errors(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        predict_files(model, [str(tmp_path / "missing.jpg")])
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    with pytest.raises(ValueError, match="junk.png"):
        predict_files(model, [str(junk)])


def test_any_model_api_load_reads_predicts(run_dir, tmp_path, capsys):
    """A small-input model gets its dataset's normalisation and class names; a run whose normalisation is not
    recorded (trained on arrays) is refused in one line, not given the release's preprocessing."""
    from builders import tiny
    from flax import nnx

    cfg = tiny(input_shape=(28, 28, 1), num_classes=10)
    graphdef, params = nnx.split(api.init_model(cfg, seed=0), nnx.Param)
    clf = api.Classifier(cfg, graphdef, params, *api.what_training_saw("fashion_mnist", cfg), "test")
    shirt = tmp_path / "shirt.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(shirt)
    (rec,) = predict_files(clf, [str(shirt)], top=3)
    expected = clf.classify(np.asarray(Image.open(shirt)), top=3)[0]
    assert [t["class_id"] for t in rec["top"]] == [t["class_id"] for t in expected]
    assert rec["top"][0]["name"] in clf.labels and "synset" not in rec["top"][0]
    assert len(predict_files(clf, [str(shirt)], top=11)[0]["top"]) == 10  # all its classes
    with pytest.raises(ValueError, match="top=0: must be >= 1"):
        predict_files(clf, [str(shirt)], top=0)
    assert main(["predict", "--weights", run_dir, str(shirt)]) == 2
    err = capsys.readouterr().err
    assert "normalised is not recorded" in err and err.count("\n") == 1, err
