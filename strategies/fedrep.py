"""FedRep (Collins et al., 2021, "Exploiting Shared Representations for Personalized Federated
Learning").

Clients first fit their local head to the received representation, then update the
representation with the head fixed (see :mod:`clients.fedrep`); the server averages only the
representation:

    phi_{t+1} = sum_k (n_k / n) * phi_{t+1}^k.

PM = global representation + the client's own head. The heads never travel, so there is no
global head: the GM the server records (global body + its untrained initial head) is not
meaningful and tables print "-" (the FedLoGe paper's FedRep GM needs heads at the server).
"""


from clients.fedrep import FedRepClient
from fedapp.algorithm import Algorithm
from fedapp.options import Option
from fedapp.pfl import body_keys
from strategies.base import FederatedStrategy


class FedRepStrategy(FederatedStrategy):
    """FedAvg over the representation only."""

    # No global head exists: tables print its GM columns as "-" (see fedapp.tables).
    has_global_model = False


ALGORITHM = Algorithm(
    name="fedrep", display_name="FedRep", task="any", strategy=FedRepStrategy, client=FedRepClient,
    travelling_keys=body_keys,
    options=(
        Option("fedrep-head-epochs", 5, "FedRep: epochs on the local head (body frozen) before the body epochs",
               "an integer >= 1", lambda v: v >= 1),
    ),
)
