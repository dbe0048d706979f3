"""Deep Compression and DSD: the released layout, exact decoding, sizes on disk, masks held through training."""

import json
import math
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REFERENCE
from test_train import synthetic, tiny

from sqzdse import compress as Z
from sqzdse import config as C
from sqzdse import train as T
from sqzdse.cli import main
from sqzdse.weights import WeightsFormatError, caffe_layer_shapes, read_compressed_layers, read_compressed_net

REF = REFERENCE / "caffe" / "SqueezeNet_compressed"
NET = REF / "compressed_SqueezeNet.net"


@pytest.fixture(scope="module")
def released():
    return Z.load_released(NET)


@pytest.fixture(scope="module")
def ds():
    return synthetic()


def random_weights(cfg, seed=0):
    rng = np.random.default_rng(seed)
    return {
        name: ((0.1 * rng.standard_normal(shape)).astype(np.float32), rng.standard_normal(shape[0]).astype(np.float32))
        for name, shape in caffe_layer_shapes(cfg).items()
    }


def kernels(weights):
    return {name: w for name, (w, _) in weights.items()}


# --------------------------------------------------------------------------- the released model


def test_released_density_pattern_is_the_released_files(released):
    assert {name: int(np.count_nonzero(w)) for name, (w, _) in released.items()} == Z.RELEASED_NONZERO
    v10 = Z.released_densities(C.squeezenet_v1_0())
    # Pruning the released weights at the released pattern keeps exactly their non-zeros.
    masks = Z.magnitude_masks(kernels(released), v10)
    for name, (w, _) in released.items():
        np.testing.assert_array_equal(masks[name], w != 0, err_msg=name)
    assert round(v10["fire2/expand3x3"], 2) == 0.33 and round(v10["conv10"], 2) == 0.2
    # Other configurations: by role (layer name); a complex bypass takes its Fire's expand1x1 density.
    other = Z.released_densities(C.squeezenet_small(sr=0.25, bypass="complex"))
    assert other["fire9/expand3x3"] == v10["fire9/expand3x3"] and other["conv10"] == v10["conv10"]
    assert other["fire2/bypass1x1"] == v10["fire2/expand1x1"]
    assert not any("expand1x1" in n for n in Z.released_densities(C.squeezenet_v1_0(pct3x3=1.0)))


def test_released_file_reencodes_byte_identically(tmp_path):
    layers = read_compressed_layers(NET)
    assert Z.file_format(layers, huffman=False) == "net"
    assert Z.encode(layers) == NET.read_bytes()
    for layer in layers:  # the released relative index, fillers included, is ours
        codes, gaps = Z.relative_index(np.flatnonzero(layer.decode()), layer.codes[layer.codes != 0])
        np.testing.assert_array_equal(codes, layer.codes, err_msg=layer.name)
        np.testing.assert_array_equal(gaps, layer.gaps, err_msg=layer.name)
    out = tmp_path / "released.sqz"
    assert Z.write(layers, out, huffman=True) == out.stat().st_size < NET.stat().st_size
    for a, b in zip(layers, Z.read(out), strict=True):
        np.testing.assert_array_equal(a.decode(), b.decode())
    assert Z.size_report(layers)["fixed"]["bytes"] == NET.stat().st_size


def test_v1_0_at_6_bits_is_under_half_a_megabyte_with_huffman(released, tmp_path):
    """The paper's '<0.5MB': released densities, 6-bit shared weights. Fixed-width codes and 4-bit indices
    come to 551,139 bytes; Huffman coding of codes (-29 %) and indices (-39 %) gets it to 377,989."""
    layers = Z.share_weights(released, Z.magnitude_masks(kernels(released), Z.layer_densities(C.squeezenet_v1_0())), 6)
    r = Z.size_report(layers)
    fixed, huff = r["fixed"], r["huffman"]
    assert fixed["bytes"] > 500_000 > huff["bytes"]
    assert huff["parts"]["codes"] < 0.8 * fixed["parts"]["codes"]
    assert huff["parts"]["index"] < 0.7 * fixed["parts"]["index"]
    assert fixed["parts"]["codebook"] == 26 * 64 * 4 and fixed["parts"]["bias"] == 4 * sum(
        s[0] for s in caffe_layer_shapes(C.squeezenet_v1_0()).values()
    )
    out = tmp_path / "v10_6bit.sqz"
    assert Z.write(layers, out, huffman=True) == out.stat().st_size == huff["bytes"]
    for a, b in zip(layers, Z.read(out), strict=True):
        np.testing.assert_array_equal(a.decode(), b.decode(), err_msg=a.name)
        assert len(np.unique(b.codebook[b.codes])) <= 64


