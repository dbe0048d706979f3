"""Input pipeline: tfds datasets -> seeded, augmented, prefetched numpy batches.

    ds = load("fashion_mnist")                  # or mnist, cifar10, cifar100, imagenette, imagenet2012
    for images, labels in ds.batches("train", 128, seed=0, epoch=3, train=True):
        ...                                     # float32 NHWC, int32

Every sweep trial calls `load`, so the common case must be cheap:

* Small sets (fashion_mnist, mnist, cifar10, cifar100) are decoded once into uint8
  arrays and cached as `sqzdse-uint8.npz` inside the prepared tfds directory; later
  loads read only that file (no tfds import). Batches are cut from numpy with the crop
  and flip vectorised over the batch.
* The ImageNet family (imagenette, imagenet2012) streams from `tfds.data_source` and
  decodes JPEGs with PIL in a small thread pool, Caffe style.
* A background thread keeps a couple of batches ready so the jitted step never waits.

Nothing here needs TensorFlow: datasets are prepared, and the cache kept, by
``sqzdse.data.tfds_prep``. Measured on 2 CPU cores with Debian's real Fashion-MNIST: the
first load, which prepares the tfds files and the cache, takes ~12 s; every later load
~0.05 s (plus ~0.15 s to import this module). ImageNet-style decoding: ~270 images/s on
2 cores (500x375 JPEGs); the pool uses up to 16 cores.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import os
import queue
import threading
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from PIL import Image

from sqzdse.data import tfds_prep
from sqzdse.data.datasets import (
    CAFFE_CENTRE,
    CAFFE_CROP,
    CAFFE_FAMILY,
    CAFFE_RESIZE,
    DATASETS,
    MAX_DEFAULT_VAL,
    SMALL_PAD,
    DatasetSpec,
    dataset_spec,
)
from sqzdse.data.tfds_prep import DatasetUnavailable
from sqzdse.errors import InputError

DEFAULT_DATA_DIR = (
    os.environ.get("SQZDSE_DATA_DIR") or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
)

SPLITS = ("train", "val", "test")
# Seed of the validation carve. Fixed, never the trial's seed, so every trial of a
# sweep tunes on the same images.
_VAL_SEED = 20160224  # SqueezeNet's arXiv date


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a loaded dataset yields."""

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]  # (H, W, C) of batches (227, 227, 3 for ImageNet)
    family: str  # "small" (numpy in memory) or "imagenet" (streamed, Caffe-style)
    num_train: int  # the training split minus the validation carve
    num_val: int
    num_test: int


# --------------------------------------------------------------------------- loading


def load(
    name: str,
    *,
    data_dir: str | None = None,
    val_size: int | None = None,
    download: bool = True,
) -> Dataset:
    """Loads a named dataset, preparing it on first use.

    Args:
      name: one of fashion_mnist, mnist, cifar10, cifar100, imagenette, imagenet2012.
      data_dir: tfds data directory; DEFAULT_DATA_DIR if None.
      val_size: images carved from the training split for validation; None means 10%
        of it, at most 5000.
      download: whether tfds may download sources that are not already on disk.

    Raises:
      ValueError: for an unknown name.
      DatasetUnavailable: when the data is neither prepared nor obtainable.
    """
    spec = dataset_spec(name)
    data_dir = os.path.abspath(os.path.expanduser(data_dir or DEFAULT_DATA_DIR))
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise InputError(f"data directory {data_dir} is a file, not a folder (--data-dir, $SQZDSE_DATA_DIR, "
                         "$TFDS_DATA_DIR)")  # fmt: skip
    if spec.family == "small":
        arrays = tfds_prep.read_cache(spec, data_dir)
        if arrays is None:
            builder = tfds_prep.prepared_builder(spec, data_dir, download)
            arrays = {
                split: tfds_prep.decode_split(builder, tfds_split)
                for split, tfds_split in (("train", "train"), ("test", spec.test_split))
            }
            tfds_prep.write_cache(builder, arrays)
        train, test = (_Arrays(*arrays[s]) for s in ("train", "test"))
    else:
        builder = tfds_prep.prepared_builder(spec, data_dir, download)
        # Undecoded: PIL decodes and resizes in one go, and copes with the CMYK and
        # PNG files hidden among ImageNet's JPEGs.
        train, test = (_Records(tfds_prep.data_source(builder, s)) for s in ("train", spec.test_split))
    return _dataset(name, spec, train, test, val_size)


