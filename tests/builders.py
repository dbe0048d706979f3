"""What several test modules build: the tiny network and synthetic data of the training tests, the tiny sweep
file, random Caffe weights, Fashion-MNIST in the files Debian ships. One place, so that test modules never import
each other."""

import contextlib
import gzip
import json
import logging
import time

import numpy as np

from sqzdse.data import datasets
from sqzdse.data import pipeline as D
from sqzdse.model import config as C
from sqzdse.model.plan import caffe_layer_shapes
from sqzdse.sweep import spec as SP
from sqzdse.sweep import storage as ST
from sqzdse.train import loop as T

# A tiny member of the design space: 16x16x1 input, 16..64 expand filters, 4..16 squeeze. With 4 classes it is
# TINY_SPEC's network at sr=0.25 (below), so that the training and the sweep tests compile it once between them.
TINY = C.squeezenet_small(base_e=16, incr_e=16, sr=0.25, input_shape=(16, 16, 1))


def synthetic(n_train=192, n_test=64, seed=0):
    """A learnable 4-class problem: each class lights a different quadrant."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, 4, n)
        x = rng.integers(0, 60, (n, 16, 16, 1))
        for i, k in enumerate(y):
            r, c = divmod(int(k), 2)
            x[i, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] += 150
        return x.astype(np.uint8), y.astype(np.int64)

    # No flips: mirroring would swap the quadrants, i.e. the labels.
    return D.from_arrays("synthetic", make(n_train), make(n_test), num_classes=4, val_size=32, flip=False)


class Slow:
    """The same data, slowly, so that a test can signal or kill a run mid-epoch."""

    def __init__(self, ds, delay=0.25):
        self.ds, self.delay, self.info, self.steps_per_epoch = ds, delay, ds.info, ds.steps_per_epoch

    def batches(self, *a, **k):
        for b in self.ds.batches(*a, **k):
            time.sleep(self.delay)
            yield b


def tiny(**kw):
    return C.SqueezeNetConfig(**{**C.to_dict(TINY), "stem": TINY.stem, "pool_after": TINY.pool_after,
                                 "input_shape": TINY.input_shape, "num_classes": 4, **kw})  # fmt: skip


def run(ds, workdir=None, cfg=None, **kw):
    tc = T.TrainConfig(**{"batch_size": 16, "epochs": 2, "warmup_epochs": 0, "init": "msra", **kw})
    return T.train_and_evaluate(cfg or tiny(), tc, workdir, dataset=ds, progress=False)


def random_weights(cfg, seed=0):
    rng = np.random.default_rng(seed)
    return {
        name: ((0.1 * rng.standard_normal(shape)).astype(np.float32), rng.standard_normal(shape[0]).astype(np.float32))
        for name, shape in caffe_layer_shapes(cfg).items()
    }


def kernels(weights):
    return {name: w for name, (w, _) in weights.items()}


# A tiny sweep: 16x16x1 synthetic images, 16..64 expand filters, one quick epoch.
TINY_SPEC = {
    "study": {"name": "tiny", "sampler": "grid", "seeds": [0]},
    "model": {"preset": "squeezenet_small", "base_e": 16, "incr_e": 16},
    "space": {"sr": [0.25, 0.5, 0.75]},
    "train": {"dataset": "synthetic", "epochs": 1, "batch_size": 16, "init": "msra", "warmup_epochs": 0.0},
}


def spec(space=None, **study):
    raw = json.loads(json.dumps(TINY_SPEC))
    raw["study"].update(study)
    raw["space"] = space or raw["space"]
    return SP.parse_spec(raw)


@contextlib.contextmanager
def logged(name="sqzdse"):
    """The library's log messages (INFO and above) while the block runs, as a list of strings."""
    lines, logger = [], logging.getLogger(name)

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def points_of(url, name="tiny"):
    import optuna

    trials = optuna.load_study(study_name=name, storage=ST.open_storage(url)).trials
    return sorted((t.system_attrs["fixed_params"]["sr"], t.system_attrs["fixed_params"]["seed"]) for t in trials)


# Three trials of one network, tiny()'s (the seeds of sr=0.25): the tests that kill, signal or race workers
# compile no network of their own.
SEEDS = {"space": {"sr": [0.25]}, "seeds": [0, 1, 2]}


SEED_POINTS = [(0.25, 0), (0.25, 1), (0.25, 2)]


def completed_points(rows):
    return sorted((r["sr"], r["seed"]) for r in rows if r["state"] == "COMPLETE")


def write_idx(path, array: np.ndarray) -> None:
    """LeCun's idx format, gzipped as Debian ships it: magic 0x0008<ndim>, big-endian dims."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fashion_files(directory, n_train=60, n_test=20, seed=0):
    """Random 28x28 images and labels in Debian's dataset-fashion-mnist files, written to ``directory``."""
    rng = np.random.default_rng(seed)
    arrays = (
        rng.integers(0, 256, (n_train, 28, 28), np.uint8),
        rng.integers(0, 10, n_train, np.uint8),
        rng.integers(0, 256, (n_test, 28, 28), np.uint8),
        rng.integers(0, 10, n_test, np.uint8),
    )
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in zip(datasets.IDX_FILES, arrays, strict=True):
        write_idx(directory / name, array)
    return arrays