# --------------------------------------------------------------------------- exactness and sizes


@pytest.mark.parametrize("bits, huffman, density", [(4, False, "released"), (4, True, 0.5), (8, True, 0.25)])
def test_decoded_equals_the_quantised_weights_exactly(tmp_path, bits, huffman, density):
    cfg = tiny()
    weights = random_weights(cfg)
    masks = Z.magnitude_masks(kernels(weights), Z.layer_densities(cfg, density))
    layers = Z.share_weights(weights, masks, bits)
    for layer in layers:
        # The quantised weights, computed independently: each kept weight becomes its nearest centroid.
        w, m = weights[layer.name][0], masks[layer.name]
        centroids = layer.codebook[1:]
        assert centroids.size == 2**bits - 1 and layer.codebook[0] == 0 and (np.diff(centroids) > 0).all()
        expected = np.zeros_like(w)
        expected[m] = centroids[np.argmin(np.abs(w[m][:, None] - centroids[None, :]), axis=1)]
        np.testing.assert_array_equal(layer.decode(), expected, err_msg=layer.name)
    out = tmp_path / "tiny.sqz"
    size = Z.write(layers, out, huffman=huffman)
    assert size == out.stat().st_size == Z.size_report(layers)["huffman" if huffman else "fixed"]["bytes"]
    assert out.read_bytes()[:4] == b"SQZC"
    back = Z.read(out)
    assert [(x.name, x.shape) for x in back] == list(caffe_layer_shapes(cfg).items())
    for a, b in zip(layers, back, strict=True):
        np.testing.assert_array_equal(b.decode(), a.decode(), err_msg=a.name)
        np.testing.assert_array_equal(b.bias, weights[a.name][1])


def test_kmeans_is_deterministic_and_starts_linear():
    v = np.random.default_rng(1).laplace(size=4000).astype(np.float32)
    c1, l1 = Z.kmeans_1d(v, 15)
    c2, l2 = Z.kmeans_1d(v, 15)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(l1, l2)
    c0, _ = Z.kmeans_1d(v, 15, iters=0)  # the linear initialisation, unchanged
    np.testing.assert_allclose(c0, np.linspace(v.min(), v.max(), 15), rtol=1e-6)
    assert c1.min() >= v.min() and c1.max() <= v.max() and (np.diff(c1) > 0).all()
    assert np.abs(v - c1[l1]).mean() < np.abs(v - c0[_nearest(v, c0)]).mean()  # Lloyd improves on it


def _nearest(v, c):
    return np.argmin(np.abs(v[:, None] - c[None, :]), axis=1)


def test_relative_index_bridges_long_gaps_with_fillers():
    codes, gaps = Z.relative_index([0, 15, 16, 50, 83], [1, 2, 3, 4, 5])
    # 33 zeros before 50: fillers at 32 and 48, then gap 1; 32 zeros before 83: fillers at 66 and 82, gap 0.
    assert codes.tolist() == [1, 2, 3, 0, 0, 4, 0, 0, 5]
    assert gaps.tolist() == [0, 14, 0, 15, 15, 1, 15, 15, 0]
    pos = np.cumsum(gaps.astype(int) + 1) - 1
    assert pos[codes != 0].tolist() == [0, 15, 16, 50, 83]
    with pytest.raises(ValueError, match="increasing"):
        Z.relative_index([3, 3], [1, 1])


def test_huffman_round_trip_and_code_properties():
    rng = np.random.default_rng(0)
    symbols = np.minimum(rng.geometric(0.35, 20_000) - 1, 15)
    counts = np.bincount(symbols, minlength=16)
    lengths = Z.huffman_lengths(counts)
    assert sum(2.0 ** -lengths[lengths > 0]) == 1.0  # a complete prefix code (Kraft equality)
    data = Z.huffman_encode(symbols, lengths)
    assert len(data) == math.ceil(int(lengths[symbols].sum()) / 8)
    p = counts[counts > 0] / counts.sum()
    assert lengths[symbols].mean() < -(p * np.log2(p)).sum() + 1  # within a bit of the entropy
    np.testing.assert_array_equal(Z.huffman_decode(data, lengths, symbols.size), symbols)
    # Canonical: the code depends on the lengths only, so the lengths are all a decoder needs.
    codes = Z.canonical_codes(lengths)
    words = {format(int(codes[s]), f"0{int(lengths[s])}b") for s in np.flatnonzero(lengths)}
    assert not any(a != b and b.startswith(a) for a in words for b in words)
    # One symbol, none, and counts that would need codes longer than 15 bits.
    one = Z.huffman_lengths(np.bincount([7] * 9, minlength=16))
    assert one[7] == 1 and one.sum() == 1
    np.testing.assert_array_equal(Z.huffman_decode(Z.huffman_encode([7] * 9, one), one, 9), [7] * 9)
    assert Z.huffman_encode([], one) == b"" and Z.huffman_lengths(np.zeros(4, int)).sum() == 0
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    long = Z.huffman_lengths(fib)
    assert long.max() == Z.MAX_CODE_LENGTH and sum(2.0**-long) <= 1
    sym = np.repeat(np.arange(30), 3)
    np.testing.assert_array_equal(Z.huffman_decode(Z.huffman_encode(sym, long), long, sym.size), sym)


