"""Input pipeline: preparation without TensorFlow, the val carve, determinism, augmentation.

Never downloads: tfds preparation runs on tiny source files the tests write in the
formats of Debian's Fashion-MNIST, CIFAR-10's binary archive, Imagenette and ImageNet.
"""

import dataclasses
import functools
import http.server
import io
import tarfile
import threading
import time

import numpy as np
import pytest
from builders import fashion_files
from PIL import Image

from sqzdse.data import datasets, tfds_prep
from sqzdse.data import pipeline as data
from sqzdse.errors import InputError

IDX = datasets.IDX_FILES


def _rows(images: np.ndarray) -> set[bytes]:
    return {x.tobytes() for x in images}


def _all(ds, split, batch_size=7, **kw):
    """One pass over `split`, concatenated."""
    batches = list(ds.batches(split, batch_size, seed=kw.pop("seed", 0), train=kw.pop("train", False), **kw))
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def _jpeg(rgb, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, tuple(rgb)).save(buf, format="jpeg", quality=95)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """Tiny Debian-format Fashion-MNIST, prepared once for the module."""
    root = tmp_path_factory.mktemp("fashion")
    arrays = fashion_files(root / "debian")
    path = data.prepare_debian_fashion_mnist(str(root / "tfds"), debian_dir=str(root / "debian"))
    return root / "tfds", arrays, path


def _noise(n, shape=(12, 12, 1), seed=0):
    """Distinct noise images labelled by their index, so every example is recognisable."""
    x = np.random.default_rng(seed).integers(0, 256, (n, *shape), np.uint8)
    return x, np.arange(n)


# ---------------------------------------------------------------- preparation, loading


def test_debian_fashion_mnist_prepares_and_loads(fashion):
    data_dir, (x_train, y_train, x_test, y_test), path = fashion
    assert (data_dir / "fashion_mnist").is_dir() and path.endswith("3.0.1")

    ds = data.load("fashion_mnist", data_dir=str(data_dir), val_size=10, download=False)
    assert ds.info == data.DatasetInfo("fashion_mnist", 10, (28, 28, 1), "small", 50, 10, 20)
    # tfds stores the examples in its own shuffled order: compare as sets, with labels.
    train = ds._splits["train"].examples
    assert _rows(train.images[..., 0]) == _rows(x_train)
    by_image = {x.tobytes(): y for x, y in zip(x_train, y_train, strict=True)}
    assert all(by_image[x[..., 0].tobytes()] == y for x, y in zip(train.images, train.labels, strict=True))
    test = ds._splits["test"].examples
    assert _rows(test.images[..., 0]) == _rows(x_test) and sorted(test.labels) == sorted(y_test)


def test_load_finds_debian_files_through_env_and_caches(tmp_path, monkeypatch):
    fashion_files(tmp_path / "debian", n_train=30, n_test=10)
    monkeypatch.setenv("SQZDSE_DEBIAN_FASHION_MNIST", str(tmp_path / "debian"))
    first = data.load("fashion_mnist", data_dir=str(tmp_path / "tfds"), download=False)
    assert (first.info.num_train, first.info.num_val, first.info.num_test) == (27, 3, 10)
    assert list((tmp_path / "tfds" / "fashion_mnist").glob("*/sqzdse-uint8.npz"))

    def no_tfds(*args, **kwargs):
        raise AssertionError("a cached load must not touch tfds")

    monkeypatch.setattr(tfds_prep, "prepared_builder", no_tfds)
    second = data.load("fashion_mnist", data_dir=str(tmp_path / "tfds"), download=False)
    np.testing.assert_array_equal(_all(first, "val")[0], _all(second, "val")[0])


def test_download_path_without_tensorflow(tmp_path, monkeypatch):
    """tfds's download manager fetches the sources (here from a local server), we parse them."""
    served = tmp_path / "served"
    x_train = fashion_files(served, n_train=20, n_test=5)[0]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/"
        spec = dataclasses.replace(datasets.DATASETS["mnist"], urls=tuple(base + f for f in IDX))
        monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
        ds = data.load("mnist", data_dir=str(tmp_path / "tfds"), val_size=2)
    finally:
        server.shutdown()
    assert (ds.info.num_train, ds.info.num_val, ds.info.num_test) == (18, 2, 5)
    assert _rows(ds._splits["train"].examples.images[..., 0]) == _rows(x_train)


