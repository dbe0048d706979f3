"""The training engine on a tiny SqueezeNet and synthetic data: learning, accumulation, resume, divergence,
signals, a busy workdir, damaged checkpoints."""

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from builders import logged, run, synthetic, tiny

from sqzdse.cli import main
from sqzdse.data import pipeline as D
from sqzdse.model import config as C
from sqzdse.train import checkpoints as ckpt
from sqzdse.train import loop as T
from sqzdse.train import recipe
from sqzdse.train.recipe import run_key


def params_of(result):
    return jax.tree.leaves(result.state.params)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_step_learns_a_fixed_batch(ds, dtype):
    cfg = tiny()
    # batch_size 16: the other tests' gradient of this network (float32), compiled once for all of them
    tc = T.TrainConfig(batch_size=16, lr=3e-3, schedule="constant", warmup_epochs=0, init="msra", dtype=dtype)
    graphdef, state = T.create_train_state(cfg, tc, total_steps=40, steps_per_epoch=40)
    step = T.make_train_step(graphdef, tc)
    x, y = next(ds.batches("train", 16, seed=0, train=False))
    losses = []
    for _ in range(40):
        state, m = step(state, x[None], y[None])
        losses.append(float(m["loss"]))
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.slow
def test_iter_size_accumulation_equals_one_big_batch(ds):
    """Caffe's iter_size: 8 x 4 and 32 x 1 give the same parameters after several updates, with SGD and with Adam
    (one test: both optimizers share the compiled gradients, which two tests on two pytest-xdist workers would each
    compile)."""
    cfg = tiny(dropout=0.0, stem=C.Stem(16, 3, 1, 1))  # the narrow stem the tolerances below were set on
    for optimizer in ("sgd", "adam"):
        common = dict(optimizer=optimizer, lr=0.01, schedule="poly", warmup_epochs=0, weight_decay=2e-4)
        results = []
        for micro, k in ((32, 1), (8, 4)):
            tc = T.TrainConfig(batch_size=micro, iter_size=k, **common)
            graphdef, state = T.create_train_state(cfg, tc, total_steps=5, steps_per_epoch=5)
            step = T.make_train_step(graphdef, tc)
            for x, y in ds.batches("train", 32, seed=1, epoch=0, train=True, limit=160):
                state, _ = step(state, x.reshape(k, micro, 16, 16, 1), y.reshape(k, micro))
            results.append(jax.tree.leaves(state.params))
        for a, b in zip(*results, strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6, err_msg=optimizer)


