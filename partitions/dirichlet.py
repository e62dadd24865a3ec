"""Label-skewed partitions of single-label data by per-class Dirichlet proportions.

Both schemes draw, for each class c, client shares q_c ~ Dir(alpha * 1_K) over the K clients; small
alpha concentrates each class on few clients, large alpha tends to IID. They differ in how the
n_c samples of class c then follow q_c:

- :func:`dirichlet_sample_partition` (run-config ``dirichlet-mode=per-sample``, the default):
  every sample of class c picks its client independently, ``P(client k) = q_{c,k}``, so client k's
  count of class c is Binomial(n_c, q_{c,k}). This is FedLoGe's partition: the authors' code
  (``non_iid_dirichlet_sampling`` in ``util/sampling.py``, github.com/ZackZikaiXiao/FedLoGe, with
  every class offered to every client, ``non_iid_prob_class`` = 1) draws
  ``np.random.choice(clients, size=n_c, p=q_c)``.
- :func:`dirichlet_partition` (``dirichlet-mode=cut``): the n_c shuffled samples are cut at
  ``floor(n_c * cumsum(q_c))``, so client k gets q_{c,k} * n_c of them up to rounding (the split of
  Hsu et al., 2019, as commonly implemented). This app's only scheme before it followed FedLoGe's code.

Neither looks at how many samples a class has, so both apply unchanged to long-tailed labels (built
by ``fedapp.data.longtail``): a head class is spread over many clients in large numbers, a tail
class over few in small numbers. For a tail class the two differ most: cutting gives each client
its share rounded, per-sample draws add binomial noise around it.
"""

from __future__ import annotations

from typing import Callable

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

OwnerDraw = Callable[[np.ndarray, int, float, np.random.Generator], np.ndarray]


def _draw_owners_cut(labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """One draw of the client of every sample: each class shuffled and cut at its shares."""
    owner = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet(np.full(num_clients, alpha))
        # Cut points floor(n_c * cumsum(q_c)): client k gets about q_{c,k} * n_c samples of class c.
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
        for k, part in enumerate(np.split(members, cuts)):
            owner[part] = k
    return owner


def _draw_owners_per_sample(
    labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator
) -> np.ndarray:
    """One draw of the client of every sample: each sample of class c picks client k w.p. q_{c,k}."""
    owner = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        shares = rng.dirichlet(np.full(num_clients, alpha))
        owner[members] = rng.choice(num_clients, size=len(members), p=shares / shares.sum())
    return owner


def _partition(
    draw: OwnerDraw, labels: np.ndarray, num_clients: int, alpha: float, seed: int, min_size: int
) -> list[np.ndarray]:
    """Validate, then draw owners until every client holds ``min_size`` samples (at most MAX_DRAWS)."""
    labels = check_int_labels(labels)
    num_clients = check_num_partitions(num_clients, len(labels))
    alpha = check_alpha(alpha)
    min_size = check_min_size(min_size, num_clients, len(labels))
    rng = np.random.default_rng(check_seed(seed))
    for _ in range(MAX_DRAWS):
        owner = draw(labels, num_clients, alpha, rng)
        if smallest_size(owner, num_clients) >= min_size:
            return split_by_owner(owner, num_clients)
    raise min_size_failure(
        min_size,
        num_clients,
        f"alpha={alpha} on {len(labels)} samples; raise alpha, lower min-partition-size or use fewer "
        "partitions",
    )


def dirichlet_sample_partition(
    labels: np.ndarray, num_clients: int, alpha: float, seed: int, min_size: int = 1
) -> list[np.ndarray]:
    """Split single-label data over ``num_clients`` clients, every sample drawn from its class's shares.

    Definition (FedLoGe's ``non_iid_dirichlet_sampling``): for every class c present in ``labels``,
    in increasing order of c, draw q_c ~ Dir(alpha * 1_K), then assign each sample i of class c to
    client k with probability q_{c,k}, independently of the other samples. So the count of class c
    on client k is Binomial(n_c, q_{c,k}) given q_c, with expectation n_c / K over the Dirichlet
    draw. Every sample goes to exactly one client. If some client ends up with fewer than
    ``min_size`` samples, the whole partition is redrawn from the same generator (at most
    ``MAX_DRAWS`` = 100 draws, then ``ValueError``); the authors' code has no such floor, the app
    needs one (a client must have data to train on).

    Parameters
    ----------
    labels : np.ndarray of shape (N,)
        Integer class ids ``>= 0``.
    num_clients : int
        Number of partitions ``K``, ``1 <= K <= N``.
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
    return _partition(_draw_owners_per_sample, labels, num_clients, alpha, seed, min_size)


def dirichlet_partition(
    labels: np.ndarray, num_clients: int, alpha: float, seed: int, min_size: int = 1
) -> list[np.ndarray]:
    """Split single-label data over ``num_clients`` clients, each class cut at its Dirichlet shares.

    Definition: for every class c present in ``labels``, draw q_c ~ Dir(alpha * 1_K), shuffle the
    n_c samples of class c and cut them at ``floor(n_c * cumsum(q_c))``, so client k receives
    ``q_{c,k} * n_c`` of them up to rounding (Hsu et al., 2019). Every sample goes to exactly one
    client. If some client ends up with fewer than ``min_size`` samples, the whole partition is
    redrawn from the same generator (at most ``MAX_DRAWS`` = 100 draws, then ``ValueError``).
    Run-config ``dirichlet-mode=cut``; FedLoGe's code draws every sample instead
    (:func:`dirichlet_sample_partition`, the default). Parameters and return value are those of
    :func:`dirichlet_sample_partition`.
    """
    return _partition(_draw_owners_cut, labels, num_clients, alpha, seed, min_size)
