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

Nothing here needs TensorFlow: `tfds.load` and tfds's own builders read their sources
through `tf.io.gfile` and encode images with `tf.image`, and offline `tfds.load` spends
minutes retrying before it fails. So each dataset is prepared by a subclass of tfds's
builder (same name, version and features, so the files are interchangeable with
tfds's) that reads its sources with the standard library and yields already-encoded
images, written as array_record and read back with `as_data_source`. Availability is
decided before any download starts, and a dataset that cannot be had raises one
`DatasetUnavailable` saying how to get it.

Measured on 2 CPU cores with Debian's real Fashion-MNIST: the first load, which
prepares the tfds files and the cache, takes ~12 s; every later load ~0.05 s (plus
~0.15 s to import this module). ImageNet-style decoding: ~270 images/s on 2 cores
(500x375 JPEGs); the pool uses up to 16 cores.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import fcntl
import glob
import gzip
import inspect
import io
import logging
import os
import queue
import tarfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from etils import epath
from PIL import Image

DEFAULT_DATA_DIR = (
    os.environ.get("SQZDSE_DATA_DIR") or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
)
# Debian's `dataset-fashion-mnist` package; the env var SQZDSE_DEBIAN_FASHION_MNIST
# points elsewhere (tests use it for tiny files of the same format).
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

SPLITS = ("train", "val", "test")
# Seed of the validation carve. Fixed, never the trial's seed, so every trial of a
# sweep tunes on the same images.
_VAL_SEED = 20160224  # SqueezeNet's arXiv date
_MAX_DEFAULT_VAL = 5000

# Caffe's train_val.prototxt: images stored at 256x256, crop_size 227, mirror for
# training, mean_value 104/117/123 in BGR order (what the pretrained weights expect).
CAFFE_RESIZE = 256
CAFFE_CROP = 227
CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)
# Standard augmentation for 28/32-px images: zero-pad 4 px, crop back at random.
SMALL_PAD = 4

_CACHE_NAME = "sqzdse-uint8.npz"
_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
_IMAGENET_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")

log = logging.getLogger(__name__)


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


class DatasetUnavailable(RuntimeError):
    """The dataset is neither prepared nor obtainable; the message says how to get it."""


@dataclasses.dataclass(frozen=True)
class _Spec:
    """How one named dataset is found, prepared and augmented."""

    tfds_name: str
    num_classes: int
    family: str
    flip: bool  # mirror augmentation; off for digits, which are not mirror-symmetric
    mean: tuple[float, ...]  # per channel on the 0-255 scale, in the order batches use
    std: tuple[float, ...]
    files: tuple[str, ...]  # source files, looked for in tfds's manual_dir first
    urls: tuple[str, ...] = ()  # where tfds downloads `files` from; () = manual only
    config: str | None = None
    test_split: str = "test"  # tfds split reported as "test"


def _x255(*values: float) -> tuple[float, ...]:
    return tuple(255.0 * v for v in values)


def _urls(base: str, files: Sequence[str]) -> tuple[str, ...]:
    return tuple(base + f for f in files)


