"""Helpers shared by the partitioners."""

from __future__ import annotations

import numpy as np

from ._validation import MAX_DRAWS


def split_by_owner(owner: np.ndarray, num_clients: int) -> list[np.ndarray]:
    """Sorted int64 sample indices per client from ``owner[i]`` = client of sample ``i``.

    ``owner[i] == -1`` marks an unassigned sample; it appears in no partition.
    """
    return [np.flatnonzero(owner == k).astype(np.int64) for k in range(num_clients)]


def smallest_size(owner: np.ndarray, num_clients: int) -> int:
    """The number of samples held by the smallest client."""
    return int(np.bincount(owner[owner >= 0], minlength=num_clients).min())


def min_size_failure(min_size: int, num_clients: int, hint: str) -> ValueError:
    """The error raised when no draw gave every client ``min_size`` samples."""
    return ValueError(
        f"min-partition-size={min_size} was not met by any of {MAX_DRAWS} random draws with "
        f"num-partitions={num_clients}: {hint}"
    )
