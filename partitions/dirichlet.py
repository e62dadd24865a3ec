"""Label-skewed partition of single-label data by per-class Dirichlet proportions.

For each class c, draw q_c ~ Dir(alpha * 1_K) over the K clients and give client k the share
q_{c,k} of class c's (shuffled) samples (Hsu et al., 2019). Small alpha concentrates each class
on few clients; large alpha tends to IID.

The scheme does not look at how many samples each class has, so it applies unchanged to
long-tailed training sets: FedLoGe's "long-tail aware Dirichlet" partition is this function called
on the long-tailed labels (built by ``fedapp.data.longtail``). A head class is then spread
over many clients in large numbers and a tail class over few clients in small numbers, which is the
global long tail plus local label skew that FedLoGe evaluates. No separate function is needed.
"""

from __future__ import annotations

import numpy as np

from ._common import min_size_failure, smallest_size, split_by_owner
from ._validation import (
    MAX_DRAWS,
    check_alpha,
    check_int_labels,
    check_min_size,
    check_num_partitions,
    check_seed,
)


def _draw_owners(labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """One draw of the client of every sample (Hsu et al. 2019 split)."""
    owner = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet(np.full(num_clients, alpha))
        # Cut points floor(n_c * cumsum(q_c)): client k gets about q_{c,k} * n_c samples of class c.
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
        for k, part in enumerate(np.split(members, cuts)):
            owner[part] = k
    return owner


def dirichlet_partition(
    labels: np.ndarray, num_clients: int, alpha: float, seed: int, min_size: int = 1
) -> list[np.ndarray]:
    """Split single-label data over ``num_clients`` clients with Dirichlet(alpha) label skew.

    Definition: for every class c present in ``labels``, draw q_c ~ Dir(alpha * 1_K), shuffle the
    n_c samples of class c and cut them at ``floor(n_c * cumsum(q_c))``, so client k receives
    about ``q_{c,k} * n_c`` of them. Every sample goes to exactly one client. If some client ends
    up with fewer than ``min_size`` samples, the whole partition is redrawn from the same generator
    (at most ``MAX_DRAWS`` = 100 draws, then ``ValueError``). Applies unchanged to long-tailed
    labels (FedLoGe's long-tail aware Dirichlet partition; see the module docstring).

    Parameters
    ----------
    labels : np.ndarray of shape (N,)
        Integer class ids ``>= 0``.
    num_clients : int
        Number of partitions ``K`` (run-config ``num-partitions``), ``1 <= K <= N``.
    alpha : float
        Dirichlet concentration (run-config ``alpha``), ``> 0``.
    seed : int
        Seed of ``np.random.default_rng``.
    min_size : int, default=1
        Smallest allowed partition (run-config ``min-partition-size``).

    Returns
    -------
    list of np.ndarray
        ``K`` sorted int64 index arrays covering ``range(N)`` disjointly.
    """
    labels = check_int_labels(labels)
    num_clients = check_num_partitions(num_clients, len(labels))
    alpha = check_alpha(alpha)
    min_size = check_min_size(min_size, num_clients, len(labels))
    rng = np.random.default_rng(check_seed(seed))
    for _ in range(MAX_DRAWS):
        owner = _draw_owners(labels, num_clients, alpha, rng)
        if smallest_size(owner, num_clients) >= min_size:
            return split_by_owner(owner, num_clients)
    raise min_size_failure(
        min_size,
        num_clients,
        f"alpha={alpha} on {len(labels)} samples; raise alpha, lower min-partition-size or use fewer "
        "partitions",
    )
