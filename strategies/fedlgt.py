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

from torch import nn

from clients.fedlgt import FedLGTClient
from fedapp.algorithm import Algorithm
from fedapp.models.backbones import build_backbone
from fedapp.models.lgt import LabelGuidedTransformer, label_and_state_embeddings
from fedapp.options import Option
from strategies.base import FederatedStrategy


class FedLGTStrategy(FederatedStrategy):
    """Example-weighted averaging of all trainable tensors (embeddings never travel)."""


def label_guided_model(config, bundle) -> nn.Module:
    """Backbone + transformer over image and label tokens, with the fixed label embeddings."""
    backbone = build_backbone(config.backbone, bundle.input_shape[0], config.pretrained_path)
    labels, states = label_and_state_embeddings(
        bundle.name, tuple(bundle.class_names), backbone.out_dim, config.fedlgt_label_embeddings, config.seed
    )
    return LabelGuidedTransformer(backbone, backbone.out_dim, labels, states, config.fedlgt_layers)


ALGORITHM = Algorithm(
    name="fedlgt", display_name="FedLGT", task="multilabel", strategy=FedLGTStrategy, client=FedLGTClient,
    model=label_guided_model,
    options=(
        Option("fedlgt-layers", 1, "FedLGT: encoder layers over image + label tokens (C-Tran/FedLGT: 3)",
               "an integer >= 1", lambda v: v >= 1),
        Option("fedlgt-max-known-fraction", 0.75, "FedLGT: most labels revealed as known states in training",
               "a number in [0, 1) (0: no label mask training)", lambda v: 0 <= v < 1),
        Option("fedlgt-uncertainty-margin", 0.02, "FedLGT CA-MLE: labels with |p_global - 0.5| <= margin made unknown",
               "a number in [0, 0.5]", lambda v: 0 <= v <= 0.5),
        Option("fedlgt-label-embeddings", "text", "FedLGT: stored text embeddings or seeded random ones",
               "text or random", lambda v: v in ("text", "random")),
    ),
)
