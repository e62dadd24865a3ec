"""Centralized training, the FedNCAlign-ML paper's upper bound, as a one-client Flower pair.

The single client trains on the *union of all clients' training partitions* (the same samples the
federation holds, without the server's validation split), whatever its ``partition-id``: one
"round" is ``local-epochs`` passes over the union with the run's optimizer, so the run has the
federated budget of ``num-server-rounds`` x ``local-epochs`` passes and the same server-side
evaluation (validation + global test set each round) and run directory. The optimizer is rebuilt
every round, as on a federated client. Data order depends on (seed, round) only, so the result does
not depend on which node the server picked.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from clients.base import BaseClient, ClientSetup
from fedapp.data import FederatedSplit
from fedapp.data.base import IndexedSubset
from fedapp.loops import make_loader
from fedapp.protocol import server_round_of


def union_train_set(split: FederatedSplit) -> IndexedSubset:
    """All clients' training samples as one dataset (each sample once)."""
    indices = np.unique(np.concatenate([np.asarray(part) for part in split.client_train]))
    return IndexedSubset(split.bundle.train, indices)


class CentralizedClient(BaseClient):
    """Trains the global model on the union of every partition."""

    needs_all_partitions = True  # a node's partition cache holds only its own partition

    def __init__(self, setup: ClientSetup) -> None:
        super().__init__(setup)
        self.train_set = union_train_set(setup.split)

    def train_loader(self, config: dict[str, Any]) -> torch.utils.data.DataLoader:
        seed = self.config.seed * 1_000_003 + server_round_of(config) * 1009
        torch.manual_seed(seed)
        return make_loader(self.train_set, self.config.batch_size, shuffle=True, seed=seed,
                           num_workers=self.config.num_workers, device=self.device, augment=self.augmentation())
