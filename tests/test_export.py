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
from sqzdse.deploy.onnx import export, lax_forward
from sqzdse.model import config as C
from sqzdse.model.weights import caffe_weights


def run_onnx(path, x_nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return tuple(session.run(["scores", "probabilities"], {"data": x_nhwc.transpose(0, 3, 1, 2)}))


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
