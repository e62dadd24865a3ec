"""FedPer (Arivazhagan et al., 2019, "Federated Learning with Personalization Layers").

The base (body) layers are averaged as in FedAvg and the personalization layers (here the
classifier head) never leave the clients:

    theta_{t+1} = sum_k (n_k / n) * theta_{t+1}^k,        head_k stays on client k.

PM = global body + the client's own head. FedPer has no global head, so it has no global model:
the GM the server records (global body + the server's untrained initial head) is not a
meaningful number and tables print it as "-", as the FedLoGe paper does.
"""

from clients.fedper import FedPerClient
from fedapp.algorithm import Algorithm
from fedapp.pfl import body_keys
from strategies.base import FederatedStrategy


class FedPerStrategy(FederatedStrategy):
    """FedAvg over the body only (the clients send no head)."""

    # No global head exists: tables print its GM columns as "-" (see fedapp.tables).
    has_global_model = False


ALGORITHM = Algorithm(
    name="fedper", display_name="FedPer", task="any", strategy=FedPerStrategy, client=FedPerClient,
    travelling_keys=body_keys,
)
