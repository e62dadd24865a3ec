"""FedProx (Li et al., 2020, "Federated Optimization in Heterogeneous Networks").

Clients minimise ``F_k(w) + (mu/2) ||w - w^t||^2`` (see :mod:`clients.fedprox`); the server
aggregates as FedAvg:

    w^{t+1} = sum_k (n_k / n) * w_k^{t+1}

This is Flower's own ``flwr.server.strategy.FedProx`` (it adds ``proximal_mu`` = the run config's
``mu`` to every fit instruction) under :class:`~strategies.base.FederatedStrategy`'s validation and
bookkeeping. Bytes per round: the model down and up, as FedAvg.
"""

from __future__ import annotations

from flwr.server.strategy import FedProx

from clients.fedprox import FedProxClient
from fedapp.algorithm import Algorithm
from fedapp.options import Option
from strategies.base import FederatedStrategy, ServerSetup


class FedProxStrategy(FederatedStrategy, FedProx):
    """FedAvg aggregation; sends ``proximal_mu`` with every fit instruction."""

    def __init__(self, setup: ServerSetup) -> None:
        super().__init__(setup, proximal_mu=setup.config.mu)


ALGORITHM = Algorithm(
    name="fedprox", display_name="FedProx", task="any", strategy=FedProxStrategy, client=FedProxClient,
    options=(
        Option("mu", 0.01, "FedProx: weight of the proximal term (mu/2)||w - w_global||^2",
               "a number >= 0 (0 makes FedProx FedAvg)", lambda v: v >= 0),
    ),
)
