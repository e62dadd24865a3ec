"""Ditto (Li et al., 2021, "Ditto: Fair and Robust Federated Learning through Personalization").

Global objective as FedAvg, personal objective per client:

    min_w  sum_k (n_k / n) F_k(w)                      w_{t+1} = sum_k (n_k / n) w_{t+1}^k
    min_v_k  F_k(v_k) + (lambda / 2) ||v_k - w^t||^2    (``ditto-lambda``; v_k never leaves client k)

The server side is FedAvg; the personal models live in the clients' ``context.state``
(:mod:`clients.ditto`). GM = w; PM = v_k on client k's local test set.
"""

from clients.ditto import DittoClient
from fedapp.algorithm import Algorithm
from fedapp.options import Option
from strategies.base import FederatedStrategy


class DittoStrategy(FederatedStrategy):
    """FedAvg of the global models; personal models stay on the clients."""


ALGORITHM = Algorithm(
    name="ditto", display_name="Ditto", task="any", strategy=DittoStrategy, client=DittoClient,
    options=(
        Option("ditto-lambda", 0.1, "Ditto: weight of (lambda/2)||v_k - w_global||^2 in the personal objective",
               "a number >= 0 (0: purely local personal models)", lambda v: v >= 0),
    ),
)