_CAFFE = dict(family="imagenet", flip=True, mean=CAFFE_MEAN_BGR, std=(1.0, 1.0, 1.0))
# URLs are tfds's own, so its recorded checksums verify the downloads. Means and
# standard deviations are the usual per-channel training-set statistics.
_SPECS = {
    "mnist": _Spec(
        "mnist", 10, "small", flip=False, mean=_x255(0.1307), std=_x255(0.3081),
        files=_IDX_FILES,
        urls=_urls("https://storage.googleapis.com/cvdf-datasets/mnist/", _IDX_FILES),
    ),
    "fashion_mnist": _Spec(
        "fashion_mnist", 10, "small", flip=True, mean=_x255(0.2860), std=_x255(0.3530),
        files=_IDX_FILES,
        urls=_urls("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", _IDX_FILES),
    ),
    "cifar10": _Spec(
        "cifar10", 10, "small", flip=True,
        mean=_x255(0.4914, 0.4822, 0.4465), std=_x255(0.2470, 0.2435, 0.2616),
        files=("cifar-10-binary.tar.gz",),
        urls=("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
    ),
    "cifar100": _Spec(
        "cifar100", 100, "small", flip=True,
        mean=_x255(0.5071, 0.4865, 0.4409), std=_x255(0.2673, 0.2564, 0.2762),
        files=("cifar-100-binary.tar.gz",),
        urls=("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",),
    ),
    # The 320px variant: images are resized to 256x256 anyway, and it is a quarter of
    # the full-size download.
    "imagenette": _Spec(
        "imagenette", 10, **_CAFFE, config="320px-v2", test_split="validation",
        files=("imagenette2-320.tgz",),
        urls=("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz",),
    ),
    # ImageNet's test labels are not public: its validation split is the test set.
    "imagenet2012": _Spec(
        "imagenet2012", 1000, **_CAFFE, test_split="validation", files=_IMAGENET_TARS,
    ),
}  # fmt: skip


def _spec(name: str) -> _Spec:
    if name not in _SPECS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(_SPECS))}")
    return _SPECS[name]


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
    spec = _spec(name)
    data_dir = os.path.abspath(os.path.expanduser(data_dir or DEFAULT_DATA_DIR))
    if spec.family == "small":
        arrays = _read_cache(spec, data_dir)
        if arrays is None:
            builder = _prepared_builder(spec, data_dir, download)
            arrays = {
                split: _decode_split(builder, tfds_split)
                for split, tfds_split in (("train", "train"), ("test", spec.test_split))
            }
            _write_cache(os.path.join(builder.data_dir, _CACHE_NAME), arrays)
        train, test = (_Arrays(*arrays[s]) for s in ("train", "test"))
    else:
        import tensorflow_datasets as tfds

        builder = _prepared_builder(spec, data_dir, download)
        # Undecoded: PIL decodes and resizes in one go, and copes with the CMYK and
        # PNG files hidden among ImageNet's JPEGs.
        train, test = (
            _Records(builder.as_data_source(s, decoders={"image": tfds.decode.SkipDecoding()}))
            for s in ("train", spec.test_split)
        )
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

    known = _SPECS.get(name)
    channels = splits["train"].images.shape[-1]
    if known is not None and known.family == family and len(known.mean) == channels:
        spec = known
    elif family == "imagenet":
        spec = _Spec(name, num_classes, files=(), **_CAFFE)
    else:
        # Statistics of the whole training split: the validation carve is a random
        # tenth of it, so they hardly differ, and this needs no second pass.
        x = splits["train"].images
        mean = x.mean(axis=(0, 1, 2), dtype=np.float64)
        std = np.maximum(x.std(axis=(0, 1, 2), dtype=np.float64), 1.0)
        spec = _Spec(name, num_classes, "small", True, tuple(mean), tuple(std), files=())
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
    spec = _SPECS["fashion_mnist"]
    data_dir = os.path.abspath(os.path.expanduser(data_dir or DEFAULT_DATA_DIR))
    debian_dir = debian_dir or _debian_dir()
    if not _has_files(debian_dir, spec.files):
        raise DatasetUnavailable(
            f"Debian's Fashion-MNIST is not in {debian_dir}: `apt-get install dataset-fashion-mnist`."
        )
    return _prepared_builder(spec, data_dir, download=False, source_dir=debian_dir).data_dir


def _debian_dir() -> str:
    return os.environ.get("SQZDSE_DEBIAN_FASHION_MNIST") or DEBIAN_FASHION_MNIST_DIR


def _has_files(directory: str, files: Sequence[str]) -> bool:
    return bool(files) and all(os.path.isfile(os.path.join(directory, f)) for f in files)