def test_cifar10_archive_in_manual_dir(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (8, 32, 32, 3), np.uint8)
    labels = rng.integers(0, 10, 8, np.uint8)
    # CIFAR's binary rows: label byte, then the image channel-major.
    rows = np.concatenate([labels[:, None], images.transpose(0, 3, 1, 2).reshape(8, -1)], axis=1)
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    with tarfile.open(manual / "cifar-10-binary.tar.gz", "w:gz") as tar:
        for i in range(1, 6):
            _add(tar, f"cifar-10-batches-bin/data_batch_{i}.bin", rows[:5].tobytes() if i == 1 else b"")
        _add(tar, "cifar-10-batches-bin/test_batch.bin", rows[5:].tobytes())

    ds = data.load("cifar10", data_dir=str(tmp_path), val_size=1, download=False)
    assert ds.info == data.DatasetInfo("cifar10", 10, (32, 32, 3), "small", 4, 1, 3)
    assert _rows(ds._splits["train"].examples.images) == _rows(images[:5])
    assert _rows(ds._splits["test"].examples.images) == _rows(images[5:])


IMAGENETTE = {"n01440764": (200, 100, 50), "n02102040": (10, 220, 130)}  # two classes, one colour each


def _imagenette(root):
    """Tiny Imagenette in its archive's layout: 4 training and 2 validation JPEGs of each of two classes."""
    manual = root / "downloads" / "manual"
    manual.mkdir(parents=True)
    with tarfile.open(manual / "imagenette2-320.tgz", "w:gz") as tar:
        for split, count in (("train", 4), ("val", 2)):
            for wnid, colour in IMAGENETTE.items():
                for i in range(count):
                    _add(tar, f"imagenette2-320/{split}/{wnid}/{wnid}_{split}{i}.JPEG", _jpeg(colour))
    return data.load("imagenette", data_dir=str(root), val_size=2, download=False)


def test_imagenette_streams_caffe_style(tmp_path):
    wnids, colours = list(IMAGENETTE), IMAGENETTE
    ds = _imagenette(tmp_path)
    assert ds.info == data.DatasetInfo("imagenette", 10, (227, 227, 3), "imagenet", 6, 2, 4)
    x, y = _all(ds, "test", batch_size=3)
    assert x.shape == (4, 227, 227, 3) and x.dtype == np.float32 and y.dtype == np.int32
    assert sorted(y) == [0, 0, 1, 1]  # label index = line of imagenette_labels.txt
    for image, label in zip(x, y, strict=True):
        r, g, b = colours[wnids[label]]
        # Caffe: BGR, 0-255, minus mean_value 104/117/123 (JPEG is lossy, hence atol).
        np.testing.assert_allclose(image.mean(axis=(0, 1)), (b - 104, g - 117, r - 123), atol=3)
    xt, _ = _all(ds, "train", batch_size=3, train=True)
    assert xt.shape == (6, 227, 227, 3)


def test_a_resumed_epoch_decodes_only_the_batches_it_trains_on(tmp_path, monkeypatch):
    ds = _imagenette(tmp_path)
    whole = list(ds.batches("train", 2, seed=3, epoch=1, train=True, prefetch=0))
    decoded = []
    crop = data.caffe_crop
    monkeypatch.setattr(data, "caffe_crop", lambda *a: decoded.append(1) or crop(*a))
    resumed = list(ds.batches("train", 2, seed=3, epoch=1, train=True, prefetch=0, start=2))
    assert len(resumed) == len(whole) - 2 and len(decoded) == 2 * len(resumed)  # the first two: not decoded
    for (x, y), (xw, yw) in zip(resumed, whole[2:], strict=True):  # the same crops and mirrors as from the start
        np.testing.assert_array_equal(x, xw)
        np.testing.assert_array_equal(y, yw)
    small = data.from_arrays("fashion_mnist", _noise(12, (28, 28, 1)), _noise(4, (28, 28, 1)), num_classes=12)
    full = list(small.batches("train", 3, seed=1, epoch=2, train=True, prefetch=0))
    for (x, y), (xw, yw) in zip(small.batches("train", 3, seed=1, epoch=2, train=True, prefetch=0, start=1), full[1:],
                                strict=True):  # fmt: skip
        np.testing.assert_array_equal(x, xw)
        np.testing.assert_array_equal(y, yw)


def test_imagenet2012_tars_in_manual_dir(tmp_path):
    from tensorflow_datasets.core import tfds_path

    names = tfds_path("datasets/imagenet2012/labels.txt").read_text().split()
    val_wnids = tfds_path("datasets/imagenet2012/validation_labels.txt").read_text().split()[:3]
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    with tarfile.open(manual / "ILSVRC2012_img_train.tar", "w") as outer:
        for wnid in names[:2]:
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tar:
                for i in range(2):
                    _add(tar, f"{wnid}_{i}.JPEG", _jpeg((i * 50, 80, 160)))
            _add(outer, f"{wnid}.tar", inner.getvalue())
    with tarfile.open(manual / "ILSVRC2012_img_val.tar", "w") as tar:
        for i in (3, 1, 2):  # labels follow the sorted file names, not the tar order
            _add(tar, f"ILSVRC2012_val_{i:08d}.JPEG", _jpeg((i * 60, 0, 0), size=(300, 260)))

    ds = data.load("imagenet2012", data_dir=str(tmp_path), val_size=1, download=False)
    assert ds.info == data.DatasetInfo("imagenet2012", 1000, (227, 227, 3), "imagenet", 3, 1, 3)
    x, y = _all(ds, "test")
    assert x.shape == (3, 227, 227, 3)
    assert sorted(y) == sorted(names.index(w) for w in val_wnids)


