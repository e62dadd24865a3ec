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

from strategies.base import FederatedStrategy


class FedRepStrategy(FederatedStrategy):
    """FedAvg over the representation only."""

    # No global head exists: tables print its GM columns as "-" (see fedapp.tables).
    has_global_model = False