def _prepared_builder(spec: _Spec, data_dir: str, download: bool, source_dir: str | None = None):
    """Returns a prepared tfds builder, preparing it first if the sources can be had."""
    import tensorflow_datasets as tfds

    cls = _builder_cls(spec)
    builder = cls(data_dir=data_dir, config=spec.config, file_format="array_record")
    if not _is_prepared(builder):
        if source_dir is None:
            source_dir = _find_sources(spec, data_dir, download)
        os.makedirs(data_dir, exist_ok=True)
        # Parallel sweep trials may all find the dataset missing; one prepares it.
        with _file_lock(os.path.join(data_dir, f".sqzdse-{spec.tfds_name}.lock")):
            builder = cls(
                data_dir=data_dir,
                config=spec.config,
                file_format="array_record",
                source_dir=source_dir,
            )
            if not _is_prepared(builder):
                where = source_dir or "the internet"
                log.info("preparing %s from %s in %s", spec.tfds_name, where, data_dir)
                try:
                    builder.download_and_prepare(
                        download_dir=os.path.join(data_dir, "downloads"),
                        download_config=tfds.download.DownloadConfig(try_download_gcs=False),
                    )
                except Exception as e:
                    raise DatasetUnavailable(
                        f"preparing {spec.tfds_name} from {where} failed ({e}). " + _how_to_get(spec, data_dir)
                    ) from e
    file_format = builder.info.file_format
    if file_format is not None and file_format.value != "array_record":
        raise DatasetUnavailable(
            f"{builder.data_dir} holds {file_format.value} files, which need "
            "TensorFlow to read; delete that directory and rerun to prepare "
            "array_record files."
        )
    return builder


def _is_prepared(builder) -> bool:
    # What builder.is_prepared() checks, without its warning for every missing dataset.
    return os.path.isfile(os.path.join(builder.data_dir, "dataset_info.json"))


def _find_sources(spec: _Spec, data_dir: str, download: bool) -> str | None:
    """The directory holding the source files, or None to download them.

    Decided before tfds starts, since an offline tfds download retries for minutes.
    """
    manual_dir = _manual_dir(data_dir)
    if _has_files(manual_dir, spec.files):
        return manual_dir
    if spec.tfds_name == "fashion_mnist" and _has_files(_debian_dir(), spec.files):
        return _debian_dir()
    missing = f"{spec.tfds_name} is not prepared in {data_dir}"
    if not spec.urls:
        raise DatasetUnavailable(f"{missing}. " + _how_to_get(spec, data_dir))
    if not download:
        raise DatasetUnavailable(f"{missing} and download=False. " + _how_to_get(spec, data_dir))
    host = urllib.parse.urlsplit(spec.urls[0]).hostname
    if not _reachable(spec.urls[0]):
        raise DatasetUnavailable(
            f"{missing} and {host} cannot be reached to download it. " + _how_to_get(spec, data_dir)
        )
    return None


def _manual_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "downloads", "manual")  # tfds's default manual_dir


def _how_to_get(spec: _Spec, data_dir: str) -> str:
    manual = f"put {', '.join(spec.files)} in {_manual_dir(data_dir)}"
    if not spec.urls:
        return (
            "ImageNet cannot be downloaded automatically: register at "
            f"https://image-net.org/download-images, {manual} and rerun."
        )
    ways = ["connect to the internet and rerun (with download=True)", f"{manual} and rerun"]
    if spec.tfds_name == "fashion_mnist":
        ways.insert(0, f"`apt-get install dataset-fashion-mnist` (looked in {_debian_dir()})")
    return "To get it: " + "; or ".join(ways) + "."


