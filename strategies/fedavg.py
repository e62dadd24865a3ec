"""FedAvg (McMahan et al., 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data").

    w_{t+1} = sum_k (n_k / n) * w_{t+1}^k

over the clients that sent a valid update in round t. The rule itself is Flower's
``aggregate_inplace``; :class:`~strategies.base.FederatedStrategy` adds update validation and
bookkeeping.
"""

from clients.fedavg import FedAvgClient
from fedapp.algorithm import Algorithm
from strategies.base import FederatedStrategy


class FedAvgStrategy(FederatedStrategy):
    """Example-weighted averaging of all shared tensors."""


ALGORITHM = Algorithm(name="fedavg", display_name="FedAvg", task="any", strategy=FedAvgStrategy, client=FedAvgClient)