def test_bit_packing_round_trips():
    v = np.random.default_rng(0).integers(0, 64, 1001).astype(np.uint8)
    packed = Z.pack_bits(v, 6)
    assert len(packed) == math.ceil(1001 * 6 / 8)
    np.testing.assert_array_equal(Z.unpack_bits(packed, 6, 1001), v)
    assert Z.pack_bits([1, 2, 3], 4) == bytes([0x21, 0x03])  # low nibble first, as the released file


def test_invalid_bits_density_and_files_are_clear_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"bits=9: must be an integer from 2 to 8"):
        Z.check_bits(9)
    with pytest.raises(ValueError, match="bits=True"):
        Z.share_weights({}, {}, True)
    with pytest.raises(ValueError, match=r"density=1.5: must be 'released' or a fraction"):
        Z.layer_densities(tiny(), 1.5)
    with pytest.raises(ValueError, match="density='most'"):
        Z.parse_density("most")
    out = str(tmp_path / "x.sqz")
    assert main(["compress", "--pretrained", str(NET), "--bits", "9", "-o", out]) == 2
    assert capsys.readouterr().err.startswith("sqzdse: error: bits=9")
    assert main(["compress", "--pretrained", str(NET), "--density", "0", "-o", out]) == 2
    assert capsys.readouterr().err.startswith("sqzdse: error: density='0'")
    assert main(["compress", "-o", out]) == 2
    assert "RUN_DIR or --pretrained" in capsys.readouterr().err
    bad = tmp_path / "bad.sqz"
    layers = Z.share_weights(random_weights(tiny()), Z.magnitude_masks(kernels(random_weights(tiny())),
                             Z.layer_densities(tiny())), 4)  # fmt: skip
    bad.write_bytes(Z.encode(layers, huffman=True)[:-3])
    with pytest.raises(WeightsFormatError, match="bad.sqz"):
        Z.read(bad)


