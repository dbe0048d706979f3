"""The Deep Compression pipeline: v1.0 under half a megabyte, a trained run compressed with fine-tuning, the CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
from builders import kernels, random_weights, tiny
from conftest import NET

from sqzdse.cli import main
from sqzdse.compress import codec as K
from sqzdse.compress import pipeline as Z
from sqzdse.compress import prune as P
from sqzdse.model import config as C
from sqzdse.model.plan import caffe_layer_shapes
from sqzdse.train import loop as T


def test_v1_0_at_6_bits_is_under_half_a_megabyte_with_huffman(released, tmp_path):
    """The paper's '<0.5MB': released densities, 6-bit shared weights. Fixed-width codes and 4-bit indices
    come to 551,139 bytes; Huffman coding of codes (-29 %) and indices (-39 %) gets it to 377,989."""
    layers = K.share_weights(released, P.magnitude_masks(kernels(released), P.layer_densities(C.squeezenet_v1_0())), 6)
    r = K.size_report(layers)
    fixed, huff = r["fixed"], r["huffman"]
    assert fixed["bytes"] > 500_000 > huff["bytes"]
    assert huff["parts"]["codes"] < 0.8 * fixed["parts"]["codes"]
    assert huff["parts"]["index"] < 0.7 * fixed["parts"]["index"]
    assert fixed["parts"]["codebook"] == 26 * 64 * 4 and fixed["parts"]["bias"] == 4 * sum(
        s[0] for s in caffe_layer_shapes(C.squeezenet_v1_0()).values()
    )
    out = tmp_path / "v10_6bit.sqz"
    assert K.write(layers, out, huffman=True) == out.stat().st_size == huff["bytes"]
    for a, b in zip(layers, K.read(out), strict=True):
        np.testing.assert_array_equal(a.decode(), b.decode(), err_msg=a.name)
        assert len(np.unique(b.codebook[b.codes])) <= 64


# --------------------------------------------------------------------------- the CLI


def test_invalid_bits_density_and_files_are_clear_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"bits=9: must be an integer from 2 to 8"):
        K.check_bits(9)
    with pytest.raises(ValueError, match="bits=True"):
        K.share_weights({}, {}, True)
    with pytest.raises(ValueError, match=r"density=1.5: must be 'released' or a fraction"):
        P.layer_densities(tiny(), 1.5)
    with pytest.raises(ValueError, match="density='most'"):
        P.parse_density("most")
    out = str(tmp_path / "x.sqz")
    assert main(["compress", str(NET), "--bits", "9", "-o", out]) == 2
    assert capsys.readouterr().err.startswith("sqzdse: error: bits=9")
    assert main(["compress", str(NET), "--density", "0", "-o", out]) == 2
    assert capsys.readouterr().err.startswith("sqzdse: error: density='0'")
    with pytest.raises(SystemExit):
        main(["compress", "-o", out])
    assert "the following arguments are required: SOURCE" in capsys.readouterr().err
    bad = tmp_path / "bad.sqz"
    layers = K.share_weights(random_weights(tiny()), P.magnitude_masks(kernels(random_weights(tiny())),
                             P.layer_densities(tiny())), 4)  # fmt: skip
    bad.write_bytes(K.encode(layers, huffman=True)[:-3])
    with pytest.raises(K.WeightsFormatError, match="bad.sqz"):
        K.read(bad)


def test_cli_compresses_the_released_model_in_its_own_layout(tmp_path, capsys):
    out = tmp_path / "v10_8bit.net"
    assert main(["compress", str(NET), "--bits", "8", "-o", str(out), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["format"] == "net" and r["file_bytes"] == out.stat().st_size == r["fixed"]["bytes"] == 675_763
    assert r["float32_bytes"] == 4 * 1_248_424 and r["stages"] == {}
    assert sum(x["kept"] for x in r["layers"]) == sum(P.RELEASED_NONZERO.values())
    ours = K.read_weights(out)  # what `sqzdse predict --weights` reads
    assert {n: int(np.count_nonzero(w)) for n, (w, _) in ours.items()} == P.RELEASED_NONZERO
    assert main(["compress", "released", "--bits", "6", "--huffman", "-o", str(tmp_path / "a")]) == 0
    text = capsys.readouterr().out
    assert "377,989 bytes on disk" in text and "fire9/expand3x3" in text


def test_importing_compress_loads_no_jax():
    # The CLI imports sqzdse.compress.pipeline to build its parser; `sqzdse plot` must stay free of JAX.
    code = "import sys, sqzdse.compress.pipeline; print(any(m.startswith(('jax', 'flax')) for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


# --------------------------------------------------------------------------- with training


@pytest.mark.slow
def test_compress_a_trained_run_with_fine_tuning(ds, tmp_path):
    run = str(tmp_path / "run")
    tc = T.TrainConfig(batch_size=16, epochs=2, warmup_epochs=0, init="msra", lr=5e-3)
    T.train_and_evaluate(tiny(), tc, run, dataset=ds, progress=False)
    cfg, tc, graphdef, params = T.load_run(run)
    out = tmp_path / "tiny.sqz"
    r = Z.compress_to_file(out, cfg, params, huffman=True, bits=4, density=0.5, tc=tc, graphdef=graphdef,
                           dataset=ds, finetune_epochs=1)  # fmt: skip
    assert r.file_bytes == out.stat().st_size == r.huffman_coded["bytes"] < r.fixed["bytes"]
    assert list(r.stages) == ["trained", "pruned", "pruned + fine-tuned", "quantised", "quantised + fine-tuned",
                                 "decoded file"]  # fmt: skip
    assert r.stages["decoded file"] == r.stages["quantised + fine-tuned"]
    for layer, row in zip(K.read(out), r.layers, strict=True):
        w = layer.decode()
        assert len(np.unique(w[w != 0])) <= 15  # still 15 shared weights after centroid fine-tuning
        assert row["density"] == np.count_nonzero(layer.codes) / w.size <= 0.5
    assert "bytes on disk" in r.text()
    with pytest.raises(ValueError, match="fine-tuning needs"):
        Z.compress_model(cfg, params, finetune_epochs=1)
