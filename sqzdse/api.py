"""Models in a few lines, without the wait: a compiled initialisation, a jitted forward, loading and classifying.

    from sqzdse import api
    from sqzdse.model import config as C
    model = api.init_model(C.squeezenet_v1_0())        # one compiled initialisation, not ~50 eager ones
    scores = api.forward(model, x)                     # (N, classes) of NHWC x, jitted
    clf = api.load("released")                         # or a run's / sweep trial's workdir, or a .sqz file
    clf.classify([PIL.Image.open("cat.jpg")], top=5)   # preprocessed as the model's training data was

A classifier prepares images as its training data was prepared (``sqzdse.data.pipeline``): ImageNet-family models
(the released v1.0, imagenette / imagenet2012 runs) get Caffe's resize to 256, centre 227 crop, BGR and
mean subtraction (``sqzdse.deploy.predict.preprocess``); small-input models (Fashion-MNIST, MNIST, CIFAR) get the
dataset's per-channel ``(x - mean) / std`` at its stored size.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import numpy as np
from flax import nnx
from PIL import Image

from sqzdse.errors import InputError
from sqzdse.model import config as C
from sqzdse.model.network import SqueezeNet

RELEASED = "released"  # the bundled Deep-Compression v1.0 (sqzdse.reference.weights_path)
RELEASED_DATASET = "imagenet2012"  # what the released v1.0 was trained on
COMPRESSED_SUFFIXES = (".sqz", ".net")  # sqzdse compress's files, the released layout


def init_model(cfg: C.SqueezeNetConfig, seed: int = 0, *, init: str = "caffe", dtype=None) -> SqueezeNet:
    """The seeded model of `cfg`, initialised in one compiled call (``sqzdse.model.network.initial_params``).

    Equal to ``SqueezeNet(cfg, init=init, dtype=dtype, rngs=nnx.Rngs(seed))``, which compiles each
    initializer call eagerly (seconds more on CPU).
    """
    from sqzdse.model.network import initial_params

    return nnx.merge(*initial_params(cfg, seed, init=init, dtype=dtype))


@nnx.jit
def forward(model: SqueezeNet, x: jax.Array) -> jax.Array:
    """Class scores (N, classes) of an NHWC batch, inference mode; compiled once per model structure and batch shape."""
    return model(x)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How the model's training data was prepared (``sqzdse.data.pipeline.normalisation``), to prepare new images
    alike."""

    dataset: str
    family: str  # "imagenet": resize 256x256, centre 227 crop, RGB -> BGR, minus mean; "small": at the input size
    mean: tuple[float, ...]  # per input channel, 0-255 scale, in the input's channel order (BGR for "imagenet")
    std: tuple[float, ...]  # (x - mean) / std; 1 for the ImageNet family

    @classmethod
    def of(cls, dataset: str) -> Preprocessing | None:
        """The named dataset's; None for one sqzdse does not know (``data.from_arrays``: not recorded in the run)."""
        from sqzdse.data import pipeline as D

        try:
            family, mean, std = D.normalisation(dataset)
        except ValueError:
            return None
        return cls(dataset, family, tuple(mean), tuple(std))

    def __call__(self, image: Image.Image | np.ndarray, input_shape: tuple[int, int, int]) -> np.ndarray:
        """One image (PIL, or uint8 H x W [x C]) as the float32 (H, W, C) input of a model of `input_shape`."""
        from sqzdse.deploy import predict

        if isinstance(image, np.ndarray) and image.dtype != np.uint8:
            raise InputError(
                f"image array must be uint8 0-255 (H, W[, C]), got {image.dtype} {image.shape}; give already"
                " preprocessed float batches to Classifier.probabilities"
            )
        if self.family == "imagenet":
            return predict.preprocess(image)  # Caffe's test phase, mean_value in BGR order
        h, w, c = input_shape
        if isinstance(image, np.ndarray) and image.shape in ((h, w), (h, w, c)):
            x = image  # as stored in the dataset: no resampling
        else:
            pil = Image.fromarray(image.squeeze()) if isinstance(image, np.ndarray) else image
            x = np.asarray(pil.convert("L" if c == 1 else "RGB").resize((w, h), Image.Resampling.BILINEAR))
        x = np.asarray(x, np.float32).reshape(h, w, c)
        return (x - np.float32(self.mean)) / np.float32(self.std)


