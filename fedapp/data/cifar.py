"""CIFAR-10 and CIFAR-100 from the official python-pickle batches, as ml-cifar10 and cifar10/100-lt.

Expected layout under ``data-root`` (the official "python version" archives, extracted as they are)::

    <data-root>/
      cifar-10-batches-py/          from cifar-10-python.tar.gz
        data_batch_1 ... data_batch_5   10,000 training images each
        test_batch                      10,000 test images
        batches.meta                    label_names (10 class names)
      cifar-100-python/             from cifar-100-python.tar.gz
        train                           50,000 training images
        test                            10,000 test images
        meta                            fine_label_names (100 class names)

Each batch is a pickled dict with ``data`` (uint8 ``(N, 3072)``: 1024 red, 1024 green, 1024 blue
values of a 32x32 image, row-major) and ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100).
Python-2 pickles (str keys) and Python-3 re-pickles (bytes keys) are both read, with a restricted
unpickler (:mod:`fedapp.data.safepickle`): a file that names anything but numpy arrays and builtin
containers is refused before that code runs.

Images stay uint8 in memory (150 MB for 50,000 images) and are normalised per item with the
dataset's standard per-channel mean/std (:data:`fedapp.data.files.CIFAR10_MEAN` ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from fedapp.data.base import DatasetBundle, black_pixel
from fedapp.data.files import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    CompositeDataset,
    PathLike,
    UInt8ImageDataset,
    composite_plan,
    corrupt,
    require_file,
    scaled_per_pair,
)
from fedapp.data.longtail import longtail_indices
from fedapp.data.safepickle import UnsafePickleError, load_data_pickle

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
CIFAR10_SOURCE = (
    "the official CIFAR-10 python version, cifar-10-python.tar.gz (Krizhevsky, 2009; CIFAR page of "
    "the University of Toronto), extracted into data-root"
)
CIFAR100_SOURCE = (
    "the official CIFAR-100 python version, cifar-100-python.tar.gz (Krizhevsky, 2009; CIFAR page of "
    "the University of Toronto), extracted into data-root"
)
CIFAR10_LAYOUT = """\
<data-root>/
  cifar-10-batches-py/
    data_batch_1 ... data_batch_5
    test_batch
    batches.meta"""
CIFAR100_LAYOUT = """\
<data-root>/
  cifar-100-python/
    train
    test
    meta"""

TEST_COMPOSITE_SEED = 1  # the ml-cifar10 test composites are the same for every run seed
DEFAULT_SINGLE_FRACTION = 0.5
DEFAULT_COMPOSITES_PER_PAIR = 500


def _unpickle(path: Path, source: str) -> dict[str, Any]:
    try:
        raw = load_data_pickle(path, encoding="latin1")
    except UnsafePickleError as err:
        raise corrupt(path, f"refused: {err}", source) from None
    except Exception as err:  # truncated/garbled pickles raise many types (EOFError, UnpicklingError, ...)
        raise corrupt(path, f"cannot unpickle ({type(err).__name__}: {err})", source) from err
    if not isinstance(raw, dict):
        raise corrupt(path, f"expected a pickled dict, got {type(raw).__name__}", source)
    return {key.decode("latin1") if isinstance(key, bytes) else str(key): value for key, value in raw.items()}


def read_cifar_batch(
    path: Path, label_key: str, num_classes: int, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 ``(N, 3, 32, 32)`` and labels int64 ``(N,)`` of one pickled CIFAR batch file."""
    batch = _unpickle(path, source)
    missing = [key for key in ("data", label_key) if key not in batch]
    if missing:
        raise corrupt(path, f"missing keys {missing} (has {sorted(batch)})", source)
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise corrupt(path, f"'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}", source)
    try:
        labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise corrupt(path, f"'{label_key}' is not a list of integers ({err})", source) from err
    if len(labels) != len(data):
        raise corrupt(path, f"{len(data)} images but {len(labels)} '{label_key}'", source)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise corrupt(path, f"'{label_key}' outside [0, {num_classes - 1}]", source)
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar_names(path: Path, names_key: str, num_classes: int, source: str) -> tuple[str, ...]:
    """The class names stored under ``names_key`` in a CIFAR meta file."""
    meta = _unpickle(path, source)
    if names_key not in meta:
        raise corrupt(path, f"missing key '{names_key}' (has {sorted(meta)})", source)
    names = tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in meta[names_key])
    if len(names) != num_classes:
        raise corrupt(path, f"'{names_key}' has {len(names)} names, expected {num_classes}", source)
    return names


