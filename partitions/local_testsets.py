"""Local test sets for personalized-model (PM) evaluation, FedLoGe's protocol.

FedLoGe samples each client's local test set from the balanced global test set so that it has the
same class distribution as the client's training set; PM is the mean local test accuracy.
"""

from __future__ import annotations

import numpy as np

from ._validation import check_int_labels, check_seed


def proportional_allocation(class_counts: np.ndarray, size: int) -> np.ndarray:
    """Integer per-class targets t_c summing to ``size`` with t_c ~ size * n_c / sum(n).

    Largest-remainder (Hamilton) rounding: t_c = floor(size * p_c), then the leftover units go to
    the classes with the largest fractional parts (ties to the lower class id). Hence
    ``|t_c - size * p_c| < 1`` for every class and classes with n_c = 0 get t_c = 0.
    """
    counts = np.asarray(class_counts)
    exact = size * counts / counts.sum()
    targets = np.floor(exact).astype(np.int64)
    leftover = size - int(targets.sum())
    order = np.argsort(-(exact - targets), kind="stable")
    targets[order[:leftover]] += 1
    return targets


def local_test_indices(
    test_labels: np.ndarray, train_class_counts: np.ndarray, size: int, seed: int
) -> np.ndarray:
    """Indices of a ``size``-sample local test set matching a client's training class distribution.

    With p_c = n_c / sum(n) the client's training class distribution (``train_class_counts``,
    e.g. a row of :func:`partitions.class_presence`), class c receives t_c test samples by
    :func:`proportional_allocation`, drawn from the global test samples of class c without
    replacement, or with replacement only when that class's test pool has fewer than t_c samples
    (so duplicates appear only then). Classes absent from the client's training set are absent
    from its local test set.

    Parameters
    ----------
    test_labels : np.ndarray of shape (M,)
        Integer class ids of the global test set.
    train_class_counts : np.ndarray of shape (C,)
        Non-negative training counts per class of the client, with a positive sum; every test
        label must be ``< C``.
    size : int
        Number of indices to draw, ``>= 1``.
    seed : int
        Seed of ``np.random.default_rng``.

    Returns
    -------
    np.ndarray
        Sorted int64 indices into the test set, length ``size``.
    """
    test_labels = check_int_labels(test_labels, "test_labels")
    counts = np.asarray(train_class_counts)
    if counts.ndim != 1 or not np.issubdtype(counts.dtype, np.number) or not np.isfinite(counts).all():
        raise ValueError(f"train_class_counts must be a 1-D array of finite counts, got shape {counts.shape}")
    if (counts < 0).any() or counts.sum() <= 0:
        raise ValueError("train_class_counts must be >= 0 with a positive sum (the client has training data)")
    if test_labels.size and test_labels.max() >= len(counts):
        raise ValueError(
            f"test_labels contain class {test_labels.max()} but train_class_counts has {len(counts)} classes"
        )
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size={size!r} is invalid: must be an integer >= 1")
    rng = np.random.default_rng(check_seed(seed))
    chosen = []
    for c, target in enumerate(proportional_allocation(counts, int(size))):
        if target == 0:
            continue
        pool = np.flatnonzero(test_labels == c)
        if len(pool) == 0:
            raise ValueError(f"class {c} is in the client's training set but has no sample in test_labels")
        chosen.append(rng.choice(pool, size=target, replace=target > len(pool)))
    return np.sort(np.concatenate(chosen)).astype(np.int64)
