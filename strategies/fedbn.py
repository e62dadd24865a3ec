"""FedBN (Li et al., 2021, "FedBN: Federated Learning on Non-IID Features via Local Batch
Normalization").

Every layer except BatchNorm is averaged as in FedAvg,

    w_{t+1}[l] = sum_k (n_k / n) * w_{t+1}^k[l]     for every non-BN layer l,

and each client keeps its own BN layers (affine parameters and running statistics), which never
reach the server. The personalized model (PM) is the averaged layers + the client's BN layers.

The paper defines no global model. For the GM columns, the server evaluates the averaged layers
with BN statistics re-estimated on its own held-out validation split (never the test set) and
the BN affine parameters at their identity initialisation, the only BN values it has. Read the
FedBN GM with that in mind.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from clients.fedbn import FedBNClient
from fedapp.algorithm import Algorithm
from fedapp.params import shared_keys
from fedapp.pfl import batchnorm_prefixes, recalibrate_batchnorm
from strategies.base import FederatedStrategy


class FedBNStrategy(FederatedStrategy):
    """FedAvg over the non-BN layers; GM with BN statistics re-estimated on the validation split."""

    def global_model(self, arrays: list[np.ndarray]) -> nn.Module:
        model = super().global_model(arrays)
        data = self.setup.data
        if len(data.validation_indices):
            recalibrate_batchnorm(model, data.validation, self.setup.device, self.config.eval_batch_size)
        return model


def non_batchnorm_keys(model: nn.Module) -> list[str]:
    """Every shared tensor outside BatchNorm layers: those stay on the clients."""
    return shared_keys(model, exclude_prefixes=batchnorm_prefixes(model))


ALGORITHM = Algorithm(
    name="fedbn", display_name="FedBN", task="any", strategy=FedBNStrategy, client=FedBNClient,
    travelling_keys=non_batchnorm_keys,
)