def from_arrays(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    num_classes: int,
    family: str = "small",
    val_size: int | None = None,
    flip: bool | None = None,
) -> Dataset:
    """Builds a Dataset from in-memory uint8 images (N, H, W[, C]) and integer labels.

    A known `name` brings that dataset's flip rule and normalisation; otherwise the
    images are mirrored (unless `flip=False`) and, for family "small", normalised by
    the channel statistics of the training part. Family "imagenet" treats the arrays
    as RGB photos: resized to 256x256, cropped to 227 and Caffe-normalised.
    """
    if family not in ("small", "imagenet"):
        raise ValueError(f"family must be 'small' or 'imagenet', got {family!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    splits = {}
    for split, (x, y) in (("train", train), ("test", test)):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim == 3:
            x = x[..., None]
        if x.dtype != np.uint8 or x.ndim != 4 or y.shape != x.shape[:1]:
            raise ValueError(
                f"{split}: want uint8 images (N, H, W[, C]) and labels (N,), got {x.dtype} {x.shape} and {y.shape}"
            )
        if y.size and not (0 <= y.min() and y.max() < num_classes):
            raise ValueError(f"{split}: labels must lie in [0, {num_classes})")
        splits[split] = _Arrays(x, y.astype(np.int32))
    if family == "imagenet" and splits["train"].images.shape[-1] != 3:
        raise ValueError("family 'imagenet' needs RGB images (C == 3)")

    known = DATASETS.get(name)
    channels = splits["train"].images.shape[-1]
    if known is not None and known.family == family and len(known.mean) == channels:
        spec = known
    elif family == "imagenet":
        spec = DatasetSpec(name, num_classes, files=(), **CAFFE_FAMILY)
    else:
        # Statistics of the whole training split: the validation carve is a random
        # tenth of it, so they hardly differ, and this needs no second pass.
        x = splits["train"].images
        mean = x.mean(axis=(0, 1, 2), dtype=np.float64)
        std = np.maximum(x.std(axis=(0, 1, 2), dtype=np.float64), 1.0)
        spec = DatasetSpec(name, num_classes, "small", True, tuple(mean), tuple(std), files=())
    if flip is not None:
        spec = dataclasses.replace(spec, flip=flip)
    spec = dataclasses.replace(spec, num_classes=num_classes)
    return _dataset(name, spec, splits["train"], splits["test"], val_size)


def prepare_debian_fashion_mnist(data_dir: str | None = None, debian_dir: str | None = None) -> str:
    """Prepares tfds's fashion_mnist from Debian's `dataset-fashion-mnist` files.

    Debian re-compressed the files, so their checksums differ from tfds's record and
    tfds's own builder rejects them; the data inside is the original. `load` does this
    by itself when needed; call it to prepare ahead of time.

    Args:
      data_dir: tfds data directory; DEFAULT_DATA_DIR if None.
      debian_dir: where the *.gz files are; env SQZDSE_DEBIAN_FASHION_MNIST, else
        /usr/share/datasets/fashion-mnist.

    Returns:
      The prepared dataset's directory.
    """
    spec = DATASETS["fashion_mnist"]
    data_dir = os.path.abspath(os.path.expanduser(data_dir or DEFAULT_DATA_DIR))
    debian_dir = debian_dir or tfds_prep.debian_dir()
    if not tfds_prep.has_files(debian_dir, spec.files):
        raise DatasetUnavailable(
            f"Debian's Fashion-MNIST is not in {debian_dir}: `apt-get install dataset-fashion-mnist`."
        )
    return tfds_prep.prepared_builder(spec, data_dir, download=False, source_dir=debian_dir).data_dir


# --------------------------------------------------------------------------- batching


@dataclasses.dataclass(frozen=True, eq=False)
class _Arrays:
    """Examples held in memory."""

    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int32

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, index: np.ndarray) -> tuple[Any, np.ndarray]:
        return self.images[index], self.labels[index]


