"""ImageNet prediction with the released v1.0 weights, preprocessed as Caffe fed them.

train_val.prototxt (v1.0): 227 crops of 256x256 images, BGR, 0-255, mean_value 104,
117, 123 subtracted (BGR order); the same crop ``sqzdse.data.pipeline`` feeds the ImageNet family.
Class names and synset ids come from the installed tensorflow-datasets, in class-id order.
"""

from __future__ import annotations

import ast
import functools
import os

import jax
import numpy as np
from flax import nnx
from PIL import Image

from sqzdse.data.datasets import CAFFE_MEAN_BGR
from sqzdse.data.pipeline import caffe_crop
from sqzdse.errors import InputError
from sqzdse.model.network import SqueezeNet


@functools.cache
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 human-readable ImageNet class names, by class id (281 is "tabby, tabby cat")."""
    import tensorflow_datasets as tfds

    source = (tfds.core.tfds_path() / "datasets/siscore/labels.py").read_text()
    # Read the literal rather than import the module: tfds' dataset modules are not API.
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "IMAGENET_LABELS_LIST" for t in node.targets):
            labels = tuple(ast.literal_eval(node.value))
            if len(labels) != 1000:
                raise RuntimeError(f"tensorflow-datasets' IMAGENET_LABELS_LIST has {len(labels)} names, not 1000")
            return labels
    raise RuntimeError("IMAGENET_LABELS_LIST not found in tensorflow_datasets/datasets/siscore/labels.py")


@functools.cache
def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 WordNet ids (n01440764, ...), by class id."""
    import tensorflow_datasets as tfds

    return tuple((tfds.core.tfds_path() / "datasets/imagenet2012/labels.txt").read_text().split())


def preprocess(image: Image.Image | np.ndarray) -> np.ndarray:
    """An RGB image (PIL, or uint8 HxW / HxWx3 / HxWx4 array) as a (227, 227, 3) float32 BGR, mean-subtracted crop."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"image array must be uint8 0-255 (H, W[, C]), got {image.dtype} {image.shape}")
    # Caffe's test phase: the centre crop, unmirrored, less the BGR mean.
    return caffe_crop(image).astype(np.float32) - np.asarray(CAFFE_MEAN_BGR, np.float32)


def open_image(path: str | os.PathLike) -> Image.Image:
    """One image file, decoded; FileNotFoundError / InputError name the path."""
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (OSError, SyntaxError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
        raise InputError(f"cannot read image {path}: {e}") from e


@nnx.jit
def _probabilities(model: SqueezeNet, x: jax.Array) -> jax.Array:
    return jax.nn.softmax(model(x), axis=-1)


def probabilities(model: SqueezeNet, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Softmax of the class scores, (N, classes), of preprocessed images (N, H, W, C), in chunks of `batch_size`."""
    # One batch shape for every chunk (the last one padded), so the forward compiles once.
    n = len(images)
    size = max(1, min(batch_size, n))
    probs = []
    for i in range(0, n, size):
        chunk = np.asarray(images[i : i + size], np.float32)
        padded = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), np.float32)])
        probs.append(np.asarray(_probabilities(model, padded))[: len(chunk)])
    return np.concatenate(probs) if probs else np.zeros((0, model.cfg.num_classes), np.float32)


def predict_files(clf, paths: list[str], top: int = 5, batch_size: int = 32) -> list[dict]:
    """Top-``top`` classes per image file, in argument order, of a ``sqzdse.api.Classifier`` (any model
    ``api.load`` reads: the release, a run, a sweep trial, a compressed file), each image prepared as its
    training data was.

    Returns:
      ``[{"image": path, "top": [{"class_id", "name", "prob"[, "synset"]}, ...]}, ...]``, highest first (at most
      the model's classes); ``name``
      is None where the dataset has no class names, ``synset`` only for ImageNet's 1000 classes.
    """
    classes = clf.cfg.num_classes
    if top < 1:
        raise InputError(f"top={top}: must be >= 1")
    top = min(top, classes)  # a 10-class model lists its 10
    images = [open_image(p) for p in paths]
    probs = clf.probabilities(clf.prepare(images), batch_size) if images else np.zeros((0, classes))
    imagenet = clf.preprocessing is not None and clf.preprocessing.dataset == "imagenet2012" and classes == 1000
    synsets = imagenet_synsets() if imagenet else None
    records = []
    for path, p in zip(paths, probs, strict=True):
        best = np.argsort(-p, kind="stable")[:top]
        records.append({"image": str(path), "top": [
            {"class_id": int(c), "name": clf.labels[c] if clf.labels else None, "prob": float(p[c]),
             **({"synset": synsets[c]} if synsets else {})} for c in best]})  # fmt: skip
    return records