def _builder_cls(spec: _Spec):
    """tfds's builder for `spec`, reading its sources without TensorFlow."""
    from tensorflow_datasets.datasets.imagenet2012 import imagenet2012_dataset_builder
    from tensorflow_datasets.datasets.imagenette import imagenette_dataset_builder
    from tensorflow_datasets.image_classification import cifar, mnist

    base, read_splits = {
        "mnist": (mnist.MNIST, _idx_splits),
        "fashion_mnist": (mnist.FashionMNIST, _idx_splits),
        "cifar10": (cifar.Cifar10, _cifar_splits),
        "cifar100": (cifar.Cifar100, _cifar_splits),
        "imagenette": (imagenette_dataset_builder.Builder, _imagenette_splits),
        "imagenet2012": (imagenet2012_dataset_builder.Builder, _imagenet2012_splits),
    }[spec.tfds_name]

    class Builder(base, skip_registration=True):
        # tfds's name, version and features: the prepared files land where tfds puts
        # them and are interchangeable with tfds's own.
        name = base.name
        # Where tfds finds the base's recorded checksums and metadata. Stated, since
        # tfds would infer sqzdse/ from the module path (and that inference needs
        # `importlib_resources`, which tfds does not declare).
        code_path = epath.Path(inspect.getfile(base))
        pkg_dir_path = code_path.parent

        def __init__(self, *, source_dir: str | None = None, **kwargs):
            self._source_dir = source_dir
            super().__init__(**kwargs)

        def _split_generators(self, dl_manager):
            if self._source_dir is not None:
                paths = {f: os.path.join(self._source_dir, f) for f in spec.files}
            else:
                # download, not download_and_extract: tfds's extractor needs TensorFlow.
                paths = dl_manager.download(dict(zip(spec.files, spec.urls, strict=True)))
            return read_splits(self, {k: os.fspath(v) for k, v in paths.items()})

    return Builder


# Split readers: (builder, {file name: local path}) -> {tfds split: example generator}.
# Images are yielded encoded (PNG via PIL, or the original JPEG bytes) because tfds
# encodes numpy images with TensorFlow.


def _idx_splits(builder, paths: Mapping[str, str]) -> dict[str, Iterator]:
    def examples(images: str, labels: str):
        x, y = _read_idx(paths[images]), _read_idx(paths[labels])
        for i in range(len(y)):  # index keys, as tfds's builder: same shuffled order
            yield i, {"image": _png(x[i]), "label": int(y[i])}

    return {
        "train": examples("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        "test": examples("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    }


def _read_idx(path: str) -> np.ndarray:
    """Reads a gzipped idx file (LeCun's MNIST format): uint8 data, big-endian dims."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image).save(buf, format="png")
    return buf.getvalue()


def _cifar_splits(builder, paths: Mapping[str, str]) -> dict[str, Iterator]:
    info = builder._cifar_info  # tfds's table of the archive's member names
    (archive,) = paths.values()
    with tarfile.open(archive, "r:gz") as tar:
        blobs = {m.name: tar.extractfile(m).read() for m in tar if m.isfile() and m.name.endswith(".bin")}
    n_labels = len(info.label_keys)

    def examples(prefix: str, files: Sequence[str]):
        index = 0
        for f in files:
            # Each row: the label byte(s), then 3x32x32 channel-major pixels.
            rows = np.frombuffer(blobs[info.prefix + f], np.uint8).reshape(-1, n_labels + 3072)
            for row in rows:
                record = dict(zip(info.label_keys, row[:n_labels].tolist(), strict=True))
                record["id"] = f"{prefix}{index:05d}"  # as tfds's builder: same order
                record["image"] = _png(row[n_labels:].reshape(3, 32, 32).transpose(1, 2, 0))
                yield index, record
                index += 1

    return {
        "train": examples("train_", info.train_files),
        "test": examples("test_", info.test_files),
    }


def _imagenette_splits(builder, paths: Mapping[str, str]) -> dict[str, Iterator]:
    (archive,) = paths.values()

    def examples(subdir: str):
        # Members are <root>/{train,val}/<wnid>/<file>.JPEG; streamed, one pass per split.
        with tarfile.open(archive, "r|gz") as tar:
            for m in tar:
                parts = m.name.split("/")
                if m.isfile() and len(parts) >= 4 and parts[-3] == subdir:
                    yield parts[-1], {"image": tar.extractfile(m).read(), "label": parts[-2]}

    return {"train": examples("train"), "validation": examples("val")}


def _imagenet2012_splits(builder, paths: Mapping[str, str]) -> dict[str, Iterator]:
    import tensorflow_datasets as tfds

    def train():
        # The train tar holds one tar per synset, named <wnid>.tar.
        with tarfile.open(paths["ILSVRC2012_img_train.tar"], "r|") as tar:
            for m in tar:
                if not (m.isfile() and m.name.endswith(".tar")):
                    continue
                label = os.path.basename(m.name)[: -len(".tar")]
                inner_bytes = io.BytesIO(tar.extractfile(m).read())
                with tarfile.open(fileobj=inner_bytes) as inner:
                    for im in inner:
                        if im.isfile():
                            fname = os.path.basename(im.name)
                            image = inner.extractfile(im).read()
                            yield fname, {"image": image, "label": label, "file_name": fname}

    def validation():
        # tfds ships the labels in the alphabetical order of the file names.
        labels_path = tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt")
        labels = labels_path.read_text().strip().splitlines()
        val_tar = paths["ILSVRC2012_img_val.tar"]
        with tarfile.open(val_tar) as tar:
            names = sorted(m.name for m in tar if m.isfile())
            label_of = dict(zip(names, labels[: len(names)], strict=True))
        with tarfile.open(val_tar, "r|") as tar:
            for m in tar:
                if m.isfile():
                    fname = os.path.basename(m.name)
                    image = tar.extractfile(m).read()
                    yield fname, {"image": image, "label": label_of[m.name], "file_name": fname}

    return {"train": train(), "validation": validation()}


def _decode_split(builder, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Decodes a whole prepared split into uint8 images (N, H, W, C) and int32 labels."""
    import tensorflow_datasets as tfds

    source = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})
    shape = builder.info.features["image"].shape
    n = len(source)
    images, labels = np.empty((n, *shape), np.uint8), np.empty(n, np.int32)
    chunk = 4096
    for start in range(0, n, chunk):
        for i, record in enumerate(source.__getitems__(range(start, min(n, start + chunk)))):
            with Image.open(io.BytesIO(record["image"])) as image:
                images[start + i] = np.asarray(image).reshape(shape)
            labels[start + i] = record["label"]
    return images, labels


