"""Centralized training (the upper bound of the FedNCAlign-ML paper's tables) on Flower's loop.

Each round exactly one client is sampled; it trains on the union of all partitions
(:mod:`clients.centralized`), so the "aggregate" of its single update is that update:

    w^{t+1} = w_1^{t+1}

Running it as a one-client strategy rather than outside Flower keeps everything else identical to
the federated methods: the same ``python -m fedapp.simulate``/in-process/``flwr run`` commands, the
same server-side evaluation on the validation and global test sets every round (one round =
``local-epochs`` passes over the union), and the same run directory. ``fraction-fit`` is not used.
For single-label data, PM still comes from every node evaluating this one model on its local test
set. Bytes per round: the model down and up once (one client).
"""

from __future__ import annotations

from clients.centralized import CentralizedClient
from fedapp.algorithm import Algorithm
from strategies.base import FederatedStrategy


class CentralizedStrategy(FederatedStrategy):
    """Samples one client per round; FedAvg of one update is that update."""

    def num_fit_clients(self, num_available_clients: int) -> tuple[int, int]:
        return 1, 1


ALGORITHM = Algorithm(
    name="centralized", display_name="Centralized (upper bound)", task="any",
    strategy=CentralizedStrategy, client=CentralizedClient,
)
