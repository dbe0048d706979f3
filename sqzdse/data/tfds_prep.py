"""Preparing tfds datasets without TensorFlow, and the decoded uint8 cache kept beside them.

`tfds.load` and tfds's own builders read their sources through `tf.io.gfile` and encode images with `tf.image`,
and offline `tfds.load` spends minutes retrying before it fails. So each dataset is prepared by a subclass of
tfds's builder (same name, version and features, so the files are interchangeable with tfds's) that reads its
sources with the standard library and yields already-encoded images, written as array_record and read back with
`as_data_source`. Availability is decided before any download starts, and a dataset that cannot be had raises one
`DatasetUnavailable` saying how to get it. ``sqzdse.data.pipeline``, the pipeline on top, reaches tfds only through this
module, which imports it only when a dataset is prepared or streamed.

Measured on 2 CPU cores with Debian's real Fashion-MNIST: the first load, which prepares the tfds files and the
cache, takes ~12 s; every later load reads only the cache, ~0.05 s.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import gzip
import inspect
import io
import logging
import os
import tarfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import numpy as np
from etils import epath
from PIL import Image

from sqzdse.errors import InputError, SqzdseError

# Debian's `dataset-fashion-mnist` package; the env var SQZDSE_DEBIAN_FASHION_MNIST
# points elsewhere (tests use it for tiny files of the same format).
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
CACHE_NAME = "sqzdse-uint8.npz"

log = logging.getLogger(__name__)


class DatasetUnavailable(SqzdseError, RuntimeError):
    """The dataset is neither prepared nor obtainable; the message says how to get it."""


class Sources(Protocol):
    """Where a dataset's source files come from (``sqzdse.data.datasets.DatasetSpec`` has these fields)."""

    tfds_name: str
    config: str | None  # tfds builder config, e.g. imagenette's "320px-v2"
    files: tuple[str, ...]  # source files, looked for in tfds's manual_dir first
    urls: tuple[str, ...]  # where tfds downloads `files` from; () = manual only


def debian_dir() -> str:
    return os.environ.get("SQZDSE_DEBIAN_FASHION_MNIST") or DEBIAN_FASHION_MNIST_DIR


def has_files(directory: str, files: Sequence[str]) -> bool:
    return bool(files) and all(os.path.isfile(os.path.join(directory, f)) for f in files)


def prepared_builder(spec: Sources, data_dir: str, download: bool, source_dir: str | None = None):
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


def label_names(spec: Sources, data_dir: str) -> tuple[str, ...]:
    """The label names of the builder's info (its prepared files' where prepared), without preparing it."""
    builder = _builder_cls(spec)(data_dir=data_dir, config=spec.config, file_format="array_record")
    return tuple(builder.info.features["label"].names)


def _is_prepared(builder) -> bool:
    # What builder.is_prepared() checks, without its warning for every missing dataset.
    return os.path.isfile(os.path.join(builder.data_dir, "dataset_info.json"))


def _find_sources(spec: Sources, data_dir: str, download: bool) -> str | None:
    """The directory holding the source files, or None to download them.

    Decided before tfds starts, since an offline tfds download retries for minutes.
    """
    manual_dir = _manual_dir(data_dir)
    if has_files(manual_dir, spec.files):
        return manual_dir
    if spec.tfds_name == "fashion_mnist" and has_files(debian_dir(), spec.files):
        return debian_dir()
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


def _how_to_get(spec: Sources, data_dir: str) -> str:
    manual = f"put {', '.join(spec.files)} in {_manual_dir(data_dir)}"
    if not spec.urls:
        return (
            "ImageNet cannot be downloaded automatically: register at "
            f"https://image-net.org/download-images, {manual} and rerun."
        )
    ways = ["connect to the internet and rerun (with download=True)", f"{manual} and rerun"]
    if spec.tfds_name == "fashion_mnist":
        ways.insert(0, f"`apt-get install dataset-fashion-mnist` (looked in {debian_dir()})")
    return "To get it: " + "; or ".join(ways) + "."


def _builder_cls(spec: Sources):
    """tfds's builder for `spec`, reading its sources without TensorFlow."""
    import tensorflow_datasets as tfds

    base = tfds.builder_cls(spec.tfds_name)
    read_splits = {
        "mnist": _idx_splits,
        "fashion_mnist": _idx_splits,
        "cifar10": _cifar_splits,
        "cifar100": _cifar_splits,
        "imagenette": _imagenette_splits,
        "imagenet2012": _imagenet2012_splits,
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
        raise InputError(f"{path} is not an unsigned-byte idx file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image).save(buf, format="png")
    return buf.getvalue()


def _cifar_layout(builder):
    """The archive's member prefix, train/test file names and label keys, as tfds's CIFAR builder reads them.

    A private attribute: tfds has no public API for them, and copying them would let them drift from the
    archive whose checksum tfds records.
    """
    return builder._cifar_info


def _cifar_splits(builder, paths: Mapping[str, str]) -> dict[str, Iterator]:
    info = _cifar_layout(builder)
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


def data_source(builder, split: str):
    """A prepared split as a random-access source of records whose images are still encoded."""
    import tensorflow_datasets as tfds

    return builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})


def decode_split(builder, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Decodes a whole prepared split into uint8 images (N, H, W, C) and int32 labels."""
    source = data_source(builder, split)
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


def _cache_path(spec: Sources, data_dir: str) -> str | None:
    # Beside the prepared tfds files (data_dir/name/version/), so deleting those
    # deletes the cache too. Any version will do: the images do not change between
    # tfds versions, and globbing avoids importing tfds just to learn the version.
    paths = sorted(glob.glob(os.path.join(glob.escape(data_dir), spec.tfds_name, "*", CACHE_NAME)))
    return paths[-1] if paths else None


def read_cache(spec: Sources, data_dir: str) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
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


def write_cache(builder, arrays: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Stores decoded splits beside `builder`'s prepared files, for ``read_cache``."""
    path = os.path.join(builder.data_dir, CACHE_NAME)
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