def _cache_path(spec: _Spec, data_dir: str) -> str | None:
    # Beside the prepared tfds files (data_dir/name/version/), so deleting those
    # deletes the cache too. Any version will do: the images do not change between
    # tfds versions, and globbing avoids importing tfds just to learn the version.
    paths = sorted(glob.glob(os.path.join(glob.escape(data_dir), spec.tfds_name, "*", _CACHE_NAME)))
    return paths[-1] if paths else None


def _read_cache(spec: _Spec, data_dir: str) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    path = _cache_path(spec, data_dir)
    if path is None:
        return None
    try:
        with np.load(path) as f:
            arrays = {s: (f[f"{s}_images"], f[f"{s}_labels"]) for s in ("train", "test")}
    except (OSError, KeyError, ValueError) as e:
        log.warning("ignoring unreadable cache %s (%s)", path, e)
        return None
    if any(x.dtype != np.uint8 or x.ndim != 4 or len(x) != len(y) for x, y in arrays.values()):
        log.warning("ignoring malformed cache %s", path)
        return None
    return arrays


def _write_cache(path: str, arrays: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    # Written under a temporary name and renamed, so a concurrent trial never reads a
    # half-written file. Uncompressed: loading is then a plain read.
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **{f"{s}_{k}": a for s, (x, y) in arrays.items() for k, a in (("images", x), ("labels", y))})
        os.replace(tmp, path)
    except OSError as e:  # e.g. a read-only shared data_dir: work uncached
        log.warning("could not write cache %s (%s)", path, e)
        with contextlib.suppress(OSError):
            os.remove(tmp)


