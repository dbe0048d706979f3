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

from sqzdse.data.datasets import CAFFE_CROP, CAFFE_MEAN_BGR
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


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read and preprocess one image file; FileNotFoundError / ValueError name the path."""
    try:
        with Image.open(path) as im:
            im.load()
            return preprocess(im)
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


def predict_files(model: SqueezeNet, paths: list[str], top: int = 5, batch_size: int = 32) -> list[dict]:
    """Top-``top`` ImageNet classes per image file, in argument order.

    Returns:
      ``[{"image": path, "top": [{"class_id", "name", "synset", "prob"}, ...]}, ...]``,
      probabilities from the softmax of the model's class scores, highest first.
    """
    cfg = model.cfg
    shape = (CAFFE_CROP, CAFFE_CROP, 3)
    if cfg.input_shape != shape or cfg.num_classes != 1000:
        raise InputError(
            f"ImageNet prediction needs a {shape} -> 1000 model, not {cfg.input_shape} -> {cfg.num_classes}"
        )
    if not 1 <= top <= 1000:
        raise InputError(f"top={top}: must be in 1..1000")
    images = np.stack([load_image(p) for p in paths]) if paths else np.zeros((0, *shape), np.float32)
    probs = probabilities(model, images, batch_size)
    labels, synsets = imagenet_labels(), imagenet_synsets()
    records = []
    for path, p in zip(paths, probs, strict=True):
        best = np.argsort(-p, kind="stable")[:top]
        records.append(
            {
                "image": str(path),
                "top": [
                    {
                        "class_id": int(c),
                        "name": labels[c],
                        "synset": synsets[c],
                        "prob": float(p[c]),
                    }
                    for c in best
                ],
            }
        )
    return records