@dataclasses.dataclass(frozen=True, eq=False)
class Classifier:
    """A trained model with what classifying needs: configuration, parameters, preprocessing, class names."""

    cfg: C.SqueezeNetConfig
    graphdef: Any
    params: Any  # nnx.State of the parameters
    preprocessing: Preprocessing | None  # None: the training data's normalisation is not known
    labels: tuple[str, ...] | None  # class names by class id, where the dataset has them
    source: str  # what it was loaded from

    @functools.cached_property
    def model(self) -> SqueezeNet:
        return nnx.merge(self.graphdef, self.params)

    def prepare(self, images) -> np.ndarray:
        """PIL images or uint8 arrays -> the float32 (N, H, W, C) batch the model was trained on."""
        if self.preprocessing is None:
            raise InputError(
                f"{self.source}: how its training images were normalised is not recorded (dataset not known to"
                " sqzdse.data.pipeline); preprocess them yourself and call probabilities()"
            )
        if isinstance(images, Image.Image) or _is_one_array_image(images):
            images = [images]
        shape = self.cfg.input_shape
        if not len(images):
            return np.zeros((0, *shape), np.float32)
        return np.stack([self.preprocessing(im, shape) for im in images])

    def probabilities(self, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Softmax of the class scores (N, classes) of a preprocessed float32 batch (N, H, W, C)."""
        from sqzdse.deploy.predict import probabilities

        return probabilities(self.model, x, batch_size)

    def classify(self, images, top: int = 5) -> list[list[dict]]:
        """Top-``top`` classes per image: ``[[{"class_id", "name", "prob"}, ...], ...]``, highest first.

        images: a PIL image or uint8 array (H, W[, C]), or a sequence of them; name is None without class names.
        top: at most the model's number of classes are listed.
        """
        if top < 1:
            raise InputError(f"top={top}: must be >= 1")
        probs = self.probabilities(self.prepare(images))
        out = []
        for p in probs:
            best = np.argsort(-p, kind="stable")[:top]
            out.append([{"class_id": int(c), "name": self.labels[c] if self.labels else None, "prob": float(p[c])}
                        for c in best])  # fmt: skip
        return out


def _is_one_array_image(x) -> bool:
    """H x W, or H x W x C with 1, 3 or 4 channels; (N, H, W) grayscale and (N, H, W, C) are batches."""
    return isinstance(x, np.ndarray) and (x.ndim == 2 or (x.ndim == 3 and x.shape[-1] in (1, 3, 4)))


def what_training_saw(
    dataset: str, cfg: C.SqueezeNetConfig, data_dir: str | None = None
) -> tuple[Preprocessing | None, tuple[str, ...] | None]:
    """(preprocessing, class names) of a model of `cfg` trained on the named dataset; (None, None) if not known.

    A run trained through the API on in-memory arrays (``data.from_arrays``) records its TrainConfig's dataset
    name all the same (by default fashion_mnist): where `cfg`'s classes or channels do not fit the named
    dataset, neither its normalisation nor its names are the run's. Names: ImageNet's human-readable ones for
    imagenet2012 (tfds's are WordNet ids), tfds's label names otherwise.
    """
    from sqzdse.data import pipeline as D
    from sqzdse.deploy.predict import imagenet_labels

    prep = Preprocessing.of(dataset)
    if prep is None:
        return None, None
    names = imagenet_labels() if dataset == RELEASED_DATASET else D.class_names(dataset, data_dir)
    if len(names) != cfg.num_classes or len(prep.mean) != cfg.input_shape[2]:
        return None, None
    return prep, names


def load(
    source: str | os.PathLike = RELEASED, *, config: C.SqueezeNetConfig | str | None = None, data_dir=None
) -> Classifier:
    """A trained model back as a :class:`Classifier`.

    Args:
      source: ``"released"`` (the bundled Deep-Compression v1.0); a training run's workdir (``sqzdse train
        --workdir``, a sweep trial's workdir, a DSD run: its last phase), at its latest checkpoint; or a compressed
        file (``sqzdse compress``'s ``.sqz``, or a released-layout ``.net``).
      config: for a compressed file: the run directory it was compressed from (its configuration and dataset)
        or a SqueezeNetConfig; default v1.0 trained on ImageNet (what the released file holds).
      data_dir: tensorflow-datasets directory, for class names recorded in a prepared dataset.
    Raises FileNotFoundError for a missing run, checkpoint or file; WeightsFormatError for a file that does not
    match the configuration.
    """
    from sqzdse.train import loop as T
    from sqzdse.train.checkpoints import run_config

    source = os.fspath(source)
    is_file = source == RELEASED or os.path.isfile(source) or os.path.splitext(source)[1] in COMPRESSED_SUFFIXES
    if not is_file:
        if config is not None:
            raise InputError(f"{source}: a run directory brings its own configuration; config= is for files")
        cfg, tc, graphdef, params = T.load_run(source)
        dataset = tc.dataset
    else:
        cfg, dataset = C.squeezenet_v1_0(), RELEASED_DATASET
        if isinstance(config, C.SqueezeNetConfig):
            cfg = config
        elif config is not None:
            _, cfg, tc = run_config(os.fspath(config))
            dataset = tc.dataset
        graphdef, params = _load_compressed(source, cfg)
    return Classifier(cfg, graphdef, params, *what_training_saw(dataset, cfg, data_dir), source)


def _load_compressed(path: str, cfg: C.SqueezeNetConfig):
    """(graphdef, params) of `cfg` holding the decoded weights of a ``.sqz`` / ``.net`` file (or ``released``)."""
    from sqzdse.compress.pipeline import decoded_weights, read
    from sqzdse.model.cost import abstract_model
    from sqzdse.model.weights import WeightsFormatError, load_caffe_weights
    from sqzdse.reference import weights_path

    weights = decoded_weights(read(weights_path(path)))
    try:  # every parameter is overwritten (load_caffe_weights checks that all are covered): no random init
        model = load_caffe_weights(abstract_model(cfg), weights)
    except WeightsFormatError as e:
        raise WeightsFormatError(f"{path}: {e} (give the configuration it was compressed with: config=RUN_DIR)") from e
    return nnx.split(model, nnx.Param)