def test_unavailable_says_how_to_get_it_quickly(tmp_path, monkeypatch):
    monkeypatch.setenv("SQZDSE_DEBIAN_FASHION_MNIST", str(tmp_path / "no-debian-copy"))
    start = time.perf_counter()
    with pytest.raises(data.DatasetUnavailable, match="apt-get install dataset-fashion-mnist") as e:
        data.load("fashion_mnist", data_dir=str(tmp_path / "empty"), download=False)
    assert "download=False" in str(e.value) and "connect to the internet" in str(e.value)
    with pytest.raises(data.DatasetUnavailable, match="ILSVRC2012_img_train.tar") as e:
        data.load("imagenet2012", data_dir=str(tmp_path / "empty"), download=False)
    assert str(tmp_path / "empty" / "downloads" / "manual") in str(e.value)
    # Downloads allowed but the host unreachable: still one clear error, no retries.
    monkeypatch.setattr(tfds_prep, "_reachable", lambda url, timeout=3.0: False)
    with pytest.raises(data.DatasetUnavailable, match="cannot be reached") as e:
        data.load("cifar10", data_dir=str(tmp_path / "empty"))
    assert "cifar-10-binary.tar.gz" in str(e.value)
    assert time.perf_counter() - start < 10


def test_unknown_name_lists_known_ones(tmp_path):
    with pytest.raises(ValueError, match="cifar100.*fashion_mnist.*imagenette"):
        data.load("svhn", data_dir=str(tmp_path))


# ---------------------------------------------------------------- splits and batches


def test_val_carve_is_disjoint_fixed_and_sized():
    x, y = _noise(200)
    ds = data.from_arrays("noise", (x, y), (x[:10], y[:10]), num_classes=200)
    assert (ds.info.num_train, ds.info.num_val) == (180, 20)  # default: 10%, at most 5000
    _, val = _all(ds, "val")
    _, train = _all(ds, "train")
    assert len(val) == 20 and not set(val) & set(train) and len(set(val) | set(train)) == 200
    again = data.from_arrays("noise", (x, y), (x[:10], y[:10]), num_classes=200)
    for seed in (0, 1, 7):  # the training seed has no say in the carve
        np.testing.assert_array_equal(_all(again, "val", seed=seed)[1], val)
    smaller = data.from_arrays("noise", (x, y), (x[:10], y[:10]), num_classes=200, val_size=5)
    assert set(_all(smaller, "val")[1]) < set(val)
    with pytest.raises(ValueError, match="val_size"):
        data.from_arrays("noise", (x, y), (x, y), num_classes=200, val_size=200)


def test_fashion_val_is_the_same_for_every_load(fashion):
    data_dir = str(fashion[0])
    a = data.load("fashion_mnist", data_dir=data_dir, val_size=10, download=False)
    b = data.load("fashion_mnist", data_dir=data_dir, val_size=10, download=False)
    np.testing.assert_array_equal(_all(a, "val", seed=0)[0], _all(b, "val", seed=5)[0])
    assert not _rows(_all(a, "val")[0]) & _rows(_all(a, "train")[0])


def test_order_is_a_function_of_seed_and_epoch():
    x, y = _noise(100)
    ds = data.from_arrays("fashion_mnist", (x, y), (x, y), num_classes=100, val_size=0)

    def epoch(seed, epoch):
        return list(ds.batches("train", 16, seed=seed, epoch=epoch, train=True))

    first, again = epoch(3, 1), epoch(3, 1)
    assert len(first) == 6
    for (xa, ya), (xb, yb) in zip(first, again, strict=True):
        np.testing.assert_array_equal(xa, xb)  # augmentation included
        np.testing.assert_array_equal(ya, yb)
    labels = np.concatenate([y for _, y in first])
    assert not np.array_equal(labels, np.concatenate([y for _, y in epoch(3, 2)]))
    assert not np.array_equal(labels, np.concatenate([y for _, y in epoch(4, 1)]))
    assert len(set(labels)) == 96  # a permutation, minus the dropped remainder