def test_cli_compresses_the_released_model_in_its_own_layout(tmp_path, capsys):
    out = tmp_path / "v10_8bit.net"
    assert main(["compress", "--pretrained", str(NET), "--bits", "8", "-o", str(out), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["format"] == "net" and r["file_bytes"] == out.stat().st_size == r["fixed"]["bytes"] == 675_763
    assert r["float32_bytes"] == 4 * 1_248_424 and r["stages"] == {}
    assert sum(x["kept"] for x in r["layers"]) == sum(Z.RELEASED_NONZERO.values())
    ours = read_compressed_net(out)  # what `sqzdse predict --weights` reads
    assert {n: int(np.count_nonzero(w)) for n, (w, _) in ours.items()} == Z.RELEASED_NONZERO
    assert main(["compress", "--pretrained", "released", "--bits", "6", "--huffman", "-o", str(tmp_path / "a")]) == 0
    text = capsys.readouterr().out
    assert "377,989 bytes on disk" in text and "fire9/expand3x3" in text


def test_importing_compress_loads_no_jax():
    # The CLI imports sqzdse.compress to build its parser; `sqzdse plot` must stay free of JAX.
    code = "import sys, sqzdse.compress; print(any(m.startswith(('jax', 'flax')) for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


# --------------------------------------------------------------------------- training with masks, DSD, pipeline


def test_pruning_masks_survive_fine_tuning(ds):
    """Adam with L2 weight decay: the pruned weights stay exactly 0 after every update."""
    cfg = tiny()
    tc = T.TrainConfig(batch_size=16, epochs=1, warmup_epochs=0, init="msra", lr=3e-3, weight_decay=1e-3)
    _, state = T.create_train_state(cfg, tc, 1, 1)
    pruned, masks, mask = Z.prune(cfg, state.params, 0.4)
    r = T.train_and_evaluate(cfg, tc, None, dataset=ds, progress=False, init_params=pruned, mask=mask)
    assert r["updates"] == 10
    before, after = Z.caffe_weights(cfg, pruned), Z.caffe_weights(cfg, r["state"][1].params)
    for name, (w, _) in after.items():
        m = masks[name]
        assert m.sum() == C.round_half_up(0.4 * m.size)
        assert (w[~m] == 0).all(), name
        assert not np.array_equal(w[m], before[name][0][m]), name  # the kept weights did train


def test_dsd_runs_three_phases_and_holds_the_mask(ds, tmp_path):
    tc = T.TrainConfig(batch_size=16, epochs=2, warmup_epochs=0, init="msra", lr=3e-3)
    r = Z.train_dsd(tiny(), tc, str(tmp_path), dataset=ds, density=0.5, phases=(0.5, 0.5, 0.5), progress=False)
    assert list(r["phases"]) == ["dense", "sparse", "redense"] and r["status"] == "completed"
    assert all(p["status"] == "completed" and p["updates"] == 10 for p in r["phases"].values())
    # Pruned weights come back at 0 and train (those feeding dead ReLUs get no gradient and stay 0).
    assert r["phases"]["sparse"]["kernel_density"] <= 0.51 < 0.75 < r["phases"]["redense"]["kernel_density"]
    assert r["phases"]["redense"]["lr"] == pytest.approx(0.1 * tc.lr) and r["phases"]["sparse"]["lr"] == tc.lr
    for p, m in zip(jax.tree.leaves(r["sparse_params"]), jax.tree.leaves(r["mask"]), strict=True):
        assert (np.asarray(p)[~np.asarray(m)] == 0).all()
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["test_top1"] == r["test_top1"] == r["phases"]["redense"]["test_top1"]
    assert all((tmp_path / name / "run.json").exists() for name in Z.PHASE_NAMES)
    _, _, _, params = T.load_run(str(tmp_path))  # a DSD directory loads as its re-dense run
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(r["state"][1].params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_compress_a_trained_run_with_fine_tuning(ds, tmp_path):
    run = str(tmp_path / "run")
    tc = T.TrainConfig(batch_size=16, epochs=2, warmup_epochs=0, init="msra", lr=5e-3)
    T.train_and_evaluate(tiny(), tc, run, dataset=ds, progress=False)
    cfg, tc, graphdef, params = T.load_run(run)
    out = tmp_path / "tiny.sqz"
    r = Z.compress_to_file(out, cfg, params, huffman=True, bits=4, density=0.5, tc=tc, graphdef=graphdef,
                           dataset=ds, finetune_epochs=1)  # fmt: skip
    assert r["file_bytes"] == out.stat().st_size == r["huffman_coded"]["bytes"] < r["fixed"]["bytes"]
    assert list(r["stages"]) == ["trained", "pruned", "pruned + fine-tuned", "quantised", "quantised + fine-tuned",
                                 "decoded file"]  # fmt: skip
    assert r["stages"]["decoded file"] == r["stages"]["quantised + fine-tuned"]
    for layer, row in zip(Z.read(out), r["layers"], strict=True):
        w = layer.decode()
        assert len(np.unique(w[w != 0])) <= 15  # still 15 shared weights after centroid fine-tuning
        assert row["density"] == np.count_nonzero(layer.codes) / w.size <= 0.5
    assert "bytes on disk" in Z.format_report(r)
    with pytest.raises(ValueError, match="fine-tuning needs"):
        Z.compress_model(cfg, params, finetune_epochs=1)


def test_train_dsd_command_prints_every_phase(monkeypatch, capsys):
    from sqzdse.cli import build_parser

    seen = {}

    def fake(cfg, tc, workdir, **kw):
        seen.update(kw, workdir=workdir)
        phase = dict(status="completed", val_top1=0.9, test_top1=0.89, epochs=1.0, lr=1e-3, kernel_density=0.7)
        return dict(status="completed", test_top1=0.89, phases=dict.fromkeys(Z.PHASE_NAMES, phase), state=None,
                    mask=None, sparse_params=None)  # fmt: skip

    monkeypatch.setattr(Z, "train_dsd", fake)
    args = build_parser().parse_args(["train", "--dsd", "--dsd-density", "released", "--dsd-phases", "0.6,0.2,0.2",
                                      "--workdir", "w", "--no-progress"])  # fmt: skip
    assert Z.run_dsd(args, tiny(), T.TrainConfig(), dataset=None) == 0
    assert seen["density"] == "released" and seen["phases"] == (0.6, 0.2, 0.2) and seen["redense_lr"] == 0.1
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == ["phase", *Z.PHASE_NAMES]
    args.dsd_phases = "half,rest"
    with pytest.raises(ValueError, match="--dsd-phases 'half,rest'"):
        Z.run_dsd(args, tiny(), T.TrainConfig(), dataset=None)