def read_cifar10(data_root: PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """``(train_images, train_labels, test_images, test_labels, class_names)`` of CIFAR-10.

    Images uint8 ``(N, 3, 32, 32)`` (50,000 train, 10,000 test), labels int64 ``(N,)``.
    """
    folder = Path(data_root) / CIFAR10_DIR
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    paths = {name: require_file(folder / name, f"CIFAR-10 {name}", CIFAR10_SOURCE, CIFAR10_LAYOUT) for name in files}
    train = [read_cifar_batch(paths[f"data_batch_{i}"], "labels", 10, CIFAR10_SOURCE) for i in range(1, 6)]
    test_images, test_labels = read_cifar_batch(paths["test_batch"], "labels", 10, CIFAR10_SOURCE)
    names = read_cifar_names(paths["batches.meta"], "label_names", 10, CIFAR10_SOURCE)
    train_images = np.concatenate([images for images, _ in train])
    train_labels = np.concatenate([labels for _, labels in train])
    return train_images, train_labels, test_images, test_labels, names


def read_cifar100(data_root: PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """``(train_images, train_labels, test_images, test_labels, class_names)`` of CIFAR-100 (fine labels)."""
    folder = Path(data_root) / CIFAR100_DIR
    paths = {
        name: require_file(folder / name, f"CIFAR-100 {name}", CIFAR100_SOURCE, CIFAR100_LAYOUT)
        for name in ("train", "test", "meta")
    }
    train_images, train_labels = read_cifar_batch(paths["train"], "fine_labels", 100, CIFAR100_SOURCE)
    test_images, test_labels = read_cifar_batch(paths["test"], "fine_labels", 100, CIFAR100_SOURCE)
    names = read_cifar_names(paths["meta"], "fine_label_names", 100, CIFAR100_SOURCE)
    return train_images, train_labels, test_images, test_labels, names


def load_ml_cifar10(
    data_root: PathLike,
    single_fraction: float = DEFAULT_SINGLE_FRACTION,
    composites_per_pair: int = DEFAULT_COMPOSITES_PER_PAIR,
    seed: int = 0,
) -> DatasetBundle:
    """ml-cifar10: multi-label composites of CIFAR-10 (FedNCAlign-ML, following Li et al., 2023a).

    Train: ``single_fraction`` of the 50,000 training images kept as one-label samples (each on a
    random half of a blank 32x64 canvas) plus ``composites_per_pair`` two-image composites for each
    of the 45 class pairs (two images of different classes side by side, label = both classes);
    see :func:`fedapp.data.files.composite_plan`. The paper gives no numbers: the defaults (0.5, 500)
    give 25,000 singles + 22,500 composites, about the size of CIFAR-10, roughly half one-label.
    Test: built the same way from the 10,000 test images, with the same ``single_fraction`` and
    ``composites_per_pair`` scaled by 10,000/50,000 (100 by default: 5,000 + 4,500 samples), with a
    fixed seed so every run seed is evaluated on the same test set; ``seed`` sets the train draw.

    Returns a multi-label :class:`DatasetBundle` (10 classes, ``input_shape`` ``(3, 32, 64)``) whose
    splits are :class:`CompositeDataset` (uint8 sources, CIFAR-10 mean/std per item).
    """
    if composites_per_pair < 0:
        raise ValueError(f"composites_per_pair must be >= 0, got {composites_per_pair}")
    train_images, train_labels, test_images, test_labels, names = read_cifar10(data_root)
    test_per_pair = scaled_per_pair(composites_per_pair, len(test_labels), len(train_labels))
    train_plan = composite_plan(train_labels, 10, single_fraction, composites_per_pair, seed)
    test_plan = composite_plan(test_labels, 10, single_fraction, test_per_pair, TEST_COMPOSITE_SEED)
    return DatasetBundle(
        name="ml-cifar10", task="multilabel", num_classes=10, class_names=names, input_shape=(3, 32, 64),
        train=CompositeDataset(train_images, *train_plan, CIFAR10_MEAN, CIFAR10_STD),
        test=CompositeDataset(test_images, *test_plan, CIFAR10_MEAN, CIFAR10_STD),
    )


def load_cifar_lt(
    data_root: PathLike,
    num_classes: Literal[10, 100] = 10,
    imbalance_factor: float = 100.0,
    seed: int = 0,
) -> DatasetBundle:
    """cifar10-lt / cifar100-lt: long-tailed training set, balanced official test set (Cao et al., 2019).

    The training set keeps ``n_c = floor(n_max * IF^(-c/(C-1)))`` images of class ``c`` (class 0 the
    head, ``n_max`` = 5,000 for CIFAR-10 and 500 for CIFAR-100, i.e. the full class), drawn at random
    with ``seed`` (:func:`fedapp.data.longtail.longtail_indices`). IF=100 leaves 12,406 (CIFAR-10)
    and 10,847 (CIFAR-100) training images. The test set is the full official one (1,000 / 100 per
    class). Returns a single-label :class:`DatasetBundle` (``input_shape`` ``(3, 32, 32)``) whose
    splits are :class:`UInt8ImageDataset` normalised with the CIFAR-10 or CIFAR-100 mean/std.
    """
    if num_classes == 10:
        train_images, train_labels, test_images, test_labels, names = read_cifar10(data_root)
        mean, std = CIFAR10_MEAN, CIFAR10_STD
    elif num_classes == 100:
        train_images, train_labels, test_images, test_labels, names = read_cifar100(data_root)
        mean, std = CIFAR100_MEAN, CIFAR100_STD
    else:
        raise ValueError(f"num_classes must be 10 or 100 (CIFAR-10 / CIFAR-100), got {num_classes}")
    keep = longtail_indices(train_labels, num_classes, imbalance_factor, seed)
    return DatasetBundle(
        name=f"cifar{num_classes}-lt", task="singlelabel", num_classes=num_classes, class_names=names,
        input_shape=(3, 32, 32),
        train=UInt8ImageDataset(train_images[keep], train_labels[keep], mean, std),
        test=UInt8ImageDataset(test_images, test_labels, mean, std),
        pad_value=black_pixel(mean, std),
    )
