"""FedNCAlign-ML's partition of multi-label data: Dirichlet(alpha) skew plus a class-presence ratio.

The paper fixes the two knobs (alpha, and rho = the fraction of all classes present on each
client, classes outside a client's allowed set being absent there) and that ChestX-ray14's
"No Finding" samples are spread evenly over the clients; the mechanism below is our reading of it,
documented in :func:`multilabel_partition`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._common import min_size_failure, smallest_size, split_by_owner
from ._validation import (
    MAX_DRAWS,
    check_alpha,
    check_class_presence_ratio,
    check_label_matrix,
    check_min_size,
    check_num_partitions,
    check_seed,
)


@dataclass(frozen=True)
class MultilabelPartition:
    """The result of :func:`multilabel_partition`.

    Attributes
    ----------
    partitions : list of np.ndarray
        ``K`` sorted int64 sample-index arrays, pairwise disjoint.
    allowed_classes : np.ndarray of shape (K, C), bool
        ``allowed_classes[k, c]`` is True when class c is in client k's allowed set A_k.
    unassigned : np.ndarray
        Sorted int64 indices of the samples eligible on no client (dropped).
    """

    partitions: list[np.ndarray]
    allowed_classes: np.ndarray
    unassigned: np.ndarray

    @property
    def num_unassigned(self) -> int:
        """How many samples were dropped because no client allows all of their labels."""
        return int(len(self.unassigned))


def allowed_class_count(num_classes: int, class_presence_ratio: float) -> int:
    """m = max(1, round(rho * C)), the size of every client's allowed class set.

    ``round`` is half-up (``floor(rho * C + 0.5)``), not Python's half-to-even, so e.g. rho = 0.5
    with C = 7 gives 4 classes.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} is invalid: must be an integer >= 1")
    rho = check_class_presence_ratio(class_presence_ratio)
    return max(1, min(int(num_classes), math.floor(rho * num_classes + 0.5)))


def draw_allowed_classes(
    num_classes: int, num_clients: int, classes_per_client: int, rng: np.random.Generator
) -> np.ndarray:
    """Random allowed class sets, ``(K, C)`` bool, each row with ``classes_per_client`` True.

    Each client's set is drawn uniformly among the subsets of size m, then repaired so that every
    class is allowed on at least one client: for each uncovered class (in random order), a random
    (client, class) pair whose class is also allowed elsewhere is swapped for the uncovered class.
    A swap never uncovers a class, so the repair ends after at most C swaps; it is always possible
    when ``m * K >= C`` (some class is then allowed twice while one is allowed nowhere).
    """
    if classes_per_client * num_clients < num_classes:
        raise ValueError(
            f"{num_clients} clients x {classes_per_client} allowed classes cannot cover {num_classes} classes"
        )
    allowed = np.zeros((num_clients, num_classes), dtype=bool)
    for k in range(num_clients):
        allowed[k, rng.choice(num_classes, size=classes_per_client, replace=False)] = True
    for c in rng.permutation(np.flatnonzero(~allowed.any(axis=0))):
        shared = allowed & (allowed.sum(axis=0) >= 2)[None, :]
        candidates = np.argwhere(shared)
        k, d = candidates[rng.integers(len(candidates))]
        allowed[k, d] = False
        allowed[k, c] = True
    return allowed


