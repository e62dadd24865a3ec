"""How a dataset is split over clients: pure numpy, every random choice seeded.

Every partitioner returns one sorted int64 index array per client, pairwise disjoint, each with at
least ``min_size`` samples, and raises ``ValueError`` naming the run-config key (``num-partitions``,
``alpha``, ``class-presence-ratio``, ``min-partition-size``) for impossible requests.

- :func:`iid_partition`: shuffle and split evenly.
- :func:`dirichlet_sample_partition`: single-label Dirichlet(alpha) label skew with every sample
  drawn to a client from its class's shares, FedLoGe's partition of long-tailed data (default).
- :func:`dirichlet_partition`: single-label Dirichlet(alpha) label skew with each class cut at its
  shares (Hsu et al., 2019; ``dirichlet-mode=cut``).
- :func:`multilabel_partition`: FedNCAlign-ML's Dirichlet(alpha) + class-presence ratio rho.
- :func:`partition_dataset`: run-config dispatcher over the schemes above.
- :func:`class_presence`, :func:`unassigned_indices`: what a partition holds.
- :func:`local_test_indices`, :func:`proportional_test_sizes`: FedLoGe's local test sets for PM
  evaluation.
"""

from .dirichlet import dirichlet_partition, dirichlet_sample_partition
from .dispatch import DIRICHLET_MODES, SCHEMES, partition_dataset
from .iid import iid_partition
from .local_testsets import local_test_indices, proportional_allocation, proportional_test_sizes, sample_local_test
from .multilabel import MultilabelPartition, allowed_class_count, draw_allowed_classes, multilabel_partition
from .stats import class_presence, unassigned_indices

__all__ = [
    "DIRICHLET_MODES",
    "SCHEMES",
    "MultilabelPartition",
    "allowed_class_count",
    "class_presence",
    "dirichlet_partition",
    "dirichlet_sample_partition",
    "draw_allowed_classes",
    "iid_partition",
    "local_test_indices",
    "multilabel_partition",
    "partition_dataset",
    "proportional_allocation",
    "proportional_test_sizes",
    "sample_local_test",
    "unassigned_indices",
]
