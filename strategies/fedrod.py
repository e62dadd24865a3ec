"""FedRoD (Chen & Chao, 2022, "On Bridging Generic and Personalized Federated Learning for Image
Classification").

Body theta and generic head psi are trained with the balanced softmax on each client and
averaged,

    (theta, psi)_{t+1} = sum_k (n_k / n) * (theta, psi)_{t+1}^k,

while the personal head phi_k (trained with cross-entropy on z_G + p_phi_k(h)) stays on the
client (:mod:`clients.fedrod`). GM = body + generic head; PM = generic + personal logits.
"""

from strategies.base import FederatedStrategy


class FedRoDStrategy(FederatedStrategy):
    """FedAvg over the body and the generic head."""
