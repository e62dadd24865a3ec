"""One entry point from the run config to a partition: ``partition_dataset``."""

from __future__ import annotations

import logging

import numpy as np

from ._validation import check_class_presence_ratio
from .dirichlet import dirichlet_partition, dirichlet_sample_partition
from .iid import iid_partition
from .multilabel import multilabel_partition

logger = logging.getLogger(__name__)

#: Partitioning schemes understood by :func:`partition_dataset`.
SCHEMES = ("dirichlet", "iid")
#: How single-label Dirichlet partitions assign a class's samples (run-config ``dirichlet-mode``).
DIRICHLET_MODES = ("per-sample", "cut")


def partition_dataset(
    labels: np.ndarray,
    num_clients: int,
    scheme: str,
    alpha: float,
    class_presence_ratio: float,
    seed: int,
    min_size: int = 1,
    spread_negatives: bool = False,
    dirichlet_mode: str = "per-sample",
) -> list[np.ndarray]:
    """Split a dataset over ``num_clients`` clients by ``scheme``; K sorted int64 index arrays.

    ``scheme`` is the run-config key ``partition``; the other arguments are ``alpha``,
    ``class-presence-ratio``, ``seed``, ``min-partition-size`` and ``dirichlet-mode``.

    - ``"iid"``: :func:`iid_partition` over ``len(labels)`` samples. IID means no label skew, so
      ``alpha`` and ``class_presence_ratio`` do not apply and are not read.
    - ``"dirichlet"`` with 1-D integer labels (every single-label dataset here is long-tailed):
      ``dirichlet_mode="per-sample"`` (default) :func:`dirichlet_sample_partition`, FedLoGe's
      partition, each sample drawn to a client from its class's Dirichlet shares; ``"cut"``
      :func:`dirichlet_partition`, each class cut at its shares. The class-presence ratio is only
      defined for multi-label data, so it must be 1 here; anything else raises rather than being
      silently ignored.
    - ``"dirichlet"`` with a 2-D multi-hot matrix: :func:`multilabel_partition` with
      ``spread_negatives`` passed through. Samples eligible on no client are dropped and their
      count is logged as a warning; call :func:`multilabel_partition` directly to get them.
    """
    if scheme not in SCHEMES:
        allowed = ", ".join(map(repr, SCHEMES))
        raise ValueError(f"partition={scheme!r} is not a known partitioning scheme; allowed: {allowed}")
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2):
        raise ValueError(
            f"labels must be 1-D class ids or a 2-D multi-hot matrix, got shape {labels.shape}"
        )
    if scheme == "iid":
        return iid_partition(len(labels), num_clients, seed, min_size)
    if labels.ndim == 1:
        if check_class_presence_ratio(class_presence_ratio) != 1.0:
            raise ValueError(
                f"class-presence-ratio={class_presence_ratio} applies only to multi-label (2-D) labels; "
                "allowed for single-label data: 1.0"
            )
        if dirichlet_mode not in DIRICHLET_MODES:
            allowed = ", ".join(DIRICHLET_MODES)
            raise ValueError(f"dirichlet-mode={dirichlet_mode!r} is not allowed; allowed: {allowed}")
        scheme_fn = dirichlet_sample_partition if dirichlet_mode == "per-sample" else dirichlet_partition
        return scheme_fn(labels, num_clients, alpha, seed, min_size)
    result = multilabel_partition(
        labels, num_clients, alpha, class_presence_ratio, seed, min_size, spread_negatives
    )
    if result.num_unassigned:
        logger.warning(
            "multi-label partition dropped %d of %d samples whose label set is allowed on no client",
            result.num_unassigned,
            len(labels),
        )
    return result.partitions