def test_eval_batches_are_unaugmented_and_keep_the_last_partial_batch():
    x, y = _noise(25, shape=(12, 12, 3))
    ds = data.from_arrays("cifar10", (x, y), (x, y), num_classes=25, val_size=0)
    batches = list(ds.batches("test", 10, seed=0, train=False))
    assert [len(b[1]) for b in batches] == [10, 10, 5] and ds.steps_per_epoch("test", 10) == 3
    images, labels = np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
    np.testing.assert_array_equal(labels, np.arange(25))
    spec = datasets.DATASETS["cifar10"]  # cifar10's channel statistics, per channel
    np.testing.assert_allclose(images, (x - np.float32(spec.mean)) / np.float32(spec.std), rtol=1e-5, atol=1e-5)
    assert [len(b[1]) for b in ds.batches("train", 10, seed=0, train=True)] == [10, 10]
    assert ds.steps_per_epoch("train", 10) == 2 and ds.steps_per_epoch("train", 10, limit=9) == 0
    assert [len(b[1]) for b in ds.batches("test", 10, seed=0, train=False, limit=12)] == [10, 2]


def _match_crop(out, src, pad):
    """Whether `out` is a pad-crop of `src` as-is, mirrored, both or neither."""
    padded = np.pad(src, ((pad, pad), (pad, pad), (0, 0)))
    h, w = src.shape[:2]
    crops = [padded[dy : dy + h, dx : dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
    return any(np.array_equal(out, c) for c in crops), any(np.array_equal(out, c[:, ::-1]) for c in crops)


@pytest.mark.parametrize("name, flips", [("fashion_mnist", True), ("mnist", False)])
def test_augmentation_crops_and_flips_per_dataset(name, flips):
    x, y = _noise(64)
    ds = data.from_arrays(name, (x, y), (x, y), num_classes=64, val_size=0)
    spec = datasets.DATASETS[name]
    shifted = mirrored = 0
    for images, labels in ds.batches("train", 32, seed=0, train=True):
        assert images.shape == (32, 12, 12, 1) and images.dtype == np.float32
        raw = np.rint(images * np.float32(spec.std[0]) + np.float32(spec.mean[0])).astype(np.uint8)
        for out, label in zip(raw, labels, strict=True):
            plain, flipped = _match_crop(out, x[label], datasets.SMALL_PAD)
            assert plain or flipped
            shifted += not np.array_equal(out, x[label]) and not np.array_equal(out, x[label][:, ::-1])
            mirrored += flipped and not plain
    assert shifted > 40
    assert (mirrored > 10) if flips else (mirrored == 0)  # digits are not mirror-symmetric


def test_imagenet_family_from_arrays():
    x = np.random.default_rng(0).integers(0, 256, (5, 64, 80, 3), np.uint8)
    ds = data.from_arrays("photos", (x, np.arange(5)), (x, np.arange(5)), num_classes=5, family="imagenet", val_size=1)
    assert ds.info.image_shape == (227, 227, 3)
    evals = [_all(ds, "test", batch_size=2)[0] for _ in range(2)]
    np.testing.assert_array_equal(*evals)  # centre crop, no mirror
    train = [_all(ds, "train", batch_size=2, train=True, seed=s, drop_remainder=False)[0] for s in (0, 1)]
    assert train[0].shape == (4, 227, 227, 3) and not np.array_equal(*train)


def test_prefetch_matches_inline_and_stops_early():
    x, y = _noise(300)
    ds = data.from_arrays("cifar100", (x, y), (x, y), num_classes=300, val_size=0)
    inline = list(ds.batches("train", 8, seed=1, train=True, prefetch=0))
    ahead = list(ds.batches("train", 8, seed=1, train=True, prefetch=3))
    assert len(inline) == len(ahead) == 37
    for (xa, ya), (xb, yb) in zip(inline, ahead, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    it = ds.batches("train", 8, seed=1, train=True)
    next(it)
    it.close()  # joins the producer thread; must not hang


def test_bad_arguments():
    x, y = _noise(10)
    ds = data.from_arrays("noise", (x, y), (x, y), num_classes=10)
    with pytest.raises(ValueError, match="split"):
        ds.batches("validation", 4, seed=0, train=False)
    with pytest.raises(ValueError, match="batch_size"):
        ds.batches("train", 0, seed=0, train=True)
    with pytest.raises(ValueError, match="labels"):
        data.from_arrays("noise", (x, y + 5), (x, y), num_classes=10)


def test_a_data_directory_that_is_a_file_is_one_clear_error(tmp_path):
    (tmp_path / "tfds").write_text("")
    with pytest.raises(InputError, match="is a file, not a folder"):
        data.load("fashion_mnist", data_dir=str(tmp_path / "tfds"), download=False)
