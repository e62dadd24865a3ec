"""FedBABU (Oh et al., 2022, "FedBABU: Toward Enhanced Representation for Federated Image
Classification").

Only the body is trained and aggregated; the head is a random linear layer fixed for the whole
run (identical everywhere: drawn from the run seed, see :mod:`clients.fedbabu`):

    theta_{t+1} = sum_k (n_k / n) * theta_{t+1}^k,        head = head_0 for all t.

GM = global body + the fixed head. PM = each client's fine-tuned copy (``finetune-epochs``)
evaluated on its local test set.
"""

from torch import nn

from clients.fedbabu import FedBABUClient
from fedapp.algorithm import Algorithm
from fedapp.models.build import pooled_linear_model
from fedapp.options import Option
from fedapp.pfl import body_keys, seeded_linear_
from strategies.base import FederatedStrategy


class FedBABUStrategy(FederatedStrategy):
    """FedAvg over the body; the fixed head is rebuilt from the seed by the server's model."""


HEAD_SEED_OFFSET = 7919  # the fixed head's seed is ``seed + 7919``: distinct from other seeded draws


def fixed_head_model(config, bundle) -> nn.Module:
    """FedAvg's network with its head drawn from ``seed`` and frozen (identical on every side)."""
    model = pooled_linear_model(config, bundle)
    seeded_linear_(model.classifier, config.seed + HEAD_SEED_OFFSET)
    model.classifier.requires_grad_(False)
    return model


ALGORITHM = Algorithm(
    name="fedbabu", display_name="FedBABU", task="any", strategy=FedBABUStrategy, client=FedBABUClient,
    model=fixed_head_model, travelling_keys=body_keys,
    options=(
        Option("finetune-epochs", 5, "FedBABU, FedETF: local fine-tuning epochs before personalized evaluation",
               "an integer >= 0 (0: no fine-tuning)", lambda v: v >= 0),
        Option("fedbabu-finetune-body", True, "FedBABU: fine-tune body + head (true) or the head only (false)"),
    ),
)