@contextlib.contextmanager
def _file_lock(path: str):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the server of `url` answers an HTTP HEAD request within `timeout` seconds.

    A real request rather than a TCP connect: some sandboxes accept every connection.
    Any HTTP status counts, since the server answered; urllib honours *_proxy.
    """
    answered, finished = [], threading.Event()

    def head():
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            answered.append(True)
        except urllib.error.HTTPError:
            answered.append(True)
        except (OSError, ValueError):  # URLError, timeouts, refused, bad proxy URL
            pass
        finally:
            finished.set()

    # The DNS lookup ignores the timeout; waiting on the event bounds it too.
    threading.Thread(target=head, daemon=True).start()
    finished.wait(timeout)
    return bool(answered)


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


def _dataset(name: str, spec: _Spec, train, test, val_size: int | None) -> Dataset:
    n = len(train)
    if val_size is None:
        val_size = min(_MAX_DEFAULT_VAL, n // 10)
    if not 0 <= val_size < n:
        raise ValueError(f"val_size must be in [0, {n}) for {name}, got {val_size}")
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
    _spec: _Spec = dataclasses.field(repr=False)

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
        """
        index = self._index(split, limit)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if seed < 0 or epoch < 0:
            raise ValueError(f"seed and epoch must be >= 0, got {seed}, {epoch}")
        drop = train if drop_remainder is None else drop_remainder
        batches = self._batches(self._splits[split].examples, index, batch_size, seed, epoch, train, drop)
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

    def _batches(self, examples, index, batch_size, seed, epoch, train, drop):
        perm_seed, aug_seed = np.random.SeedSequence([seed, epoch]).spawn(2)
        if train:
            index = index[np.random.default_rng(perm_seed).permutation(len(index))]
        aug_rng = np.random.default_rng(aug_seed)
        stop = len(index) - len(index) % batch_size if drop else len(index)
        mean = np.asarray(self._spec.mean, np.float32)
        inv_std = 1.0 / np.asarray(self._spec.std, np.float32)

        if self.info.family == "small":
            for start in range(0, stop, batch_size):
                images, labels = examples.read(index[start : start + batch_size])
                if train:
                    images = _pad_crop_flip(images, SMALL_PAD, self._spec.flip, aug_rng)
                yield (images - mean) * inv_std, labels
        else:
            # Threads suffice: PIL releases the GIL while decoding and resizing.
            with concurrent.futures.ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
                for start in range(0, stop, batch_size):
                    images, labels = examples.read(index[start : start + batch_size])
                    n = len(labels)
                    if train:  # Caffe: offsets uniform in [0, 256 - 227], mirror 1/2
                        offsets = aug_rng.integers(0, CAFFE_RESIZE - CAFFE_CROP + 1, (n, 2))
                        mirror = (aug_rng.random(n) < 0.5) & self._spec.flip
                    else:  # centre crop
                        offsets = np.full((n, 2), (CAFFE_RESIZE - CAFFE_CROP) // 2)
                        mirror = np.zeros(n, bool)
                    crops = np.stack(list(pool.map(_caffe_crop, images, offsets, mirror)))
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


def _caffe_crop(image: bytes | np.ndarray, offset: np.ndarray, mirror: bool) -> np.ndarray:
    """Decodes, resizes to 256x256, crops 227x227 at `offset`, returns BGR uint8."""
    if isinstance(image, np.ndarray):
        pil = Image.fromarray(image)
    else:
        pil = Image.open(io.BytesIO(image))
        # Lets the JPEG decoder downscale by 1/2..1/8 while decoding, still >= 256 px.
        pil.draft("RGB", (CAFFE_RESIZE, CAFFE_RESIZE))
    pil = pil.convert("RGB")
    if pil.size != (CAFFE_RESIZE, CAFFE_RESIZE):
        pil = pil.resize((CAFFE_RESIZE, CAFFE_RESIZE), Image.BILINEAR)
    y, x = offset
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
    spec = _spec(name)
    return spec.family, spec.mean, spec.std


def class_names(name: str, data_dir: str | None = None) -> tuple[str, ...]:
    """The names tensorflow-datasets gives the named dataset's labels, by class id.

    From the prepared dataset's own files where it is prepared in `data_dir`, else from tfds's definition
    (which for CIFAR has only the class numbers: tfds reads their names from the archive).
    """
    spec = _spec(name)
    data_dir = os.path.abspath(os.path.expanduser(data_dir or DEFAULT_DATA_DIR))
    builder = _builder_cls(spec)(data_dir=data_dir, config=spec.config, file_format="array_record")
    return tuple(builder.info.features["label"].names)
