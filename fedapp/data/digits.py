"""The embedded datasets, built from scikit-learn's bundled digits (1,797 real 8x8 images).

- ``ml-digits``: multi-label composites (see :mod:`fedapp.data.composites`), 10 labels, inputs 1x8x16.
- ``lt-digits``: long-tailed training set (exponential profile, see :mod:`fedapp.data.longtail`),
  balanced test set, inputs 1x8x8.

The source digits are split once, stratified, into train and test sources with a fixed data seed,
so no source image is in both splits and every run (whatever its ``seed``) sees the same test set.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from fedapp.data.base import ArrayDataset, DatasetBundle
from fedapp.data.composites import build_composites
from fedapp.data.longtail import longtail_indices

DATA_SEED = 0  # fixes the train/test source split: the test set is the same for every run seed
TEST_FRACTION = 0.2
CLASS_NAMES = tuple(str(d) for d in range(10))


def source_split() -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``load_digits()`` of the train and test source digits (disjoint, stratified)."""
    target = load_digits().target
    return train_test_split(
        np.arange(len(target)), test_size=TEST_FRACTION, stratify=target, random_state=DATA_SEED
    )


def _digit_sources() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]  # (N, 1, 8, 8) in [0, 1]
    labels = digits.target.astype(np.int64)
    train, test = source_split()
    return images[train], images[test], labels[train], labels[test]


def load_ml_digits(composites_per_pair: int = 16) -> DatasetBundle:
    """ml-digits: all single digits plus ``composites_per_pair`` composites per class pair.

    The test split uses a quarter as many composites per pair (matching its share of sources).
    """
    train_images, test_images, train_labels, test_labels = _digit_sources()
    test_per_pair = max(1, composites_per_pair * len(test_labels) // len(train_labels))
    train = build_composites(train_images, train_labels, 10, 1.0, composites_per_pair, DATA_SEED)
    test = build_composites(test_images, test_labels, 10, 1.0, test_per_pair, DATA_SEED + 1)
    return DatasetBundle(
        name="ml-digits", task="multilabel", num_classes=10, class_names=CLASS_NAMES,
        input_shape=(1, 8, 16), train=ArrayDataset(*train), test=ArrayDataset(*test),
    )


def load_lt_digits(imbalance_factor: float = 10.0) -> DatasetBundle:
    """lt-digits: the train sources subsampled to an exponential long tail; balanced test set
    (the held-out digits, every class cut to the same count)."""
    train_images, test_images, train_labels, test_labels = _digit_sources()
    keep = longtail_indices(train_labels, 10, imbalance_factor, DATA_SEED)
    # Exactly balanced test set: every class cut to the smallest class's count.
    balanced = longtail_indices(test_labels, 10, 1.0, DATA_SEED)
    test_images, test_labels = test_images[balanced], test_labels[balanced]
    return DatasetBundle(
        name="lt-digits", task="singlelabel", num_classes=10, class_names=CLASS_NAMES,
        input_shape=(1, 8, 8),
        train=ArrayDataset(train_images[keep], train_labels[keep]),
        test=ArrayDataset(test_images, test_labels),
    )
