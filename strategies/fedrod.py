"""FedRoD (Chen & Chao, 2022, "On Bridging Generic and Personalized Federated Learning for Image
Classification").

Body theta and generic head psi are trained with the balanced softmax on each client and
averaged,

    (theta, psi)_{t+1} = sum_k (n_k / n) * (theta, psi)_{t+1}^k,

while the personal head phi_k (trained with cross-entropy on z_G + p_phi_k(h)) stays on the
client (:mod:`clients.fedrod`). GM = body + generic head; PM = generic + personal logits.
"""

from torch import nn

from clients.fedrod import PERSONAL_PREFIX, FedRoDClient
from fedapp.algorithm import Algorithm
from fedapp.models.backbones import build_backbone
from fedapp.models.pfl_nets import DualHeadNet
from fedapp.params import shared_keys
from strategies.base import FederatedStrategy


class FedRoDStrategy(FederatedStrategy):
    """FedAvg over the body and the generic head."""


def dual_head_model(config, bundle) -> nn.Module:
    """Body, generic head and personal head."""
    backbone = build_backbone(config.backbone, bundle.input_shape[0], config.pretrained_path)
    return DualHeadNet(backbone, backbone.out_dim, bundle.num_classes)


def generic_keys(model: nn.Module) -> list[str]:
    """Body and generic head: the personal head stays on the client."""
    return shared_keys(model, exclude_prefixes=[PERSONAL_PREFIX])


ALGORITHM = Algorithm(
    name="fedrod", display_name="FedROD", task="singlelabel", strategy=FedRoDStrategy, client=FedRoDClient,
    model=dual_head_model, travelling_keys=generic_keys,
)
