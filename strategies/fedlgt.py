"""FedLGT (Liu et al., AAAI 2024, "Language-Guided Transformer for Federated Multi-Label
Classification").

Clients train a C-Tran-style label-guided transformer with fixed universal label embeddings and
client-aware masked label embedding (:mod:`clients.fedlgt`); the server aggregates with FedAvg,

    theta_{t+1} = sum_k (n_k / n) * theta_{t+1}^k,

over the backbone, encoder and read-out; the label and state embeddings are fixed text
embeddings rebuilt from the committed JSON on every side and never sent. The server evaluates the
global model with every label state unknown. The authors' code also offers a loss-weighted
aggregation (softmax of the clients' training losses as weights); it is not the paper's default
and is left out.
"""

from strategies.base import FederatedStrategy


class FedLGTStrategy(FederatedStrategy):
    """Example-weighted averaging of all trainable tensors (embeddings never travel)."""
