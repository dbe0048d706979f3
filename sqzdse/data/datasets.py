"""The named datasets: where each comes from (files, tfds's URLs), its classes, and how its images are
normalised and augmented (Caffe's preprocessing for the ImageNet family). Plain Python: no tfds, no JAX.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sqzdse.errors import InputError

# Caffe's train_val.prototxt: images stored at 256x256, crop_size 227, mirror for
# training, mean_value 104/117/123 in BGR order (what the pretrained weights expect).
CAFFE_RESIZE = 256
CAFFE_CROP = 227
CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)
CAFFE_CENTRE = (CAFFE_RESIZE - CAFFE_CROP) // 2  # the test phase's centre crop starts at 14
# Standard augmentation for 28/32-px images: zero-pad 4 px, crop back at random.
SMALL_PAD = 4
# val_size None: a tenth of the training split, at most this many images
MAX_DEFAULT_VAL = 5000

IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
IMAGENET_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
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


CAFFE_FAMILY = dict(family="imagenet", flip=True, mean=CAFFE_MEAN_BGR, std=(1.0, 1.0, 1.0))
# URLs are tfds's own, so its recorded checksums verify the downloads. Means and
# standard deviations are the usual per-channel training-set statistics.
DATASETS = {
    "mnist": DatasetSpec(
        "mnist", 10, "small", flip=False, mean=_x255(0.1307), std=_x255(0.3081),
        files=IDX_FILES,
        urls=_urls("https://storage.googleapis.com/cvdf-datasets/mnist/", IDX_FILES),
    ),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist", 10, "small", flip=True, mean=_x255(0.2860), std=_x255(0.3530),
        files=IDX_FILES,
        urls=_urls("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", IDX_FILES),
    ),
    "cifar10": DatasetSpec(
        "cifar10", 10, "small", flip=True,
        mean=_x255(0.4914, 0.4822, 0.4465), std=_x255(0.2470, 0.2435, 0.2616),
        files=("cifar-10-binary.tar.gz",),
        urls=("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
    ),
    "cifar100": DatasetSpec(
        "cifar100", 100, "small", flip=True,
        mean=_x255(0.5071, 0.4865, 0.4409), std=_x255(0.2673, 0.2564, 0.2762),
        files=("cifar-100-binary.tar.gz",),
        urls=("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",),
    ),
    # The 320px variant: images are resized to 256x256 anyway, and it is a quarter of
    # the full-size download.
    "imagenette": DatasetSpec(
        "imagenette", 10, **CAFFE_FAMILY, config="320px-v2", test_split="validation",
        files=("imagenette2-320.tgz",),
        urls=("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz",),
    ),
    # ImageNet's test labels are not public: its validation split is the test set.
    "imagenet2012": DatasetSpec(
        "imagenet2012", 1000, **CAFFE_FAMILY, test_split="validation", files=IMAGENET_TARS,
    ),
}  # fmt: skip


def dataset_spec(name: str) -> DatasetSpec:
    """The named dataset's spec; InputError naming the known ones."""
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]
