"""What a partition holds: per-client class counts and the samples left out."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._validation import check_int_labels, check_label_matrix


def _check_partitions(partitions: Sequence[np.ndarray], num_samples: int) -> list[np.ndarray]:
    """Each partition as int64 indices in ``[0, num_samples)``."""
    checked = []
    for k, part in enumerate(partitions):
        part = np.asarray(part)
        if part.ndim != 1 or (part.size and not np.issubdtype(part.dtype, np.integer)):
            raise ValueError(
                f"partitions[{k}] must be a 1-D integer index array, got {part.dtype} {part.shape}"
            )
        if part.size and (part.min() < 0 or part.max() >= num_samples):
            raise ValueError(f"partitions[{k}] has indices outside [0, {num_samples})")
        checked.append(part.astype(np.int64, copy=False))
    return checked


def class_presence(labels: np.ndarray, partitions: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """Per-client per-class sample counts, ``counts[k, c]``, int64 of shape (K, C).

    For 1-D integer labels, ``counts[k, c]`` is the number of samples of class c on client k; for
    a 2-D multi-hot ``(N, C)`` matrix it is the number of client-k samples whose label set
    contains c (a multi-label sample counts once for each of its classes).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} is invalid: must be an integer >= 1")
    labels = np.asarray(labels)
    parts = _check_partitions(partitions, len(labels))
    if labels.ndim == 2:
        matrix = check_label_matrix(labels, "labels")
        if matrix.shape[1] != num_classes:
            raise ValueError(f"labels has {matrix.shape[1]} columns but num_classes={num_classes}")
        counts = [matrix[part].sum(axis=0) for part in parts]
    else:
        ids = check_int_labels(labels)
        if ids.size and ids.max() >= num_classes:
            raise ValueError(f"labels contain class {ids.max()} but num_classes={num_classes}")
        counts = [np.bincount(ids[part], minlength=num_classes) for part in parts]
    return np.asarray(counts, dtype=np.int64).reshape(len(parts), num_classes)


def unassigned_indices(partitions: Sequence[np.ndarray], num_samples: int) -> np.ndarray:
    """Sorted int64 indices of ``range(num_samples)`` that belong to no partition."""
    parts = _check_partitions(partitions, num_samples)
    covered = np.zeros(num_samples, dtype=bool)
    for part in parts:
        covered[part] = True
    return np.flatnonzero(~covered).astype(np.int64)
