"""FedBABU (Oh et al., 2022, "FedBABU: Toward Enhanced Representation for Federated Image
Classification").

Only the body is trained and aggregated; the head is a random linear layer fixed for the whole
run (identical everywhere: drawn from the run seed, see :mod:`clients.fedbabu`):

    theta_{t+1} = sum_k (n_k / n) * theta_{t+1}^k,        head = head_0 for all t.

GM = global body + the fixed head. PM = each client's fine-tuned copy (``finetune-epochs``)
evaluated on its local test set.
"""

from strategies.base import FederatedStrategy


class FedBABUStrategy(FederatedStrategy):
    """FedAvg over the body; the fixed head is rebuilt from the seed by the server's model."""
