"""IID partition: a seeded shuffle split into near-equal parts."""

from __future__ import annotations

import numpy as np

from ._validation import check_min_size, check_num_partitions, check_seed


def iid_partition(num_samples: int, num_clients: int, seed: int, min_size: int = 1) -> list[np.ndarray]:
    """Split ``range(num_samples)`` uniformly at random into ``num_clients`` parts.

    The indices are shuffled with ``np.random.default_rng(seed)`` and cut into consecutive parts
    whose sizes differ by at most one (the first ``num_samples % num_clients`` parts get one more).
    Every sample is assigned to exactly one client.

    Parameters
    ----------
    num_samples : int
        Size of the dataset, ``N >= 1``.
    num_clients : int
        Number of partitions ``K`` (run-config ``num-partitions``), ``1 <= K <= N``.
    seed : int
        Seed of the shuffle.
    min_size : int, default=1
        Smallest allowed partition (run-config ``min-partition-size``); requires
        ``min_size * K <= N``, which the even split then always meets.

    Returns
    -------
    list of np.ndarray
        ``K`` sorted int64 index arrays.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples={num_samples!r} is invalid: must be an integer >= 1")
    num_clients = check_num_partitions(num_clients, int(num_samples))
    check_min_size(min_size, num_clients, int(num_samples))
    rng = np.random.default_rng(check_seed(seed))
    shuffled = rng.permutation(int(num_samples)).astype(np.int64)
    return [np.sort(part) for part in np.array_split(shuffled, num_clients)]
