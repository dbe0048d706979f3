"""ONNX export: the plain-lax forward equals the model; ONNX Runtime equals JAX on the release and a trained run."""

import json

import jax
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import skimage.data
from builders import tiny
from flax import nnx

from sqzdse import api
from sqzdse.cli import main
from sqzdse.data import pipeline as D
from sqzdse.deploy.onnx import export, lax_forward
from sqzdse.model import config as C
from sqzdse.model.weights import caffe_weights
from sqzdse.train import loop as T


def run_onnx(path, x_nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return run_onnx_nchw(path, x_nhwc.transpose(0, 3, 1, 2))


def run_onnx_nchw(path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return tuple(session.run(["scores", "probabilities"], {"data": x}))


def as_the_card_says(card: dict, images: list[np.ndarray]) -> np.ndarray:
    """uint8 images as the ONNX card's input: its preprocessing steps done by hand, with PIL for decoding and
    resizing and nothing of sqzdse's, so that a card that describes the wrong input shows as a wrong answer."""
    from PIL import Image

    prep, (inp,) = card["preprocessing"], card["inputs"]
    _, c, h, w = inp["shape"]
    out = []
    for im in images:
        pil = Image.fromarray(im).convert("L" if prep["channel_order"] == "grayscale" else "RGB")
        if prep["channel_order"] == "BGR":  # resize to 256x256 (bilinear), centre crop, RGB -> BGR, minus the mean
            x = np.asarray(pil.resize((256, 256), Image.Resampling.BILINEAR), np.float32)
            top, left = (256 - h) // 2, (256 - w) // 2
            x = x[top : top + h, left : left + w, ::-1] - np.float32(prep["mean_bgr"])
        else:
            if pil.size != (w, h):
                pil = pil.resize((w, h), Image.Resampling.BILINEAR)
            x = (np.asarray(pil, np.float32).reshape(h, w, c) - np.float32(prep["mean"])) / np.float32(prep["std"])
        out.append(x.transpose(2, 0, 1))
    x = np.stack(out)
    assert np.all(x >= np.float32(inp["min_per_channel"])[:, None, None] - 1e-3)
    assert np.all(x <= np.float32(inp["max_per_channel"])[:, None, None] + 1e-3)
    return x


@pytest.mark.parametrize(
    "cfg",
    [
        tiny(),  # 16 px: every pool takes Caffe's extra ceil-mode row and column
        tiny(bypass="simple", input_shape=(17, 17, 1)),
        tiny(bypass="complex", pct3x3=1.0, stem=C.Stem(16, 3, 1, 1)),  # no expand1x1 branch; a narrower stem
        tiny(pct3x3=0.0, stem=C.Stem(16, 3, 2, 0), input_shape=(33, 33, 1)),  # no expand3x3; a strided stem
    ],
    ids=["plain", "simple-bypass", "complex-bypass-3x3-only", "1x1-only-strided"],
)
def test_lax_forward_equals_the_model(cfg):
    model = api.init_model(cfg, seed=1, init="msra")
    x = np.random.default_rng(0).normal(size=(3, *cfg.input_shape)).astype(np.float32) * 50
    scores, probs = jax.jit(lax_forward(cfg, caffe_weights(cfg, nnx.state(model, nnx.Param))))(x.transpose(0, 3, 1, 2))
    expected = np.asarray(api.forward(model, x))
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(probs, jax.nn.softmax(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_released_onnx_equals_jax_and_carries_names_and_a_description(tmp_path):
    """One test, so that one pytest-xdist worker exports the release (a module fixture is set up on every worker
    that runs one of its tests)."""
    clf = api.load("released")
    path = tmp_path / "squeezenet_v1_0.onnx"
    desc = export(clf, path)
    cat, coffee = skimage.data.chelsea(), skimage.data.coffee()
    x = clf.prepare([cat, coffee, cat[:, ::-1]])  # batch 3; a mirrored cat
    expected = np.asarray(api.forward(clf.model, x))
    for batch in (x[:1], x):  # the batch dimension is dynamic
        scores, probs = run_onnx(path, batch)
        np.testing.assert_allclose(scores, expected[: len(batch)], rtol=1e-4, atol=1e-4 * np.abs(expected).max())
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    top1 = scores.argmax(axis=1)
    assert 281 <= top1[0] <= 285 and top1[1] == 967 and 281 <= top1[2] <= 285

    model = onnx.load(str(path))
    (inp,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "data" and dims == ["batch", 3, 227, 227]
    meta = {p.key: p.value for p in model.metadata_props}
    names = json.loads(meta["class_names"])
    assert len(names) == 1000 and names[281] == "tabby, tabby cat" and names[967] == "espresso"
    assert json.loads(meta["description"]) == desc == json.loads(path.with_name(path.name + ".json").read_text())
    assert desc["inputs"][0]["layout"] == "NCHW" and desc["preprocessing"]["channel_order"] == "BGR"
    assert desc["preprocessing"]["mean_bgr"] == [104.0, 117.0, 123.0]
    assert [o["name"] for o in desc["outputs"]] == ["scores", "probabilities"]
    assert C.from_dict(json.loads(meta["sqzdse_config"])) == clf.cfg
    _, probs = run_onnx_nchw(path, as_the_card_says(desc, [cat, coffee]))  # fed as the card says
    np.testing.assert_allclose(probs, clf.probabilities(clf.prepare([cat, coffee])), atol=1e-4)


@pytest.mark.slow
def test_a_small_input_runs_card_says_what_its_input_is(tmp_path):
    """A run trained on Fashion-MNIST-shaped data records the dataset's normalisation; its card says it, and ONNX
    Runtime fed as the card says gives api.load's probabilities."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(48, 28, 28), dtype=np.uint8)
    data = D.from_arrays("fashion_mnist", (images[:40], np.arange(40) % 10), (images[40:], np.arange(8) % 10),
                         num_classes=10, val_size=8)  # fmt: skip
    run = str(tmp_path / "run")
    tc = T.TrainConfig(dataset="fashion_mnist", batch_size=16, epochs=1, warmup_epochs=0, init="msra")
    assert T.train_and_evaluate(tiny(input_shape=(28, 28, 1), num_classes=10), tc, run, dataset=data,
                                progress=False).status == "completed"  # fmt: skip
    clf = api.load(run)
    card = export(clf, tmp_path / "run.onnx")
    assert card["preprocessing"]["mean"] == list(clf.preprocessing.mean) and card["dataset"] == "fashion_mnist"
    assert "(p - mean) / std" in card["inputs"][0]["value_range"]
    photos = [images[0], images[1], np.asarray(skimage.data.camera())]  # stored size, and a 512x512 photo resized
    _, probs = run_onnx_nchw(tmp_path / "run.onnx", as_the_card_says(card, photos))
    np.testing.assert_allclose(probs, clf.probabilities(clf.prepare(photos)), atol=1e-5)


def test_a_trained_run_exports_from_the_cli(run_dir, tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    assert main(["export", run_dir, "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and out.with_name("tiny.onnx.json").exists()
    clf = api.load(run_dir)
    x = np.random.default_rng(1).normal(size=(3, *clf.cfg.input_shape)).astype(np.float32)
    expected = np.asarray(api.forward(clf.model, x))
    for batch in (x[:1], x):
        scores, _ = run_onnx(out, batch)
        np.testing.assert_allclose(scores, expected[: len(batch)], rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_export_errors_are_one_line(tmp_path, capsys):
    for argv, message in (
        (["export", str(tmp_path / "nowhere"), "-o", str(tmp_path / "m.onnx")], "no training run"),
        (["export", "released", "-o", str(tmp_path / "m.txt")], "must be an .onnx file"),
        (["export", str(tmp_path / "missing.sqz"), "-o", str(tmp_path / "m.onnx")], "not found"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
