"""The embedded datasets: ml-digits composites and the lt-digits long tail."""

from __future__ import annotations

import numpy as np

from fedapp.data.digits import load_lt_digits, load_ml_digits, source_split
from fedapp.data.longtail import longtail_class_counts


def test_train_and_test_sources_are_disjoint_and_stratified():
    train, test = source_split()
    assert len(np.intersect1d(train, test)) == 0
    assert len(train) + len(test) == 1797


def test_ml_digits_keeps_singles_and_adds_equal_composites_per_pair():
    bundle = load_ml_digits(composites_per_pair=16)
    labels = bundle.train.labels
    train_sources, _ = source_split()
    counts = labels.sum(axis=1)
    assert set(np.unique(counts)) == {1.0, 2.0}
    assert (counts == 1).sum() == len(train_sources)  # every single digit kept
    pairs = labels[counts == 2]
    assert len(pairs) == 45 * 16
    pair_ids, pair_counts = np.unique(pairs, axis=0, return_counts=True)
    assert len(pair_ids) == 45 and set(pair_counts) == {16}  # equal number for every class pair
    assert bundle.input_shape == (1, 8, 16) and bundle.train[0][0].shape == (1, 8, 16)
    assert bundle.task == "multilabel" and bundle.num_classes == 10


def test_ml_digits_composite_is_two_images_side_by_side():
    bundle = load_ml_digits()
    image, target = bundle.train[len(bundle.train) - 1]
    assert target.sum() == 2
    left, right = image[..., :8], image[..., 8:]
    assert left.abs().sum() > 0 and right.abs().sum() > 0  # both halves hold a digit


def test_lt_digits_follows_the_exponential_profile():
    bundle = load_lt_digits(imbalance_factor=10)
    counts = np.bincount(bundle.train.labels, minlength=10)
    assert np.array_equal(counts, longtail_class_counts(counts[0], 10, 10))
    assert counts[0] / counts[-1] >= 10 * 0.9  # floor rounding at the tail
    test_counts = np.bincount(bundle.test.labels, minlength=10)
    assert test_counts.min() == test_counts.max() > 30  # exactly balanced test set