@dataclasses.dataclass(frozen=True, eq=False)
class _Records:
    """Examples in a tfds data source (or any sequence of such dicts), undecoded."""

    source: Any  # records {"image": encoded bytes or uint8 array, "label": int}

    def __len__(self) -> int:
        return len(self.source)

    def read(self, index: np.ndarray) -> tuple[Any, np.ndarray]:
        keys = [int(i) for i in index]
        if hasattr(self.source, "__getitems__"):  # one batched read from array_record
            records = self.source.__getitems__(keys)
        else:
            records = [self.source[k] for k in keys]
        return [r["image"] for r in records], np.array([r["label"] for r in records], np.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class _Split:
    """A split as a subset of some examples (the val carve shares train's)."""

    examples: _Arrays | _Records
    index: np.ndarray  # which examples belong to the split, ascending


def _dataset(name: str, spec: DatasetSpec, train, test, val_size: int | None) -> Dataset:
    n = len(train)
    if val_size is None:
        val_size = min(MAX_DEFAULT_VAL, n // 10)
    if not 0 <= val_size < n:
        raise InputError(f"val_size must be in [0, {n}) for {name}, got {val_size}")
    # A fixed permutation, independent of any training seed; a smaller val_size takes
    # a subset of a larger one's images.
    perm = np.random.default_rng(_VAL_SEED).permutation(n)
    splits = {
        "train": _Split(train, np.sort(perm[val_size:])),
        "val": _Split(train, np.sort(perm[:val_size])),
        "test": _Split(test, np.arange(len(test))),
    }
    if spec.family == "small":
        image_shape = tuple(train.images.shape[1:])
    else:
        image_shape = (CAFFE_CROP, CAFFE_CROP, 3)
    info = DatasetInfo(
        name=name,
        num_classes=spec.num_classes,
        image_shape=image_shape,
        family=spec.family,
        num_train=n - val_size,
        num_val=val_size,
        num_test=len(test),
    )
    return Dataset(info, splits, spec)


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """The train/val/test splits of one dataset, and how to batch them."""

    info: DatasetInfo
    _splits: Mapping[str, _Split] = dataclasses.field(repr=False)
    _spec: DatasetSpec = dataclasses.field(repr=False)

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        seed: int,
        epoch: int = 0,
        train: bool,
        drop_remainder: bool | None = None,
        limit: int | None = None,
        prefetch: int = 2,
        start: int = 0,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yields (images float32 NHWC normalised, labels int32) batches of `split`.

        Args:
          split: "train", "val" or "test".
          batch_size: examples per batch.
          seed, epoch: with train=True, the order and the augmentation are a function
            of (seed, epoch) alone, so a resumed run sees the same batches.
          train: shuffle and augment; otherwise the split's fixed order, unaugmented.
          drop_remainder: drop the last partial batch; defaults to `train`.
          limit: use only the first `limit` examples of the split.
          prefetch: batches kept ready by a background thread; 0 computes them inline.
          start: begin at this batch of the epoch (a resumed run's): the batches before it are neither read nor
            decoded, and the ones after are those a pass from the first batch yields.
        """
        index = self._index(split, limit)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if seed < 0 or epoch < 0:
            raise ValueError(f"seed and epoch must be >= 0, got {seed}, {epoch}")
        drop = train if drop_remainder is None else drop_remainder
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        batches = self._batches(self._splits[split].examples, index, batch_size, seed, epoch, train, drop, start)
        return _prefetch(batches, prefetch) if prefetch > 0 else batches

    def steps_per_epoch(
        self,
        split: str,
        batch_size: int,
        limit: int | None = None,
        *,
        drop_remainder: bool | None = None,
    ) -> int:
        """Number of batches `batches` yields; the last partial one counts except for "train".

        drop_remainder defaults to split == "train", matching batches("train",
        train=True) and batches("val" / "test", train=False).
        """
        n = len(self._index(split, limit))
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        drop = split == "train" if drop_remainder is None else drop_remainder
        return n // batch_size if drop else -(-n // batch_size)

    def _index(self, split: str, limit: int | None) -> np.ndarray:
        if split not in self._splits:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        index = self._splits[split].index
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit must be >= 0, got {limit}")
            index = index[:limit]
        return index

    def _batches(self, examples, index, batch_size, seed, epoch, train, drop, skip=0):
        perm_seed, aug_seed = np.random.SeedSequence([seed, epoch]).spawn(2)
        if train:
            index = index[np.random.default_rng(perm_seed).permutation(len(index))]
        aug_rng = np.random.default_rng(aug_seed)
        stop = len(index) - len(index) % batch_size if drop else len(index)
        mean = np.asarray(self._spec.mean, np.float32)
        inv_std = 1.0 / np.asarray(self._spec.std, np.float32)

        if self.info.family == "small":  # in memory: a skipped batch costs a gather, and keeps its draws
            for b, start in enumerate(range(0, stop, batch_size)):
                images, labels = examples.read(index[start : start + batch_size])
                if train:
                    images = _pad_crop_flip(images, SMALL_PAD, self._spec.flip, aug_rng)
                if b >= skip:
                    yield (images - mean) * inv_std, labels
        else:
            # Threads suffice: PIL releases the GIL while decoding and resizing.
            with concurrent.futures.ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
                for b, start in enumerate(range(0, stop, batch_size)):
                    n = min(batch_size, stop - start)
                    if train:  # Caffe: offsets uniform in [0, 256 - 227], mirror 1/2
                        offsets = aug_rng.integers(0, CAFFE_RESIZE - CAFFE_CROP + 1, (n, 2))
                        mirror = (aug_rng.random(n) < 0.5) & self._spec.flip
                    else:  # centre crop
                        offsets = np.full((n, 2), CAFFE_CENTRE)
                        mirror = np.zeros(n, bool)
                    if b < skip:  # drawn, as the batch would be, but neither read nor decoded
                        continue
                    images, labels = examples.read(index[start : start + batch_size])
                    crops = np.stack(list(pool.map(caffe_crop, images, offsets, mirror)))
                    yield (crops - mean) * inv_std, labels


def _pad_crop_flip(x: np.ndarray, pad: int, flip: bool, rng: np.random.Generator) -> np.ndarray:
    """Zero-pads, crops back to size at random offsets and mirrors half, all in one gather."""
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows = rng.integers(0, 2 * pad + 1, n)[:, None] + np.arange(h)
    cols = rng.integers(0, 2 * pad + 1, n)[:, None] + np.arange(w)
    if flip:  # reading the crop's columns backwards mirrors it
        cols = np.where((rng.random(n) < 0.5)[:, None], cols[:, ::-1], cols)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def caffe_crop(image: bytes | np.ndarray | Image.Image, offset=None, mirror: bool = False) -> np.ndarray:
    """Decodes, resizes to 256x256, crops 227x227 at `offset` (row, column; None: the centre), returns BGR uint8.

    Caffe's preprocessing (train_val.prototxt); subtracting CAFFE_MEAN_BGR is left to the caller.
    """
    if isinstance(image, Image.Image):
        pil = image
    elif isinstance(image, np.ndarray):
        pil = Image.fromarray(image)
    else:
        pil = Image.open(io.BytesIO(image))
        # Lets the JPEG decoder downscale by 1/2..1/8 while decoding, still >= 256 px.
        pil.draft("RGB", (CAFFE_RESIZE, CAFFE_RESIZE))
    pil = pil.convert("RGB")
    if pil.size != (CAFFE_RESIZE, CAFFE_RESIZE):
        pil = pil.resize((CAFFE_RESIZE, CAFFE_RESIZE), Image.BILINEAR)
    y, x = (CAFFE_CENTRE, CAFFE_CENTRE) if offset is None else offset
    crop = np.asarray(pil)[y : y + CAFFE_CROP, x : x + CAFFE_CROP, ::-1]  # RGB -> BGR
    return crop[:, ::-1] if mirror else crop


def _prefetch(batches: Iterator, size: int) -> Iterator:
    """Runs `batches` in a background thread, keeping up to `size` results ready.

    The thread starts at once, so the first batch is being made while the caller
    still sets up; it stops when the returned iterator is exhausted, closed or
    garbage-collected.
    """
    ready: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(done)
        except BaseException as e:  # handed to the consumer, raised there
            put(e)
        finally:
            batches.close()

    def consume():
        try:
            while True:
                item = ready.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    consumer = consume()
    weakref.finalize(consumer, stop.set)  # never iterated, then dropped
    return consumer


__all__ = [
    "DEFAULT_DATA_DIR",
    "Dataset",
    "DatasetInfo",
    "DatasetUnavailable",
    "from_arrays",
    "load",
    "prepare_debian_fashion_mnist",
]


# --------------------------------------------------------------------------- what a trained model expects


def normalisation(name: str) -> tuple[str, tuple[float, ...], tuple[float, ...]]:
    """(family, mean, std) of the named dataset's batches: ``(x - mean) / std`` per channel on the 0-255 scale.

    Channels are in the batches' order: BGR for the ImageNet family (Caffe's mean_value, std 1), after its
    resize to 256x256 and centre 227 crop; the small family is normalised at its stored size.
    """
    spec = dataset_spec(name)
    return spec.family, spec.mean, spec.std


def class_names(name: str, data_dir: str | None = None) -> tuple[str, ...]:
    """The names tensorflow-datasets gives the named dataset's labels, by class id.

    From the prepared dataset's own files where it is prepared in `data_dir`, else from tfds's definition
    (which for CIFAR has only the class numbers: tfds reads their names from the archive).
    """
    data_dir = os.path.abspath(os.path.expanduser(data_dir or DEFAULT_DATA_DIR))
    return tfds_prep.label_names(dataset_spec(name), data_dir)
