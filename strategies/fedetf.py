"""FedETF (Li et al., 2023, "No Fear of Classifier Biases: Neural Collapse Inspired Federated
Learning with Synthetic and Fixed Classifier").

Clients train backbone, projection and temperature beta against a fixed simplex-ETF classifier
with the balanced loss (:mod:`clients.fedetf`); the server averages all trainable tensors,

    (theta, P, beta)_{t+1} = sum_k (n_k / n) * (theta, P, beta)_{t+1}^k,

and the ETF itself is rebuilt from the seed on every side, never sent. GM = global model with
the ETF classifier; PM = a local fine-tuning of P and beta (``finetune-epochs``).
"""

from strategies.base import FederatedStrategy


class FedETFStrategy(FederatedStrategy):
    """FedAvg of backbone, projection and temperature."""
