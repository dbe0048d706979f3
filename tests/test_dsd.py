"""Dense-Sparse-Dense training: three phases, the mask held, and the `sqzdse train --dsd` output."""

import json

import jax
import numpy as np
import pytest
from builders import tiny

from sqzdse.compress import dsd
from sqzdse.train import loop as T


def test_dsd_runs_three_phases_and_holds_the_mask(ds, tmp_path):
    tc = T.TrainConfig(batch_size=16, epochs=2, warmup_epochs=0, init="msra", lr=3e-3)
    result = dsd.train_dsd(tiny(), tc, str(tmp_path), dataset=ds, density=0.5, phases=(0.5, 0.5, 0.5), progress=False)
    r = result.summary
    assert list(r["phases"]) == ["dense", "sparse", "redense"] and r["status"] == "completed"
    assert all(p["status"] == "completed" and p["updates"] == 10 for p in r["phases"].values())
    # Pruned weights come back at 0 and train (those feeding dead ReLUs get no gradient and stay 0).
    assert r["phases"]["sparse"]["kernel_density"] <= 0.51 < 0.75 < r["phases"]["redense"]["kernel_density"]
    assert r["phases"]["redense"]["lr"] == pytest.approx(0.1 * tc.lr) and r["phases"]["sparse"]["lr"] == tc.lr
    for p, m in zip(jax.tree.leaves(result.sparse_params), jax.tree.leaves(result.mask), strict=True):
        assert (np.asarray(p)[~np.asarray(m)] == 0).all()
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["test_top1"] == r["test_top1"] == r["phases"]["redense"]["test_top1"]
    assert all((tmp_path / name / "run.json").exists() for name in dsd.PHASE_NAMES)
    _, _, _, params = T.load_run(str(tmp_path))  # a DSD directory loads as its re-dense run
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(result.state.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_train_dsd_command_prints_every_phase(monkeypatch, capsys):
    from sqzdse.cli import build_parser
    from sqzdse.cli.compress import run_dsd

    seen = {}

    def fake(cfg, tc, workdir, **kw):
        seen.update(kw, workdir=workdir)
        phase = dict(status="completed", val_top1=0.9, test_top1=0.89, epochs=1.0, lr=1e-3, kernel_density=0.7)
        return dsd.DSDResult(dict(status="completed", test_top1=0.89, phases=dict.fromkeys(dsd.PHASE_NAMES, phase)))

    monkeypatch.setattr(dsd, "train_dsd", fake)
    args = build_parser().parse_args(["train", "--dsd", "--dsd-density", "released", "--dsd-phases", "0.6,0.2,0.2",
                                      "--workdir", "w", "--no-progress"])  # fmt: skip
    assert run_dsd(args, tiny(), T.TrainConfig(), dataset=None) == 0
    assert seen["density"] == "released" and seen["phases"] == (0.6, 0.2, 0.2) and seen["redense_lr"] == 0.1
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == ["phase", *dsd.PHASE_NAMES]
    args.dsd_phases = "half,rest"
    with pytest.raises(ValueError, match="--dsd-phases 'half,rest'"):
        run_dsd(args, tiny(), T.TrainConfig(), dataset=None)
