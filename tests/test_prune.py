"""Magnitude pruning: the released density pattern, and masks held through training."""

import numpy as np
from builders import kernels, tiny

from sqzdse.compress import prune as P
from sqzdse.model import config as C
from sqzdse.model.weights import caffe_weights
from sqzdse.train import loop as T


def test_released_density_pattern_is_the_released_files(released):
    assert {name: int(np.count_nonzero(w)) for name, (w, _) in released.items()} == P.RELEASED_NONZERO
    v10 = P.released_densities(C.squeezenet_v1_0())
    # Pruning the released weights at the released pattern keeps exactly their non-zeros.
    masks = P.magnitude_masks(kernels(released), v10)
    for name, (w, _) in released.items():
        np.testing.assert_array_equal(masks[name], w != 0, err_msg=name)
    assert round(v10["fire2/expand3x3"], 2) == 0.33 and round(v10["conv10"], 2) == 0.2
    # Other configurations: by role (layer name); a complex bypass takes its Fire's expand1x1 density.
    other = P.released_densities(C.squeezenet_small(sr=0.25, bypass="complex"))
    assert other["fire9/expand3x3"] == v10["fire9/expand3x3"] and other["conv10"] == v10["conv10"]
    assert other["fire2/bypass1x1"] == v10["fire2/expand1x1"]
    assert not any("expand1x1" in n for n in P.released_densities(C.squeezenet_v1_0(pct3x3=1.0)))


def test_pruning_masks_survive_fine_tuning(ds):
    """Adam with L2 weight decay: the pruned weights stay exactly 0 after every update."""
    cfg = tiny()
    tc = T.TrainConfig(batch_size=16, epochs=1, warmup_epochs=0, init="msra", lr=3e-3, weight_decay=1e-3)
    _, state = T.create_train_state(cfg, tc, 1, 1)
    pruned, masks, mask = P.prune(cfg, state.params, 0.4)
    r = T.train_and_evaluate(cfg, tc, None, dataset=ds, progress=False, init_params=pruned, mask=mask)
    assert r.updates == 10
    before, after = caffe_weights(cfg, pruned), caffe_weights(cfg, r.state.params)
    for name, (w, _) in after.items():
        m = masks[name]
        assert m.sum() == C.round_half_up(0.4 * m.size)
        assert (w[~m] == 0).all(), name
        assert not np.array_equal(w[m], before[name][0][m]), name  # the kept weights did train
