"""Long-tailed subsampling with the standard exponential profile (Cao et al., 2019).

    n_c = floor(n_max * IF^(-c / (C - 1))),   c = 0 .. C-1,   IF = n_max / n_min

Class 0 is the head and class C-1 the tail; CIFAR-10/100-LT and lt-digits are built this way.
"""

from __future__ import annotations

import numpy as np


def longtail_class_counts(max_count: int, num_classes: int, imbalance_factor: float) -> np.ndarray:
    """Per-class sample counts of the exponential profile; ``counts[0] == max_count``."""
    if imbalance_factor < 1:
        raise ValueError(f"imbalance-factor must be >= 1, got {imbalance_factor}")
    if num_classes < 2:
        raise ValueError(f"a long-tailed profile needs at least 2 classes, got {num_classes}")
    exponents = np.arange(num_classes) / (num_classes - 1)
    counts = np.floor(max_count * imbalance_factor ** (-exponents)).astype(np.int64)
    if counts.min() < 1:
        raise ValueError(
            f"imbalance-factor={imbalance_factor} leaves a class with no sample "
            f"(max per class {max_count}); allowed: imbalance-factor <= {max_count}"
        )
    return counts


def longtail_indices(
    labels: np.ndarray, num_classes: int, imbalance_factor: float, seed: int, max_count: int | None = None
) -> np.ndarray:
    """Sorted indices of a long-tailed subset of ``labels`` (int class ids).

    ``max_count`` defaults to the size of the smallest class, so every class can supply its count.
    """
    labels = np.asarray(labels, dtype=np.int64)
    available = np.bincount(labels, minlength=num_classes)
    if max_count is None:
        max_count = int(available.min())
    counts = longtail_class_counts(max_count, num_classes, imbalance_factor)
    short = [c for c in range(num_classes) if available[c] < counts[c]]
    if short:
        raise ValueError(f"classes {short} have fewer samples than the long-tailed profile asks for")
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == c), size=counts[c], replace=False) for c in range(num_classes)]
    return np.sort(np.concatenate(chosen))