def test_same_seed_same_result_other_seed_differs(ds):
    a, b, c = run(ds, epochs=1), run(ds, epochs=1), run(ds, epochs=1, seed=1)
    for x, y in zip(params_of(a), params_of(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert a.history == b.history or all(
        {k: v for k, v in ha.items() if k not in ("seconds", "eval_seconds", "images_per_s")}
        == {k: v for k, v in hb.items() if k not in ("seconds", "eval_seconds", "images_per_s")}
        for ha, hb in zip(a.history, b.history, strict=True)
    )
    assert not np.array_equal(params_of(a)[0], params_of(c)[0])


def test_learns_synthetic_task(ds):
    r = run(ds, epochs=10, lr=5e-3)
    assert r.status == "completed" and r.test_top1 > 0.5, r.history  # chance: 0.25
    assert set(r.summary()) >= {"val_top1", "val_top5", "test_top1", "params", "bytes", "macs", "train_seconds",
                      "compile_seconds", "wall_seconds"}  # fmt: skip


KILLED_WORKER = """
import sys
sys.path.insert(0, {tests!r})
from builders import Slow, synthetic, tiny
from sqzdse.train import loop as T
from sqzdse.train import recipe
from sqzdse.train.recipe import run_key

tc = T.TrainConfig(batch_size=16, epochs=3, warmup_epochs=0, init="msra", checkpoint_every=13)
T.train_and_evaluate(tiny(), tc, {workdir!r}, dataset=Slow(synthetic()), progress=False)
"""


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(ds, tmp_path):
    """kill -9 after the mid-epoch checkpoint at update 13 (of 10 per epoch), rerun: same result."""
    full = run(ds, tmp_path / "full", epochs=3, checkpoint_every=13)
    workdir = tmp_path / "killed"
    script = KILLED_WORKER.format(tests=str(Path(__file__).parent), workdir=str(workdir))
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 120
    while not (workdir / "checkpoints" / "13").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # let orbax finish the checkpoint it is writing
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the worker ended before it could be killed"
    assert [json.loads(line)["epoch"] for line in (workdir / "metrics.jsonl").read_text().splitlines()] == [1]
    resumed = run(ds, workdir, epochs=3, checkpoint_every=13)
    for x, y in zip(params_of(full), params_of(resumed), strict=True):
        np.testing.assert_array_equal(x, y)
    assert resumed.test_top1 == full.test_top1 and resumed.updates == full.updates == 30
    assert [h["val_top1"] for h in resumed.history] == [h["val_top1"] for h in full.history]
    assert json.loads((workdir / "summary.json").read_text())["status"] == "completed"


def test_resume_refuses_a_different_configuration(ds, tmp_path):
    run(ds, tmp_path, epochs=1)
    with pytest.raises(C.ConfigError, match=r"different configuration .*lr: 0.002 -> 0.5"):
        run(ds, tmp_path, epochs=1, lr=0.5)
    assert run(ds, tmp_path, epochs=1, checkpoint_every=3).reused  # checkpoint frequency: the same run


def test_run_key_is_what_the_run_trains():
    """Every result-changing setting changes the key (the budget above all); checkpoint frequency does not."""
    key = run_key(tiny(), T.TrainConfig())
    assert re.fullmatch(r"[a-z2-7]{16}", key)
    assert run_key(tiny(), T.TrainConfig(checkpoint_every=7)) == key
    others = [T.TrainConfig(epochs=1), T.TrainConfig(seed=1), T.TrainConfig(lr=0.1), T.TrainConfig(dtype="bfloat16")]
    assert len({key, *(run_key(tiny(), tc) for tc in others), run_key(tiny(sr=0.5), T.TrainConfig())}) == 6
    assert set(recipe.RESULT_NEUTRAL) < {f.name for f in dataclasses.fields(T.TrainConfig)}


@pytest.fixture(scope="module")
def finished(ds, tmp_path_factory):
    """A finished 20-update run checkpointed every 5 updates (epochs end at 10 and 20: saved once each)."""
    workdir = tmp_path_factory.mktemp("finished")
    r = run(ds, workdir, checkpoint_every=5)
    assert sorted(os.listdir(workdir / "checkpoints")) == ["15", "20"]  # the last two are kept
    return workdir, r


def test_restored_weights_are_placed_as_fresh_ones(finished):
    """Orbax restores arrays committed to a device; jit lowers another program for those, so a resumed run (or a
    loaded one) would compile every step again. Restored arrays are placed as a fresh state's are."""
    *_, params = T.load_run(str(finished[0]))
    fresh = {x.committed for x in params_of(finished[1])}
    assert fresh == {False} and {x.committed for x in jax.tree.leaves(params)} == fresh


def test_a_finished_run_is_not_trained_again(ds, finished, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(finished[0], workdir)
    before = (workdir / "summary.json").read_text()
    again = run(ds, workdir, checkpoint_every=5)
    assert again.reused and (workdir / "summary.json").read_text() == before  # cost figures and times kept
    assert {k: getattr(again, k) for k in ("train_seconds", "compile_seconds", "params", "macs")} == {
        k: getattr(finished[1], k) for k in ("train_seconds", "compile_seconds", "params", "macs")}  # fmt: skip
    for x, y in zip(params_of(finished[1]), params_of(again), strict=True):
        np.testing.assert_array_equal(x, y)


def _largest_data_file(step_dir: Path) -> Path:
    return max((step_dir / "default" / "ocdbt.process_0" / "d").iterdir(), key=lambda p: p.stat().st_size)


def _rewrite(path: Path, change) -> None:
    path.write_bytes(change(path.read_bytes()))


def _flip(data: bytes) -> bytes:
    b = bytearray(data)
    b[len(b) // 2] ^= 0x10
    return bytes(b)


DAMAGE = {  # kind -> (damage step 20's directory, what the one line names)
    "emptied": (lambda d: _rewrite(_largest_data_file(d), lambda b: b""), r"ocdbt\.process_0/d/\w+ has 0 bytes"),
    "bit flip": (lambda d: _rewrite(_largest_data_file(d), _flip), r"ocdbt\.process_0/d/\w+ does not match"),
    "truncated": (lambda d: _rewrite(_largest_data_file(d), lambda b: b[: len(b) // 2]), r"d/\w+ has \d+ bytes"),
    "_METADATA deleted": (lambda d: (d / "default" / "_METADATA").unlink(), r"default/_METADATA is missing"),
    "no checksums, emptied": (  # a checkpoint without checksums (older versions): orbax's own error decides
        lambda d: ((d / ckpt.CHECKSUMS).unlink(), _rewrite(_largest_data_file(d), lambda b: b"")),
        r"orbax cannot read it",
    ),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(ds, finished, tmp_path, kind):
    damage, named = DAMAGE[kind]
    workdir = tmp_path / "run"
    shutil.copytree(finished[0], workdir)
    damage(workdir / "checkpoints" / "20")
    with pytest.raises(ckpt.CheckpointDamaged, match=r"\(step 20\) is damaged: .*redo it from step 15"):
        T.load_run(str(workdir))  # reading a finished run never uses an older checkpoint silently
    with logged() as lines:
        r = run(ds, workdir, checkpoint_every=5)
    assert len(lines) == 1, lines
    (err,) = lines
    assert re.search(r"checkpoint step 20 is damaged: .*" + named, err), err
    assert "resuming from step 15" in err and str(workdir / "damaged-checkpoints") in err
    assert r.resumed_at == 15 and r.updates == 20 and not r.reused
    for x, y in zip(params_of(finished[1]), params_of(r), strict=True):  # the same result as never damaged
        np.testing.assert_array_equal(x, y)
    assert sorted(os.listdir(workdir / "checkpoints")) == ["15", "20"]


def test_every_checkpoint_damaged_starts_from_scratch(ds, finished, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished[0], workdir)
    for step in (15, 20):
        (workdir / "checkpoints" / str(step) / "default" / "_METADATA").unlink()
    with logged() as lines:
        r = run(ds, workdir, checkpoint_every=5)
    assert len(lines) == 2 and "step 20 is damaged" in lines[0] and "resuming from step 15" in lines[0]
    assert "step 15 is damaged" in lines[1] and "starting from scratch" in lines[1]
    assert r.resumed_at == 0 and r.updates == 20 and r.history == [
        {**h, **{k: r.history[i][k] for k in ("seconds", "eval_seconds", "images_per_s")}}
        for i, h in enumerate(finished[1].history)
    ]  # fmt: skip


TRAIN_ARGV = ["train", "--preset", "squeezenet_small", "--base-e", "16", "--incr-e", "16", "--sr", "0.25",
              "--batch-size", "16", "--epochs", "3", "--warmup-epochs", "0", "--checkpoint-every", "4",
              "--no-progress"]  # fmt: skip

SIGNALLED_TRAIN = """
import sys
sys.path.insert(0, {tests!r})
from builders import Slow, synthetic
from sqzdse.data import pipeline as D
from sqzdse.cli import main

D.load = lambda *a, **k: Slow(synthetic())
sys.exit(main({argv!r}))
"""


@pytest.mark.slow
def test_sigint_checkpoints_and_exits_130_and_a_busy_workdir_is_refused(tmp_path, monkeypatch, capsys):
    """Ctrl-C of `sqzdse train`: one line, exit 130, a checkpoint; meanwhile a second run on the workdir is
    refused at once (exit 2); the same command afterwards resumes from the checkpoint and finishes."""
    workdir = tmp_path / "run"
    argv = [*TRAIN_ARGV, "--workdir", str(workdir)]
    script = SIGNALLED_TRAIN.format(tests=str(Path(__file__).parent), argv=argv)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while not (workdir / "checkpoints" / "4").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    monkeypatch.setattr(D, "load", lambda *a, **k: synthetic())
    t = time.time()
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert f"is busy: process {proc.pid} is training in it" in err and time.time() - t < 30
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    last = err.splitlines()[-1]
    assert "Traceback" not in err and len(err.splitlines()) == 2, err  # "training ... on ..." and this line
    step = int(re.fullmatch(r"sqzdse: SIGINT at update (\d+) of 30: checkpoint saved in .*", last)[1])
    assert (workdir / "checkpoints" / str(step) / ckpt.CHECKSUMS).exists() and 4 <= step < 30
    assert main(argv) == 0
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["updates"] == 30 and summary["resumed_at"] == step
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]


def test_divergence_is_recorded_not_raised(ds, tmp_path):
    r = run(ds, tmp_path, optimizer="sgd", lr=1e8, schedule="constant")
    assert r.status == "diverged" and "nan" in r.reason.lower() or "inf" in r.reason.lower()
    assert r.test_top1 is None
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "diverged"


def test_init_params_start_the_run_and_must_fit_the_model():
    tc = T.TrainConfig(seed=3)
    _, trained = T.create_train_state(tiny(), T.TrainConfig(seed=9), 10, 10)
    _, state = T.create_train_state(tiny(), tc, 10, 10, init_params=trained.params)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(trained.params), strict=True):
        np.testing.assert_array_equal(a, b)
    _, other = T.create_train_state(tiny(base_e=8), tc, 10, 10)
    with pytest.raises(C.ConfigError, match="do not match the model"):
        T.create_train_state(tiny(), tc, 10, 10, init_params=other.params)


def test_invalid_train_config():
    with pytest.raises(C.ConfigError, match="iter_size=0"):
        T.TrainConfig(iter_size=0)
    with pytest.raises(C.ConfigError, match="optimizer='rmsprop'"):
        T.TrainConfig(optimizer="rmsprop")


def test_recipes():
    assert recipe.default_recipe(C.squeezenet_v1_0()) == recipe.caffe_solver()
    caffe = recipe.caffe_solver()  # SqueezeNet_v1.0/solver.prototxt
    assert (caffe.lr, caffe.momentum, caffe.weight_decay, caffe.batch_size * caffe.iter_size) == (0.04, 0.9, 2e-4, 512)
    assert recipe.default_recipe(C.squeezenet_small()) == recipe.small_input_recipe()


def test_missing_dataset_is_one_clear_message(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SQZDSE_DEBIAN_FASHION_MNIST", str(tmp_path / "nothing"))
    code = main(["train", "--dataset", "fashion_mnist", "--data-dir", str(tmp_path), "--no-download"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "fashion_mnist" in err and "apt-get install dataset-fashion-mnist" in err


def test_images_per_second_leave_compilation_out(run_dir):
    """metrics.jsonl's images/s count training only: the first update's compile is in `seconds`, not in the rate."""
    summary = json.loads(Path(run_dir, "summary.json").read_text())
    (h,) = summary["history"]
    assert summary["compile_seconds"] > 0 and h["images_per_s"] > h["step"] * 16 / h["seconds"]


def test_bfloat16_on_a_cpu_without_bf16_instructions_says_so(monkeypatch):
    from builders import logged, tiny

    from sqzdse import runtime

    tc = T.TrainConfig(batch_size=16, epochs=1, dtype="bfloat16")
    for flags, warned in (({"avx2", "fma"}, True), ({"avx2", "avx512f", "avx512_bf16"}, False)):
        monkeypatch.setattr(runtime, "cpu_flags", lambda flags=flags: flags)
        T._warn_bf16.cache_clear()
        with logged() as lines:
            T.create_train_state(tiny(), tc, 10, 10)
        assert any("no native bfloat16 matrix instructions" in line for line in lines) == warned, lines
    T._warn_bf16.cache_clear()
