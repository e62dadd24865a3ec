"""Local test sets for personalized-model (PM) evaluation, FedLoGe's protocol.

FedLoGe samples each client's local test set from the balanced global test set so that it has the
same class distribution as the client's training set; PM is the mean local test accuracy.

Sizes: the authors' code (``util/dataset.py``, github.com/ZackZikaiXiao/FedLoGe) gives client k
``floor(n_kc / n * n_test)`` test samples of class c, n the training samples of all clients and
n_test the global test set's size (:func:`proportional_test_sizes`; run-config
``local-test-size=0``, the default), so the local test sets together are about as large as the
global one and a client's is as large as its share of the training data. ``local-test-size=N``
gives every client N samples instead (:func:`proportional_allocation`; 100 was this app's default).
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


def proportional_test_sizes(client_class_counts: np.ndarray, num_test: int) -> np.ndarray:
    """Per-client, per-class local test sizes ``t_kc = floor(n_kc / n * n_test)`` (FedLoGe's code).

    ``client_class_counts`` is ``(K, C)`` training counts n_kc, n = their sum over all clients and
    classes, ``num_test`` = n_test. Hand example: counts ((6, 2), (0, 2)), n = 10, n_test = 5 ->
    ((3, 1), (0, 1)).

    One departure: a client whose every t_kc floors to 0 (it holds less than n / n_test samples)
    would get an empty test set, on which accuracy is undefined; it gets one sample of its most
    frequent class (the lowest class index on ties). The authors' CIFAR setting (n_test = 10,000 for
    n of 10,000 to 20,000) never reaches this case.

    Returns
    -------
    np.ndarray
        ``(K, C)`` int64 sizes.
    """
    counts = np.asarray(client_class_counts)
    if counts.ndim != 2 or not np.issubdtype(counts.dtype, np.number) or not np.isfinite(counts).all():
        raise ValueError(f"client_class_counts must be a (K, C) array of finite counts, got shape {counts.shape}")
    if (counts < 0).any() or counts.sum() <= 0:
        raise ValueError("client_class_counts must be >= 0 with a positive sum")
    if isinstance(num_test, bool) or not isinstance(num_test, (int, np.integer)) or num_test < 1:
        raise ValueError(f"num_test={num_test!r} is invalid: must be an integer >= 1")
    counts = counts.astype(np.int64)
    sizes = counts * int(num_test) // int(counts.sum())  # exact floor in integers
    for k in np.flatnonzero((sizes.sum(axis=1) == 0) & (counts.sum(axis=1) > 0)):
        sizes[k, int(np.argmax(counts[k]))] = 1
    return sizes


def sample_local_test(test_labels: np.ndarray, targets: np.ndarray, seed: int) -> np.ndarray:
    """Sorted int64 test indices with ``targets[c]`` samples of every class c.

    Each class's samples are drawn from the global test samples of that class without replacement,
    or with replacement only when the pool has fewer than ``targets[c]`` (duplicates only then).
    """
    test_labels = check_int_labels(test_labels, "test_labels")
    targets = np.asarray(targets)
    if targets.ndim != 1 or not np.issubdtype(targets.dtype, np.integer) or (targets < 0).any():
        raise ValueError(f"targets must be a 1-D array of integer counts >= 0, got {targets!r}")
    if targets.sum() < 1:
        raise ValueError("targets must ask for at least one test sample")
    rng = np.random.default_rng(check_seed(seed))
    chosen = []
    for c, target in enumerate(targets):
        if target == 0:
            continue
        pool = np.flatnonzero(test_labels == c)
        if len(pool) == 0:
            raise ValueError(f"class {c} is in the client's training set but has no sample in test_labels")
        chosen.append(rng.choice(pool, size=int(target), replace=bool(target > len(pool))))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


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
    return sample_local_test(test_labels, proportional_allocation(counts, int(size)), seed)