def _class_shares(allowed: np.ndarray, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """q, ``(C, K)``: row c ~ Dir(alpha) over the clients that allow c, zero elsewhere."""
    num_clients, num_classes = allowed.shape
    shares = np.zeros((num_classes, num_clients))
    for c in range(num_classes):
        holders = np.flatnonzero(allowed[:, c])
        shares[c, holders] = rng.dirichlet(np.full(len(holders), alpha)) if len(holders) > 1 else 1.0
    return shares


def _draw_owners(
    labels: np.ndarray,
    allowed: np.ndarray,
    alpha: float,
    spread_negatives: bool,
    rng: np.random.Generator,
) -> np.ndarray:
    """One draw of the client of every sample; -1 for samples eligible on no client."""
    num_clients = allowed.shape[0]
    shares = _class_shares(allowed, alpha, rng)
    counts = labels.sum(axis=1)
    positive = counts > 0
    owner = np.full(len(labels), -1, dtype=np.int64)

    as_float = labels[positive].astype(np.float64)
    # Eligible on k iff no label lies outside A_k, i.e. L is a subset of A_k.
    eligible = (as_float @ (~allowed).T.astype(np.float64)) == 0
    weights = np.where(eligible, (as_float @ shares) / counts[positive, None], 0.0)
    # Dir(alpha) draws with tiny alpha can underflow to exactly 0 on every eligible client:
    # those samples are then placed uniformly among their eligible clients.
    underflow = eligible.any(axis=1) & (weights.sum(axis=1) == 0)
    weights[underflow] = eligible[underflow]
    # Gumbel-max trick: argmax(log w + G) is a draw from Categorical(w / sum w), one per row.
    with np.errstate(divide="ignore"):
        choice = np.argmax(np.log(weights) + rng.gumbel(size=weights.shape), axis=1)
    positive_idx = np.flatnonzero(positive)
    placed = eligible.any(axis=1)
    owner[positive_idx[placed]] = choice[placed]

    negatives = np.flatnonzero(~positive)
    if spread_negatives:
        # Round-robin over a random permutation: per-client counts differ by at most one.
        client_order = rng.permutation(num_clients)
        owner[rng.permutation(negatives)] = client_order[np.arange(len(negatives)) % num_clients]
    else:
        owner[negatives] = rng.integers(num_clients, size=len(negatives))
    return owner


def multilabel_partition(
    label_matrix: np.ndarray,
    num_clients: int,
    alpha: float,
    class_presence_ratio: float,
    seed: int,
    min_size: int = 1,
    spread_negatives: bool = False,
) -> MultilabelPartition:
    """Split multi-label data with Dirichlet(alpha) skew and class-presence ratio rho.

    Definition (K clients, C classes, label set L_i = {c : y_ic = 1} of sample i):

    1. Allowed sets. Every client k gets an allowed set A_k of m = max(1, round(rho * C)) classes
       (``round`` half-up), drawn uniformly at random and repaired so that every class is
       allowed on at least one client (see :func:`draw_allowed_classes`). Requires m * K >= C.
    2. Class shares. For each class c, q_c ~ Dir(alpha * 1) over the clients whose A_k contains c,
       and q_{c,k} = 0 on the others.
    3. Positive samples (L_i non-empty). Sample i is eligible on client k iff L_i ⊆ A_k, so a
       class outside A_k never appears on client k. Among its eligible clients it goes to client k
       with probability proportional to w_{ik} = mean_{c in L_i} q_{c,k}, independently of other
       samples. (If every eligible w_{ik} underflows to 0, which tiny alpha can cause, the draw is
       uniform over the eligible clients.) A sample eligible on no client is dropped and listed in
       ``unassigned``.
    4. Negative samples (L_i empty, e.g. ChestX-ray14 "No Finding"). With
       ``spread_negatives=True`` they are dealt round-robin over a random permutation of them and a
       random client order, so per-client counts differ by at most one (the paper's setting). With
       ``False`` each goes to a client drawn uniformly at random (IID, multinomial counts): an empty
       label set carries no class share to weight clients by.
    5. Minimum size. If a client holds fewer than ``min_size`` samples, steps 1-4 are redrawn from
       the same generator, at most ``MAX_DRAWS`` = 100 times, then ``ValueError``.

    Consequences: client k holds at most m distinct classes; with rho = 1 and large alpha every
    q_c tends to uniform and the partition tends to IID; with one-hot rows (single-label data)
    and rho = 1 step 3 is a per-sample version of the Hsu et al. (2019) Dirichlet split.

    Parameters
    ----------
    label_matrix : np.ndarray of shape (N, C)
        Multi-hot labels (bool, int or float with values 0 and 1).
    num_clients : int
        Number of partitions ``K`` (run-config ``num-partitions``), ``1 <= K <= N``.
    alpha : float
        Dirichlet concentration (run-config ``alpha``), ``> 0``.
    class_presence_ratio : float
        rho in (0, 1] (run-config ``class-presence-ratio``).
    seed : int
        Seed of ``np.random.default_rng``.
    min_size : int, default=1
        Smallest allowed partition (run-config ``min-partition-size``).
    spread_negatives : bool, default=False
        Deal all-zero-label samples evenly (True) or uniformly at random (False).

    Returns
    -------
    MultilabelPartition
        ``partitions`` (K sorted int64 arrays), ``allowed_classes`` (K, C) and ``unassigned``.
    """
    labels = check_label_matrix(label_matrix)
    num_samples, num_classes = labels.shape
    num_clients = check_num_partitions(num_clients, num_samples)
    alpha = check_alpha(alpha)
    per_client = allowed_class_count(num_classes, class_presence_ratio)
    if per_client * num_clients < num_classes:
        raise ValueError(
            f"class-presence-ratio={class_presence_ratio} gives {per_client} of {num_classes} classes per "
            f"client, and num-partitions={num_clients} clients x {per_client} < {num_classes}, so some "
            f"class would be on no client: allowed class-presence-ratio >= "
            f"{math.ceil(num_classes / num_clients) / num_classes:.3g} or num-partitions >= "
            f"{math.ceil(num_classes / per_client)}"
        )
    min_size = check_min_size(min_size, num_clients, num_samples)
    if not isinstance(spread_negatives, (bool, np.bool_)):
        raise ValueError(f"spread_negatives={spread_negatives!r} is invalid: must be True or False")
    rng = np.random.default_rng(check_seed(seed))
    for _ in range(MAX_DRAWS):
        allowed = draw_allowed_classes(num_classes, num_clients, per_client, rng)
        owner = _draw_owners(labels, allowed, alpha, spread_negatives, rng)
        if smallest_size(owner, num_clients) >= min_size:
            return MultilabelPartition(
                partitions=split_by_owner(owner, num_clients),
                allowed_classes=allowed,
                unassigned=np.flatnonzero(owner < 0).astype(np.int64),
            )
    raise min_size_failure(
        min_size,
        num_clients,
        f"alpha={alpha}, class-presence-ratio={class_presence_ratio} on {num_samples} samples; raise "
        "alpha or class-presence-ratio, lower min-partition-size or use fewer partitions",
    )
