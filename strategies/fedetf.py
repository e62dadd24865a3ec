"""FedETF (Li et al., 2023, "No Fear of Classifier Biases: Neural Collapse Inspired Federated
Learning with Synthetic and Fixed Classifier").

Clients train backbone, projection and temperature beta against a fixed simplex-ETF classifier
with the balanced loss (:mod:`clients.fedetf`); the server averages all trainable tensors,

    (theta, P, beta)_{t+1} = sum_k (n_k / n) * (theta, P, beta)_{t+1}^k,

and the ETF itself is rebuilt from the seed on every side, never sent. GM = global model with
the ETF classifier; PM = a local fine-tuning of P and beta (``finetune-epochs``).
"""

from torch import nn

from clients.fedetf import FedETFClient
from fedapp.algorithm import Algorithm
from fedapp.models.backbones import build_backbone
from fedapp.models.pfl_nets import ETFNet
from fedapp.options import Option
from strategies.base import FederatedStrategy


class FedETFStrategy(FederatedStrategy):
    """FedAvg of backbone, projection and temperature."""


def etf_model(config, bundle) -> nn.Module:
    """Backbone, projection and learnable temperature against a fixed simplex ETF from ``seed``."""
    backbone = build_backbone(config.backbone, bundle.input_shape[0], config.pretrained_path)
    # The projection keeps the feature width, as the paper's 512x512 layer does, widened to
    # num_classes if needed (a simplex ETF of C classes needs dimension >= C - 1).
    projection_dim = max(backbone.out_dim, bundle.num_classes)
    return ETFNet(
        backbone, backbone.out_dim, bundle.num_classes, projection_dim, config.seed, config.fedetf_scale_init
    )


ALGORITHM = Algorithm(
    name="fedetf", display_name="FedETF", task="singlelabel", strategy=FedETFStrategy, client=FedETFClient,
    model=etf_model, also_reads=("finetune-epochs",),
    options=(
        Option("fedetf-scale-init", 1.0, "FedETF: initial value of the learnable temperature of the ETF logits",
               "a number > 0", lambda v: v > 0),
    ),
)
